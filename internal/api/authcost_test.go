package api

import (
	"net/http"
	"testing"

	"github.com/keyward/keyward"
)

// TestAuthenticateCostsAlikeForEveryPrefix: admitting a request does as
// much work for a token of a workspace with its own prefix as for one
// with the default: what an error answer needs of the caller's prefix is
// worked out on the error path, not parsed and copied on every request
// (POST /v1/verify is the hot path, PRODUCT §8).
func TestAuthenticateCostsAlikeForEveryPrefix(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts do not hold under the race detector")
	}
	st := newIsoStack(t)
	h := st.srv.requestID(st.srv.authenticate(route{Scope: keyward.ScopeVerify}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !info(r.Context()).authed {
			t.Error("not admitted")
		}
	})))
	allocs := func(token string) float64 {
		req, _ := http.NewRequest("POST", "http://keyward/v1/verify", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("Authorization", "Bearer "+token)
		return testing.AllocsPerRun(100, func() {
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.status != 0 {
				t.Fatalf("status %d", w.status)
			}
		})
	}
	if kw, bee := allocs(st.adminA), allocs(st.adminB); bee != kw {
		t.Errorf("allocations per admitted request: %v with a bee_ token, %v with a kw_ one", bee, kw)
	}
}
