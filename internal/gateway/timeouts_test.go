package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// serveTLS serves h with ClientTimeouts of 300 ms over TLS, with HTTP/2
// or without.
func serveTLS(t *testing.T, h http.Handler, h2 bool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(ClientTimeouts(h, 300*time.Millisecond, 300*time.Millisecond))
	s.EnableHTTP2 = h2
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// TestClientTimeoutsUnreadBody: a handler that answers without reading
// the body, to a client that stalls in it, over HTTP/1.1: net/http reads
// the rest away before the answer goes out, and that read is bounded by
// the body timeout too.
func TestClientTimeoutsUnreadBody(t *testing.T) {
	s := serveTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "no")
	}), false)
	c, err := tls.Dial("tcp", s.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer in 5 s: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if res.StatusCode != 401 || string(b) != "no" || err != nil || !res.Close {
		t.Fatalf("%d %q %v close=%v", res.StatusCode, b, err, res.Close)
	}
}

// TestClientTimeoutsFinalFlush: over HTTP/2 a handler's last bytes are
// sent by net/http after it returned; a client that takes none of them
// (its flow-control window full) has its stream reset after the send
// timeout rather than holding it for ever, so that what it reads later
// ends in an error, not the whole body.
func TestClientTimeoutsFinalFlush(t *testing.T) {
	returned := make(chan struct{})
	s := serveTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		w.Write(make([]byte, 4<<20)) // the client's stream window
		w.Write(make([]byte, 1000))
	}), true)
	res, err := s.Client().Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d", res.ProtoMajor)
	}
	<-returned
	time.Sleep(time.Second)
	n, err := io.Copy(io.Discard, res.Body)
	if err == nil {
		t.Fatalf("read all %d bytes: the stream waited on its client after the handler", n)
	}
}

// TestClientTimeoutsHijack: a handler that hijacks the connection and
// hands it to a goroutine that answers later than the send timeout: the
// timeouts leave a hijacked connection alone.
func TestClientTimeoutsHijack(t *testing.T) {
	s := serveTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		go func() {
			defer c.Close()
			time.Sleep(600 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		}()
	}), false)
	res, err := s.Client().Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "ok" || err != nil {
		t.Fatalf("%d %q %v", res.StatusCode, b, err)
	}
}
