package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

// Server serves HTTP/1.1 to an http.Handler on plain TCP connections. It
// is the gateway listener's server: net/http's costs a proxy more than
// its own work on every request (a background read per request to watch
// for the client leaving, three read deadlines, a goroutine hand-off), and
// on a small machine that halves the gateway's throughput. This one reads
// each request with one read where the client sent it whole, arms one
// deadline per request at most, and never reads behind the handler's back:
// a handler that must know whether its client is still there asks
// (clientGone), which a proxy does only when its upstream is slow.
//
// What it keeps of HTTP/1.1 (RFC 9112): keep-alive and pipelining,
// Connection: close, HTTP/1.0 clients with or without keep-alive, chunked
// and fixed-length request bodies read as the handler wants them (via
// http.ReadRequest, which refuses conflicting lengths and transfer codings
// other than chunked; this server also refuses Transfer-Encoding together
// with Content-Length or in HTTP/1.0, which ReadRequest would let through),
// Expect: 100-continue, 1xx responses, trailers, HEAD and bodiless
// statuses, Date, Hijack for protocol upgrades, header size and
// read-header limits, a lingering close when request bytes are left
// unread, graceful shutdown. A connection that opens with the HTTP/2
// preface is handed to net/http's server (see serveH2C); a TLS listener
// keeps net/http's server, which negotiates HTTP/2.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds the read of a request's header, from its
	// first byte (and on a new connection, from the accept).
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection waits for the next
	// request; it is kept to within an eighth of itself, so that it need
	// not be armed again on every request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and header.
	MaxHeaderBytes int
	// SendTimeout is how long a write to the client may wait for it to
	// take bytes (nginx's send_timeout): a client that stops reading a
	// response cannot hold its handler, and the upstream connection the
	// handler holds, for ever. It is kept armed to within an eighth of
	// itself rather than armed anew for every write.
	SendTimeout time.Duration
	// BodyTimeout is how long a read of a request body may wait for the
	// client's next bytes (nginx's client_body_timeout): a client that
	// stops sending in the middle of a body cannot hold its handler, and
	// the upstream connection the handler holds, for ever.
	BodyTimeout time.Duration
	// Log receives what goes wrong with connections: panics of the
	// handler, and accept errors.
	Log *slog.Logger
	// HTTP2 configures net/http's HTTP/2 server, which serves the
	// connections that open with the preface; nil: its defaults.
	HTTP2 *http.HTTP2Config
	// Refused, when not nil, receives the status of each request the
	// server refuses itself, before the Handler sees it (ambiguous
	// framing, 408, 414, 417, 431, 501), for metrics: these get an
	// access-log line but no Observer call from the Handler.
	Refused func(status int)

	inShutdown atomic.Bool
	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[*serverConn]struct{}
	done       chan struct{} // closed when the last connection ends after shutdown
	// h2c serves the connections that open with the HTTP/2 preface
	// (serveH2C); nil until the first.
	h2c   *http.Server
	h2cLn *handoffListener
}

// Defaults of a zero Server field.
const (
	defaultReadHeaderTimeout = 10 * time.Second
	defaultIdleTimeout       = 2 * time.Minute
	defaultMaxHeaderBytes    = 1 << 20
	defaultSendTimeout       = time.Minute
	defaultBodyTimeout       = time.Minute
	// maxDiscardBytes is how much of a request body the handler left
	// unread is read away to keep the connection; beyond it, the
	// connection is closed.
	maxDiscardBytes = 256 << 10
)

// Serve accepts connections on ln and serves each on its own goroutine,
// until Shutdown or Close; then it returns http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*serverConn]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors, say: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log().Warn("gateway accept error; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// orDefault returns v, or d when v is zero or less (a field left unset).
func orDefault[T int | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// The settings in effect.
func (s *Server) headerTimeout() time.Duration {
	return orDefault(s.ReadHeaderTimeout, defaultReadHeaderTimeout)
}
func (s *Server) sendTimeout() time.Duration { return orDefault(s.SendTimeout, defaultSendTimeout) }
func (s *Server) bodyTimeout() time.Duration { return orDefault(s.BodyTimeout, defaultBodyTimeout) }

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// newConn registers a new connection; nil once the server shuts down.
func (s *Server) newConn(nc net.Conn) *serverConn {
	c := &serverConn{srv: s, conn: nc, remote: nc.RemoteAddr().String()}
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		c.remoteIP = ta.AddrPort().Addr().Unmap()
		c.remoteIPText = c.remoteIP.String()
	}
	c.cr.conn = nc
	c.cr.limit = math.MaxInt64
	c.br = bufio.NewReaderSize(&c.cr, 4<<10)
	c.bw = bufio.NewWriterSize(sendWriter{c}, 4<<10)
	c.peek = peeker(nc)
	c.raw, _ = syscallConn(nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	return c
}

// forget unregisters a connection that ended or was hijacked.
func (s *Server) forget(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	if s.done != nil && len(s.conns) == 0 {
		close(s.done)
		s.done = nil
	}
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight to end (their connections close after them), or for
// ctx to end, whichever comes first; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.inShutdown.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	var done chan struct{}
	if len(s.conns) > 0 {
		// A second Shutdown waits on the same channel as the first.
		if s.done == nil {
			s.done = make(chan struct{})
		}
		done = s.done
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	h2c := s.h2c
	s.mu.Unlock()
	var h2cDone chan error
	if h2c != nil {
		// At the same time: its connections get GOAWAY at once, and
		// their streams in flight finish.
		h2cDone = make(chan error, 1)
		go func() { h2cDone <- h2c.Shutdown(ctx) }()
	}
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
	if h2cDone != nil {
		if err := <-h2cDone; err != nil {
			s.Close()
			return err
		}
	}
	return nil
}

// Close closes the listeners and every connection at once, but those
// whose handler has returned (connFinishing): their answer, whose status
// is recorded already, is sent, and they close right after. A connection
// whose request is being served inside its raw read (serveInline) can
// close only when the handler returns, so each is closed on its own
// goroutine, and Close does not wait for the slowest; marked closed first,
// a connection takes no more writes (sendWriter). The upstream connection
// a handler is using (serverConn.upstream) is closed too, so that a
// handler waiting on a slow upstream ends at once instead of at its next
// look at its client (livenessInterval).
func (s *Server) Close() error {
	s.mu.Lock()
	s.inShutdown.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		if !c.cut() {
			continue
		}
		pc := c.upstream.Load()
		go func() {
			if pc != nil {
				pc.close()
			}
			c.conn.Close()
		}()
	}
	h2c := s.h2c
	s.mu.Unlock()
	if h2c != nil {
		h2c.Close()
	}
	return nil
}

// The states of a connection.
const (
	connIdle   int32 = iota // waiting for a request (or reading its header)
	connActive              // a request is being handled
	connClosed              // closed by Shutdown while idle, or by Close
	// connFinishing: the handler returned and its status is recorded
	// (response.commit); the answer is being sent. Close leaves such a
	// connection to close after it, so that no client is recorded as
	// answered and then cut off.
	connFinishing
)

// serverConn is one client connection, served by one goroutine.
type serverConn struct {
	srv    *Server
	conn   net.Conn
	cr     connReader // counts bytes; bounds a request header
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	// remoteIP is the client's address, parsed once per connection;
	// invalid when the connection is not TCP. remoteIPText is its text.
	remoteIP     netip.Addr
	remoteIPText string
	peek         func() (data, closed bool)
	// raw is the socket's raw connection, for serveInline; nil when
	// there is none (TLS, a pipe in tests).
	raw   syscall.RawConn
	state atomic.Int32
	// upstream is the upstream connection the handler uses for the
	// request (reqState.hold), nil when none: Close closes it.
	upstream atomic.Pointer[pconn]
	rdl      time.Time   // the read deadline armed on conn; zero: none
	wdl      time.Time   // the write deadline armed on conn; see sendWriter
	noSend   atomic.Bool // hijacked: no write deadline any more
	served   int         // requests served so far
	// hijacked: a handler took the connection over (Hijack); the server
	// has let go of it.
	hijacked bool
	// linger: the connection closes with request bytes perhaps unread,
	// after an error or a body left unread; see closeLingering.
	linger bool

	dateSec int64 // the second dateVal was formatted for
	dateVal []string

	resp response // the response being written; see handle
	// sent counts the bytes written to the client (sendWriter), so that
	// a response can tell whether any of it left.
	sent atomic.Int64
}

// cut marks the connection closed for Close, and reports whether it did:
// not when the handler has returned (connFinishing), whose answer goes
// out before the connection closes.
func (c *serverConn) cut() bool {
	for {
		st := c.state.Load()
		if st == connFinishing {
			return false
		}
		if c.state.CompareAndSwap(st, connClosed) {
			return true
		}
	}
}

// closeIfIdle closes the connection when it is waiting for a request;
// an active one closes after its response.
func (c *serverConn) closeIfIdle() {
	if c.state.CompareAndSwap(connIdle, connClosed) {
		c.conn.Close()
	}
}

// keepDeadline reports whether a deadline already armed may stay for a
// wait of timeout t that should end at want: it is still ahead of now, not
// after want, and early by an eighth of t at most. Waking that little
// early costs a turn of the waiting loop at worst, while arming a timer
// for every request or write costs more than it is worth. A zero armed
// deadline never stays.
func keepDeadline(armed, now, want time.Time, t time.Duration) bool {
	return armed.After(now) && !armed.After(want) && want.Sub(armed) <= t/8
}

// sendWriter is what the connection's bufio.Writer writes to: the
// connection, with a write deadline of SendTimeout armed first, anew only
// when an eighth of it has gone (a timer operation per write would cost
// more than it is worth). Writes are serialized by the response's own
// rules, so it needs no lock.
type sendWriter struct{ c *serverConn }

func (s sendWriter) Write(p []byte) (int, error) {
	c := s.c
	if c.state.Load() == connClosed {
		return 0, net.ErrClosed // by Close, which may not have got to it yet
	}
	if !c.noSend.Load() {
		t := c.srv.sendTimeout()
		if now := time.Now(); !keepDeadline(c.wdl, now, now.Add(t), t) {
			c.wdl = now.Add(t)
			c.conn.SetWriteDeadline(c.wdl)
		}
	}
	n, err := c.conn.Write(p)
	c.sent.Add(int64(n))
	return n, err
}

// Lingering close: how long, and how much, a closing connection reads
// away what the client still sends.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerBytes   = 1 << 20
)

// closeLingering closes a connection that may hold request bytes the
// server did not read: closing it at once would make the kernel reset it,
// and the client could lose the response still in flight (net/http waits
// the same way). The write side is shut first, then what the client
// still sends is read away until it closes too, for lingerTimeout at most.
func (c *serverConn) closeLingering() {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.conn.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.CopyN(io.Discard, c.conn, lingerBytes)
	}
	c.conn.Close()
}

func (c *serverConn) setReadDeadline(t time.Time) {
	if !t.Equal(c.rdl) {
		c.conn.SetReadDeadline(t)
		c.rdl = t
	}
}

func (c *serverConn) serve() {
	defer func() {
		if !c.hijacked {
			if c.linger {
				c.closeLingering()
			} else {
				c.conn.Close()
			}
			c.srv.forget(c)
		}
	}()
	idle := orDefault(c.srv.IdleTimeout, defaultIdleTimeout)
	headerTimeout := c.srv.headerTimeout()
	maxHeader := int64(orDefault(c.srv.MaxHeaderBytes, defaultMaxHeaderBytes))
	// A new connection has the header timeout to send its first request.
	c.setReadDeadline(time.Now().Add(headerTimeout))
	for {
		if c.raw != nil {
			if !c.serveInline(idle, maxHeader) {
				return
			}
			// The buffer holds the start of a request for the path below.
		} else {
			c.armIdle(idle)
			if _, err := c.br.Peek(1); err != nil {
				return // closed, idle for too long, or shut down
			}
		}
		if c.served == 0 && c.h2cPreface() {
			c.handOverH2C()
			return
		}
		if c.served > 0 && !headerBuffered(c.br) {
			// The header did not come in one piece: it has the header
			// timeout to arrive whole.
			c.setReadDeadline(time.Now().Add(headerTimeout))
		}
		req, ok := c.readRequest(maxHeader)
		if !ok || !c.next(c.handle(req)) {
			return
		}
	}
}

// armIdle arms the idle timeout for the wait for the next request on a
// kept-alive connection, anew only when an eighth of it has gone.
func (c *serverConn) armIdle(idle time.Duration) {
	if c.served == 0 || c.br.Buffered() > 0 {
		return // the header timeout runs, or a request is here
	}
	if now := time.Now(); !keepDeadline(c.rdl, now, now.Add(idle), idle) {
		c.setReadDeadline(now.Add(idle))
	}
}

// next ends a request's turn on the connection: it reports whether
// the connection goes on to the next (keep: the response allows it).
func (c *serverConn) next(keep bool) bool {
	return keep && !c.srv.inShutdown.Load() &&
		(c.state.CompareAndSwap(connFinishing, connIdle) || c.state.CompareAndSwap(connActive, connIdle)) &&
		!c.srv.inShutdown.Load() // Shutdown may have looked while it was active
}

// serveInline serves requests inside one raw read of the connection
// (syscall.RawConn.Read), for as long as they come simple, and reports
// whether the connection goes on: then the buffer holds the start of a
// request that takes the ordinary path (not simple, a protocol upgrade,
// or its header not whole yet).
//
// The point is the read that finds nothing. Go's poller signals a socket
// when bytes arrive, and forgets a signal when a read begins; a plain
// read after a response therefore finds nothing, a system call spent,
// and only then waits. Inside one raw read the signal is never reset: a
// read that came back short left the socket empty, so anything since has
// signalled, and the wait starts without another read. Over a kept-alive
// connection that is one read per request instead of two.
//
// The handler runs inside the raw read, which holds the connection's read
// lock: nothing may read the connection but through the buffer (a simple
// request's body, if any, came whole with it), and it cannot be hijacked
// (see Hijack).
func (c *serverConn) serveInline(idle time.Duration, maxHeader int64) (more bool) {
	end := true
	err := c.raw.Read(func(fd uintptr) bool {
		// Called first, or after the poller signalled bytes: read.
		c.cr.raw, c.cr.fd, c.cr.drained = true, fd, false
		for {
			c.armIdle(idle)
			if _, err := c.br.Peek(1); err == errWouldWait {
				return false // wait for the poller's signal
			} else if err != nil {
				return true // closed, or reset
			}
			buffered, _ := c.br.Peek(c.br.Buffered())
			req, n, simple := parseSimpleRequest(buffered, maxHeader)
			if !simple || len(req.Header["Upgrade"]) > 0 {
				end = false
				return true
			}
			c.br.Discard(n)
			if !c.begin() || !c.next(c.handle(req)) {
				return true
			}
		}
	})
	c.cr.raw = false
	return err == nil && !end
}

// begin marks the connection active for a request that was read; false
// when Shutdown closed it while it was idle.
func (c *serverConn) begin() bool {
	if !c.state.CompareAndSwap(connIdle, connActive) {
		return false
	}
	c.served++
	return true
}

// readRequest reads the next request: a simple one (parseSimpleRequest)
// straight from the buffer, any other with http.ReadRequest and the
// checks it leaves to the server. When ok is false the connection ends
// (after an answer, if one is due).
func (c *serverConn) readRequest(maxHeader int64) (req *http.Request, ok bool) {
	buffered, _ := c.br.Peek(c.br.Buffered())
	if r, n, simple := parseSimpleRequest(buffered, maxHeader); simple {
		c.br.Discard(n)
		return r, c.begin() // false: Shutdown closed it as it was idle
	}
	// http.ReadRequest takes Transfer-Encoding and Content-Length out of
	// the header: what framing the client sent is seen here.
	framing := scanFraming(buffered)
	if !framing.complete {
		// The header goes on past the buffer: its bytes are kept as
		// ReadRequest reads them (at most the header limit), for the
		// scan to see it whole.
		c.cr.rec = append(c.cr.rec[:0], buffered...)
		c.cr.record = true
	}
	start := c.cr.n - int64(c.br.Buffered()) // where the header begins in the stream
	c.cr.limit = c.cr.n + int64(c.br.Buffered()) + maxHeader + 4096
	c.cr.timedOut = false
	req, err := http.ReadRequest(c.br)
	if err != nil && c.cr.timedOut {
		// The deadline cut a line short ("GET /ord"), which ReadRequest
		// took as malformed: it is a header that did not arrive in time.
		err = os.ErrDeadlineExceeded
	}
	hitLimit := c.cr.n >= c.cr.limit
	c.cr.limit = math.MaxInt64
	if err == nil && c.cr.n-int64(c.br.Buffered())-start-4 > maxHeader {
		// The read limit leaves slack for what the buffer holds past the
		// header; the header itself (request line included, as for the
		// simple parser) is held to the limit exactly.
		err, hitLimit = errHeaderTooLarge, true
	}
	// Over the limit within the request line: the target is too long
	// (RFC 9112 §3: 414), not the header fields (431).
	head := buffered
	if c.cr.record {
		head = c.cr.rec
	}
	longTarget := false
	if hitLimit {
		i := bytes.IndexByte(head, '\n')
		longTarget = i < 0 || int64(i) > maxHeader
	}
	if c.cr.record {
		c.cr.record = false
		framing = scanFraming(c.cr.rec)
		c.cr.rec = nil
	}
	if err != nil {
		c.badRequest(err, hitLimit, longTarget, c.cr.n > start)
		return nil, false
	}
	if !c.begin() {
		return nil, false // Shutdown closed it as it was idle
	}
	if msg := checkRequest(req); msg != "" {
		c.reply(req, http.StatusBadRequest, msg)
		return nil, false
	}
	switch {
	case framing.te && (framing.cl || !req.ProtoAtLeast(1, 1)):
		// Transfer-Encoding with Content-Length, or in an HTTP/1.0
		// request: where such a request ends is what smuggling plays on
		// (RFC 9112 §6.1, §6.3). Refused, and the connection closed.
		c.reply(req, http.StatusBadRequest, "ambiguous message framing: Transfer-Encoding with Content-Length or in HTTP/1.0")
		return nil, false
	case !framing.complete && (!req.ProtoAtLeast(1, 1) || len(req.TransferEncoding) > 0):
		// The scan did not find the header's end (a line folding it
		// read otherwise than ReadRequest did): such a request does not
		// keep the connection.
		req.Close = true
	}
	return req, true
}

// parseSimpleRequest parses a request of the simple kind at the start of
// b, and reports how many bytes it takes; nothing else (ok false) is left
// to http.ReadRequest. Simple is what most API calls are, and what the two
// parsers cannot frame differently: HTTP/1.1 or 1.0, an origin-form target of
// plain characters (no percent-encoding, no fragment), a header wholly in
// b with CRLF lines, valid names and values and no folding, exactly one
// Host, valid, no Transfer-Encoding, at most one Content-Length, whose
// body, if any, is wholly in b too (a heldBody, so that the request needs
// no more reads), and no Expect or Pragma (which ReadRequest turns into
// Cache-Control). It yields the same http.Request as http.ReadRequest
// would, body included (TestSimpleRequestLikeReadRequest).
func parseSimpleRequest(b []byte, maxHeader int64) (req *http.Request, n int, ok bool) {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 || int64(end) > maxHeader {
		return nil, 0, false
	}
	head := string(b[:end+2]) // one string: the fields are its slices
	i := strings.Index(head, "\r\n")
	method, rest, _ := strings.Cut(head[:i], " ")
	target, proto, _ := strings.Cut(rest, " ")
	minor := 1
	if proto == "HTTP/1.0" {
		minor = 0 // ab, and some load balancers' health checks
	} else if proto != "HTTP/1.1" {
		return nil, 0, false
	}
	if method == "" || !validFieldName(method) || !plainTarget(target) {
		return nil, 0, false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	if hasQuery && query == "" {
		return nil, 0, false // url.Parse's ForceQuery
	}
	lines := head[i+2:]
	nf := strings.Count(lines, "\n")
	hdr := make(http.Header, nf)
	// The fields' values share one backing array; each slice is capped at
	// its length, so that an append by a handler copies.
	vals := make([]string, 0, nf)
	host, hosts := "", 0
	length := int64(0)
	for lines != "" {
		i := strings.Index(lines, "\r\n")
		line := lines[:i]
		lines = lines[i+2:]
		name, value, found := strings.Cut(line, ":")
		if !found || !validFieldName(name) || strings.IndexByte(value, '\n') >= 0 {
			return nil, 0, false // folding (a leading space) fails the name
		}
		value = trimOWS(value)
		if !validFieldValue(value) {
			return nil, 0, false
		}
		key := http.CanonicalHeaderKey(name)
		switch key {
		case "Host":
			host, hosts = value, hosts+1
			continue // not in the Header map, as ReadRequest leaves it
		case "Content-Length":
			if len(hdr[key]) > 0 {
				return nil, 0, false
			}
			if length, ok = heldLength(value, len(b)-end-4); !ok {
				return nil, 0, false // not a length, or a body not all in b
			}
		case "Transfer-Encoding", "Expect", "Pragma":
			return nil, 0, false
		}
		if prior, ok := hdr[key]; ok {
			hdr[key] = append(prior, value)
		} else {
			vals = append(vals, value)
			hdr[key] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
	}
	if hosts != 1 || host == "" || !validHost(host) {
		return nil, 0, false
	}
	// One allocation holds the request, its URL and its body's reader.
	ru := &struct {
		req  http.Request
		url  url.URL
		body heldBody
	}{url: url.URL{Path: path, RawQuery: query}}
	req = &ru.req
	*req = http.Request{
		Method:        method,
		URL:           &ru.url,
		Proto:         proto,
		ProtoMajor:    1,
		ProtoMinor:    minor,
		Header:        hdr,
		Body:          http.NoBody,
		ContentLength: length,
		Host:          host,
		RequestURI:    target,
		Close:         headerHasToken(hdr["Connection"], "close"),
	}
	if minor == 0 && !req.Close {
		// An HTTP/1.0 connection is kept only when the client asks.
		req.Close = !headerHasToken(hdr["Connection"], "keep-alive")
	}
	n = end + 4
	if length > 0 {
		ru.body.r.Reset(string(b[n : n+int(length)]))
		req.Body = &ru.body
	}
	return req, n + int(length), true
}

// trimOWS trims the optional white space around a field value (RFC 9112
// §5.1): what strings.Trim(v, " \t") does, without building a cut set
// for every field.
func trimOWS(v string) string {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// heldLength parses a Content-Length value as http.ReadRequest does
// (decimal digits only) and reports whether the avail bytes after the
// header hold a body that long whole (the read buffer is 4 KB; a value of
// ten digits or more is beyond any buffer).
func heldLength(v string, avail int) (int64, bool) {
	if v == "" || len(v) > 9 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		n = n*10 + int(v[i]-'0')
	}
	return int64(n), n <= avail
}

// heldBody is a request body that came whole with its header, read
// already: it needs no deadline, no 100-continue and nothing read away
// after the handler. A proxy may write it with the request's header, in
// one write (see exchange). Like any request body it is closed once the
// response is sent.
type heldBody struct {
	r      strings.Reader
	closed atomic.Bool
}

// Len is how many bytes are left to read.
func (b *heldBody) Len() int { return b.r.Len() }

func (b *heldBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.r.Read(p)
}

func (b *heldBody) WriteTo(w io.Writer) (int64, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.r.WriteTo(w)
}

func (b *heldBody) Close() error {
	b.closed.Store(true)
	return nil
}

// plainTarget reports whether t is an origin-form request target that
// url.ParseRequestURI takes as it is: a path from "/" of the characters
// that need no escaping in a path (so that the URL has no RawPath), and an
// optional query, kept raw, of the characters a query may hold.
func plainTarget(t string) bool {
	if t == "" || t[0] != '/' {
		return false
	}
	chars := &pathChar
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c == '?' {
			chars = &queryChar
		}
		if !chars[c] {
			return false
		}
	}
	return true
}

var pathChar, queryChar = func() (p, q [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		p[c], p[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		p[c] = true
	}
	for _, c := range "-._~$&+,/:;=@" {
		p[c] = true
	}
	q = p
	for _, c := range "!'()*?%" {
		q[c] = true
	}
	return p, q
}()

// headerBuffered reports whether a whole request header is in br's buffer.
func headerBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")

// framing is what a request's raw header says of its body's framing.
type framing struct {
	te, cl   bool // Transfer-Encoding, Content-Length fields present
	complete bool // the whole header was looked at
}

// scanFraming looks through the request line and header at the start of
// b for Transfer-Encoding and Content-Length fields, as textproto reads
// them (lines end with LF or CRLF; a line that starts with a space or tab
// continues the one before).
func scanFraming(b []byte) framing {
	var f framing
	first := true
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return f
		}
		line := b[:i]
		b = b[i+1:]
		line = bytes.TrimSuffix(line, []byte("\r"))
		switch {
		case first:
			first = false
		case len(line) == 0:
			f.complete = true
			return f
		case len(line) >= 18 && bytes.EqualFold(line[:18], []byte("transfer-encoding:")):
			f.te = true
		case len(line) >= 15 && bytes.EqualFold(line[:15], []byte("content-length:")):
			f.cl = true
		}
	}
}

// checkRequest returns why a parsed request is refused, as net/http's
// server refuses it; "" when it is fine. http.ReadRequest has refused
// repeated Host fields already, but not invalid field names or values.
// It also takes the Host field out, so that a missing one and an empty
// one look alike here: an HTTP/1.1 request needs a Host (RFC 9112 §3.2),
// and an empty one, lawful only for a target without an authority, is
// refused too (net/http lets it through; no HTTP API has use for it).
func checkRequest(req *http.Request) string {
	switch {
	case req.ProtoMajor != 1:
		return "unsupported protocol version"
	case req.Host == "" && req.ProtoAtLeast(1, 1):
		return "missing required Host header"
	case !validHost(req.Host):
		return "malformed Host header"
	}
	for k, vv := range req.Header {
		if !validFieldName(k) {
			return "invalid header name"
		}
		for _, v := range vv {
			if !validFieldValue(v) {
				return "invalid header value"
			}
		}
	}
	return ""
}

// validHost reports whether h may be a Host header's value: a host name
// of letters, digits and "-._~", an IPv4 address, or an IPv6 literal in
// brackets, then an optional ":" and port of at most 5 digits. This is
// narrower than RFC 3986's reg-name, which also allows sub-delimiters
// such as "," and percent-encoding: no DNS name has them, and upstreams
// read a Host or X-Forwarded-Host such as "a.example,b.example" or
// "b.example:80:80" each their own way (first element, last element, up to
// the first ":"), so a route bound to one host could be reached through
// another route with a value the router did not take for that host.
func validHost(h string) bool {
	name, port := h, ""
	if len(h) > 0 && h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 2 {
			return false
		}
		for i := 1; i < end; i++ {
			if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return false
			}
		}
		name, port = "", h[end+1:]
		if port != "" && port[0] != ':' {
			return false
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		name, port = h[:i], h[i:]
		if name == "" {
			return false
		}
	}
	// Labels are not empty; one trailing dot (the root) is allowed.
	if name != "" && (name[0] == '.' || strings.Contains(name, "..")) {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	// port is "" or ":" and at most 5 digits (RFC 3986 allows none).
	if len(port) > 6 {
		return false
	}
	for i := 1; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}

// badRequest answers a request that could not be read, unless the client
// merely went away. begun says that some of the request had come.
func (c *serverConn) badRequest(err error, hitLimit, longTarget, begun bool) {
	if err == io.EOF || errors.Is(err, net.ErrClosed) {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if begun {
			// A header begun but not finished in time (a slowloris
			// client, say): answered 408 and logged, so that such
			// attempts do not pass unseen. A connection with no request
			// begun was merely idle.
			c.reply(nil, http.StatusRequestTimeout, "the request header did not arrive in time")
		}
		return
	}
	switch {
	case longTarget:
		c.reply(nil, http.StatusRequestURITooLong, "the request target is too long")
	case hitLimit:
		c.reply(nil, http.StatusRequestHeaderFieldsTooLarge, "the request header is too large")
	case strings.Contains(err.Error(), "unsupported transfer encoding"):
		c.reply(nil, http.StatusNotImplemented, "unsupported transfer encoding")
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The client stopped in the middle of a header: nobody to answer.
	default:
		c.reply(nil, http.StatusBadRequest, "the request could not be read")
	}
}

// reply sends an error of the server's own, as problem+json, and the
// connection is closed after it.
func (c *serverConn) reply(req *http.Request, status int, detail string) {
	w := &response{c: c, req: req, hdr: make(http.Header, 4), contentLength: -1}
	if req == nil {
		w.req = &http.Request{Method: http.MethodGet, ProtoMajor: 1, ProtoMinor: 1}
	}
	w.closeAfter = true
	c.linger = true // what else the client sent is not read
	// An id as every answer has, the client's when it sent a well-formed
	// one in a header that could be read: made here, on the refusal's
	// path alone.
	sent := ""
	if req != nil {
		sent = req.Header.Get("X-Request-Id")
	}
	id := keyward.RequestID(sent)
	w.hdr["X-Request-Id"] = []string{id}
	// Refused before any handler saw it: the access log still gets its
	// line (a smuggling probe must not pass unseen), without the query
	// string, as the handler's lines are; before the answer, as the
	// handler's are.
	attrs := []slog.Attr{slog.String("request_id", id), slog.Int("status", status), slog.String("peer_ip", c.peerIP()), slog.String("refused", detail)}
	if req != nil {
		attrs = append(attrs, slog.String("method", secret.Redact(req.Method)), slog.String("path", secret.RedactPath(req.URL)))
	}
	c.srv.log().LogAttrs(context.Background(), slog.LevelInfo, "gateway request refused", attrs...)
	if c.srv.Refused != nil {
		c.srv.Refused(status)
	}
	writeProblem(w, status, "invalid", detail, id)
	w.finish()
}

// peerIP is the connection's peer address without its port: a trusted
// proxy's, when one stands before the gateway, since a refused request's
// X-Forwarded-For is not read (the handler's lines name the client behind
// it, client_ip).
func (c *serverConn) peerIP() string {
	if host, _, err := net.SplitHostPort(c.remote); err == nil {
		return host
	}
	return c.remote
}

// handle runs the handler for req and ends the response; it reports
// whether the connection may serve another request.
func (c *serverConn) handle(req *http.Request) (keep bool) {
	req.RemoteAddr = c.remote
	// The connection's response and its header map serve each request in
	// turn: a handler must not use its ResponseWriter after it returned.
	w := &c.resp
	hdr := w.hdr
	if hdr == nil {
		hdr = make(http.Header, 8)
	} else {
		clear(hdr)
	}
	*w = response{c: c, req: req, hdr: hdr, contentLength: -1, sentBefore: c.sent.Load()}
	if held, ok := req.Body.(*heldBody); ok {
		// Read whole with the header; simple requests have no Expect.
		defer held.Close()
	} else if req.Body != http.NoBody && req.Body != nil {
		// A body of its own for each request, unlike the response: a
		// reader that outlives the request (http.Transport may read a body
		// after RoundTrip returned) must find it closed, not reading the
		// next request's bytes.
		b := &requestBody{rc: req.Body, c: c, length: req.ContentLength}
		if headerHasToken(req.Header["Expect"], "100-continue") {
			// An HTTP/1.0 client's is ignored (RFC 9110 §10.1.1): it
			// cannot take a 100 Continue, and sends its body anyway.
			b.expect = req.ProtoAtLeast(1, 1) && req.ContentLength != 0
		} else if len(req.Header["Expect"]) > 0 {
			c.reply(req, http.StatusExpectationFailed, "the Expect header is not supported")
			return false
		}
		w.body = b
		req.Body = b
		// A body is read as the handler wants it, for as long as it takes:
		// the header's deadline no longer applies.
		c.setReadDeadline(time.Time{})
	} else if len(req.Header["Expect"]) > 0 && !headerHasToken(req.Header["Expect"], "100-continue") {
		c.reply(req, http.StatusExpectationFailed, "the Expect header is not supported")
		return false
	}
	if !c.run(w, req) {
		return false
	}
	if w.hijacked {
		return false
	}
	w.finish()
	return !w.closeAfter
}

// run calls the handler; a panic ends the connection (after logging it,
// unless it is http.ErrAbortHandler, the handler's way to cut a response
// short).
func (c *serverConn) run(w *response, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
			if p == http.ErrAbortHandler {
				return
			}
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.log().Error("gateway handler panic", "remote", c.remote, "panic", fmt.Sprint(p), "stack", string(buf))
		}
	}()
	c.srv.Handler.ServeHTTP(w, req)
	return true
}

// clientGone reports whether the client has closed its connection (or
// reset it), or Close cut it. Data waiting to be read, such as a
// pipelined request, is not leaving. It does not block; it is meant for a
// handler waiting on something slow, not for every request.
func (c *serverConn) clientGone() bool {
	if c.state.Load() == connClosed {
		return true
	}
	if c.br.Buffered() > 0 {
		return false
	}
	_, closed := c.peek()
	return closed
}

// date returns the Date header's value, formatted once per second.
func (c *serverConn) date(now time.Time) []string {
	if s := now.Unix(); s != c.dateSec || c.dateVal == nil {
		c.dateSec = s
		c.dateVal = []string{now.UTC().Format(http.TimeFormat)}
	}
	return c.dateVal
}

// response is the http.ResponseWriter of one request on a serverConn.
type response struct {
	c    *serverConn
	req  *http.Request
	hdr  http.Header
	body *requestBody // nil without a body

	wroteHeader   bool
	status        int
	bodyAllowed   bool
	chunked       bool
	contentLength int64 // -1: unknown
	written       int64
	trailers      []string // names the Trailer header announced
	closeAfter    bool
	hijacked      bool
	fullDuplex    bool  // the body may be read after the header is written
	err           error // a write to the client failed
	sentBefore    int64 // the connection's sent count when the response began
}

// nothingSent reports whether none of the response has reached the
// client yet: all of it, if anything, is still in the connection's
// buffer.
func (w *response) nothingSent() bool { return w.c.sent.Load() == w.sentBefore }

func (w *response) Header() http.Header { return w.hdr }

// bodyAllowedForStatus reports whether a response with the status may
// have a body (RFC 9110 §6.4.1).
func bodyAllowedForStatus(status int) bool {
	return !(status >= 100 && status <= 199 || status == http.StatusNoContent || status == http.StatusNotModified)
}

func (w *response) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	bw := w.c.bw
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational: sent at once, with the fields set so far but
		// those of a body, and not to HTTP/1.0 clients, which would take
		// it for the response (RFC 9110 §15.2).
		if !w.req.ProtoAtLeast(1, 1) {
			return
		}
		if b := w.body; b != nil {
			// Not in the middle of a 100 Continue of the body's reader.
			b.cmu.Lock()
			defer b.cmu.Unlock()
			if code == http.StatusContinue {
				b.continued = true
			}
		}
		writeStatusLine(bw, code)
		for k, vv := range w.hdr {
			switch k {
			case "Content-Length", "Transfer-Encoding", "Trailer":
				continue
			}
			writeFields(bw, k, vv)
		}
		bw.WriteString("\r\n")
		w.setErr(bw.Flush())
		return
	}
	w.writeFinal(code, nil, -1, false)
}

// writeRawHeader writes a final header of w.hdr's fields followed by raw,
// header lines of the upstream's as they came (validated, each ending in
// CRLF, no framing or hop-by-hop field among them), for a body of length
// bytes; hasDate says whether raw holds a Date field. It is the proxy's
// fast path: no header map between the upstream's header and the client.
func (w *response) writeRawHeader(code int, raw []byte, length int64, hasDate bool) {
	if w.hijacked || w.wroteHeader {
		return
	}
	w.writeFinal(code, raw, length, hasDate)
}

// writeFinal writes the final header; see WriteHeader and writeRawHeader.
// raw is nil on the way from WriteHeader.
func (w *response) writeFinal(code int, raw []byte, rawLength int64, rawDate bool) {
	bw := w.c.bw
	w.wroteHeader, w.status = true, code
	if b := w.body; b != nil {
		waiting := b.answer()
		if !w.fullDuplex && (waiting || !b.keepable()) {
			// The handler answers without having read the whole request
			// body, and the rest is more than is worth reading away to
			// keep the connection; a client still waiting for 100
			// Continue sends no body at all.
			w.closeAfter = true
			w.c.linger = true
		}
	}
	hd := w.hdr
	w.bodyAllowed = w.req.Method != http.MethodHead && bodyAllowedForStatus(code)
	if raw != nil {
		// The raw lines hold the length, and nothing else frames the body.
		delete(hd, "Content-Length")
		delete(hd, "Trailer")
		w.contentLength = rawLength
	} else if cl := hd["Content-Length"]; len(cl) > 0 {
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || len(cl) > 1 && !allSame(cl) {
			delete(hd, "Content-Length")
		} else {
			w.contentLength = n
			hd["Content-Length"] = cl[:1]
		}
	}
	delete(hd, "Transfer-Encoding") // the framing is the server's own
	if tr := hd["Trailer"]; len(tr) > 0 {
		for _, v := range tr {
			for f := range strings.SplitSeq(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(f))
				}
			}
		}
	}
	http11 := w.req.ProtoAtLeast(1, 1)
	switch {
	case code == http.StatusNoContent || code >= 100 && code <= 199:
		delete(hd, "Content-Length")
		w.contentLength = -1
	case !w.bodyAllowed:
	case len(w.trailers) > 0 && http11:
		delete(hd, "Content-Length")
		w.contentLength = -1
		w.chunked = true
	case w.contentLength < 0 && http11:
		w.chunked = true
	case w.contentLength < 0:
		w.closeAfter = true // an HTTP/1.0 body ends with the connection
	}
	if !http11 {
		delete(hd, "Trailer")
		w.trailers = nil
	}
	if w.req.Close || headerHasToken(hd["Connection"], "close") || w.c.srv.inShutdown.Load() {
		w.closeAfter = true
	}
	if w.closeAfter {
		hd["Connection"] = connClose
	} else if !http11 {
		hd["Connection"] = connKeepAlive
	}
	if _, ok := hd["Date"]; !ok && !rawDate {
		hd["Date"] = w.c.date(time.Now())
	}
	writeStatusLine(bw, code)
	for k, vv := range hd {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		writeFields(bw, k, vv)
	}
	bw.Write(raw)
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
}

var (
	connClose     = []string{"close"}
	connKeepAlive = []string{"keep-alive"}
)

func allSame(vv []string) bool {
	for _, v := range vv[1:] {
		if v != vv[0] {
			return false
		}
	}
	return true
}

// statusLines holds the status line of every code with a reason phrase,
// written once rather than put together for every response.
var statusLines = func() map[int]string {
	m := make(map[int]string)
	for code := 100; code <= 599; code++ {
		if text := http.StatusText(code); text != "" {
			m[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
	return m
}()

func writeStatusLine(bw *bufio.Writer, code int) {
	if line, ok := statusLines[code]; ok {
		bw.WriteString(line)
		return
	}
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	bw.WriteString(" status code ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	bw.WriteString("\r\n")
}

// writeFields writes a header field's lines; a field with an invalid name
// is left out, and line breaks in a value become spaces, so that nothing
// a handler sets can start a field or a response of its own.
func writeFields(bw *bufio.Writer, k string, vv []string) {
	if !validFieldName(k) {
		return
	}
	for _, v := range vv {
		bw.WriteString(k)
		bw.WriteString(": ")
		if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
			v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
		}
		bw.WriteString(v)
		bw.WriteString("\r\n")
	}
}

// validFieldName reports whether k is a token (RFC 9110 §5.6.2), as a
// field name or a method must be.
func validFieldName[T string | []byte](k T) bool {
	if len(k) == 0 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !tokenChar[k[i]] {
			return false
		}
	}
	return true
}

// tokenChar holds the characters of a token.
var tokenChar = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c > ' ' && c < 0x7f && strings.IndexByte(`"(),/:;<=>?@[\]{}`, byte(c)) < 0
	}
	return t
}()

func (w *response) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
		w.closeAfter = true
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var lenErr error
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		p = p[:w.contentLength-w.written]
		lenErr = http.ErrContentLength
	}
	bw := w.c.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	if err != nil {
		w.setErr(err)
		return n, err
	}
	return n, lenErr
}

func (w *response) WriteString(s string) (int, error) {
	// Rare on the gateway's path; no need for a copy-free version.
	return w.Write([]byte(s))
}

// Flush sends what was written so far.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.setErr(w.c.bw.Flush())
	return w.err
}

// EnableFullDuplex is for http.ResponseController: the request body
// stays readable after the response header is written (by default what
// is left of it is read away then, as net/http does).
func (w *response) EnableFullDuplex() error {
	w.fullDuplex = true
	return nil
}

// Hijack hands the connection over to the handler, for a protocol
// upgrade; the server lets go of it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.c.cr.raw {
		// Served inside the raw read, whose lock the new owner's reads
		// would wait on for ever.
		return nil, nil, errors.New("gateway: only a request with an Upgrade header field can take its connection over")
	}
	if w.wroteHeader {
		if err := w.c.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	w.hijacked = true
	c := w.c
	c.letGo()
	return c.conn, bufio.NewReadWriter(c.br, c.bw), nil
}

// letGo gives the connection up to a new owner (a handler's Hijack, or
// the clear-text HTTP/2 server): its deadlines cleared, the server no
// longer tracks, writes to or closes it.
func (c *serverConn) letGo() {
	c.hijacked = true
	c.noSend.Store(true)
	c.conn.SetWriteDeadline(time.Time{})
	c.setReadDeadline(time.Time{})
	c.srv.forget(c)
}

// clientGone: see serverConn.clientGone.
func (w *response) clientGone() bool { return w.c.clientGone() }

// cutOff reports whether Close cut the connection while the response was
// being made: what is written to it no longer reaches the client.
func (w *response) cutOff() bool { return w.c.state.Load() == connClosed }

// commit is called by a handler when it is done and about to record its
// status: from then on Close no longer cuts the connection, which sends
// the answer and closes after it. It reports false when Close cut the
// connection first; the handler then records what the client got (with
// nothingSent: nothing).
func (w *response) commit() bool { return w.c.state.CompareAndSwap(connActive, connFinishing) }

// finish ends the response after the handler returned: a header if none
// was written, the last chunk and the trailers, and everything sent.
func (w *response) finish() {
	if !w.wroteHeader {
		if _, ok := w.hdr["Content-Length"]; !ok && bodyAllowedForStatus(http.StatusOK) && w.req.Method != http.MethodHead {
			w.hdr["Content-Length"] = zeroLength
		}
		w.WriteHeader(http.StatusOK)
	}
	bw := w.c.bw
	switch {
	case w.chunked && w.err == nil:
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			if vv, ok := w.hdr[k]; ok {
				writeFields(bw, k, vv)
			}
		}
		for k, vv := range w.hdr {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				writeFields(bw, name, vv)
			}
		}
		bw.WriteString("\r\n")
	case w.bodyAllowed && w.contentLength >= 0 && w.written < w.contentLength:
		// The handler wrote less than it announced: the client would wait
		// for the rest on a kept connection.
		w.closeAfter = true
	}
	if w.err == nil {
		w.setErr(bw.Flush())
	}
	if b := w.body; b != nil {
		if !w.closeAfter && (b.answer() || !b.discard()) {
			w.closeAfter = true
		}
		if w.closeAfter && !b.readWhole() {
			// Bytes of the body may be left unread: closing at once could
			// reset the connection, and the response with it.
			w.c.linger = true
		}
		b.close()
	}
}

var zeroLength = []string{"0"}

// requestBody is a request body as the handler, or a goroutine it hands
// the body to, reads it: it sends 100 Continue on the first read when the
// client asked for it, notes when the body was read whole, and is closed
// when the response is done.
type requestBody struct {
	mu     sync.Mutex // held by Read, discard and close
	rc     io.ReadCloser
	c      *serverConn
	length int64     // as declared; -1 when chunked
	n      int64     // bytes read so far
	expect bool      // the client asked for 100 Continue
	rdl    time.Time // the read deadline this body armed last
	eof    bool
	closed bool
	err    error

	// cmu orders the 100 Continue, which the reader writes, with the
	// response's header, which the handler writes.
	cmu       sync.Mutex
	continued bool // 100 Continue was sent
	answered  bool // the final header was written: no 100 Continue now
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.expect {
		if err := b.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if b.c.br.Buffered() == 0 {
		// The read waits on the client: for BodyTimeout at most, kept
		// armed to within an eighth of itself. It is the body's own
		// deadline, set on the connection directly: the reader need not
		// be the connection's goroutine. (The connection's own record,
		// c.rdl, was cleared when the body began, so the wait for the
		// next request arms its deadline anew.)
		t := b.c.srv.bodyTimeout()
		if now := time.Now(); !keepDeadline(b.rdl, now, now.Add(t), t) {
			b.rdl = now.Add(t)
			b.c.conn.SetReadDeadline(b.rdl)
		}
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.err = err
	}
	return n, err
}

// sendContinue writes 100 Continue, unless it was written or the final
// header went out already.
func (b *requestBody) sendContinue() error {
	b.cmu.Lock()
	defer b.cmu.Unlock()
	if b.continued || b.answered {
		return nil
	}
	b.continued = true
	bw := b.c.bw
	bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return bw.Flush()
}

// answer notes that the final header is being written (no 100 Continue
// after it) and reports whether the client still waits for a 100
// Continue, so sends no body.
func (b *requestBody) answer() (waiting bool) {
	b.cmu.Lock()
	defer b.cmu.Unlock()
	b.answered = true
	return b.expect && !b.continued
}

// Close is a no-op for the handler: the server reads what is left, or
// closes the connection, when the response is done.
func (b *requestBody) Close() error { return nil }

// lock takes b.mu; when another goroutine holds it (a reader blocked on
// a client that sends nothing), the connection's read deadline is brought
// to within the header timeout first, so that the wait ends.
func (b *requestBody) lock() {
	if !b.mu.TryLock() {
		b.c.setReadDeadline(time.Now().Add(b.c.srv.headerTimeout()))
		b.mu.Lock()
	}
}

// keepable reports, without waiting, whether the connection may be kept
// after the response as far as the body is concerned: it was read whole,
// or what is left of it may be read away once the response is sent (see
// response.finish). Reading it away first, as net/http does, would hold
// the answer of a refused request until a slow or stalled client had sent
// its body, or the header timeout passed; this answers at once, like
// nginx, and says keep-alive (RFC 9110 §10.1.1 lets the server go on
// reading and discarding) when what is left is known to be small.
func (b *requestBody) keepable() bool {
	if !b.mu.TryLock() {
		// Another goroutine reads it (a proxy streaming the body as the
		// upstream answers early): how much is left is not known.
		return false
	}
	defer b.mu.Unlock()
	done, readable := b.leftover()
	// A chunked body of unknown length may be any size: saying keep-alive
	// would be a promise that reading it away could break.
	return done || readable && b.length >= 0
}

// leftover tells, with b.mu held, what is left of the body: done when it
// was read whole; else readable when the rest may be read away to keep
// the connection (neither closed nor failed, and not known to be longer
// than maxDiscardBytes).
func (b *requestBody) leftover() (done, readable bool) {
	switch {
	case b.eof:
		return true, false
	case b.closed || b.err != nil:
		return false, false
	}
	return false, b.length < 0 || b.length-b.n <= maxDiscardBytes
}

// readWhole reports whether the body was read to its end.
func (b *requestBody) readWhole() bool {
	b.lock()
	defer b.mu.Unlock()
	return b.eof
}

// discard reads away what is left of the body, up to maxDiscardBytes and
// within the header timeout, and reports whether the body's end was
// reached (at once when it had been).
func (b *requestBody) discard() bool {
	b.lock()
	defer b.mu.Unlock()
	if done, readable := b.leftover(); done || !readable {
		return done // read whole, or more than is worth reading: close instead
	}
	b.c.setReadDeadline(time.Now().Add(b.c.srv.headerTimeout()))
	_, err := io.CopyN(io.Discard, b.rc, maxDiscardBytes+1)
	if err == io.EOF {
		b.eof = true
		return true
	}
	return false
}

// close ends the body: later reads fail with http.ErrBodyReadAfterClose.
func (b *requestBody) close() {
	b.lock()
	b.closed = true
	b.mu.Unlock()
}
