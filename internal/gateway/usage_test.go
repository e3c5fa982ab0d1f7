package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
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
