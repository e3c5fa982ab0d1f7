package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
)

// h2cPreface opens a clear-text HTTP/2 connection whose client knows the
// server speaks it (prior knowledge, RFC 9113 §3.3).
const h2cPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2cPreface reports whether the connection opened with the HTTP/2
// preface. While what is buffered is a start of it, it reads on (within
// the header timeout) one byte more at a time, so that a short HTTP/1
// request that only starts like it is not kept waiting for 24 bytes.
func (c *serverConn) h2cPreface() bool {
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		n := min(len(b), len(h2cPreface))
		if n == 0 || string(b[:n]) != h2cPreface[:n] {
			return false
		}
		if n == len(h2cPreface) {
			return true
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			return false
		}
	}
}

// serveH2C hands a connection that opened with the HTTP/2 preface to
// net/http's server, which speaks HTTP/2 over clear text with prior
// knowledge (load balancers in front of the gateway that talk HTTP/2 to
// it); the gateway's own server speaks HTTP/1.1 only. That
// server is started with the first such connection and keeps this one's
// settings, the send and body timeouts by ClientTimeouts, the header
// timeout by h2HeaderTimeout. false: the
// server is shutting down, and the connection was not taken.
func (s *Server) serveH2C(c net.Conn) bool {
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		return false
	}
	if s.h2c == nil {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		s.h2c = &http.Server{
			Handler:           ClientTimeouts(s.Handler, s.sendTimeout(), s.bodyTimeout()),
			Protocols:         p,
			ReadHeaderTimeout: s.headerTimeout(),
			IdleTimeout:       orDefault(s.IdleTimeout, defaultIdleTimeout),
			MaxHeaderBytes:    orDefault(s.MaxHeaderBytes, defaultMaxHeaderBytes),
			ErrorLog:          slog.NewLogLogger(s.log().Handler(), slog.LevelWarn),
			HTTP2:             s.HTTP2,
			// Every connection here is HTTP/2, which ReadHeaderTimeout
			// does not bound.
			ConnState: h2HeaderTimeout(s.headerTimeout(), func(net.Conn) bool { return true }),
		}
		s.h2cLn = &handoffListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: c.LocalAddr()}
		go s.h2c.Serve(s.h2cLn)
	}
	ln := s.h2cLn
	s.mu.Unlock()
	return ln.hand(c)
}

// handoffListener is a listener whose connections are handed to it.
type handoffListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

// hand gives c to the listener's server; false when it was closed.
func (l *handoffListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// replayConn is a connection whose first bytes were read already: reads
// return them first.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// handOverH2C passes the connection, whose buffer starts with the HTTP/2
// preface, to the clear-text HTTP/2 server; when the server shuts down
// meanwhile, it closes the connection.
func (c *serverConn) handOverH2C() {
	// Active, Shutdown leaves it alone (closeIfIdle) while it is let go.
	if !c.state.CompareAndSwap(connIdle, connActive) {
		return // closed by Shutdown
	}
	buffered, _ := c.br.Peek(c.br.Buffered())
	rc := &replayConn{Conn: c.conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), c.conn)}
	c.letGo()
	if !c.srv.serveH2C(rc) {
		c.conn.Close()
	}
}
