package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
)

// downWorkspaces is a store whose workspace lookups fail while down.
type downWorkspaces struct {
	keyward.Store
	down atomic.Bool
}

func (d *downWorkspaces) FindWorkspaceByName(ctx context.Context, name string) (*keyward.Workspace, error) {
	if d.down.Load() {
		return nil, keyward.Errorf(keyward.EUNAVAILABLE, "the token store is unavailable")
	}
	return d.Store.FindWorkspaceByName(ctx, name)
}

// TestGatewayReloadStoreDown: a reload that keeps the gateway's workspace
// needs no store, so that routes can change (an upstream drained) while
// the store is unreachable; one that names another workspace does.
func TestGatewayReloadStoreDown(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := secret.NewKeyring(strings.Repeat("reload-test-secret-", 3))
	if err != nil {
		t.Fatal(err)
	}
	svc := &manage.Service{Store: db, Keys: keys}
	if _, err := svc.EnsureDefaultWorkspace(ctx); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "gateway.yaml")
	write := func(ws, upstream string) {
		t.Helper()
		cfg := "listen: 127.0.0.1:0\nworkspace: " + ws + "\nroutes:\n  - name: orders\n    path_prefix: /orders\n    upstreams: [" + upstream + "]\n"
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("default", "http://127.0.0.1:9001")
	store := &downWorkspaces{Store: db}
	g, err := openGateway(ctx, file, store, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.ln.Close()
	wsID := g.wsID

	store.down.Store(true)
	write("default", "http://127.0.0.1:9002")
	cfg, h, err := g.load(ctx)
	if err != nil {
		t.Fatalf("a reload keeping the workspace, the store down: %v", err)
	}
	closeHandler(h)
	if g.wsID != wsID || cfg.Routes[0].Upstreams[0].Host != "127.0.0.1:9002" {
		t.Errorf("reloaded: workspace %s (want %s), upstream %s", g.wsID, wsID, cfg.Routes[0].Upstreams[0].Host)
	}
	write("acme", "http://127.0.0.1:9002")
	if _, _, err := g.load(ctx); err == nil || keyward.ErrorCode(err) != keyward.EUNAVAILABLE {
		t.Errorf("a reload naming another workspace, the store down: %v, want the store's error", err)
	}
}
