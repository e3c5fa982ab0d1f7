package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
)

var gatewayRE = regexp.MustCompile(`msg="keyward gateway listening" addr=(127\.0\.0\.1:\d+)`)

// gatewayURL waits for the node's gateway listener and returns its URL.
func gatewayURL(t *testing.T, s *server) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := gatewayRE.FindStringSubmatch(s.log.String()); m != nil {
			return "http://" + m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the gateway did not start:\n%s", s.log)
	return ""
}

// TestGateway runs keyward serve with a gateway in front of a real
// upstream and drives it as a client would, then reloads its config.
func TestGateway(t *testing.T) {
	ctx := ctxT(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "headers": r.Header})
	}))
	defer upstream.Close()
	config := func(extra string) string {
		return `listen: 127.0.0.1:0
workspace: default
routes:
  - name: orders
    path_prefix: /orders
    methods: [GET]
    upstreams: [` + upstream.URL + `]
    scopes: [orders:read]
  - name: public
    path_prefix: /public
    upstreams: [` + upstream.URL + `]
    auth: none
` + extra
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(file, []byte(config("")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := cli(t, "", nil, "gateway", "check", file); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("gateway check: exit %d: %s %s", code, out, errOut)
	}

	st := sqliteStore(t)
	// The default workspace must exist before the gateway resolves it.
	root := initRoot(t, st)
	srv := startServer(t, st, "--gateway-config", file)
	gw := gatewayURL(t, srv)
	admin := newClient(t, srv.URL, root)
	reader, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "reader", Scopes: []string{"orders:read"}, Subject: "customer-7"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "other", Scopes: []string{"billing:read"}})
	if err != nil {
		t.Fatal(err)
	}

	get := func(path, token string, hdr map[string]string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", gw+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}

	t.Run("NoToken", func(t *testing.T) {
		resp, _ := get("/orders/1", "", nil)
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="keyward"` {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("Valid", func(t *testing.T) {
		resp, body := get("/orders/1", reader.Secret, map[string]string{"X-Keyward-Subject": "spoofed"})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		h, _ := body["headers"].(map[string]any)
		first := func(k string) string {
			if v, ok := h[k].([]any); ok && len(v) > 0 {
				s, _ := v[0].(string)
				return s
			}
			return ""
		}
		if first("X-Keyward-Token-Id") != reader.ID || first("X-Keyward-Subject") != "customer-7" || first("X-Keyward-Scopes") != "orders:read" {
			t.Fatalf("identity headers at the upstream: %v", h)
		}
		if _, ok := h["Authorization"]; ok {
			t.Fatal("the credential reached the upstream")
		}
	})
	t.Run("InvalidToken", func(t *testing.T) {
		resp, _ := get("/orders/1", "kw_AbCdEfGhIjKlMnOpQrStUvWxYz0123452ZGy5c", nil)
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="keyward", error="invalid_token"` {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("InsufficientScope", func(t *testing.T) {
		resp, _ := get("/orders/1", other.Secret, nil)
		if resp.StatusCode != 403 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("AuthNone", func(t *testing.T) {
		if resp, _ := get("/public/x", "", nil); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("ReloadOnSIGHUP", func(t *testing.T) {
		if resp, _ := get("/v2/orders", reader.Secret, nil); resp.StatusCode != 404 {
			t.Fatalf("before reload: %d", resp.StatusCode)
		}
		extra := `  - name: v2
    path_prefix: /v2
    upstreams: [` + upstream.URL + `]
    scopes: [orders:read]
`
		os.WriteFile(file, []byte(config(extra)), 0o600)
		srv.cmd.Process.Signal(syscall.SIGHUP)
		waitStatus(t, func() int { r, _ := get("/v2/orders", reader.Secret, nil); return r.StatusCode }, 200)
		// A broken file is refused and the running config keeps serving.
		os.WriteFile(file, []byte("routes: [oops"), 0o600)
		srv.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(srv.log.String(), "gateway config reload failed") {
			if time.Now().After(deadline) {
				t.Fatal("the failed reload was not logged")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp, _ := get("/v2/orders", reader.Secret, nil); resp.StatusCode != 200 {
			t.Fatalf("after a broken reload: %d", resp.StatusCode)
		}
	})
}

// waitStatus polls until f answers want, failing after 10 s.
func waitStatus(t *testing.T, f func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := f()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %d, want %d", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
