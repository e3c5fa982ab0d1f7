package verify

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// knownDigests is the set of stored secret digests this node knows of,
// under any server key, by their first 8 bytes: read from the store at
// Start, and added to by every install since (a lookup, or the change
// feed bringing a token written elsewhere).
//
// A cache miss whose digest is in the set is looked up without being
// charged to the lookup budget: it names a stored secret, and since
// digests are keyed with the server secret, nobody without that secret can
// aim made-up tokens at the set (a made-up token is in it by chance once in
// 2^64 / stored secrets). A flood of made-up tokens therefore spends the
// budget without shutting out real tokens that the node has not cached
// yet, after a restart say; and real tokens do not spend the budget that
// bounds the flood's lookups. Memory: 8 bytes a stored secret, and a map
// entry for each secret installed since start.
type knownDigests struct {
	loaded atomic.Pointer[[]uint64] // sorted; set once, at Start

	mu    sync.RWMutex
	added map[uint64]struct{}
}

func digestKey(d []byte) uint64 { return binary.BigEndian.Uint64(d[:8]) }

func (k *knownDigests) add(d []byte) {
	if len(d) < 8 {
		return
	}
	key := digestKey(d)
	if p := k.loaded.Load(); p != nil {
		if _, ok := slices.BinarySearch(*p, key); ok {
			return
		}
	}
	k.mu.Lock()
	if k.added == nil {
		k.added = make(map[uint64]struct{})
	}
	k.added[key] = struct{}{}
	k.mu.Unlock()
}

func (k *knownDigests) has(d []byte) bool {
	key := digestKey(d)
	if p := k.loaded.Load(); p != nil {
		if _, ok := slices.BinarySearch(*p, key); ok {
			return true
		}
	}
	k.mu.RLock()
	_, ok := k.added[key]
	k.mu.RUnlock()
	return ok
}

// knownPage is how many digests one store read of the load brings.
const knownPage = 10_000

// loadKnown reads every stored digest into e.known, page by page in byte
// order, so that the keys come sorted.
func (e *Engine) loadKnown(ctx context.Context) error {
	start := time.Now()
	var keys []uint64
	var after []byte
	for {
		page, err := e.cfg.Store.SecretDigests(ctx, after, knownPage)
		if err != nil {
			return err
		}
		for _, d := range page {
			if len(d) >= 8 {
				if key := digestKey(d); len(keys) == 0 || keys[len(keys)-1] != key {
					keys = append(keys, key)
				}
			}
		}
		if len(page) < knownPage {
			break
		}
		after = page[len(page)-1]
	}
	keys = slices.Clone(keys) // no spare capacity from the appends kept
	e.known.loaded.Store(&keys)
	e.log.Info("stored token digests read", "digests", len(keys), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// knownSecret reports whether the token text, whose digest under the
// current key is d, names a stored secret this node knows of (see
// knownDigests), under the current key or a previous one.
func (e *Engine) knownSecret(text string, d secret.Digest) bool {
	if e.known.has(d[:]) {
		return true
	}
	for _, k := range e.cfg.Keys.Previous {
		if old := k.Digest(text); e.known.has(old[:]) {
			return true
		}
	}
	return false
}
