package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// h2cClient speaks HTTP/2 over clear text with prior knowledge.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestServerH2C: a client that opens with the HTTP/2 preface is served
// HTTP/2 on the same listener as HTTP/1.1 clients: many streams at once
// on one connection, request bodies both ways, the client's address, and
// a graceful shutdown that lets a stream in flight finish.
func TestServerH2C(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q %v %t", r.Proto, r.URL.Path, b, err, strings.HasPrefix(r.RemoteAddr, "127.0.0.1:"))
	}))
	hc := h2cClient(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat("x", i*1000)
			res, err := hc.Post(s.URL+fmt.Sprintf("/p%d", i), "text/plain", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if want := fmt.Sprintf("HTTP/2.0 /p%d %q <nil> true", i, body); res.ProtoMajor != 2 || string(b) != want {
				t.Errorf("HTTP/%d %.60q, want %.60q", res.ProtoMajor, b, want)
			}
		}()
	}
	wg.Wait()

	// HTTP/1.1 on the same listener.
	res, err := http.Get(s.URL + "/h1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != `HTTP/1.1 /h1 "" <nil> true` {
		t.Fatalf("HTTP/1.1: %q", b)
	}

	// A preface that comes in pieces, then a garbled one.
	c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, h2cPreface[:5])
	time.Sleep(50 * time.Millisecond)
	io.WriteString(c, h2cPreface[5:])
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	frame := make([]byte, 9)
	if _, err := io.ReadFull(c, frame); err != nil || frame[3] != 0x4 {
		t.Fatalf("after a split preface: frame %x, %v; want the server's SETTINGS", frame, err)
	}
	rc := dialRaw(t, s)
	rc.send("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
	if res, _ := rc.read("PRI"); res.StatusCode != http.StatusBadRequest {
		t.Fatalf("a garbled preface: %d", res.StatusCode)
	}

	// Shutdown waits for the stream in flight.
	done := make(chan string, 1)
	go func() {
		res, err := hc.Get(s.URL + "/slow")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- string(b)
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned before the stream in flight ended: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if got := <-done; got != `HTTP/2.0 /slow "" <nil> true` {
		t.Fatalf("the stream in flight got %q", got)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestServerH2CShutdown: Shutdown tells HTTP/2 clients to go away at once,
// while an HTTP/1.1 request is still in flight, rather than serving their
// new streams until the last HTTP/1.1 connection has ended.
func TestServerH2CShutdown(t *testing.T) {
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	s := serveGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		io.WriteString(w, r.Proto)
	}))
	hc := h2cClient(t)
	get := func() (string, error) {
		res, err := hc.Get(s.URL + "/")
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	if got, err := get(); got != "HTTP/2.0" || err != nil {
		t.Fatalf("before Shutdown: %q %v", got, err)
	}
	rc := dialRaw(t, s)
	rc.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	<-held
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	if got, err := get(); err == nil {
		t.Fatalf("a new HTTP/2 stream during Shutdown was served: %q", got)
	}
	close(release)
	if res, body := rc.read("GET"); res.StatusCode != 200 || body != "HTTP/1.1" {
		t.Fatalf("the HTTP/1.1 request in flight: %d %q", res.StatusCode, body)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestServerShortRequestLikePreface: an HTTP/1 request that starts like
// the HTTP/2 preface and is shorter than it is answered as soon as it
// differs, not after the header timeout.
func TestServerShortRequestLikePreface(t *testing.T) {
	s := serveWith(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method)
	}), ReadHeaderTimeout: 30 * time.Second})
	rc := dialRaw(t, s) // its reads give up after 10 s, long before 30
	rc.send("P")
	time.Sleep(50 * time.Millisecond)
	rc.send("UT / HTTP/1.0\r\n\r\n") // 18 bytes in all
	if res, body := rc.read("PUT"); res.StatusCode != 200 || body != "PUT" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
}

// TestServerH2CHTTP2Config: the server's HTTP2 settings reach the
// clear-text HTTP/2 server: its CountError hears of a stream the client
// opened on an even id, which net/http refuses before the handler.
func TestServerH2CHTTP2Config(t *testing.T) {
	var mu sync.Mutex
	var kinds []string
	s := serveWith(t, &Server{Handler: http.NotFoundHandler(), HTTP2: &http.HTTP2Config{CountError: func(kind string) {
		mu.Lock()
		defer mu.Unlock()
		kinds = append(kinds, kind)
	}}})
	c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := append([]byte(h2cPreface), h2Frame(h2FrameSettings, 0, 0, nil)...)
	msg = append(msg, h2Frame(h2FrameHeaders, h2FlagEndStream|0x4, 2, []byte{0x82, 0x86, 0x84})...)
	c.Write(msg)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c) // SETTINGS, GOAWAY, the end
	mu.Lock()
	defer mu.Unlock()
	if len(kinds) != 1 || kinds[0] != "conn_PROTOCOL_ERROR_headers_even" {
		t.Errorf("CountError got %q", kinds)
	}
}
