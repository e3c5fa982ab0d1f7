package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
server:
  header_timeout: 2s
  max_header_bytes: 4096
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
	srv := startServer(t, st, "--gateway-config", file, "--usage-flush-interval", "100ms", "--usage-sample", "1")
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

	t.Run("ServerSettings", func(t *testing.T) {
		// max_header_bytes: a 16 KB header is refused (the limit has some
		// slack, as net/http's has, but not that much).
		resp, _ := get("/public/x", "", map[string]string{"X-Pad": strings.Repeat("p", 16<<10)})
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("16 KB header with max_header_bytes 4096: %d, want 431", resp.StatusCode)
		}
		// header_timeout: a client that stops in the middle of its header
		// is let go after 2 s, long before the default 10 s.
		c, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /public/x HTTP/1.1\r\nHost: x\r\n")
		c.SetReadDeadline(time.Now().Add(8 * time.Second))
		_, err = io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("a stalled header kept its connection for 8 s with header_timeout 2s")
		}
	})
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
	t.Run("Metrics", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`keyward_gateway_requests_total{code="200",route="orders"}`,
			`keyward_gateway_requests_total{code="401",route="orders"}`,
			`keyward_gateway_request_duration_seconds_count{route="orders"}`,
			`keyward_verify_duration_seconds_count{source="gateway"} 3`,
			`keyward_gateway_upstream_duration_seconds_count{route="orders"} 1`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if strings.Contains(string(body), reader.ID) || strings.Contains(string(body), reader.Secret) {
			t.Error("/metrics names a token")
		}
	})
	t.Run("Usage", func(t *testing.T) {
		// Every request that presented a credential is counted under its
		// route, with the status the gateway answered.
		deadline := time.Now().Add(10 * time.Second)
		for {
			u, err := admin.TokenUsage(ctx, other.ID, client.UsageQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if u.Total > 0 {
				if u.Total != 1 || u.ByRoute["orders"] != 1 || u.ByStatus["403"] != 1 || u.ByOutcome["INSUFFICIENT_SCOPE"] != 1 {
					t.Fatalf("other's usage = %+v", u)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the gateway's requests were never counted")
			}
			time.Sleep(50 * time.Millisecond)
		}
		u, err := admin.TokenUsage(ctx, reader.ID, client.UsageQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if u.ByRoute["orders"] != 1 || u.ByStatus["200"] != 1 || u.ByOutcome["VALID"] != 1 {
			t.Fatalf("reader's usage = %+v", u)
		}
		evs, err := admin.ListUsageEvents(ctx, client.UsageEventFilter{TokenID: other.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs.Items) != 1 || evs.Items[0].Method != "GET" || evs.Items[0].Path != "/orders/1" || evs.Items[0].Route != "orders" || evs.Items[0].Status != 403 || evs.Items[0].IP != "127.0.0.1" {
			t.Fatalf("other's events = %+v", evs.Items)
		}
		all, err := admin.Usage(ctx, client.UsageQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if all.ByStatus["401"] != 1 {
			t.Fatalf("the invalid token's 401 is not counted: %+v", all)
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
		// Both reloads are in the workspace's audit log, the good one with
		// its route count, and without the file's contents. The failed
		// one's event is written after its log line: poll for it.
		var gw []client.AuditEvent
		for deadline := time.Now().Add(10 * time.Second); ; {
			evs, err := admin.ListAudit(ctx, client.ListOptions{Limit: 50})
			if err != nil {
				t.Fatal(err)
			}
			gw = gw[:0]
			for _, e := range evs.Items {
				if strings.HasPrefix(e.Action, "gateway.") {
					gw = append(gw, e)
				}
			}
			if len(gw) >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		var actions []string
		for _, e := range gw {
			actions = append(actions, e.Action)
			if e.Actor.Type != "system" || e.Changes["file"] != file {
				t.Errorf("event %+v", e)
			}
			if e.Action == "gateway.reload" && fmt.Sprint(e.Changes["routes"]) != "map[from:2 to:3]" {
				t.Errorf("reload event changes = %v", e.Changes)
			}
		}
		if strings.Join(actions, " ") != "gateway.reload_failed gateway.reload" {
			t.Errorf("gateway audit events = %q, want the failed reload after the good one", actions)
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

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key to
// dir and returns their files and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestGatewayTLS serves the gateway over TLS from the config's tls keys: a
// client trusting the certificate gets through, plain HTTP does not.
func TestGatewayTLS(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-Proto", r.Header.Get("X-Forwarded-Proto"))
	}))
	defer upstream.Close()
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	file := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(file, []byte(`listen: 127.0.0.1:0
workspace: default
tls:
  cert_file: `+certFile+`
  key_file: `+keyFile+`
routes:
  - name: public
    path_prefix: /
    upstreams: [`+upstream.URL+`]
    auth: none
`), 0o600)
	st := sqliteStore(t)
	initRoot(t, st)
	srv := startServer(t, st, "--gateway-config", file)
	gw := strings.Replace(gatewayURL(t, srv), "http://", "https://", 1)

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(gw + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.Header.Get("X-Upstream-Proto") != "https" {
		t.Fatalf("status %d, tls %v, forwarded proto %q", resp.StatusCode, resp.TLS != nil, resp.Header.Get("X-Upstream-Proto"))
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get(strings.Replace(gw, "https://", "http://", 1) + "/x"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP got through a TLS gateway")
		}
	}

	t.Run("HalfConfigured", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.yaml")
		os.WriteFile(bad, []byte(`listen: 127.0.0.1:0
workspace: default
tls:
  cert_file: `+certFile+`
routes:
  - name: public
    path_prefix: /
    upstreams: [`+upstream.URL+`]
    auth: none
`), 0o600)
		out, errOut, code := cli(t, "", nil, "gateway", "check", bad)
		if code != 1 || !strings.Contains(errOut, bad+":4: tls.key_file: required with tls.cert_file") {
			t.Fatalf("exit %d: %s %s", code, out, errOut)
		}
	})
	// check loads the files as serve would: one serve cannot start on is
	// no OK.
	t.Run("MissingFiles", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.yaml")
		os.WriteFile(missing, []byte(`listen: 127.0.0.1:0
workspace: default
tls:
  cert_file: `+filepath.Join(dir, "nope.pem")+`
  key_file: `+keyFile+`
routes:
  - name: public
    path_prefix: /
    upstreams: [`+upstream.URL+`]
    auth: none
`), 0o600)
		out, errOut, code := cli(t, "", nil, "gateway", "check", missing)
		if code != 1 || !strings.Contains(errOut, missing+":4: tls: open ") || strings.Contains(out, "OK") {
			t.Fatalf("exit %d: %s %s", code, out, errOut)
		}
	})
}

// patternReader yields n bytes without holding them.
type patternReader struct{ left int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for i := range p {
		p[i] = byte(i)
	}
	r.left -= int64(len(p))
	return len(p), nil
}

// peakRSS returns VmHWM of a process in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc status")
	return 0
}

// TestGatewayLargeUpload streams 200 MB through the gateway and checks that
// the upstream gets every byte and that the gateway's peak memory does not
// grow with the body.
func TestGatewayLargeUpload(t *testing.T) {
	const size = 200 << 20
	var got atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		got.Store(n)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d", n)
	}))
	defer upstream.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(file, []byte(`listen: 127.0.0.1:0
workspace: default
routes:
  - name: upload
    path_prefix: /upload
    upstreams: [`+upstream.URL+`]
    scopes: [files:write]
`), 0o600)
	st := sqliteStore(t)
	root := initRoot(t, st)
	srv := startServer(t, st, "--gateway-config", file)
	gw := gatewayURL(t, srv)
	tok, err := newClient(t, srv.URL, root).CreateToken(ctxT(t), client.CreateTokenRequest{Name: "uploader", Scopes: []string{"files:write"}})
	if err != nil {
		t.Fatal(err)
	}
	post := func(n int64) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", gw+"/upload", &patternReader{left: n})
		req.ContentLength = n
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// Warm up: the route's transport and connections exist before the
	// baseline is read.
	if resp := post(1 << 20); resp.StatusCode != 200 {
		t.Fatalf("warm-up: status %d", resp.StatusCode)
	}
	before := peakRSS(t, srv.cmd.Process.Pid)
	if resp := post(size); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := got.Load(); n != size {
		t.Fatalf("the upstream got %d bytes, want %d", n, size)
	}
	after := peakRSS(t, srv.cmd.Process.Pid)
	if grew := after - before; grew > 64<<20 {
		t.Fatalf("peak RSS grew by %d MB (from %d MB to %d MB) for a 200 MB upload", grew>>20, before>>20, after>>20)
	}
	t.Logf("peak RSS %d MB before, %d MB after", before>>20, after>>20)
}

// TestGatewayClientTimeouts: the server block's send_timeout and
// body_timeout hold on every listener the gateway has (its own HTTP/1.1
// server, net/http's for HTTP/2 in clear text on the same listener, and
// net/http's with tls, over HTTP/1.1 and HTTP/2): a client
// that stops sending its body gets 400 (401 when refused before the body
// is read), one that stops reading an endless
// response is cut off and its upstream freed, and streams that keep
// flowing (a body sent in pieces, events with quiet gaps each longer than
// either timeout) are not cut.
func TestGatewayClientTimeouts(t *testing.T) {
	const timeout = 300 * time.Millisecond
	endless := make(chan error, 8) // how each endless response ended at the upstream
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			w.Write(b)
		case "/endless":
			chunk := make([]byte, 32<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					endless <- err
					return
				}
			}
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(3 * timeout)
			}
		}
	}))
	defer upstream.Close()
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	start := func(name, tlsBlock string) string {
		file := filepath.Join(dir, name+".yaml")
		os.WriteFile(file, []byte(`listen: 127.0.0.1:0
workspace: default
`+tlsBlock+`server:
  header_timeout: 1s
  send_timeout: `+timeout.String()+`
  body_timeout: `+timeout.String()+`
routes:
  - name: public
    path_prefix: /
    upstreams: [`+upstream.URL+`]
    auth: none
  - name: private
    path_prefix: /private
    upstreams: [`+upstream.URL+`]
`), 0o600)
		st := sqliteStore(t)
		initRoot(t, st)
		return gatewayURL(t, startServer(t, st, "--gateway-config", file))
	}
	plain := start("plain", "")
	secure := strings.Replace(start("tls", "tls:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+"\n"), "http://", "https://", 1)
	tc := &tls.Config{RootCAs: pool}

	for _, c := range []struct {
		name, url string
		h2        bool
	}{
		{"Plain", plain, false},
		{"Plain-H2C", plain, true},
		{"TLS-HTTP1", secure, false},
		{"TLS-HTTP2", secure, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: tc.Clone(), ForceAttemptHTTP2: c.h2}
			if !c.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			} else if c.url == plain {
				// HTTP/2 over clear text, with prior knowledge.
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			wantProto := map[bool]int{false: 1, true: 2}[c.h2]
			// post sends the body's pieces with gap before each, then
			// ends the body, or with stall stops sending (and gives up
			// after 15 s, failing the request).
			post := func(t *testing.T, path string, length int64, pieces []string, gap time.Duration, stall bool) (*http.Response, string) {
				t.Helper()
				pr, pw := io.Pipe()
				answered := make(chan struct{})
				defer close(answered)
				go func() {
					for _, p := range pieces {
						time.Sleep(gap)
						if _, err := io.WriteString(pw, p); err != nil {
							return
						}
					}
					if stall {
						select {
						case <-answered:
						case <-time.After(15 * time.Second):
						}
						pw.CloseWithError(errors.New("the client gave up"))
						return
					}
					pw.Close()
				}()
				req, _ := http.NewRequest("POST", c.url+path, pr)
				req.ContentLength = length
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.ProtoMajor != wantProto {
					t.Fatalf("HTTP/%d, want HTTP/%d", resp.ProtoMajor, wantProto)
				}
				return resp, string(b)
			}

			t.Run("SteadyBody", func(t *testing.T) {
				// Five pieces a third of the timeout apart: longer than
				// the timeout in all, never quiet for it.
				resp, body := post(t, "/echo", 5, []string{"h", "e", "l", "l", "o"}, timeout/3, false)
				if resp.StatusCode != 200 || body != "hello" {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
			})
			t.Run("StalledBody", func(t *testing.T) {
				began := time.Now()
				resp, body := post(t, "/echo", 10, []string{"abc"}, 0, true)
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "the request body could not be read") {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
				t.Logf("a stalled body answered after %v", time.Since(began).Round(time.Millisecond))
			})
			t.Run("StalledUnreadBody", func(t *testing.T) {
				// Refused without a token, the body never read: the
				// answer still comes. The gateway's own server answers
				// at once and reads the rest away after; net/http's (TLS)
				// reads it away first, within the body timeout.
				resp, body := post(t, "/private/x", 100000, []string{"abc"}, 0, true)
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "needs a token") {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
			})
			t.Run("QuietStream", func(t *testing.T) {
				resp, err := hc.Get(c.url + "/events")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
					t.Fatalf("events with quiet gaps: %q, %v", b, err)
				}
			})
			t.Run("StalledReader", func(t *testing.T) {
				resp, err := hc.Get(c.url + "/endless")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				// Read nothing: the gateway must give up and free the
				// upstream, whose write then fails.
				select {
				case err := <-endless:
					t.Logf("the upstream's write ended with %v", err)
				case <-time.After(15 * time.Second):
					t.Fatal("a client that reads nothing held the upstream for 15 s")
				}
				if _, err := io.Copy(io.Discard, resp.Body); err == nil {
					t.Fatal("the endless response ended cleanly")
				}
			})
		})
	}
}

// TestGatewayShutdownCutsStreams: a stream still open at --shutdown-timeout
// is cut, which is no failure of the stop (exit status 0, a warning), and
// the usage analytics not yet written are written after the drain, with
// time of their own: the requests before the stop and the cut stream are
// all counted, the stream with its access-log line.
func TestGatewayShutdownCutsStreams(t *testing.T) {
	ctx := ctxT(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			w.Write([]byte("ok\n"))
			return
		}
		tickStream(w, r, nil)
	}))
	defer upstream.Close()
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: all\n    path_prefix: /\n    upstreams: ["+upstream.URL+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	root := initRoot(t, st)
	// Analytics are written only at the stop.
	srv := startServer(t, st, "--gateway-config", file, "--shutdown-timeout", "1s", "--usage-flush-interval", "10m")
	gw := gatewayURL(t, srv)
	admin := newClient(t, srv.URL, root)
	tok, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "streamer"})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", gw+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for range 3 {
		res := get("/ok")
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	stream := get("/events")
	defer stream.Body.Close()
	if _, err := bufio.NewReader(stream.Body).ReadString('\n'); err != nil {
		t.Fatalf("no event: %v", err)
	}

	srv.stop() // fails the test unless the exit is clean
	log := srv.log.String()
	if !strings.Contains(log, "requests still in flight at the shutdown timeout were cut") {
		t.Errorf("no word of the cut stream:\n%s", log)
	}
	if !strings.Contains(log, "path=/events") {
		t.Errorf("no access-log line for the cut stream:\n%s", log)
	}
	srv = startServer(t, st)
	admin = newClient(t, srv.URL, root)
	u, err := admin.TokenUsage(ctx, tok.ID, client.UsageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Total != 4 {
		t.Errorf("usage after the stop: %d requests counted, want 4 (3 and the cut stream)", u.Total)
	}
}

// TestGatewayShutdownCutsWaits: requests still waiting on a slow upstream
// at --shutdown-timeout are cut, and each is recorded once, in the access
// log and in usage, as 499: their clients got no answer, even when the
// upstream answers just after the cut (it is let go when serve says it
// cut them), and serve still stops cleanly.
func TestGatewayShutdownCutsWaits(t *testing.T) {
	ctx := ctxT(t)
	arrived := make(chan struct{}, 16)
	release := make(chan struct{})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	defer letGo()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.Write([]byte("late\n"))
	}))
	defer upstream.Close()
	defer letGo() // before upstream.Close, which waits for its handlers
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: slow\n    path_prefix: /\n    timeout: 1m\n    upstreams: ["+upstream.URL+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	root := initRoot(t, st)
	srv := startServer(t, st, "--gateway-config", file, "--shutdown-timeout", "200ms", "--usage-flush-interval", "10m")
	gw := gatewayURL(t, srv)
	tok, err := newClient(t, srv.URL, root).CreateToken(ctx, client.CreateTokenRequest{Name: "waiter"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	type answer struct {
		status int
		err    error
	}
	answers := make([]chan answer, n)
	for i := range answers {
		answers[i] = make(chan answer, 1)
		go func() {
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/wait/%d", gw, i), nil)
			req.Header.Set("Authorization", "Bearer "+tok.Secret)
			// A client of its own each: the requests go on five connections.
			res, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
			if err != nil {
				answers[i] <- answer{err: err}
				return
			}
			_, err = io.ReadAll(res.Body)
			res.Body.Close()
			answers[i] <- answer{status: res.StatusCode, err: err}
		}()
	}
	for range n {
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatalf("the requests did not all reach the upstream:\n%s", srv.log)
		}
	}
	// The upstream answers as soon as serve says it cut the requests.
	const cutMsg = "requests still in flight at the shutdown timeout were cut"
	go func() {
		for !strings.Contains(srv.log.String(), cutMsg) {
			select {
			case <-srv.exited:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		letGo()
	}()
	srv.stop() // fails the test unless the exit is clean
	log := srv.log.String()
	if !strings.Contains(log, cutMsg) {
		t.Fatalf("no word of the cut requests:\n%s", log)
	}
	for i, a := range answers {
		if got := <-a; got.err == nil {
			t.Errorf("request %d: the client got an answer, %d, though serve cut it", i, got.status)
		}
	}
	for i := range n {
		lines := regexp.MustCompile(fmt.Sprintf(`msg="gateway request" .*path=/wait/%d status=(\d+)`, i)).FindAllStringSubmatch(log, -1)
		if len(lines) != 1 || lines[0][1] != "499" {
			t.Errorf("request %d: access-log statuses %v, want one line with 499", i, lines)
		}
	}
	srv = startServer(t, st)
	u, err := newClient(t, srv.URL, root).TokenUsage(ctx, tok.ID, client.UsageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Total != n || u.ByStatus["499"] != n {
		t.Errorf("usage after the stop: %d requests, by status %v; want %d, all 499", u.Total, u.ByStatus, n)
	}
}

// TestGatewayShutdownLeavesUpgrades: a WebSocket open at the stop is the
// client's own connection (hijacked: neither server cuts it), so serve
// does not wait for its handler after the cut as for a cut request, which
// would only hold the stop for the whole grace and then warn that cut
// requests did not end.
func TestGatewayShutdownLeavesUpgrades(t *testing.T) {
	ctx := ctxT(t)
	release := make(chan struct{})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			brw.Flush()
			<-release
			return
		}
		// A stream that outlives the shutdown timeout.
		tickStream(w, r, release)
	}))
	defer upstream.Close()
	defer letGo() // before upstream.Close, which waits for its handlers
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: all\n    path_prefix: /\n    upstreams: ["+upstream.URL+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	root := initRoot(t, st)
	srv := startServer(t, st, "--gateway-config", file, "--shutdown-timeout", "200ms")
	gw := gatewayURL(t, srv)
	tok, err := newClient(t, srv.URL, root).CreateToken(ctx, client.CreateTokenRequest{Name: "socket"})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(ws, "GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer %s\r\n\r\n", tok.Secret)
	res, err := http.ReadResponse(bufio.NewReader(ws), nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", res, err)
	}
	req, _ := http.NewRequest("GET", gw+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Secret)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if _, err := bufio.NewReader(stream.Body).ReadString('\n'); err != nil {
		t.Fatalf("no event: %v", err)
	}
	srv.stop() // fails the test unless the exit is clean
	log := srv.log.String()
	if !strings.Contains(log, "requests still in flight at the shutdown timeout were cut") {
		t.Fatalf("the stream was not cut:\n%s", log)
	}
	if strings.Contains(log, "did not end in time") {
		t.Errorf("serve waited for the WebSocket as for a cut request:\n%s", log)
	}
}

// tickStream answers an SSE stream of "data: tick" events, one every
// 100 ms, until the client leaves or stop (nil: never) is closed.
func tickStream(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
	w.Header().Set("Content-Type", "text/event-stream")
	for {
		if _, err := w.Write([]byte("data: tick\n\n")); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
