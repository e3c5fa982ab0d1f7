package keyward

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// Id type prefixes.
const (
	PrefixToken     = "tok_"
	PrefixWorkspace = "ws_"
	PrefixEvent     = "evt_"
	PrefixRequest   = "req_"
)

const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz" // Crockford base32, sorts like its values

// NewID returns an opaque id with the given type prefix. Ids made later sort
// after ids made earlier (to the millisecond), so they serve as cursors.
// Its 80 random bits make ids unguessable.
func NewID(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:])
	// 128 bits → 26 base32 characters, most significant first.
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = idAlphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return prefix + string(out[:])
}

// ValidID reports whether s is an id that NewID could have made with the
// prefix: what a list's cursor must be.
func ValidID(prefix, s string) bool {
	if len(s) != len(prefix)+26 || s[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' && c != 'i' && c != 'l' && c != 'o' && c != 'u') {
			return false
		}
	}
	return true
}
