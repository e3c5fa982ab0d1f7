package gateway

import (
	"net"
	"net/http"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &testServer{URL: "http://" + ln.Addr().String(), srv: srv}
}
