package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/logfmt"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/usage"
)

// TestUsageEventPathEscaped: a usage event keeps the path as the request
// wrote it, escaped, as the access log does: a decoded %3F would read as a
// query string, which usage does not keep.
func TestUsageEventPathEscaped(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now().UTC()
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, now), Name: "acme", TokenPrefix: keyward.DefaultTokenPrefix, CreatedAt: now}
	if err := db.CreateWorkspace(ctx, ws, nil, nil); err != nil {
		t.Fatal(err)
	}
	rec := usage.New(usage.Config{Store: db, SampleEvery: 1})
	up := echoUpstream(t, "u1")
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: acme\nroutes:\n  - name: orders\n    path_prefix: /orders\n    upstreams: [" + up.URL + "]\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(cfg, newFake(), ws.ID, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { h.Close() })
	h.SetUsage(rec)
	gw := serveGateway(t, h)
	for _, p := range []string{"/orders/a%3Faccess_token=x", "/orders/plain"} {
		if res, body := do(t, "GET", gw.URL+p, map[string]string{"Authorization": "Bearer good"}); res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, res.StatusCode, body)
		}
	}
	if err := rec.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	evs, err := db.FindUsageEvents(ctx, keyward.UsageEventFilter{WorkspaceID: ws.ID})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Path)
	}
	slices.Sort(got)
	if want := []string{"/orders/a%3Faccess_token=x", "/orders/plain"}; !slices.Equal(got, want) {
		t.Fatalf("event paths %q, want %q", got, want)
	}
}

// TestUsagePathAllocs: counting a request into usage reads its escaped
// path once with the access log: EscapedPath decodes the path again to
// check it, which allocates when the request escaped anything, and usage
// is on by default on every request that presented a credential.
func TestUsagePathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items: allocation counts vary (make unit runs this without it)")
	}
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: acme\nroutes:\n  - name: admin\n    path_prefix: /admin\n    upstreams: [http://127.0.0.1:1]\n    scopes: [orders:admin]\n"))
	if err != nil {
		t.Fatal(err)
	}
	allocs := func(withUsage bool) float64 {
		h := NewHandler(cfg, newFake(), "ws_1", slog.New(logfmt.NewText(io.Discard, nil)))
		t.Cleanup(func() { h.Close() })
		if withUsage {
			// One event kept, the rest dropped: no buffer growth to count.
			h.SetUsage(usage.New(usage.Config{MaxEvents: 1}))
		}
		req := httptest.NewRequest("GET", "http://gw.example/admin/caf%C3%A9%20au%20lait", nil)
		req.Header.Set("Authorization", "Bearer reader")
		w := &discardWriter{h: http.Header{}}
		return testing.AllocsPerRun(100, func() {
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.status != http.StatusForbidden {
				t.Fatalf("status %d, want 403", w.status)
			}
		})
	}
	// AllocsPerRun counts the whole process's allocations, other tests'
	// goroutines winding down included, which only ever add: the least
	// of a few runs is the request's own.
	least := func(withUsage bool) float64 {
		n := allocs(withUsage)
		for range 4 {
			n = min(n, allocs(withUsage))
		}
		return n
	}
	if off, on := least(false), least(true); on != off {
		t.Errorf("a request with usage on allocates %v times, %v with it off", on, off)
	}
}
