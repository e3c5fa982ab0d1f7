package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/verify"
)

// openRoute serves one auth: none route at / to up.
func openRoute(t *testing.T, up string, extra string) *testServer {
	t.Helper()
	gw, _ := openRouteLogged(t, up, extra)
	return gw
}

// openRouteLogged is openRoute with the gateway's log.
func openRouteLogged(t *testing.T, up string, extra string) (*testServer, *logBuf) {
	t.Helper()
	gw, _, logs := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: r
    path_prefix: /
    upstreams: [{{U}}]
    auth: none
`+extra, map[string]string{"U": up})
	return gw, logs
}

// countingUpstream is an httptest server that counts the connections it
// accepted and closed.
type countingUpstream struct {
	*httptest.Server
	opened, closed atomic.Int32
}

func newCountingUpstream(t *testing.T, h http.HandlerFunc) *countingUpstream {
	t.Helper()
	u := &countingUpstream{Server: httptest.NewUnstartedServer(h)}
	u.Config.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			u.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			u.closed.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// rawUpstreamT runs serve on every connection it accepts; serve talks
// HTTP/1.1 by hand, for what net/http would not send.
func rawUpstreamT(t *testing.T, serve func(n int, c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// readHead reads a request head from br; ok is false at the end of the
// connection.
func readHead(br *bufio.Reader) (req *http.Request, ok bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	return req, true
}

func TestHopByHopHeaders(t *testing.T) {
	var got http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("X-End-To-End", "kept")
	}))
	defer up.Close()
	gw := openRoute(t, up.URL, "")
	res, _ := do(t, "GET", gw.URL+"/", map[string]string{
		"Connection":          "X-Req-Hop, keep-alive",
		"X-Req-Hop":           "1",
		"Keep-Alive":          "timeout=5",
		"Proxy-Authorization": "Basic eA==",
		"Proxy-Connection":    "keep-alive",
		"Upgrade":             "h2c", // without Connection: upgrade, a plain field
		"Te":                  "trailers, deflate",
		"X-End-To-End":        "kept",
	})
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	for _, k := range []string{"Connection", "X-Req-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Upgrade"} {
		if v, ok := got[k]; ok {
			t.Errorf("upstream got %s: %q", k, v)
		}
	}
	if got.Get("Te") != "trailers" || got.Get("X-End-To-End") != "kept" {
		t.Errorf("upstream Te %q, X-End-To-End %q", got.Get("Te"), got.Get("X-End-To-End"))
	}
	for _, k := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		if v, ok := res.Header[k]; ok {
			t.Errorf("client got %s: %q", k, v)
		}
	}
	if res.Header.Get("X-End-To-End") != "kept" {
		t.Errorf("client X-End-To-End %q", res.Header.Get("X-End-To-End"))
	}
}

// patternBody yields n bytes without holding them.
type patternBody struct{ left int64 }

func (r *patternBody) Read(p []byte) (int, error) {
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

func TestRequestBodies(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v %q %q %v", n, err, r.TransferEncoding, r.Trailer.Get("X-Sum"), r.ContentLength)
	}))
	defer up.Close()
	gw := openRoute(t, up.URL, "")
	const size = 8<<20 + 3
	for _, tc := range []struct {
		name    string
		length  int64 // -1: unknown, sent chunked
		trailer bool
		want    string
	}{
		{"ContentLength", size, false, fmt.Sprintf(`%d <nil> [] "" %d`, size, size)},
		{"Chunked", -1, false, fmt.Sprintf(`%d <nil> ["chunked"] "" -1`, size)},
		{"ChunkedTrailer", -1, true, fmt.Sprintf(`%d <nil> ["chunked"] "42" -1`, size)},
		{"Empty", 0, false, `0 <nil> [] "" 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = &patternBody{left: size}
			if tc.length == 0 {
				body = http.NoBody
			}
			req, _ := http.NewRequest("POST", gw.URL+"/up", body)
			req.ContentLength = tc.length
			if tc.trailer {
				req.Trailer = http.Header{"X-Sum": nil}
				body := req.Body
				req.Body = readCloser{Reader: io.MultiReader(body, eofHook(func() { req.Trailer.Set("X-Sum", "42") }))}
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(b) != tc.want {
				t.Errorf("status %d, upstream saw %s, want %s", res.StatusCode, b, tc.want)
			}
		})
	}
}

type readCloser struct{ io.Reader }

func (readCloser) Close() error { return nil }

// eofHook is a reader that runs fn when it is first read, at the end of a
// MultiReader.
type eofHook func()

func (f eofHook) Read(p []byte) (int, error) { f(); return 0, io.EOF }

func TestResponseFraming(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/chunked":
			io.WriteString(w, "part1,")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "part2")
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.Header().Set("Etag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		case "/trailers":
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		}
	}))
	defer up.Close()
	gw := openRoute(t, up.URL, "")
	for _, tc := range []struct {
		name, method, path string
		status             int
		body               string
		length             int64
		chunked            bool
		trailer            map[string]string
	}{
		{"ContentLength", "GET", "/length", 200, "hello", 5, false, nil},
		{"Chunked", "GET", "/chunked", 200, "part1,part2", -1, true, nil},
		{"Head", "HEAD", "/head", 200, "", 1234, false, nil},
		{"NoContent", "GET", "/nocontent", 204, "", 0, false, nil},
		{"NotModified", "GET", "/notmodified", 304, "", 0, false, nil},
		{"Trailers", "GET", "/trailers", 200, "body", -1, true, map[string]string{"X-Checksum": "abc", "X-Late": "late"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, gw.URL+tc.path, nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != tc.status || string(b) != tc.body {
				t.Fatalf("status %d body %q (%v), want %d %q", res.StatusCode, b, err, tc.status, tc.body)
			}
			if tc.status == 200 && res.ContentLength != tc.length {
				t.Errorf("ContentLength %d, want %d", res.ContentLength, tc.length)
			}
			if chunked := len(res.TransferEncoding) > 0; chunked != tc.chunked {
				t.Errorf("TransferEncoding %q", res.TransferEncoding)
			}
			for k, v := range tc.trailer {
				if got := res.Trailer.Get(k); got != v {
					t.Errorf("trailer %s %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestReadUntilClose: a body without a length runs until the upstream
// closes (RFC 9112 §6.3), as an HTTP/1.0 server, or one that says
// Connection: close, sends it; the client gets it whole, and properly
// ended, whether the close comes with the body or after it.
func TestReadUntilClose(t *testing.T) {
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		req, ok := readHead(br)
		if !ok {
			return
		}
		switch req.URL.Path {
		case "/http10":
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
		case "/later":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfirst,")
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, "second")
			time.Sleep(50 * time.Millisecond)
		default:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
		}
		// The end of the connection ends the body.
	})
	gw, logs := openRouteLogged(t, up, "")
	for i, c := range []struct{ path, body string }{
		{"/", "all of it"}, {"/", "all of it"}, {"/http10", "all of it"}, {"/later", "first,second"},
	} {
		res, err := http.Get(gw.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 || string(b) != c.body {
			t.Errorf("%d %s: status %d body %q, %v; want %q whole", i, c.path, res.StatusCode, b, err, c.body)
		}
	}
	if strings.Contains(logs.String(), "upstream_error") {
		t.Errorf("the access log has an upstream error:\n%s", logs)
	}
}

func TestEarlyHints(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.Header().Set("X-Request-Id", "from-upstream")
		w.Header().Set("Connection", "X-Secret") // hop-by-hop, by name
		w.Header().Set("X-Secret", "internal")
		w.Header().Set("RateLimit", `"x";r=999;t=1`) // the gateway's own field
		w.WriteHeader(http.StatusEarlyHints)
		for _, k := range []string{"Link", "X-Request-Id", "Connection", "X-Secret", "RateLimit"} {
			w.Header().Del(k)
		}
		io.WriteString(w, "done")
	}))
	defer up.Close()
	gw := openRoute(t, up.URL, "")
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s%s%s", code, h.Get("Link"), h.Get("X-Secret"), h.Get("RateLimit")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", gw.URL+"/", nil)
	req.Header.Set("X-Request-Id", "mine")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "done" || len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Errorf("status %d body %q hints %q", res.StatusCode, b, hints)
	}
	// The 103's fields were not kept for the final response, and did not
	// displace the gateway's own.
	if res.Header.Get("Link") != "" || res.Header.Get("X-Request-Id") != "mine" {
		t.Errorf("final header Link %q, X-Request-Id %q", res.Header.Get("Link"), res.Header.Get("X-Request-Id"))
	}
}

func TestConnectionReuse(t *testing.T) {
	up := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	})
	gw := openRoute(t, up.URL, "")
	for i := 0; i < 5; i++ {
		do(t, "GET", gw.URL+"/", nil)
	}
	if n := up.opened.Load(); n != 1 {
		t.Errorf("5 sequential requests opened %d upstream connections, want 1", n)
	}
	do(t, "GET", gw.URL+"/close", nil)
	do(t, "GET", gw.URL+"/", nil)
	if n := up.opened.Load(); n != 2 {
		t.Errorf("after Connection: close, %d connections opened, want 2", n)
	}
}

// TestStaleConnection has the upstream close every connection after one
// exchange although it answered as if keeping it: the next request finds
// the pooled connection closed before it is sent and uses a new one.
func TestStaleConnection(t *testing.T) {
	var conns atomic.Int32
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		if _, ok := readHead(br); !ok {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	gw := openRoute(t, up, "")
	for i, m := range []string{"GET", "POST", "GET", "POST"} {
		res, body := do(t, m, gw.URL+"/", nil)
		if res.StatusCode != 200 || body != "ok" {
			t.Errorf("%d %s: status %d body %q", i, m, res.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond) // the close reaches the gateway
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("%d connections, want 4", n)
	}
}

// TestUnsolicitedResponse has the upstream send a second response after
// the first, a moment later, unasked (as one that sends a body to a HEAD
// does): the connection is not taken for the next request, which would
// get that response as its own, whoever sent it.
func TestUnsolicitedResponse(t *testing.T) {
	var conns atomic.Int32
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		for {
			req, ok := readHead(br)
			if !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if req.URL.Path == "/extra" {
				time.Sleep(2 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Poison: yes\r\n\r\nPOISONED")
			}
		}
	})
	gw := openRoute(t, up, "")
	for i := range 5 {
		if res, body := do(t, "GET", gw.URL+"/extra", nil); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d: GET /extra: status %d body %q", i, res.StatusCode, body)
		}
		time.Sleep(10 * time.Millisecond) // the unasked response arrives
		res, body := do(t, "GET", gw.URL+"/next", nil)
		if res.StatusCode != 200 || body != "ok" || res.Header.Get("X-Poison") != "" {
			t.Fatalf("%d: the next request got status %d body %q X-Poison %q", i, res.StatusCode, body, res.Header.Get("X-Poison"))
		}
	}
	if n := conns.Load(); n < 5 {
		t.Errorf("%d upstream connections: one that sent a response unasked was used again", n)
	}
}

// TestBothFramingsNotReused has the upstream answer with Transfer-Encoding
// and Content-Length both: the body is read as chunked, and the connection,
// whose end the two sides may place apart, is not used again.
func TestBothFramingsNotReused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(c net.Conn)
	}{
		{"whole", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
		}},
		// The header in two writes, or past the read buffer: the framing
		// seen in part, a chunked answer is not trusted to end cleanly.
		{"split", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n")
			time.Sleep(20 * time.Millisecond)
			io.WriteString(c, "Content-Length: 3\r\n\r\n2\r\nok\r\n0\r\n\r\n")
		}},
		{"large", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Pad: "+strings.Repeat("p", 6000)+"\r\nContent-Length: 3\r\n\r\n2\r\nok\r\n0\r\n\r\n")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conns atomic.Int32
			up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
				conns.Add(1)
				for {
					if _, ok := readHead(br); !ok {
						return
					}
					tc.write(c)
				}
			})
			gw := openRoute(t, up, "")
			for i := range 3 {
				if res, body := do(t, "GET", gw.URL+"/", nil); res.StatusCode != 200 || body != "ok" {
					t.Fatalf("%d: status %d body %q", i, res.StatusCode, body)
				}
			}
			if n := conns.Load(); n != 3 {
				t.Errorf("%d upstream connections for 3 requests, want 3 (none reused)", n)
			}
		})
	}
}

// TestBodilessNotReused has the upstream send a body, a moment later, with
// answers that have none by definition (to HEAD, 204, 304), a common bug:
// their connections are not pooled, so the body cannot answer the next
// request, however soon it comes.
func TestBodilessNotReused(t *testing.T) {
	for _, tc := range []struct{ method, path, status string }{
		{"HEAD", "/", "200 OK"}, {"GET", "/empty", "204 No Content"}, {"GET", "/same", "304 Not Modified"},
	} {
		t.Run(tc.status, func(t *testing.T) {
			var conns atomic.Int32
			up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
				conns.Add(1)
				for {
					req, ok := readHead(br)
					if !ok {
						return
					}
					// The body is a response of its own.
					const body = "HTTP/1.1 302 Found\r\nLocation: /evil\r\nContent-Length: 0\r\n\r\n"
					status := "200 OK"
					if req.URL.Path == tc.path {
						status = tc.status
					}
					fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n", status, len(body))
					if req.Method == tc.method && req.URL.Path == tc.path {
						time.Sleep(time.Millisecond)
					}
					io.WriteString(c, body)
				}
			})
			gw := openRoute(t, up, "")
			for i := range 3 {
				do(t, tc.method, gw.URL+tc.path, nil)
				res, body := do(t, "GET", gw.URL+"/next", nil)
				if res.StatusCode != 200 || !strings.HasPrefix(body, "HTTP/1.1 302 Found") {
					t.Fatalf("%d: GET after %s %s: status %d body %q", i, tc.method, tc.status, res.StatusCode, body)
				}
			}
			if n := conns.Load(); n < 3 {
				t.Errorf("%d upstream connections for 3 answers without a body: one was pooled", n)
			}
		})
	}
}

// TestPlainBodilessReused: 204 and 304 answers that announce no body keep
// their connections, as most do (DELETE answered 204, conditional GETs).
func TestPlainBodilessReused(t *testing.T) {
	up := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/same" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	gw := openRoute(t, up.URL, "")
	for i := range 10 {
		path := "/gone"
		if i%2 == 0 {
			path = "/same"
		}
		if res, _ := do(t, "DELETE", gw.URL+path, nil); res.StatusCode != 204 && res.StatusCode != 304 {
			t.Fatalf("%s: status %d", path, res.StatusCode)
		}
	}
	if n := up.opened.Load(); n != 1 {
		t.Errorf("%d upstream connections for 10 answers without a body, want 1", n)
	}
}

// TestStaleConnectionRace has the upstream read a second request on a
// connection and close it without answering, as when an idle close races
// with the request: an idempotent request is sent again on a new
// connection; a POST is not, and gets 502.
func TestStaleConnectionRace(t *testing.T) {
	// The upstream ends the connection with a FIN, or with a reset (no
	// linger): either way the GET is retried and the POST is not.
	for _, reset := range []bool{false, true} {
		up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
			for i := 0; ; i++ {
				if _, ok := readHead(br); !ok || i > 0 {
					if reset {
						c.(*net.TCPConn).SetLinger(0)
					}
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		})
		gw := openRoute(t, up, "")
		do(t, "GET", gw.URL+"/", nil) // one pooled connection
		if res, body := do(t, "GET", gw.URL+"/", nil); res.StatusCode != 200 || body != "ok" {
			t.Errorf("reset %v: GET: status %d body %q, want a retry on a new connection", reset, res.StatusCode, body)
		}
		if res, _ := do(t, "POST", gw.URL+"/", nil); res.StatusCode != 502 {
			t.Errorf("reset %v: POST: status %d, want 502 (not retried)", reset, res.StatusCode)
		}
	}
}

// TestBodyCutShort has the upstream end the connection inside a body: the
// client must see an error, not a complete response.
func TestBodyCutShort(t *testing.T) {
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		req, ok := readHead(br)
		if !ok {
			return
		}
		if req.URL.Path == "/length" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
		} else {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		}
	})
	gw, lb := openRouteLogged(t, up, "")
	for _, p := range []string{"/length", "/chunked"} {
		// The error comes with the header or with the body, depending on
		// whether the server had sent the header when the upstream broke.
		if err := getAll(gw.URL + p); err == nil {
			t.Errorf("%s: the client read a whole body", p)
		}
	}
	gw.Close()
	if !strings.Contains(lb.String(), `"upstream_error"`) {
		t.Errorf("the cut was not logged: %s", lb)
	}
	// The records say what the client got: nothing of /length had left
	// the gateway's buffer (a 502, in effect, the connection cut); the
	// header of /chunked, a stream, had gone with its status.
	for _, line := range strings.Split(strings.TrimSpace(lb.String()), "\n") {
		var e struct {
			Path   string
			Status int
		}
		json.Unmarshal([]byte(line), &e)
		want := map[string]int{"/length": 502, "/chunked": 200}[e.Path]
		if want != 0 && e.Status != want {
			t.Errorf("%s logged with status %d, want %d: %s", e.Path, e.Status, want, line)
		}
	}
}

// TestReadTimeout: an upstream that stalls in its body, whether between
// reads or inside a chunk's size line, is cut after the route's
// read_timeout (the client's connection with it), and logged; a stream
// whose bytes keep coming is not, however long it lasts.
func TestReadTimeout(t *testing.T) {
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		req, ok := readHead(br)
		if !ok {
			return
		}
		switch req.URL.Path {
		case "/stall":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		case "/stall-in-size":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1")
		case "/slow":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
			for range 8 {
				time.Sleep(100 * time.Millisecond)
				io.WriteString(c, "x")
			}
			return
		}
		time.Sleep(3 * time.Second) // then the upstream closes: too late
	})
	gw, lb := openRouteLogged(t, up, "    read_timeout: 300ms\n")
	for _, p := range []string{"/stall", "/stall-in-size"} {
		start := time.Now()
		if err := getAll(gw.URL + p); err == nil {
			t.Errorf("%s: the client read a whole body", p)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: cut after %v, want about the read timeout (300ms), before the upstream closes (3s)", p, d)
		}
	}
	res, err := http.Get(gw.URL + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(body) != "xxxxxxxx" {
		t.Errorf("a body that keeps coming (800 ms in all, 100 ms a byte): %q, %v", body, err)
	}
	gw.Close()
	if !strings.Contains(lb.String(), `"upstream_error"`) {
		t.Errorf("the stalls were not logged: %s", lb)
	}
}

// getAll gets url and reads the body to its end; the error is the
// request's or the body's.
func getAll(url string) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, err = io.ReadAll(res.Body)
	return err
}

// TestClientGoesAway checks that a client leaving, while the gateway waits
// for the upstream's header or streams its body, ends the upstream
// exchange: its connection is closed, not pooled, and nothing waits on.
func TestClientGoesAway(t *testing.T) {
	gone := make(chan string, 2)
	up := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, "data: first\n\n")
			http.NewResponseController(w).Flush()
		}
		<-r.Context().Done()
		gone <- r.URL.Path
	})
	gw := openRoute(t, up.URL, "")
	for _, p := range []string{"/headers", "/stream"} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", gw.URL+p, nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, err := http.DefaultClient.Do(req)
			if err == nil {
				bufio.NewReader(res.Body).ReadString('\n')
				cancel()
				res.Body.Close()
			}
		}()
		if p == "/headers" {
			time.Sleep(50 * time.Millisecond)
			cancel()
		}
		select {
		case got := <-gone:
			if got != p {
				t.Errorf("upstream saw %s end, want %s", got, p)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the upstream exchange went on after the client left", p)
		}
		<-done
	}
	waitFor(t, "upstream connections closed", func() bool { return up.closed.Load() == up.opened.Load() })
}

// TestEarlyAnswer has the upstream refuse a large upload without reading
// it: the client gets the upstream's answer, not a 502.
func TestEarlyAnswer(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	defer up.Close()
	gw := openRoute(t, up.URL, "")
	req, _ := http.NewRequest("POST", gw.URL+"/", &patternBody{left: 4 << 20})
	req.ContentLength = 4 << 20
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d %q, want 413", res.StatusCode, b)
	}
}

// TestIdentityHeaderInjection: a token field that would break the header
// block is not sent; the request fails with 502 before reaching the
// upstream.
func TestIdentityHeaderInjection(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer up.Close()
	gw, fv, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: r
    path_prefix: /
    upstreams: [{{U}}]
`, map[string]string{"U": up.URL})
	fv.tokens["evil"] = verify.Result{Outcome: keyward.Valid, Token: &keyward.Token{ID: "tok_evil", Subject: "x\r\nX-Injected: 1"}}
	res, _ := do(t, "GET", gw.URL+"/", map[string]string{"Authorization": "Bearer evil"})
	if res.StatusCode != 502 || hits.Load() != 0 {
		t.Errorf("status %d, upstream hits %d", res.StatusCode, hits.Load())
	}
}

func TestPoolIdleExpiry(t *testing.T) {
	up := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	u := mustURL(t, up.URL)
	p := newConnPool(u)
	p.idleTimeout = 30 * time.Millisecond
	pc, err := p.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.put(pc)
	waitFor(t, "the idle connection closed", func() bool { return up.closed.Load() == 1 })
	p.mu.Lock()
	n := len(p.idle)
	p.mu.Unlock()
	if n != 0 {
		t.Errorf("%d idle connections left", n)
	}
	// After close, returned connections are closed, not kept.
	pc, _ = p.get(context.Background())
	p.close()
	p.put(pc)
	waitFor(t, "the returned connection closed", func() bool { return up.closed.Load() == 2 })
}

func TestDialError(t *testing.T) {
	p := newConnPool(mustURL(t, deadURL(t)))
	_, err := p.get(context.Background())
	if !connError(err) {
		t.Errorf("err %v is not a connection error", err)
	}
	if errors.Is(err, errStale) {
		t.Errorf("a refused dial is not a stale connection")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestHTTP2Client drives the lean path with HTTP/2 requests, as a TLS
// gateway listener serves them: a streamed upload of unknown length goes
// upstream chunked, and a streamed response with trailers comes back.
func TestHTTP2Client(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Count")
		fmt.Fprintf(w, "proto=%s te=%q n=%d", r.Proto, r.TransferEncoding, n)
		http.NewResponseController(w).Flush()
		w.Header().Set("X-Count", fmt.Sprint(n))
	}))
	defer up.Close()
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [" + up.URL + "]\n    auth: none\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(cfg, newFake(), "ws_1", nil)
	defer h.Close()
	gw := httptest.NewUnstartedServer(h)
	gw.EnableHTTP2 = true
	gw.StartTLS()
	defer gw.Close()

	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 100; i++ {
			pw.Write(make([]byte, 1000))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", gw.URL+"/", pr)
	res, err := gw.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || string(b) != `proto=HTTP/1.1 te=["chunked"] n=100000` || res.Trailer.Get("X-Count") != "100000" {
		t.Errorf("%s %d %q trailer %q", res.Proto, res.StatusCode, b, res.Trailer.Get("X-Count"))
	}
}

func TestTLSUpstream(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v host=%s", r.TLS != nil, r.Host)
	}))
	defer up.Close()
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [" + up.URL + "]\n    auth: none\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(cfg, newFake(), "ws_1", nil)
	defer h.Close()
	// Trust the test server's certificate, as the system roots would a
	// real one.
	h.router.routes[0].balancer.ups[0].pool.tls.RootCAs = up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	gw := serveGateway(t, h)
	for i := 0; i < 2; i++ {
		res, body := do(t, "GET", gw.URL+"/", nil)
		if want := "tls=true host=" + strings.TrimPrefix(up.URL, "https://"); res.StatusCode != 200 || body != want {
			t.Errorf("%d: status %d body %q, want %q", i, res.StatusCode, body, want)
		}
	}
}

// holdConn gathers what is written to it while hold is set and sends it
// in one write at release: TLS records that leave together.
type holdConn struct {
	net.Conn
	hold bool
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) release() {
	h.hold = false
	h.Conn.Write(h.buf)
	h.buf = nil
}

// TestUnsolicitedResponseTLS is TestUnsolicitedResponse over TLS, with the
// unasked response in a record that came in the same write as the answer:
// crypto/tls reads it from the socket with the answer, so a look at the
// socket alone finds nothing, and yet the connection must not be reused.
func TestUnsolicitedResponseTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS() // for its certificate, and its client's roots
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				hc := &holdConn{Conn: c}
				tc := tls.Server(hc, srv.TLS)
				br := bufio.NewReader(tc)
				for {
					req, ok := readHead(br)
					if !ok {
						return
					}
					hc.hold = req.URL.Path == "/extra"
					io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					if hc.hold {
						io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Poison: yes\r\n\r\nPOISONED")
						hc.release()
					}
				}
			}()
		}
	}()
	up := "https://" + ln.Addr().String()
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [" + up + "]\n    auth: none\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(cfg, newFake(), "ws_1", nil)
	defer h.Close()
	pool := h.router.routes[0].balancer.ups[0].pool
	pool.tls.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	pool.tls.ServerName = "example.com"
	gw := serveGateway(t, h)
	for i := range 3 {
		if res, body := do(t, "GET", gw.URL+"/extra", nil); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d: GET /extra: status %d body %q", i, res.StatusCode, body)
		}
		res, body := do(t, "GET", gw.URL+"/next", nil)
		if res.StatusCode != 200 || body != "ok" || res.Header.Get("X-Poison") != "" {
			t.Fatalf("%d: the next request got status %d body %q X-Poison %q", i, res.StatusCode, body, res.Header.Get("X-Poison"))
		}
	}
	// Each /extra leaves its connection unusable; the one that answered
	// /next is reused for the next /extra.
	if n := conns.Load(); n != 4 {
		t.Errorf("%d upstream connections, want 4", n)
	}
}

// TestExpectContinue: the gateway answers the client's Expect:
// 100-continue itself when it reads the body; the upstream gets the body
// without the expectation.
func TestExpectContinue(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "expect=%q body=%s", r.Header.Get("Expect"), b)
	}))
	defer up.Close()
	gw := openRoute(t, up.URL, "")
	req, _ := http.NewRequest("PUT", gw.URL+"/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != `expect="" body=payload` {
		t.Errorf("status %d %q", res.StatusCode, b)
	}
}

func TestParseSimpleHead(t *testing.T) {
	for _, tc := range []struct {
		head   string
		ok     bool
		status int
		length int64
		date   bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok", true, 200, 2, false},
		{"HTTP/1.1 404\r\ncontent-length: 0\r\nDate: Mon, 23 Nov 2026 17:00:00 GMT\r\n\r\n", true, 404, 0, true},
		{"HTTP/1.1 299 Whatever you like\r\nX-A: a\tb\r\nContent-Length: 007\r\n\r\n", true, 299, 7, false},
		// What the slow path handles.
		{"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 100 Continue\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n", false, 0, 0, false}, // no length
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2 2\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: up\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nratelimit: x\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n folded\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A : a\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\x00b\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: a\r\n\r\n", false, 0, 0, false}, // a bare LF
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false, 0, 0, false},             // not all here
		{"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		// A bare LF ends the status line for ReadResponse: the fields
		// after it are the header's, or the header ends there.
		{"HTTP/1.1 200 OK\n\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 O\rK\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		// ReadResponse adds Cache-Control to a Pragma without one.
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nPragma: no-cache\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.1 200 OK\r\nPragma: no-cache\r\ncache-control: no-store\r\nContent-Length: 2\r\n\r\n", true, 200, 2, false},
	} {
		br := bufio.NewReader(strings.NewReader(tc.head))
		br.Peek(1)
		sh, n, ok := parseSimpleHead(br, nil)
		if ok != tc.ok || ok && (sh.status != tc.status || sh.length != tc.length || sh.hasDate != tc.date) {
			t.Errorf("%q: got ok=%v %+v", tc.head, ok, sh)
			continue
		}
		if !ok {
			continue
		}
		end := strings.Index(tc.head, "\r\n\r\n") + 4
		first := strings.Index(tc.head, "\r\n") + 2
		if n != end || string(sh.fields) != tc.head[first:end-2] {
			t.Errorf("%q: n=%d fields %q", tc.head, n, sh.fields)
		}
		if br.Buffered() != len(tc.head) {
			t.Errorf("%q: parseSimpleHead consumed bytes", tc.head)
		}
	}
}

// TestFastPathResponse drives a simple response and its slow-path kin
// through the gateway and reads the client's bytes: the upstream's fields
// as it sent them, the gateway's own once, one Date, the body whole, and
// the upstream connection kept.
func TestFastPathResponse(t *testing.T) {
	var conns atomic.Int32
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		for {
			req, ok := readHead(br)
			if !ok {
				return
			}
			switch req.URL.Path {
			case "/simple":
				io.WriteString(c, "HTTP/1.1 201 Made\r\ncontent-type: text/plain\r\nX-Odd-Case: v\r\nDate: Mon, 23 Nov 2026 17:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello")
			case "/own-id":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Request-Id: upstream\r\nContent-Length: 2\r\n\r\nok")
			case "/listed":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	gw := openRoute(t, up, "")
	c, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for range 3 {
		io.WriteString(c, "GET /simple HTTP/1.1\r\nHost: gw\r\n\r\n")
		var head []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == "\r\n" {
				break
			}
			head = append(head, strings.TrimSuffix(line, "\r\n"))
		}
		body := make([]byte, 5)
		if _, err := io.ReadFull(br, body); err != nil || string(body) != "hello" {
			t.Fatalf("body %q %v", body, err)
		}
		if head[0] != "HTTP/1.1 201 Created" {
			t.Errorf("status line %q", head[0])
		}
		count := func(prefix string) (n int) {
			for _, l := range head {
				if strings.HasPrefix(strings.ToLower(l), strings.ToLower(prefix)) {
					n++
				}
			}
			return n
		}
		for _, f := range []string{"content-type: text/plain", "X-Odd-Case: v", "Date: Mon, 23 Nov 2026 17:00:00 GMT", "Content-Length: 5", "X-Request-Id: req_"} {
			if count(f) != 1 {
				t.Errorf("%q appears %d times in %q", f, count(f), head)
			}
		}
		if count("Date:") != 1 || count("Transfer-Encoding") != 0 || count("Connection") != 0 {
			t.Errorf("header %q", head)
		}
		// The line as the upstream wrote it: the fast path took it (the
		// slow one writes names in canonical form).
		if !slices.Contains(head, "content-type: text/plain") {
			t.Errorf("the fast path was not taken: %q", head)
		}
	}
	// The slow path still replaces the upstream's X-Request-Id and drops
	// the fields Connection lists.
	res, _ := do(t, "GET", gw.URL+"/own-id", nil)
	if id := res.Header.Get("X-Request-Id"); id == "upstream" || !strings.HasPrefix(id, "req_") {
		t.Errorf("X-Request-Id %q", id)
	}
	res, _ = do(t, "GET", gw.URL+"/listed", nil)
	if res.Header.Get("X-Secret") != "" {
		t.Error("a field the upstream's Connection lists reached the client")
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1 kept alive throughout", n)
	}
}

// TestFastPathHeadLikeReadResponse: the response fast path reads what
// http.ReadResponse reads. A bare LF in an upstream's status line ends
// the line: the fields after it are the header's, framing included, not a
// reason phrase's. A Pragma without Cache-Control gets one.
func TestFastPathHeadLikeReadResponse(t *testing.T) {
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readHead(br)
			if !ok {
				return
			}
			switch req.URL.Path {
			case "/chunked":
				io.WriteString(c, "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
			case "/field":
				io.WriteString(c, "HTTP/1.1 200 OK\nX-Hidden: yes\r\nContent-Length: 2\r\n\r\nok")
			case "/pragma":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	gw := openRoute(t, up, "")
	if res, body := do(t, "GET", gw.URL+"/chunked", nil); res.StatusCode != 200 || body != "abc" {
		t.Errorf("/chunked: %d %q, want 200 \"abc\"", res.StatusCode, body)
	}
	if res, body := do(t, "GET", gw.URL+"/field", nil); res.StatusCode != 200 || body != "ok" || res.Header.Get("X-Hidden") != "yes" {
		t.Errorf("/field: %d %q, X-Hidden %q; want 200 \"ok\", X-Hidden yes", res.StatusCode, body, res.Header.Get("X-Hidden"))
	}
	// Not a bare LF, but the other field the two paths read differently:
	// the slow path's reader adds Cache-Control to a Pragma without one.
	// (Read raw: a Go client's reader would add it too.)
	c, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /pragma HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("\r\nCache-Control: no-cache\r\n")) || !bytes.HasSuffix(raw, []byte("\r\n\r\nok")) {
		t.Errorf("/pragma: %q, want Cache-Control: no-cache and the body", raw)
	}
}

// TestUpstreamStatusBelow100: an upstream status under 100 ("099", which
// http.ReadResponse reads) is no interim response and no answer the
// gateway can pass on: the client gets a 502, on both paths, and the
// handler does not panic.
func TestUpstreamStatusBelow100(t *testing.T) {
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readHead(br); !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n")
		}
	})
	gw, logs := openRouteLogged(t, up, "")
	for _, req := range []string{
		"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		rc := dialRaw(t, gw)
		rc.send(req)
		res, _ := rc.read("GET")
		if res.StatusCode != 502 {
			t.Errorf("%q: %d, want 502", req, res.StatusCode)
		}
	}
	if strings.Contains(logs.String(), "panic") {
		t.Errorf("the handler panicked: %s", logs.String())
	}
}

// TestFlushAwaitPartialWrite: what the socket does not take at once from
// the write made in the wait (flushAwait) goes out the usual way, whole
// and in order, and the wait still ends with the answer.
func TestFlushAwaitPartialWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 8 << 20 // more than loopback's socket buffers hold
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		time.Sleep(200 * time.Millisecond) // the buffers fill meanwhile
		b := make([]byte, size)
		if _, err := io.ReadFull(c, b); err != nil {
			got <- err
			return
		}
		for i := range b {
			if b[i] != byte(i%251) {
				got <- fmt.Errorf("byte %d is %d, want %d", i, b[i], byte(i%251))
				return
			}
		}
		got <- nil
		io.WriteString(c, "answer")
	}()
	pc, err := newConnPool(mustURL(t, "http://"+ln.Addr().String())).dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.close()
	if pc.raw == nil {
		t.Skip("no raw connection on this platform")
	}
	pc.bw = bufio.NewWriterSize(&pc.cw, size)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i % 251)
	}
	pc.bw.Write(data)
	if err := pc.flushAwait(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatalf("flushAwait: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	pc.setReadDeadline(time.Now().Add(5 * time.Second))
	pc.cr.limit = math.MaxInt64
	b := make([]byte, 6)
	if _, err := io.ReadFull(pc.br, b); err != nil || string(b) != "answer" {
		t.Fatalf("answer %q, %v", b, err)
	}
}

// TestHeldBodies: small bodies that come whole with their header (held by
// the server and written upstream with the request's header) reach the
// upstream exactly, over one kept-alive connection, one request at a
// time and pipelined, mixed with bodies that do not fit (the ordinary
// path) and requests without one. A held body that is never read (the
// request is refused) does not spill into the next request.
func TestHeldBodies(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %d %v %s", r.Method, r.ContentLength, len(b), err, b)
	}))
	defer up.Close()
	gw, _, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: open
    path_prefix: /open
    upstreams: [{{U}}]
    auth: none
  - name: closed
    path_prefix: /closed
    upstreams: [{{U}}]
`, map[string]string{"U": up.URL})
	post := func(path, body string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	want := func(body string) string { return fmt.Sprintf("POST %d %d <nil> %s", len(body), len(body), body) }
	rc := dialRaw(t, gw)
	sizes := []int{1, 17, 1000, 3900, 4000, 5000, 70000, 0}
	for _, n := range sizes {
		body := strings.Repeat(string(rune('a'+n%26)), n)
		rc.send(post("/open/one", body))
		if res, got := rc.read("POST"); res.StatusCode != 200 || got != want(body) {
			t.Fatalf("%d bytes: %d, upstream saw %.80q", n, res.StatusCode, got)
		}
	}
	// Pipelined: three requests in one write.
	rc.send(post("/open/a", `{"n":1}`) + "GET /open/b HTTP/1.1\r\nHost: x\r\n\r\n" + post("/open/c", `{"n":3}`))
	for _, w := range []string{want(`{"n":1}`), "GET 0 0 <nil> ", want(`{"n":3}`)} {
		if res, got := rc.read("POST"); res.StatusCode != 200 || got != w {
			t.Fatalf("pipelined: %d %q, want %q", res.StatusCode, got, w)
		}
	}
	// Refused before its body is read, then a request on the same
	// connection.
	rc.send(post("/closed/x", "GET /open/smuggled HTTP/1.1\r\nHost: x\r\n\r\n") + post("/open/after", "next"))
	if res, _ := rc.read("POST"); res.StatusCode != 401 {
		t.Fatalf("no token: %d", res.StatusCode)
	}
	if res, got := rc.read("POST"); res.StatusCode != 200 || got != want("next") {
		t.Fatalf("after a refused request: %d %q", res.StatusCode, got)
	}
}

// TestConnectionCloseListed: the fields a Connection field names stay
// behind when it also says close, in both directions. net/http's response
// reader deletes such a Connection field, and the names with it.
func TestConnectionCloseListed(t *testing.T) {
	big := strings.Repeat("x", 8<<10) // a header past the reading buffer
	var mu sync.Mutex
	var got []http.Header
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		req, ok := readHead(br)
		if !ok {
			return
		}
		io.Copy(io.Discard, req.Body)
		mu.Lock()
		got = append(got, req.Header.Clone())
		mu.Unlock()
		switch req.URL.Path {
		case "/raw":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s3cr3t\r\nContent-Length: 2\r\n\r\nok")
		case "/folded":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Secret: s3cr3t\r\nConnection: X-Other,\r\n close, x-secret\r\nX-Other: o\r\nContent-Length: 2\r\n\r\nok")
		case "/big":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Pad: "+big+"\r\nX-Secret: s3cr3t\r\nConnection: close\r\nConnection: X-Secret\r\nContent-Length: 2\r\n\r\nok")
		case "/hints":
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nConnection: close, X-Secret\r\nX-Secret: s3cr3t\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		}
	})
	gw := openRoute(t, up, "")
	for _, path := range []string{"/raw", "/folded", "/big"} {
		res, body := do(t, "GET", gw.URL+path, nil)
		if res.StatusCode != 200 || body != "ok" {
			t.Fatalf("%s: %d %q", path, res.StatusCode, body)
		}
		for _, k := range []string{"X-Secret", "X-Other"} {
			if v, ok := res.Header[k]; ok {
				t.Errorf("%s: the client got %s: %q", path, k, v)
			}
		}
	}

	// A 103's fields are sent with it: read by hand.
	rc := dialRaw(t, gw)
	rc.send("GET /hints HTTP/1.1\r\nHost: gw\r\n\r\n")
	var head strings.Builder
	for {
		line, err := rc.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		head.WriteString(line)
		if strings.HasPrefix(line, "HTTP/1.1 200") {
			break
		}
	}
	if !strings.Contains(head.String(), "Link: </a.css>") || strings.Contains(strings.ToLower(head.String()), "x-secret") {
		t.Errorf("the 103 went out as %q", head.String())
	}

	// The client's request: on the simple parser's path, on
	// http.ReadRequest's (chunked), and on net/http's client's.
	got = nil
	rc = dialRaw(t, gw)
	rc.send("GET /plain HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Foo\r\nX-Foo: bar\r\n\r\n")
	rc.read("GET")
	rc = dialRaw(t, gw)
	rc.send("POST /plain HTTP/1.1\r\nHost: gw\r\nX-Foo: bar\r\nTransfer-Encoding: chunked\r\nConnection: x-foo, close\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
	rc.read("POST")
	do(t, "GET", gw.URL+"/plain", map[string]string{"Connection": "close, X-Foo", "X-Foo": "bar"})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("the upstream saw %d requests, want 3", len(got))
	}
	for i, h := range got {
		if v, ok := h["X-Foo"]; ok {
			t.Errorf("request %d: the upstream got X-Foo: %q", i, v)
		}
	}
}

func TestConnectionValues(t *testing.T) {
	for _, tc := range []struct {
		head string
		want []string
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", nil},
		{"HTTP/1.1 200 OK\r\nconnection:close, X-A\r\n\r\nConnection: X-Body\r\n", []string{"close, X-A"}},
		{"HTTP/1.1 200 OK\nConnection: close\nX-B: 1\n CONNECTION: no\nConnection:  X-C \t\n\tX-D\n\n", []string{"close", "X-C X-D"}},
		{"Connection: X-Status-Line\r\nX-A: 1\r\n", nil},
		{"HTTP/1.1 200 OK\r\nConnection:\r\n \r\n\tclose\r\n X-A\r\nConnection: X-B\r\n \r\n\r\n", []string{"close X-A", "X-B "}},
	} {
		if got := connectionValues([]byte(tc.head)); !slices.Equal(got, tc.want) {
			t.Errorf("connectionValues(%q) = %q, want %q", tc.head, got, tc.want)
		}
	}
}

// TestClosedConnectionValues: the lean path puts back the Connection
// values of a field that said close, which http.ReadResponse deleted;
// others it keeps, and their values are not read again, at no
// allocation: most upstreams send Connection: keep-alive on every
// response.
func TestClosedConnectionValues(t *testing.T) {
	for _, tc := range []struct {
		head string
		want []string
	}{
		{"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\n\r\n", []string{"close, X-A"}},
		{"HTTP/1.1 200 OK\r\nConnection: X-A\r\nConnection: Close\r\n\r\n", []string{"X-A", "Close"}},
		{"HTTP/1.1 200 OK\r\nConnection: X-A,\r\n\tclose \r\n\r\n", []string{"X-A, close"}},
		{"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Close\r\nKeep-Alive: timeout=5\r\n\r\n", nil},
		{"HTTP/1.1 200 OK\r\nX-Note: close\r\n continued close\r\nConnection: X-A\r\n\r\nConnection: close\r\n", nil},
	} {
		if got := closedConnectionValues([]byte(tc.head)); !slices.Equal(got, tc.want) {
			t.Errorf("closedConnectionValues(%q) = %q, want %q", tc.head, got, tc.want)
		}
	}
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok")
	if n := testing.AllocsPerRun(100, func() { closedConnectionValues(head) }); n != 0 {
		t.Errorf("a keep-alive header: %v allocations, want 0", n)
	}
}

// TestUpgradeRefusedConnectionClose: an upgrade the upstream refuses
// goes through httputil.ReverseProxy, whose transport's reader deletes a
// Connection field that says close, and with it the names of the fields
// it lists: they stay behind all the same, from an https upstream too.
func TestUpgradeRefusedConnectionClose(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 403 Forbidden\r\nX-Secret: s3cr3t\r\nConnection: close, X-Secret\r\nContent-Length: 2\r\n\r\nno")
		brw.Flush()
	})
	for _, up := range []*httptest.Server{httptest.NewServer(h), httptest.NewTLSServer(h)} {
		t.Cleanup(up.Close)
		cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [" + up.URL + "]\n    auth: none\n"))
		if err != nil {
			t.Fatal(err)
		}
		hd := NewHandler(cfg, newFake(), "ws_1", nil)
		t.Cleanup(func() { hd.Close() })
		if p := hd.router.routes[0].balancer.ups[0].pool; p.tls != nil {
			p.tls.RootCAs = up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		}
		gw := serveGateway(t, hd)
		for range 2 {
			rc := dialRaw(t, gw)
			rc.send("GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			res, body := rc.read("GET")
			if res.StatusCode != 403 || body != "no" || res.Header.Get("X-Secret") != "" {
				t.Errorf("%s: %d %q %v, want 403 without X-Secret", up.URL, res.StatusCode, body, res.Header)
			}
		}
	}
}

// TestUpgradeRefusedAfterInterim: the final response's Connection field
// is the one read on the upgrade path when an interim response came
// first, however its status line reads as http.ReadResponse reads it
// (spaces before the code, any HTTP/d.d version): the fields it lists
// stay behind.
func TestUpgradeRefusedAfterInterim(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1  100 Continue\r\n\r\nHTTP/2.0 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nX-Secret: s3cr3t\r\nConnection: close, X-Secret\r\nContent-Length: 2\r\n\r\nno")
		brw.Flush()
	}))
	t.Cleanup(up.Close)
	gw := openRoute(t, up.URL, "")
	rc := dialRaw(t, gw)
	rc.send("GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	res, body := rc.read("GET")
	for res.StatusCode == http.StatusContinue {
		res, body = rc.read("GET")
	}
	if res.StatusCode != 403 || body != "no" || res.Header.Get("X-Secret") != "" {
		t.Errorf("%d %q %v, want 403 \"no\" without X-Secret", res.StatusCode, body, res.Header)
	}
	for _, tc := range []struct{ line, want string }{
		{"HTTP/1.1 200 OK\r\n", "200"},
		{"HTTP/1.1  100 Continue\r\n", "100"},
		{"HTTP/1.0 101\n", "101"},
		{"HTTP/1.1 101", "101"},
		{"HTTP/1.1 1010\r\n", ""},
		{"HTTP/1.1 \r\n", ""},
		{"HTTP/2 200\r\n", ""},
		{"HTTP/2.0 100 Continue\r\n", "100"},
		{"HTTP/0.0 101 \n", "101"},
		{"HTTP/a.1 100\r\n", ""},
	} {
		if got := statusCode([]byte(tc.line)); got != tc.want {
			t.Errorf("statusCode(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestInterimFieldsBothPaths: an upstream's 103 reaches the client with
// the same fields on the WebSocket path (ReverseProxy) as on the lean
// path: without hop-by-hop fields, those its Connection field names and
// the upstream's X-Request-Id; and the final answer keeps the gateway's
// X-Request-Id, the interim one's.
func TestInterimFieldsBothPaths(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nX-Request-Id: up\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\n\r\n" +
			"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
		brw.Flush()
	}))
	t.Cleanup(up.Close)
	gw := openRoute(t, up.URL, "")
	for _, req := range []string{
		"GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET /plain HTTP/1.1\r\nHost: gw\r\n\r\n",
	} {
		rc := dialRaw(t, gw)
		rc.send(req)
		res, _ := rc.read("GET")
		id := res.Header["X-Request-Id"]
		want := http.Header{"Link": {"</a>"}, "X-Request-Id": id}
		if res.StatusCode != 103 || len(id) != 1 || id[0] == "up" || !reflect.DeepEqual(res.Header, want) {
			t.Errorf("%q: interim %d %v, want 103 with Link and the gateway's X-Request-Id alone", req, res.StatusCode, res.Header)
		}
		res, body := rc.read("GET")
		if res.StatusCode != 403 || body != "no" || !slices.Equal(res.Header["X-Request-Id"], id) {
			t.Errorf("%q: final %d %q %v, want 403 \"no\" with X-Request-Id %q", req, res.StatusCode, body, res.Header, id)
		}
	}
}

// TestHeadConn: a headConn keeps the response header read since the
// last write, past 1xx answers but a 101, after which it keeps nothing.
func TestHeadConn(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := &headConn{Conn: a}
	defer c.Close()
	answers := []string{
		"HTTP/1.1 103 Early Hints\r\nConnection: X-Hint\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close,\r\n X-Secret\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close, X-Frame\r\n\r\n", // a frame of the protocol switched to
	}
	go func() {
		br := bufio.NewReader(b)
		for _, answer := range answers {
			if _, err := br.ReadString('\n'); err != nil {
				return
			}
			io.WriteString(b, answer)
		}
	}()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for i, want := range [][]string{{"close, X-Secret"}, {"Upgrade"}, {"Upgrade"}} {
		io.WriteString(c, "req\n")
		// A byte at a time: the header split across every read.
		for range answers[i] {
			if _, err := c.Read(make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
		}
		if got, ok := c.connectionValues(); !ok || !slices.Equal(got, want) {
			t.Errorf("answer %d: Connection %q, want %q", i, got, want)
		}
	}
	if !c.switched || len(c.head) != len(answers[1]) {
		t.Errorf("after the 101: switched %v, %d bytes kept", c.switched, len(c.head))
	}
}

// TestTLSUpstreamUpgradeAndHealth: the balancer's transport, which makes
// protocol upgrades and health checks, reaches an https upstream with the
// upstream's TLS settings (its roots, its server name, verification on):
// a WebSocket upgrade goes through and echoes, a health check passes, and
// a server name the certificate does not hold fails both.
func TestTLSUpstreamUpgradeAndHealth(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		if r.Header.Get("Upgrade") != "websocket" || r.TLS == nil {
			http.Error(w, "no upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	}))
	t.Cleanup(up.Close)
	for _, name := range []string{"", "wrong.example"} {
		cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [" + up.URL + "]\n    auth: none\n"))
		if err != nil {
			t.Fatal(err)
		}
		h := NewHandler(cfg, newFake(), "ws_1", nil)
		t.Cleanup(func() { h.Close() })
		b := h.router.routes[0].balancer
		p := b.ups[0].pool
		p.tls.RootCAs = up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		if name != "" {
			p.tls.ServerName = name
		}
		gw := serveGateway(t, h)
		rc := dialRaw(t, gw)
		rc.send("GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		res, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		if name != "" {
			if res.StatusCode != 502 {
				t.Errorf("server name %s: upgrade %d, want 502", name, res.StatusCode)
			}
		} else {
			if res.StatusCode != 101 {
				t.Fatalf("upgrade: %d", res.StatusCode)
			}
			rc.send("hello\n")
			if line, err := rc.br.ReadString('\n'); err != nil || line != "echo:hello\n" {
				t.Errorf("echo %q %v", line, err)
			}
		}
		b.rt.cfg.HealthCheck = &HealthCheck{Path: "/healthz", Interval: time.Second, Timeout: 5 * time.Second}
		b.check(context.Background(), b.ups[0])
		if down := b.ups[0].down.Load(); down != (name != "") {
			t.Errorf("server name %q: down %v after a health check", name, down)
		}
	}
}

// TestUpgradeRefusedLargeHeader: an upgrade refused with a header larger
// than the gateway keeps to look for its Connection fields is refused
// (502), as the lean path refuses it, rather than passed on with the
// fields a Connection: close named.
func TestUpgradeRefusedLargeHeader(t *testing.T) {
	pad := strings.Repeat("p", maxResponseHeaderBytes+1024)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 403 Forbidden\r\nX-Pad: " + pad + "\r\nX-Secret: s3cr3t\r\nConnection: close, X-Secret\r\nContent-Length: 2\r\n\r\nno")
		brw.Flush()
	}))
	t.Cleanup(up.Close)
	gw := openRoute(t, up.URL, "")
	for _, upgrade := range []string{"", "Connection: Upgrade\r\nUpgrade: websocket\r\n"} {
		rc := dialRaw(t, gw)
		rc.send("GET /ws HTTP/1.1\r\nHost: gw\r\n" + upgrade + "\r\n")
		res, _ := rc.read("GET")
		if res.StatusCode != 502 || res.Header.Get("X-Secret") != "" {
			t.Errorf("upgrade %q: %d, X-Secret %q, want 502 without it", upgrade, res.StatusCode, res.Header.Get("X-Secret"))
		}
	}
}
