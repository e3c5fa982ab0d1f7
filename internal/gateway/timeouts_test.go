package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"slices"
	"strings"
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

// h2Frame is one HTTP/2 frame (RFC 9113 §4.1) as sent on the wire.
func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
	return append(b, payload...)
}

const (
	h2FrameHeaders  = 0x1
	h2FrameSettings = 0x4
	h2FlagEndStream = 0x1
)

// TestHTTP2HeaderTimeout: an HTTP/2 client, over TLS or clear text, that
// sends the preface and then no request, or starts a header block and
// never ends it, is cut off after the header timeout, not the idle
// timeout (a minute here); a connection that had a request stays open
// past the header timeout for the next one.
func TestHTTP2HeaderTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	tlsSrv := httptest.NewUnstartedServer(h)
	tlsSrv.EnableHTTP2 = true
	tlsSrv.Config.ReadHeaderTimeout = timeout
	tlsSrv.Config.IdleTimeout = time.Minute
	tlsSrv.Config.ConnState = HTTP2HeaderTimeout(timeout)
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	h2c := serveWith(t, &Server{Handler: h, ReadHeaderTimeout: timeout, IdleTimeout: time.Minute})

	dial := map[string]func(t *testing.T) net.Conn{
		"TLS": func(t *testing.T) net.Conn {
			c, err := tls.Dial("tcp", tlsSrv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			if err != nil {
				t.Fatal(err)
			}
			if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
				t.Fatalf("negotiated %q", p)
			}
			return c
		},
		"H2C": func(t *testing.T) net.Conn {
			c, err := net.Dial("tcp", strings.TrimPrefix(h2c.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	}
	// A header block: :method GET, :scheme https, :path / (HPACK static
	// table entries), with no END_HEADERS flag and no CONTINUATION.
	unended := h2Frame(h2FrameHeaders, h2FlagEndStream, 1, []byte{0x82, 0x87, 0x84})
	for _, proto := range []string{"TLS", "H2C"} {
		for _, tc := range []struct {
			name string
			send []byte
		}{
			{"NoRequest", nil},
			{"UnendedHeaderBlock", unended},
		} {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				c := dial[proto](t)
				defer c.Close()
				msg := append([]byte(h2cPreface), h2Frame(h2FrameSettings, 0, 0, nil)...)
				if _, err := c.Write(append(msg, tc.send...)); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := io.Copy(io.Discard, c) // the server's SETTINGS, then the end
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the connection was still open after 10 s (%d bytes read)", n)
				}
			})
		}
	}
	t.Run("KeptAfterRequest", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		for _, url := range []string{tlsSrv.URL, h2c.URL} {
			var reused []bool
			for i := range 2 {
				if i > 0 {
					time.Sleep(3 * timeout) // idle, past the header timeout
				}
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url, nil)
				res, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if string(b) != "HTTP/2.0" {
					t.Fatalf("%s: %q", url, b)
				}
			}
			if !slices.Equal(reused, []bool{false, true}) {
				t.Errorf("%s: connections reused %v, want [false true]", url, reused)
			}
		}
	})
}

// TestHTTP2HeaderTimeoutNoSharedLock: the hook, which net/http calls on
// every HTTP/1 request of the TLS listener, shares no lock between
// connections: one connection's call, held up here in isH2 (the TLS
// state behind its lock), holds up no other connection's.
func TestHTTP2HeaderTimeoutNoSharedLock(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	slow, _ := net.Pipe()
	defer slow.Close()
	hook := h2HeaderTimeout(time.Second, func(c net.Conn) bool {
		if c == slow {
			close(held)
			<-release
		}
		return false
	})
	defer close(release)
	hook(slow, http.StateNew)
	go hook(slow, http.StateActive)
	<-held
	// Another connection, past its first request, then a new one.
	other, _ := net.Pipe()
	defer other.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		hook(other, http.StateActive)
		hook(other, http.StateIdle)
		hook(other, http.StateActive)
		hook(other, http.StateClosed)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("another connection's hook waited for the first one's")
	}
}
