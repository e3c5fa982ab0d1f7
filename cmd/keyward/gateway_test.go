package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/gateway"
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

// TestGatewayCheckWorkspace: gateway check looks the config's workspace up
// in the store only when one is named (--data-dir, --database-url or their
// variables), reports an unknown one at its line, and makes no store, nor
// any file beside one.
func TestGatewayCheckWorkspace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Chdir(dir) // the default data dir, ./keyward-data, would be made here
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(data, "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.NewKeyring(strings.Repeat("check-test-secret-", 3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&manage.Service{Store: db, Keys: keys}).EnsureDefaultWorkspace(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	config := func(ws string) string {
		t.Helper()
		file := filepath.Join(t.TempDir(), ws+".yaml")
		cfg := "listen: 127.0.0.1:0\nworkspace: " + ws + "\nroutes:\n  - name: orders\n    path_prefix: /orders\n    upstreams: [http://127.0.0.1:1]\n"
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	known, unknown := config("default"), config("acme")
	missing := filepath.Join(dir, "none")
	for _, tc := range []struct {
		name         string
		args         []string
		vars         map[string]string
		code         int
		stdout, errs string
	}{
		{"OfflineUnknown", []string{unknown}, nil, 0,
			unknown + `: OK, listen 127.0.0.1:0, workspace "acme", 1 route` + "\n", ""},
		{"Known", []string{known, "--data-dir", data}, nil, 0,
			known + `: OK, listen 127.0.0.1:0, workspace "default" (in the store), 1 route` + "\n", ""},
		{"Unknown", []string{unknown, "--data-dir", data}, nil, 1,
			"", unknown + `:2: workspace: "acme": no workspace of that name in the store` + "\nkeyward: " + unknown + ": 1 error\n"},
		{"UnknownDataDirEnv", []string{unknown}, map[string]string{"KEYWARD_DATA_DIR": data}, 1,
			"", unknown + `:2: workspace: "acme": no workspace of that name in the store` + "\nkeyward: " + unknown + ": 1 error\n"},
		{"NoStore", []string{known, "--data-dir", missing}, nil, 1,
			"", "keyward: no keyward store in " + missing + ": stat " + filepath.Join(missing, "keyward.db") + ": no such file or directory\n"},
		{"BadDatabaseURL", []string{known, "--database-url", "mysql://u:hunter2@db/k"}, nil, 2,
			"", "keyward: gateway check: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward gateway check --help')\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(t, nil, tc.vars, "", append([]string{"gateway", "check"}, tc.args...)...)
			if r.code != tc.code || r.stdout != tc.stdout || r.stderr != tc.errs {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.errs)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "data" {
		t.Errorf("the checks made files in %s: %v", dir, ents)
	}
	if ents, _ := os.ReadDir(data); len(ents) != 1 {
		t.Errorf("the checks made files beside the store: %v", ents)
	}
}

// serveTLSGateway serves a gateway over TLS (server.header_timeout
// 500ms, server.idle_timeout 1m) with obs, and dials it with HTTP/2.
func serveTLSGateway(t *testing.T, obs gateway.Observer) *tls.Conn {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keys, err := secret.NewKeyring(strings.Repeat("h2-timeout-secret-", 3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&manage.Service{Store: db, Keys: keys}).EnsureDefaultWorkspace(ctx); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	file := filepath.Join(dir, "gateway.yaml")
	cfg := "listen: 127.0.0.1:0\nworkspace: default\ntls:\n  cert_file: " + certFile + "\n  key_file: " + keyFile +
		"\nserver:\n  header_timeout: 500ms\n  idle_timeout: 1m\nroutes:\n  - name: orders\n    path_prefix: /orders\n    upstreams: [http://127.0.0.1:1]\n"
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := openGateway(ctx, file, db, nil, obs, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go g.http.Serve(g.ln)
	t.Cleanup(func() { g.http.Close() })
	c, err := tls.Dial("tcp", g.ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q", p)
	}
	return c
}

// h2Start is the HTTP/2 preface and an empty SETTINGS frame.
const h2Start = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// TestGatewayTLSHTTP2HeaderTimeout: the gateway's TLS listener cuts off an
// HTTP/2 client that sends the preface and then no request after
// server.header_timeout, as it does an HTTP/1 client that sends no
// header, not after server.idle_timeout (a minute here).
func TestGatewayTLSHTTP2HeaderTimeout(t *testing.T) {
	c := serveTLSGateway(t, nil)
	io.WriteString(c, h2Start)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection was still open after 10 s (%d bytes read)", n)
	}
}

// h2Errors records the HTTP/2 errors the gateway observed.
type h2Errors struct {
	gateway.Observer // not called here
	mu               sync.Mutex
	kinds            []string
}

func (o *h2Errors) ObserveGatewayHTTP2Error(kind string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.kinds = append(o.kinds, kind)
}

// TestGatewayTLSHTTP2Errors: what net/http's HTTP/2 server refuses before
// the handler sees a request (here a HEADERS frame on an even stream, a
// connection error) reaches the observer, for metrics.
func TestGatewayTLSHTTP2Errors(t *testing.T) {
	obs := &h2Errors{}
	c := serveTLSGateway(t, obs)
	// HEADERS, END_STREAM|END_HEADERS, stream 2: GET https /.
	io.WriteString(c, h2Start+"\x00\x00\x03\x01\x05\x00\x00\x00\x02\x82\x87\x84")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c) // the server's SETTINGS and GOAWAY, then the end
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !slices.Equal(obs.kinds, []string{"conn_PROTOCOL_ERROR_headers_even"}) {
		t.Errorf("observed %q", obs.kinds)
	}
}

// TestGatewayCheckHelp: the help of gateway check shows no --data-dir
// default, which it does not use: it reads a store only when one is named.
func TestGatewayCheckHelp(t *testing.T) {
	r := cli(t, nil, nil, "", "gateway", "check", "--help")
	r.want(t, 0)
	want := "  --data-dir DIR       look the config's workspace up in the embedded SQLite store in DIR, reading only; " +
		"no default: unless a store is named (by this, KEYWARD_DATA_DIR or a database URL), none is read (env KEYWARD_DATA_DIR)\n"
	if !strings.Contains(r.stdout, want) || strings.Contains(r.stdout, "keyward-data") {
		t.Errorf("help:\n%s\nwant the line %q, and no ./keyward-data", r.stdout, want)
	}
	// The others that take the store flags keep theirs.
	if r := cli(t, nil, nil, "", "migrate", "--help"); !strings.Contains(r.stdout, "(env KEYWARD_DATA_DIR, default ./keyward-data)") {
		t.Errorf("migrate help:\n%s", r.stdout)
	}
}
