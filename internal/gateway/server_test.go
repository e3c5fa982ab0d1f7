package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testServer is the gateway's own Server on a loopback port, as keyward
// serve runs it on a plain listener.
type testServer struct {
	URL string
	srv *Server
}

// Close closes the listener and every connection.
func (s *testServer) Close() { s.srv.Close() }

func serveGateway(t testing.TB, h http.Handler) *testServer {
	t.Helper()
	return serveWith(t, &Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10})
}

// serveWith serves srv on a loopback port until the test ends.
func serveWith(t testing.TB, srv *Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &testServer{URL: "http://" + ln.Addr().String(), srv: srv}
}

// rawConn is a client connection to a test server that writes bytes as
// given and reads responses with http.ReadResponse.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, s *testServer) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads one response to a request with the method and returns it
// with its whole body.
func (rc *rawConn) read(method string) (*http.Response, string) {
	rc.t.Helper()
	res, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		rc.t.Fatalf("reading a response body: %v", err)
	}
	return res, string(b)
}

// closed reports whether the server closed the connection, with nothing
// more sent.
func (rc *rawConn) closed() bool {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := rc.br.ReadByte()
	if err == nil {
		rc.t.Fatalf("the server sent more: %q", b)
	}
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Path", r.URL.Path)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)+len(r.URL.Path)))
		io.WriteString(w, r.URL.Path)
		w.Write(b)
	})
}

func TestServerPipelining(t *testing.T) {
	s := serveGateway(t, echoHandler())
	rc := dialRaw(t, s)
	rc.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"/one", "/twohello", "/three"} {
		res, body := rc.read("GET")
		if res.StatusCode != 200 || body != want || res.Close {
			t.Fatalf("got %d %q close=%v, want 200 %q on a kept connection", res.StatusCode, body, res.Close, want)
		}
		if res.Header.Get("Date") == "" {
			t.Fatal("no Date header")
		}
	}
}

func TestServerConnectionClose(t *testing.T) {
	s := serveGateway(t, echoHandler())
	rc := dialRaw(t, s)
	rc.send("GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	res, body := rc.read("GET")
	if body != "/a" || !res.Close {
		t.Fatalf("got %q close=%v, want /a and Connection: close", body, res.Close)
	}
	if !rc.closed() {
		t.Fatal("the connection stayed open after Connection: close")
	}
}

// TestServerHTTP10: HTTP/1.0 requests, without a Host (the ordinary
// path) and with one (the fast parser's, as ab sends them).
func TestServerHTTP10(t *testing.T) {
	s := serveGateway(t, echoHandler())
	for _, host := range []string{"", "Host: x\r\n"} {
		name := map[string]string{"": "NoHost", "Host: x\r\n": "Host"}[host]
		t.Run(name+"/keep-alive", func(t *testing.T) {
			rc := dialRaw(t, s)
			rc.send("GET /a HTTP/1.0\r\n" + host + "Connection: keep-alive\r\n\r\n")
			res, body := rc.read("GET")
			if body != "/a" || res.Header.Get("Connection") != "keep-alive" {
				t.Fatalf("got %q Connection=%q, want /a and keep-alive", body, res.Header.Get("Connection"))
			}
			rc.send("POST /b HTTP/1.0\r\n" + host + "Connection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi")
			if res, body := rc.read("POST"); body != "/bhi" || res.Close {
				t.Fatalf("second request: %q close=%v", body, res.Close)
			}
			rc.send("GET /c HTTP/1.0\r\n" + host + "\r\n")
			if _, body := rc.read("GET"); body != "/c" {
				t.Fatalf("third request: %q", body)
			}
			if !rc.closed() {
				t.Fatal("an HTTP/1.0 request without keep-alive left the connection open")
			}
		})
		t.Run(name+"/unknown length ends with the connection", func(t *testing.T) {
			s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "part one, ")
				w.(http.Flusher).Flush()
				io.WriteString(w, "part two")
			}))
			rc := dialRaw(t, s)
			rc.send("GET / HTTP/1.0\r\n" + host + "Connection: keep-alive\r\n\r\n")
			res, body := rc.read("GET")
			if body != "part one, part two" || len(res.TransferEncoding) != 0 || !res.Close {
				t.Fatalf("got %q TE=%v close=%v", body, res.TransferEncoding, res.Close)
			}
			if !rc.closed() {
				t.Fatal("the connection stayed open after a body that ends with it")
			}
		})
	}
}

func TestServerBodilessResponses(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusNoContent)
			io.WriteString(w, "not sent")
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		}
	}))
	rc := dialRaw(t, s)
	rc.send("HEAD /head HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	res, body := rc.read("HEAD")
	if res.StatusCode != 200 || res.ContentLength != 11 || body != "" {
		t.Fatalf("HEAD: %d CL=%d body=%q", res.StatusCode, res.ContentLength, body)
	}
	res, body = rc.read("GET")
	if res.StatusCode != 204 || res.Header.Get("Content-Length") != "" || body != "" {
		t.Fatalf("204: CL=%q body=%q", res.Header.Get("Content-Length"), body)
	}
	res, body = rc.read("GET")
	if res.StatusCode != 304 || len(res.TransferEncoding) != 0 || body != "" {
		t.Fatalf("304: TE=%v body=%q", res.TransferEncoding, body)
	}
	// Nothing of the bodies leaked into the stream: the next response
	// parses.
	if res, body = rc.read("GET"); res.StatusCode != 200 || body != "hello world" {
		t.Fatalf("after: %d %q", res.StatusCode, body)
	}
}

func TestServerChunkedAndTrailers(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write(b)
		w.(http.Flusher).Flush()
		io.WriteString(w, "|"+r.Trailer.Get("X-In"))
		w.Header().Set("X-Sum", strconv.Itoa(len(b)))
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	}))
	rc := dialRaw(t, s)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-In\r\n\r\n" +
		"5\r\nhello\r\n6\r\n world\r\n0\r\nX-In: given\r\n\r\n")
	res, body := rc.read("POST")
	if body != "hello world|given" || len(res.TransferEncoding) != 1 {
		t.Fatalf("got %q TE=%v", body, res.TransferEncoding)
	}
	if res.Trailer.Get("X-Sum") != "11" || res.Trailer.Get("X-Late") != "yes" {
		t.Fatalf("trailers: %v", res.Trailer)
	}
	if res.Close {
		t.Fatal("a chunked exchange closed the connection")
	}
}

func TestServerRefusesBadRequests(t *testing.T) {
	s := serveGateway(t, echoHandler())
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", 431},
		{"target too long", "GET /" + strings.Repeat("a", 100<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		{"unsupported transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"conflicting lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"host list", "GET / HTTP/1.1\r\nHost: www.example.com,api.example.com\r\n\r\n", 400},
		{"host with two ports", "GET / HTTP/1.1\r\nHost: api.example.com:80:80\r\n\r\n", 400},
		{"absolute target with a bad host", "GET http://a,b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"garbage", "hello there\r\n\r\n", 400},
		{"invalid field name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400},
		{"control character in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
		{"space before the colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A : v\r\n\r\n", 400},
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: v\r\n\r\n", 400},
		{"unknown expectation", "POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na", 417},
		{"chunked with a length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"length with chunked, bare LF", "POST / HTTP/1.1\nHost: x\ntransfer-encoding: chunked\ncontent-length: 3\n\n0\r\n\r\n", 400},
		{"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n", 400},
		// The same past the first read's 4 KB.
		{"chunked with a length, long header", "POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 5000) + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"chunked in HTTP/1.0, long header", "POST / HTTP/1.0\r\nX-Pad: " + strings.Repeat("a", 9000) + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, s)
			rc.send(tc.req)
			res, body := rc.read("GET")
			if res.StatusCode != tc.status || !res.Close {
				t.Fatalf("got %d close=%v, want %d and Connection: close", res.StatusCode, res.Close, tc.status)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q: %s", ct, body)
			}
			if !rc.closed() {
				t.Fatal("the connection stayed open")
			}
		})
	}
}

// TestServerRefusalsLogged: a request the server refuses before any
// handler sees it still gets an access-log line, without its query.
func TestServerRefusalsLogged(t *testing.T) {
	var logs logBuf
	s := serveWith(t, &Server{Handler: echoHandler(), ReadHeaderTimeout: 5 * time.Second, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	for _, req := range []string{
		"POST /smuggle?secret=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na",
		"hello there\r\n\r\n",
		// Escaped as it came: decoded, it would read as a query.
		"POST /escaped%3Faccess_token=1 HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na",
	} {
		rc := dialRaw(t, s)
		rc.send(req)
		rc.read("POST")
	}
	got := logs.String()
	for _, want := range []string{
		`msg="gateway request refused" request_id=req_`,
		`status=400 peer_ip=127.0.0.1 refused="ambiguous message framing`,
		`method=POST path=/smuggle`,
		`status=417`, `path=/expect`,
		`status=400 peer_ip=127.0.0.1 refused="the request could not be read"`,
		`method=POST path="/escaped%3Faccess_token=1"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "secret") {
		t.Errorf("the log has the query string:\n%s", got)
	}
}

// TestServerRefusalsHaveRequestID: a request the server refuses before
// any handler sees it is answered with an X-Request-Id, as every other
// answer is, and its access-log line and problem body carry the same id:
// the client's when its header could be read and the id is well-formed, a
// new one otherwise.
func TestServerRefusalsHaveRequestID(t *testing.T) {
	for _, tt := range []struct {
		name   string
		req    string
		status int
		want   string // the id answered; "" for a new one
	}{
		{"ClientID", "POST /smuggle HTTP/1.1\r\nHost: x\r\nX-Request-Id: probe-1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "probe-1"},
		{"ClientIDExpect", "POST /e HTTP/1.1\r\nHost: x\r\nX-Request-Id: probe-2\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na", 417, "probe-2"},
		{"BadClientID", "POST /e HTTP/1.1\r\nHost: x\r\nX-Request-Id: a b\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na", 417, ""},
		{"Unreadable", "hello there\r\n\r\n", 400, ""},
		{"HeaderTooLarge", "GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: probe-3\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n", 431, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuf
			s := serveWith(t, &Server{Handler: echoHandler(), ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 4096, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
			rc := dialRaw(t, s)
			rc.send(tt.req)
			res, body := rc.read("POST")
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, body)
			}
			id := res.Header.Get("X-Request-Id")
			if tt.want != "" && id != tt.want || tt.want == "" && (!strings.HasPrefix(id, "req_") || len(id) != 36) {
				t.Errorf("X-Request-Id %q, want %q (\"\": a new req_ id)", id, tt.want)
			}
			var p map[string]any
			if err := json.Unmarshal([]byte(body), &p); err != nil || p["request_id"] != id {
				t.Errorf("body %s: want request_id %q", body, id)
			}
			var line map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "gateway request refused" {
					line = m
				}
			}
			if line == nil || line["request_id"] != id || line["status"] != float64(tt.status) || line["peer_ip"] != "127.0.0.1" {
				t.Errorf("access-log line %v, want request_id %q, status %d and peer_ip 127.0.0.1", line, id, tt.status)
			}
		})
	}
}

// TestServerHeaderLimit: a header (request line included) of exactly
// MaxHeaderBytes is read, one byte more is refused with 431, however it
// arrives.
func TestServerHeaderLimit(t *testing.T) {
	s := serveGateway(t, echoHandler()) // MaxHeaderBytes 64 KB
	head := func(n int) string {
		prefix := "GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: "
		return prefix + strings.Repeat("a", n-len(prefix)) + "\r\n\r\n"
	}
	for _, c := range []struct {
		size, status int
	}{{64 << 10, 200}, {64<<10 + 1, 431}, {64<<10 + 3000, 431}} {
		rc := dialRaw(t, s)
		rc.send(head(c.size))
		if res, _ := rc.read("GET"); res.StatusCode != c.status {
			t.Errorf("a %d-byte header: %d, want %d", c.size, res.StatusCode, c.status)
		}
	}
}

func TestServerExpectContinue(t *testing.T) {
	s := serveGateway(t, echoHandler())
	rc := dialRaw(t, s)
	rc.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil || res.StatusCode != 100 {
		t.Fatalf("got %v %v, want 100 Continue before the body", res, err)
	}
	rc.send("body")
	if res, body := rc.read("POST"); res.StatusCode != 200 || body != "/upbody" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	// An HTTP/1.0 client's expectation is ignored (RFC 9110 §10.1.1): no
	// 100, no 417; its body, sent at once, is read.
	rc = dialRaw(t, s)
	rc.send("POST /old HTTP/1.0\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbody")
	if res, body := rc.read("POST"); res.StatusCode != 200 || body != "/oldbody" {
		t.Fatalf("HTTP/1.0: got %d %q, want 200", res.StatusCode, body)
	}

	// A handler that answers without reading: no 100, and the connection
	// closes (the client has not sent its body, nor will it).
	s = serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}))
	rc = dialRaw(t, s)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\nExpect: 100-continue\r\n\r\n")
	if res, _ := rc.read("POST"); res.StatusCode != 413 || !res.Close {
		t.Fatalf("got %d close=%v, want 413 and Connection: close", res.StatusCode, res.Close)
	}
}

func TestServerUnreadBody(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ignored the body")
	}))
	// A small unread body is read away and the connection kept.
	rc := dialRaw(t, s)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	for range 2 {
		if res, body := rc.read("POST"); res.StatusCode != 200 || body != "ignored the body" || res.Close {
			t.Fatalf("got %d %q close=%v", res.StatusCode, body, res.Close)
		}
	}
	// A large one is not waited for: the connection closes.
	rc = dialRaw(t, s)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
	go io.Copy(rc.c, io.LimitReader(zeros{}, 10000000))
	res, _ := rc.read("POST")
	if res.StatusCode != 200 || !res.Close {
		t.Fatalf("got %d close=%v, want 200 and Connection: close", res.StatusCode, res.Close)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestServerShortBodyClosesConnection(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "short")
	}))
	rc := dialRaw(t, s)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(res.Body); string(b) != "short" || err != io.ErrUnexpectedEOF {
		t.Fatalf("got %q %v, want the short body cut by the close", b, err)
	}
}

func TestServerSanitizesFields(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Inject"] = []string{"a\r\nSet-Cookie: evil=1"}
		w.Header()["Bad Name"] = []string{"x"}
		io.WriteString(w, "ok")
	}))
	rc := dialRaw(t, s)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, _ := rc.read("GET")
	if res.Header.Get("Set-Cookie") != "" || res.Header.Get("X-Inject") != "a  Set-Cookie: evil=1" {
		t.Fatalf("header: %v", res.Header)
	}
	if _, ok := res.Header["Bad Name"]; ok {
		t.Fatal("a field with an invalid name went out")
	}
}

func TestServerPanic(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	s := serveWith(t, &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/abort" {
				panic(http.ErrAbortHandler)
			}
			panic("boom")
		}),
		Log: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logged.Write(p)
		}), nil)),
	})
	for _, path := range []string{"/abort", "/boom"} {
		rc := dialRaw(t, s)
		rc.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		if !rc.closed() {
			t.Fatalf("%s: the connection stayed open", path)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Count(logged.String(), "gateway handler panic") != 1 || !strings.Contains(logged.String(), "boom") {
		t.Fatalf("log: %s", logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestServerTimeouts(t *testing.T) {
	var logs logBuf
	s := serveWith(t, &Server{Handler: echoHandler(), ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Second,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})

	// A header that never ends (a slowloris client): 408, logged.
	rc := dialRaw(t, s)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n")
	if res, _ := rc.read("GET"); res.StatusCode != http.StatusRequestTimeout {
		t.Errorf("a partial header: status %d, want 408", res.StatusCode)
	}
	if !rc.closed() {
		t.Fatal("a partial header kept the connection")
	}
	if got := logs.String(); !strings.Contains(got, `status=408 peer_ip=127.0.0.1 refused="the request header did not arrive in time"`) {
		t.Errorf("the partial header was not logged:\n%s", got)
	}
	// Cut off within the request line or a field's name, which the line
	// reader hands back short and without the timeout: 408 all the same.
	for _, partial := range []string{"G", "GET /ord", "GET / HTTP/1.1\r\nHost: x\r\nX-A"} {
		rc := dialRaw(t, s)
		rc.send(partial)
		if res, _ := rc.read("GET"); res.StatusCode != http.StatusRequestTimeout {
			t.Errorf("%q then nothing: status %d, want 408", partial, res.StatusCode)
		}
	}
	refused := strings.Count(logs.String(), "request refused")
	// A connection that never sends anything: closed, not logged.
	rc = dialRaw(t, s)
	if !rc.closed() {
		t.Fatal("a silent connection was kept")
	}
	if n := strings.Count(logs.String(), "request refused"); n != refused {
		t.Errorf("%d refusals logged, want %d (a silent connection is no request):\n%s", n, refused, logs.String())
	}
	// A kept-alive connection, after the idle timeout; one used within
	// it serves on.
	rc = dialRaw(t, s)
	for range 3 {
		rc.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := rc.read("GET"); body != "/a" {
			t.Fatalf("got %q", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !rc.closed() {
		t.Fatal("an idle connection was kept past the idle timeout")
	}
	if n := strings.Count(logs.String(), "request refused"); n != refused {
		t.Errorf("%d refusals logged, want %d (an idle connection is no request):\n%s", n, refused, logs.String())
	}
}

func TestServerShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s := &testServer{URL: "http://" + ln.Addr().String(), srv: srv}

	idle := dialRaw(t, s)
	idle.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.read("GET")
	busy := dialRaw(t, s)
	busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Fatal("Shutdown left an idle connection open")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	res, body := busy.read("GET")
	if body != "done" || !res.Close {
		t.Fatalf("in-flight request: %q close=%v", body, res.Close)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Fatalf("Serve returned %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the listener still accepts")
	}
}

func TestServerHijack(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo: " + line)
		brw.Flush()
	}))
	rc := dialRaw(t, s)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello\n")
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("got %v %v", res, err)
	}
	if line, _ := rc.br.ReadString('\n'); line != "echo: hello\n" {
		t.Fatalf("got %q", line)
	}
}

func TestServerFullDuplex(t *testing.T) {
	// A handler that answers first and reads the body after, as a
	// bidirectional stream does, once it asked for full duplex.
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			t.Error(err)
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "got "+line)
			w.(http.Flusher).Flush()
		}
	}))
	rc := dialRaw(t, s)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("got %v %v", res, err)
	}
	br := bufio.NewReader(res.Body)
	for _, msg := range []string{"one\n", "two\n"} {
		rc.send(fmt.Sprintf("%x\r\n%s\r\n", len(msg), msg))
		if line, err := br.ReadString('\n'); line != "got "+msg {
			t.Fatalf("got %q %v", line, err)
		}
	}
	rc.send("0\r\n\r\n")
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
		t.Fatalf("after the body: %q %v", rest, err)
	}
}

func TestServerStatusLines(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
	}))
	rc := dialRaw(t, s)
	for code, want := range map[int]string{200: "200 OK", 404: "404 Not Found", 299: "299 status code 299", 599: "599 status code 599", 418: "418 I'm a teapot"} {
		rc.send(fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", code))
		if res, _ := rc.read("GET"); res.StatusCode != code || res.Status != want {
			t.Errorf("got %d %q, want %q", res.StatusCode, res.Status, want)
		}
	}
}

func TestScanFraming(t *testing.T) {
	for _, tc := range []struct {
		head string
		want framing
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", framing{complete: true}},
		{"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", framing{cl: true, complete: true}},
		{"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\n\r\n", framing{te: true, complete: true}},
		// A continuation line is part of the field before it.
		{"POST / HTTP/1.1\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n", framing{complete: true}},
		// Fields after the header's end are the body's bytes.
		{"POST / HTTP/1.1\r\n\r\nTransfer-Encoding: chunked\r\n", framing{complete: true}},
		{"POST / HTTP/1.1\r\nContent-Length: 3\r\nX-Long: aaa", framing{cl: true}},
	} {
		if got := scanFraming([]byte(tc.head)); got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.head, got, tc.want)
		}
	}
}

// TestServerBodyOutlivesRequest has a handler hand its request body to a
// goroutine that reads it after the response: once the connection serves
// the next request, it must find the body closed (not that request's
// body), and the next request's body must reach that request whole. (As
// with net/http, the body is closed just after the response is sent, so a
// read between the two may still see the old body's end.)
func TestServerBodyOutlivesRequest(t *testing.T) {
	kept := make(chan io.Reader, 1)
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keep" {
			kept <- r.Body
			io.WriteString(w, "kept")
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	rc := dialRaw(t, s)
	rc.send("POST /keep HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if _, body := rc.read("POST"); body != "kept" {
		t.Fatalf("got %q", body)
	}
	body := <-kept
	rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if _, got := rc.read("POST"); got != "hello" {
		t.Fatalf("the next request's body arrived as %q", got)
	}
	if n, err := body.Read(make([]byte, 10)); n != 0 || err != http.ErrBodyReadAfterClose {
		t.Fatalf("a late read got %d, %v; want ErrBodyReadAfterClose", n, err)
	}
}

// TestServerStalledBody: a request refused before its body was read is
// answered at once, not after the client sent the rest of the body (or
// the header timeout passed), and the connection is kept: the rest of the
// body is read away after the response. A client that never sends it
// loses the connection after the header timeout.
func TestServerStalledBody(t *testing.T) {
	refuse := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(r.Method)))
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, r.Method)
	})
	t.Run("Resumed", func(t *testing.T) {
		// The header timeout outlasts the client's own deadline: an
		// answer that waited for the body would never come.
		rc := dialRaw(t, serveWith(t, &Server{Handler: refuse, ReadHeaderTimeout: time.Hour}))
		rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
		res, body := rc.read("POST")
		if res.StatusCode != 401 || body != "POST" || res.Close {
			t.Fatalf("got %d %q close=%v, want 401 POST, kept", res.StatusCode, body, res.Close)
		}
		// The rest of the body, then the next request on the same
		// connection.
		rc.send("defghijPUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
		if res, body := rc.read("PUT"); res.StatusCode != 401 || body != "PUT" {
			t.Fatalf("the next request: got %d %q", res.StatusCode, body)
		}
	})
	t.Run("Stalled", func(t *testing.T) {
		rc := dialRaw(t, serveWith(t, &Server{Handler: refuse, ReadHeaderTimeout: 300 * time.Millisecond}))
		rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
		if res, _ := rc.read("POST"); res.StatusCode != 401 {
			t.Fatalf("got %d, want 401", res.StatusCode)
		}
		if !rc.closed() {
			t.Fatal("the connection stayed open")
		}
	})
	t.Run("Chunked", func(t *testing.T) {
		// A chunked body may be of any length: answered at once too, but
		// with Connection: close, keep-alive being a promise that reading
		// the rest away could break.
		rc := dialRaw(t, serveWith(t, &Server{Handler: refuse, ReadHeaderTimeout: time.Hour}))
		rc.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
		if res, _ := rc.read("POST"); res.StatusCode != 401 || !res.Close {
			t.Fatalf("got %d close=%v, want 401 and Connection: close", res.StatusCode, res.Close)
		}
		if _, err := io.WriteString(rc.c, "2\r\nde\r\n0\r\n\r\n"); err != nil {
			t.Fatalf("the rest of the body: %v (the close did not linger)", err)
		}
	})
	t.Run("ConnectionClose", func(t *testing.T) {
		// The client asked to close: nothing is read away, and the
		// close lingers so that the rest of the body does not reset the
		// answer away.
		rc := dialRaw(t, serveWith(t, &Server{Handler: refuse, ReadHeaderTimeout: time.Hour}))
		rc.send("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc")
		if res, body := rc.read("POST"); res.StatusCode != 401 || body != "POST" || !res.Close {
			t.Fatalf("got %d %q close=%v, want 401 and Connection: close", res.StatusCode, body, res.Close)
		}
		if _, err := io.WriteString(rc.c, "defghij"); err != nil {
			t.Fatalf("the rest of the body: %v", err)
		}
	})
}

// TestServerLingeringClose: a connection closed with a request body
// left unread is shut for writing first and what the client still sends
// is read away for a while, so that the kernel does not reset it under a
// client still sending (which, off loopback, can cost it the answer).
func TestServerLingeringClose(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "6")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "denied")
	}))
	rc := dialRaw(t, s)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n")
	res, body := rc.read("POST")
	if res.StatusCode != 401 || body != "denied" || !res.Close {
		t.Fatalf("got %d %q close=%v", res.StatusCode, body, res.Close)
	}
	chunk := make([]byte, 32<<10)
	for i := range 5 {
		if _, err := rc.c.Write(chunk); err != nil {
			t.Fatalf("write %d of the rest of the body: %v (the server reset the connection)", i, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestServerInformational(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "ok")
	}))
	rc := dialRaw(t, s)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil || res.StatusCode != 103 || res.Header.Get("Link") == "" || res.Header.Get("Content-Length") != "" {
		t.Fatalf("got %v %v; want 103 with Link and without Content-Length", res, err)
	}
	if res, body := rc.read("GET"); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	// An HTTP/1.0 client gets the final response only.
	rc = dialRaw(t, s)
	rc.send("GET / HTTP/1.0\r\n\r\n")
	if res, body := rc.read("GET"); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("HTTP/1.0: got %d %q", res.StatusCode, body)
	}
}

// inFlight serves a handler that holds its request until release is
// closed, and returns a connection with such a request in the handler.
func inFlight(t *testing.T) (s *testServer, rc *rawConn, release chan struct{}) {
	t.Helper()
	started := make(chan struct{})
	release = make(chan struct{})
	s = serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	rc = dialRaw(t, s)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	return s, rc, release
}

func TestServerShutdownTwice(t *testing.T) {
	s, _, release := inFlight(t)
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- s.srv.Shutdown(context.Background()) }()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a Shutdown did not return after the last request ended")
		}
	}
}

// TestSimpleRequestLikeReadRequest builds random requests and wants every
// one the fast parser takes to come out as http.ReadRequest reads it,
// and to take the same bytes.
func TestSimpleRequestLikeReadRequest(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	targets := []string{"/", "/orders/1", "/a/b?x=1&y=2", "/a!b", "/a(b)", "/a%20b", "/a?q=a%20b", "/a?", "/a?b?c", "/a#f", "*",
		"http://h/x", "/a b", "/é", "/$&+,;=:@", "/a/./b", "/a?q='x'", "/~u/_-.", "//x", "/a?x=[1]"}
	good := []string{"Host: h", "Host: h:8080", "host: H", "Authorization: Bearer t", "authorization:   Bearer  t  ",
		"X-A: 1", "x-a: 2", "X-Odd_Name: v", "X-A:\tv\t", "Content-Length: 0", "content-length:0", "Connection: close",
		"Connection: keep-alive, Close", "Connection: keep-alive", "Accept: */*", "X-C: é", "Cookie: a=1; b=2",
		"X-Empty:", "X-Request-Id: req_1", "user-agent: t/1.0", "Content-Length: 3", "content-length: 022"}
	// The request is followed by 22 bytes (the next request): a longer
	// body is not all there.
	bad := []string{"Host:", "Host: a b", "Content-Length: 23", "Content-Length: +3", "Content-Length: 3 3",
		"Content-Length: -1", "Content-Length: 0x3", "Transfer-Encoding: chunked", "Expect: 100-continue",
		"Pragma: no-cache", "Bad Name: v", "X-B: a\x00b", " folded", "X-D: a\rb"}
	taken, bodies := 0, 0
	for i := range 20000 {
		var b strings.Builder
		b.WriteString(pick("GET", "GET", "POST", "HEAD", "DELETE", "PATCH", "G@T", "get"))
		b.WriteString(" " + pick(targets...) + " ")
		b.WriteString(pick("HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"))
		b.WriteString("\r\n")
		if rng.IntN(10) > 0 {
			b.WriteString(pick("Host: h\r\n", "host: example.com:443\r\n"))
		}
		for range rng.IntN(6) {
			f := pick(good...)
			if rng.IntN(8) == 0 {
				f = pick(bad...)
			}
			b.WriteString(f)
			if rng.IntN(20) == 0 {
				b.WriteString("\n")
			} else {
				b.WriteString("\r\n")
			}
		}
		b.WriteString("\r\nGET /next HTTP/1.1\r\n\r\n")
		raw := b.String()
		got, n, ok := parseSimpleRequest([]byte(raw), 1<<20)
		if !ok {
			continue
		}
		taken++
		br := bufio.NewReader(strings.NewReader(raw))
		want, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("%d %q: the fast parser took what ReadRequest refuses: %v", i, raw, err)
		}
		if (got.Body == http.NoBody) != (want.Body == http.NoBody) {
			t.Fatalf("%q: body %T, ReadRequest's %T", raw, got.Body, want.Body)
		}
		gotBody, err1 := io.ReadAll(got.Body)
		wantBody, err2 := io.ReadAll(want.Body)
		if err1 != nil || err2 != nil || string(gotBody) != string(wantBody) {
			t.Fatalf("%q: body %q (%v), ReadRequest's %q (%v)", raw, gotBody, err1, wantBody, err2)
		}
		if len(gotBody) > 0 {
			bodies++
		}
		if rest := len(raw) - br.Buffered(); n != rest {
			t.Fatalf("%q: the fast parser took %d bytes, ReadRequest %d", raw, n, rest)
		}
		if got.Method != want.Method || *got.URL != *want.URL || got.Proto != want.Proto ||
			got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor || got.Host != want.Host ||
			got.ContentLength != want.ContentLength || got.Close != want.Close || got.RequestURI != want.RequestURI ||
			len(want.TransferEncoding) != 0 || !reflect.DeepEqual(got.Header, want.Header) {
			t.Fatalf("%q:\n got %+v %+v\nwant %+v %+v", raw, got, got.URL, want, want.URL)
		}
	}
	if taken < 1000 || bodies < 100 {
		t.Fatalf("the fast parser took %d requests of 20000, %d with a body", taken, bodies)
	}
	t.Logf("the fast parser took %d requests of 20000, %d with a body", taken, bodies)
}

// TestServerSendTimeout: a client that stops reading does not hold the
// handler for ever; one that reads slowly, with pauses longer than the
// timeout between the handler's writes, gets everything.
func TestServerSendTimeout(t *testing.T) {
	failed := make(chan error, 1)
	s := serveWith(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 32<<10)
		if r.URL.Path == "/slow" {
			for range 5 {
				if _, err := w.Write(chunk[:100]); err != nil {
					t.Error(err)
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(150 * time.Millisecond)
			}
			return
		}
		for range 2000 { // 64 MB, far beyond the socket buffers
			if _, err := w.Write(chunk); err != nil {
				failed <- err
				return
			}
		}
		failed <- nil
	}), SendTimeout: 100 * time.Millisecond})

	rc := dialRaw(t, s)
	rc.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	if res, body := rc.read("GET"); res.StatusCode != 200 || len(body) != 500 {
		t.Fatalf("slow stream: %d, %d bytes", res.StatusCode, len(body))
	}

	stuck := dialRaw(t, s)
	stuck.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the handler's write ended with %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client that does not read held the handler")
	}
}

// TestServerBodyTimeout: a client that stops sending in the middle of a
// body does not hold the handler reading it; one that sends with pauses
// shorter than the timeout, for longer than it in all, is read whole.
func TestServerBodyTimeout(t *testing.T) {
	readErr := make(chan error, 1)
	s := serveWith(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if r.URL.Path == "/stall" {
			readErr <- err
		}
		if err != nil {
			http.Error(w, "body", http.StatusBadRequest)
			return
		}
		w.Write(b)
	}), BodyTimeout: 200 * time.Millisecond})

	rc := dialRaw(t, s)
	rc.send("POST /steady HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
	for _, c := range "hello" {
		time.Sleep(60 * time.Millisecond)
		rc.send(string(c))
	}
	if res, body := rc.read("POST"); res.StatusCode != 200 || body != "hello" {
		t.Fatalf("steady body: %d %q", res.StatusCode, body)
	}

	stall := dialRaw(t, s)
	stall.send("POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the handler's read ended with %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client that stopped sending its body held the handler")
	}
	if res, _ := stall.read("POST"); res.StatusCode != 400 || !res.Close {
		t.Fatalf("got %d close=%v", res.StatusCode, res.Close)
	}
}

func TestKeepDeadline(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	want := now.Add(time.Second)
	for _, c := range []struct {
		armed time.Time
		keep  bool
	}{
		{time.Time{}, false},                       // none armed
		{now.Add(-time.Millisecond), false},        // passed
		{now, false},                               // passing now
		{want, true},                               // exactly
		{want.Add(-125 * time.Millisecond), true},  // an eighth early
		{want.Add(-126 * time.Millisecond), false}, // more
		{want.Add(time.Millisecond), false},        // later than wanted
		{now.Add(900 * time.Millisecond), true},    // within the eighth
		{now.Add(800 * time.Millisecond), false},   // beyond it
	} {
		if got := keepDeadline(c.armed, now, want, time.Second); got != c.keep {
			t.Errorf("keepDeadline(armed %v after now) = %v, want %v", c.armed.Sub(now), got, c.keep)
		}
	}
}

// TestServerRequestDuringHandler: a request that arrives while the one
// before it is being handled (pipelined, in a packet of its own) is
// answered at once. The server reads a kept-alive connection without the
// read that finds nothing (serveInline): were the poller's signal for the
// second request lost, the connection would wait for the idle timeout.
func TestServerRequestDuringHandler(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			close(started)
			<-release
		}
		io.WriteString(w, r.URL.Path)
	}))
	rc := dialRaw(t, s)
	rc.send("GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := rc.read("GET"); body != "/warm" {
		t.Fatalf("got %q", body)
	}
	rc.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	rc.send("GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(100 * time.Millisecond) // the second request is in the socket
	close(release)
	rc.c.SetReadDeadline(time.Now().Add(3 * time.Second)) // the idle timeout is a minute
	for _, want := range []string{"/first", "/second"} {
		if res, body := rc.read("GET"); res.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", res.StatusCode, body, want)
		}
	}
	// And a request whose header comes in two packets.
	rc.send("GET /split HTTP/1.1\r\nHo")
	time.Sleep(50 * time.Millisecond)
	rc.send("st: x\r\n\r\n")
	if _, body := rc.read("GET"); body != "/split" {
		t.Fatalf("got %q", body)
	}
}

// TestServerHijackNeedsUpgrade: only a request with an Upgrade field can
// take its connection over; any other gets an error from Hijack and is
// answered as usual (TestServerHijack covers the upgrade).
func TestServerHijackNeedsUpgrade(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := w.(http.Hijacker).Hijack(); err == nil {
			t.Error("Hijack of a request without Upgrade succeeded")
			return
		}
		io.WriteString(w, "kept")
	}))
	rc := dialRaw(t, s)
	for range 2 {
		rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if res, body := rc.read("GET"); res.StatusCode != 200 || body != "kept" {
			t.Fatalf("got %d %q", res.StatusCode, body)
		}
	}
}

// TestServerCloseInFlight: Close returns at once while a handler runs,
// and the handler's client sees its connection closed, with no response,
// once the handler returns.
func TestServerCloseInFlight(t *testing.T) {
	s, rc, release := inFlight(t)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		close(release)
		t.Fatal("Close waited for a handler")
	}
	close(release)
	if !rc.closed() {
		t.Fatal("the connection of a request in flight outlived Close")
	}
}

// TestServerLargeResponseSlowReader: a response larger than the socket
// takes at once reaches a client that starts reading late, whole, whether
// it is written in pieces or at once.
func TestServerLargeResponseSlowReader(t *testing.T) {
	const size = 8 << 20
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i % 251)
		}
		if r.URL.Path == "/whole" {
			w.Write(body)
			return
		}
		for len(body) > 0 {
			n := min(len(body), 32<<10)
			w.Write(body[:n])
			body = body[n:]
		}
	}))
	rc := dialRaw(t, s)
	for _, path := range []string{"/pieces", "/whole", "/pieces"} {
		rc.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(200 * time.Millisecond)
		res, body := rc.read("GET")
		if res.StatusCode != 200 || len(body) != size {
			t.Fatalf("%s: got %d, %d bytes", path, res.StatusCode, len(body))
		}
		for i := range len(body) {
			if body[i] != byte(i%251) {
				t.Fatalf("%s: byte %d is %d, want %d", path, i, body[i], i%251)
			}
		}
	}
}

// validHost takes host names, IPv4 and bracketed IPv6 addresses with an
// optional port, and nothing an upstream could read as another host.
func TestValidHost(t *testing.T) {
	for _, h := range []string{"", "api.example.com", "API.Example.com.", "api.example.com:8080", "api.example.com:", "127.0.0.1:80",
		"[::1]", "[::1]:8443", "[2001:db8::1]", "[::ffff:127.0.0.1]:1", "in_ternal-host~1"} {
		if !validHost(h) {
			t.Errorf("validHost(%q) = false", h)
		}
	}
	for _, h := range []string{"www.example.com,api.example.com", "api.example.com:80:80", "api.example.com:8o", "api.example.com:123456",
		":80", "[]", "[::1", "[::1]x", "api.example.com..", ".api.example.com", "a..b:80", "[::1]:a", "[fe80::1%25eth0]", "[v1.x]", "a b", "a/b", "a@b", "a%2eb", "a;b", "api.example.com\\x00"} {
		if validHost(h) {
			t.Errorf("validHost(%q) = true", h)
		}
	}
}

// TestConnectionTokenASCII: Connection's tokens are compared as net/http
// compares them, but for the case of ASCII letters only, on the fast path
// too: "\u212Aeep-alive" (a Kelvin sign) does not keep an HTTP/1.0
// connection, and "clo\u017Fe" (a long s) does not close one.
func TestConnectionTokenASCII(t *testing.T) {
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	}))
	rc := dialRaw(t, s)
	rc.send("GET /a HTTP/1.0\r\nHost: h\r\nConnection: \u212Aeep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
	if res, body := rc.read("GET"); res.StatusCode != 200 || body != "ok" || res.Close != true {
		t.Fatalf("HTTP/1.0 with a Kelvin sign: %d %q close=%v, want 200 \"ok\" and close", res.StatusCode, body, res.Close)
	}
	if !rc.closed() {
		t.Fatal("the connection was not closed")
	}
	rc = dialRaw(t, s)
	rc.send("GET /a HTTP/1.1\r\nHost: h\r\nConnection: clo\u017Fe\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	for i := range 2 {
		if res, body := rc.read("GET"); res.StatusCode != 200 || body != "ok" || res.Close != (i == 1) {
			t.Fatalf("HTTP/1.1 response %d with a long s: %d %q close=%v", i, res.StatusCode, body, res.Close)
		}
	}
	for _, tc := range []struct {
		vv    []string
		token string
		want  bool
	}{
		{[]string{"close"}, "close", true},
		{[]string{"Keep-Alive, CLOSE"}, "close", true},
		{[]string{"x", "\t close \t"}, "close", true},
		{[]string{"clo\u017Fe"}, "close", false},
		{[]string{"\u212Aeep-alive"}, "keep-alive", false},
		{[]string{"web\u017Focket"}, "websocket", false},
		{[]string{"close;q=1", "\"close\""}, "close", false},
	} {
		if got := headerHasToken(tc.vv, tc.token); got != tc.want {
			t.Errorf("headerHasToken(%q, %q) = %v, want %v", tc.vv, tc.token, got, tc.want)
		}
	}
}
