package api_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/verify"
)

// hangingLookups is a store whose secret lookups, while down, hang until
// their context ends (a store host that drops packets); it counts them.
type hangingLookups struct {
	keyward.Store
	down  atomic.Bool
	calls atomic.Int64
}

func (h *hangingLookups) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	h.calls.Add(1)
	if h.down.Load() {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	return h.Store.LookupSecret(ctx, digest)
}

// TestVerifyLookupsPaused: while the store hangs, POST /v1/verify of a
// token the cache does not hold answers 503 unavailable with Retry-After,
// alike whether its lookup waited out LookupTimeout or, after
// verify.LookupTrip such failures in a row, did not ask the store at all.
func TestVerifyLookupsPaused(t *testing.T) {
	store := &hangingLookups{}
	// The engine's clock moves only when told: on a slow machine, real
	// time could reach LookupRetry before the last request.
	base := time.Now()
	var off atomic.Int64
	s := newStackWith(t, func(c *verify.Config) {
		store.Store, c.Store = c.Store, store
		c.LookupTimeout = 20 * time.Millisecond
		c.Now = func() time.Time { return base.Add(time.Duration(off.Load())) }
	})
	store.down.Store(true)
	for i := int64(1); i <= verify.LookupTrip+3; i++ {
		r := s.do("POST", "/v1/verify", s.root, map[string]any{"token": unknownToken(t)})
		wantProblem(t, r, http.StatusServiceUnavailable, keyward.EUNAVAILABLE)
		if ra := r.Header.Get("Retry-After"); ra != "5" {
			t.Fatalf("verification %d: Retry-After %q, want 5", i, ra)
		}
		if n, want := store.calls.Load(), min(i, verify.LookupTrip); n != want {
			t.Fatalf("after verification %d the store was asked %d times, want %d", i, n, want)
		}
	}
	// An operator sees the pause: the skipped lookups are counted apart
	// from the store errors.
	body := string(s.do("GET", "/metrics", "", nil).Body)
	for _, want := range []string{"\nkeyward_token_lookups_skipped_total 3\n", "\nkeyward_store_errors_total 3\n"} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", strings.TrimSpace(want), body)
		}
	}

	// The store is back: a lookup asks it again once LookupRetry passed.
	store.down.Store(false)
	off.Add(int64(verify.LookupRetry))
	r := s.do("POST", "/v1/verify", s.root, map[string]any{"token": unknownToken(t)})
	if r.Status != http.StatusOK || r.object(t)["code"] != "NOT_FOUND" || store.calls.Load() != verify.LookupTrip+1 {
		t.Fatalf("after the store came back: %d %s, store asked %d times", r.Status, r.Body, store.calls.Load())
	}
}
