package gateway

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// flakyUpstream answers 200 with X-Upstream: name on every path, and its
// /healthz with 200 or 503 as healthy says.
func flakyUpstream(t *testing.T, name string, healthy *atomic.Bool) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("X-Upstream", name)
	}))
	t.Cleanup(s.Close)
	return s
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spread sends n GETs and counts the answering upstreams; a failed request
// counts under its status.
func spread(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	count := map[string]int{}
	for i := 0; i < n; i++ {
		res, _ := do(t, "GET", url, nil)
		if res.StatusCode != 200 {
			count[http.StatusText(res.StatusCode)]++
			continue
		}
		count[res.Header.Get("X-Upstream")]++
	}
	return count
}

func newHealthHandler(t *testing.T, yml string, vars map[string]string) (*Handler, *testServer, *logBuf) {
	t.Helper()
	for k, v := range vars {
		yml = strings.ReplaceAll(yml, "{{"+k+"}}", v)
	}
	cfg, err := Parse([]byte(yml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	lb := &logBuf{}
	h := NewHandler(cfg, newFake(), "ws_1", slog.New(slog.NewTextHandler(lb, nil)))
	t.Cleanup(func() { h.Close() })
	return h, serveGateway(t, h), lb
}

func TestHealthCheck(t *testing.T) {
	var ok1, ok2 atomic.Bool
	ok1.Store(true)
	ok2.Store(false)
	u1, u2 := flakyUpstream(t, "u1", &ok1), flakyUpstream(t, "u2", &ok2)
	h, gw, _ := newHealthHandler(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: rr
    path_prefix: /
    upstreams: [{{U1}}, {{U2}}]
    auth: none
    health_check: {path: /healthz, interval: 20ms, timeout: 1s}
`, map[string]string{"U1": u1.URL, "U2": u2.URL})
	b := h.router.routes[0].balancer
	waitFor(t, "u2 marked down", func() bool { return b.ups[1].down.Load() })

	t.Run("Skipped", func(t *testing.T) {
		if got := spread(t, gw.URL+"/x", 6); got["u1"] != 6 {
			t.Fatalf("spread %v, want all on u1", got)
		}
	})
	t.Run("Recovers", func(t *testing.T) {
		ok2.Store(true)
		waitFor(t, "u2 healthy again", func() bool { return !b.ups[1].down.Load() })
		if got := spread(t, gw.URL+"/x", 4); got["u1"] != 2 || got["u2"] != 2 {
			t.Fatalf("spread %v, want 2 and 2", got)
		}
	})
	t.Run("AllDownFailsOpen", func(t *testing.T) {
		ok1.Store(false)
		ok2.Store(false)
		waitFor(t, "both down", func() bool { return b.ups[0].down.Load() && b.ups[1].down.Load() })
		// The upstreams still answer their other paths: the gateway tries
		// them rather than refusing.
		if got := spread(t, gw.URL+"/x", 4); got["u1"]+got["u2"] != 4 {
			t.Fatalf("spread %v, want all answered", got)
		}
	})
	t.Run("CloseStopsChecks", func(t *testing.T) {
		h.Close()
		h.Close()
		ok1.Store(true)
		time.Sleep(100 * time.Millisecond) // several intervals; no check may run
		if !b.ups[0].down.Load() {
			t.Fatal("a health check ran after Close")
		}
		// Requests are still served after Close.
		if res, _ := do(t, "GET", gw.URL+"/x", nil); res.StatusCode != 200 {
			t.Fatalf("status %d after Close", res.StatusCode)
		}
	})
}

// firstHealthCheck starts an upstream, and a gateway whose route sends it
// to that upstream under /base with health_check path (as YAML, quoted),
// and returns the request target of the first health check it gets.
func firstHealthCheck(t *testing.T, path string) string {
	t.Helper()
	checks := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") == "keyward-gateway-health" {
			select {
			case checks <- r.RequestURI:
			default:
			}
		}
	}))
	t.Cleanup(up.Close)
	newHealthHandler(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: r
    path_prefix: /
    upstreams: [{{U}}/base]
    auth: none
    health_check: {path: `+path+`, interval: 1h}
`, map[string]string{"U": up.URL})
	select {
	case got := <-checks:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("no health check")
		return ""
	}
}

// TestHealthCheckQuery: a health check path with a query asks the
// upstream (under its base path) for that path with that query, not for a
// path with an escaped "?" in it, which upstreams answer 404.
func TestHealthCheckQuery(t *testing.T) {
	if got, want := firstHealthCheck(t, `"/status?deep=1&x=%2F"`), "/base/status?deep=1&x=%2F"; got != want {
		t.Fatalf("health check asked for %q, want %q", got, want)
	}

	_, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [http://a]\n    health_check: {path: \"/status?a b\"}\n"))
	if want := `line 7: routes[0].health_check.path: "/status?a b": the query may not hold white space or control characters`; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

// TestHealthCheckEscapedPath: a health check path goes out as written,
// its escapes kept (/a%2Fb is not /a%252Fb, which upstreams answer 404);
// a path that no request line could carry as written is an error at its
// line.
func TestHealthCheckEscapedPath(t *testing.T) {
	if got, want := firstHealthCheck(t, `"/a%2Fb/c%20d/~x!$&'()*+,;=:@?deep=1"`), "/base/a%2Fb/c%20d/~x!$&'()*+,;=:@?deep=1"; got != want {
		t.Fatalf("health check asked for %q, want %q", got, want)
	}

	for _, path := range []string{"/a b", "/a%2", "/a%zz", "/h\u00e9alth", "/a\"b", "/a[1]", "/a{b}", "/a|b", "/a\\b", "/a\tb"} {
		_, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [http://a]\n    health_check: {path: '" + path + "'}\n"))
		want := fmt.Sprintf("line 7: routes[0].health_check.path: %q: the path may hold only the characters of RFC 3986, others written %%XX (a space %%20), as a request line carries it", path)
		if err == nil || err.Error() != want {
			t.Errorf("path %q: err = %v, want %q", path, err, want)
		}
	}
}

func TestPassiveEjection(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-Upstream", "alive")
	}))
	t.Cleanup(up.Close)
	dead := deadURL(t)
	h, gw, lb := newHealthHandler(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: rr
    path_prefix: /
    upstreams: [{{DEAD}}, {{U}}]
    auth: none
    eject_after: 2
`, map[string]string{"DEAD": dead, "U": up.URL})
	b := h.router.routes[0].balancer

	// POSTs are not retried, so each one sent to the dead upstream fails;
	// after two consecutive failures it is skipped.
	var codes []int
	for i := 0; i < 4; i++ {
		res, _ := do(t, "POST", gw.URL+"/x", nil)
		codes = append(codes, res.StatusCode)
	}
	if want := []int{502, 200, 502, 200}; !equalInts(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	if b.ups[0].ejectedUntil.Load() == 0 || !strings.Contains(lb.String(), "gateway upstream ejected") {
		t.Fatalf("the dead upstream was not ejected:\n%s", lb)
	}
	t.Run("Skipped", func(t *testing.T) {
		for i := 0; i < 6; i++ {
			if res, _ := do(t, "POST", gw.URL+"/x", nil); res.StatusCode != 200 {
				t.Fatalf("POST %d: %d", i, res.StatusCode)
			}
		}
	})
	t.Run("CooldownEnds", func(t *testing.T) {
		// The cool-down is over: the dead upstream is tried again.
		b.ups[0].ejectedUntil.Store(time.Now().Add(-time.Second).UnixNano())
		got := map[int]int{}
		for i := 0; i < 2; i++ {
			res, _ := do(t, "POST", gw.URL+"/x", nil)
			got[res.StatusCode]++
		}
		if got[502] != 1 || got[200] != 1 {
			t.Fatalf("codes %v, want one 502 and one 200", got)
		}
	})
}

func TestPassiveEjectionRecoversByHealthCheck(t *testing.T) {
	var ok atomic.Bool
	ok.Store(true)
	var failing atomic.Bool
	u1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !ok.Load() {
				w.WriteHeader(503)
			}
			return
		}
		if failing.Load() {
			// Drop the connection: a transport error at the gateway.
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		w.Header().Set("X-Upstream", "u1")
	}))
	t.Cleanup(u1.Close)
	var ok2 atomic.Bool
	ok2.Store(true)
	u2 := flakyUpstream(t, "u2", &ok2)
	h, gw, lb := newHealthHandler(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: rr
    path_prefix: /
    upstreams: [{{U1}}, {{U2}}]
    auth: none
    eject_after: 1
    health_check: {path: /healthz, interval: 20ms}
`, map[string]string{"U1": u1.URL, "U2": u2.URL})
	b := h.router.routes[0].balancer
	ok.Store(false) // keep the checker from undoing the ejection at once
	waitFor(t, "u1 down", func() bool { return b.ups[0].down.Load() })
	ok.Store(true)
	waitFor(t, "u1 up", func() bool { return !b.ups[0].down.Load() })
	failing.Store(true)
	b.cooldown = time.Hour
	for i := 0; i < 2; i++ {
		do(t, "POST", gw.URL+"/x", nil)
	}
	// A passing check may already have ended the ejection: the log says
	// it happened.
	if !strings.Contains(lb.String(), "gateway upstream ejected") {
		t.Fatalf("u1 was not ejected:\n%s", lb)
	}
	failing.Store(false)
	waitFor(t, "a passing check ends the ejection", func() bool { return b.ups[0].ejectedUntil.Load() == 0 })
	if got := spread(t, gw.URL+"/x", 4); got["u1"] != 2 || got["u2"] != 2 {
		t.Fatalf("spread %v, want 2 and 2", got)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHealthConfig(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		cfg, err := Parse([]byte(`listen: 127.0.0.1:0
workspace: default
tls: {cert_file: c.pem, key_file: k.pem}
routes:
  - name: a
    path_prefix: /
    upstreams: [http://a]
    eject_after: 3
    health_check: {path: /healthz}
`))
		if err != nil {
			t.Fatal(err)
		}
		rt := cfg.Routes[0]
		if rt.EjectAfter != 3 || rt.HealthCheck == nil || *rt.HealthCheck != (HealthCheck{Path: "/healthz", Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout}) {
			t.Fatalf("route %+v %+v", rt, rt.HealthCheck)
		}
		if cfg.TLS == nil || cfg.TLS.CertFile != "c.pem" || cfg.TLS.KeyFile != "k.pem" {
			t.Fatalf("tls %+v", cfg.TLS)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		yml := `listen: 127.0.0.1:0
workspace: default
tls:
  cert_file: c.pem
routes:
  - name: a
    path_prefix: /
    upstreams: [http://a]
    eject_after: many
    health_check:
      path: healthz
      interval: soon
      timeout: -1s
      method: HEAD
  - name: b
    path_prefix: /b
    upstreams: [http://a]
    health_check: {interval: 5s}
    read_timeout: -1s
  - name: c
    path_prefix: /c
    upstreams: [http://a]
    read_timeout: 0
`
		path := filepath.Join(t.TempDir(), "gateway.yaml")
		if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err == nil {
			t.Fatal("no error")
		}
		msg := err.Error()
		want := []string{
			path + ":4: tls.key_file: required with tls.cert_file",
			path + ":9: routes[0].eject_after: ",
			path + ":11: routes[0].health_check.path: ",
			path + ":12: routes[0].health_check.interval: ",
			path + ":13: routes[0].health_check.timeout: ",
			path + ":14: routes[0].health_check.method: unknown key",
			path + ":18: routes[1].health_check.path: required",
			path + ":19: routes[1].read_timeout: \"-1s\" is not a duration",
		}
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("missing %q in:\n%s", w, msg)
			}
		}
		if n := strings.Count(msg, "\n") + 1; n != len(want) {
			t.Errorf("%d errors, want %d:\n%s", n, len(want), msg)
		}
	})
}

// TestCheckTLSFiles: Check loads the TLS files a configuration names, and
// lists a failure with its line among the configuration's other problems;
// Load, which a reload uses, does not look at them.
func TestCheckTLSFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	yml := "listen: 127.0.0.1:0\nworkspace: default\ntls:\n  cert_file: " + filepath.Join(dir, "nope.pem") + "\n  key_file: " + filepath.Join(dir, "nope-key.pem") +
		"\nroutes:\n  - name: a\n    path_prefix: a\n    upstreams: [http://a]\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Check(path)
	if err == nil {
		t.Fatal("no error")
	}
	wantLines(t, err.Error(),
		path+":4: tls: open "+filepath.Join(dir, "nope.pem")+": no such file or directory",
		path+":8: routes[0].path_prefix: must start with \"/\"",
	)
	_, err = Load(path)
	if err == nil || strings.Contains(err.Error(), "tls") {
		t.Fatalf("Load: %v, want the route's error only", err)
	}
}

// TestCloseMidHeaderNotUpstreamFault: Close cuts a request whose upstream
// had begun its response header, closing the upstream connection the
// handler reads it from. That is the stop's doing, not the upstream's: the
// request is recorded 499 as a client that left, and the upstream is not
// counted as failing (with eject_after: 1, ejected).
func TestCloseMidHeaderNotUpstreamFault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	began := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// The status line, and the rest of the header never.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Slow: 1\r\n")
		close(began)
		<-stop
	}()
	h, gw, lb := newHealthHandler(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: slow
    path_prefix: /
    upstreams: [{{U}}]
    auth: none
    timeout: 1m
    eject_after: 1
`, map[string]string{"U": "http://" + ln.Addr().String()})
	rc := dialRaw(t, gw)
	rc.send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	<-began
	// For the handler to take the header's first bytes and wait for the
	// rest (an earlier Close ends its wait for the first as a cut too).
	time.Sleep(200 * time.Millisecond)
	gw.Close()
	waitFor(t, "the access-log line", func() bool { return strings.Contains(lb.String(), `msg="gateway request"`) })
	log := lb.String()
	if !strings.Contains(log, "status=499") {
		t.Errorf("the cut request was not recorded 499:\n%s", log)
	}
	if strings.Contains(log, "ejected") || h.router.routes[0].balancer.ups[0].ejectedUntil.Load() != 0 {
		t.Errorf("the upstream was taken for failing when the stop closed its connection:\n%s", log)
	}
}
