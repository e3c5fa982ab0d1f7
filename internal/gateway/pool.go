package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"
)

// Defaults of the connection pools.
const (
	// maxIdlePerUpstream is how many idle keep-alive connections a route
	// keeps to each of its upstreams.
	maxIdlePerUpstream = 128
	// idleConnTimeout is how long an idle connection is kept.
	idleConnTimeout = 90 * time.Second
	// maxResponseHeaderBytes bounds the status line and header of an
	// upstream's response.
	maxResponseHeaderBytes = 1 << 20
)

// pconn is one keep-alive HTTP/1.1 connection to an upstream. It is used
// by one request at a time, from the handler's own goroutine: no
// goroutine reads or writes it in the background.
type pconn struct {
	conn   net.Conn
	cr     connReader
	cw     connWriter
	br     *bufio.Reader
	bw     *bufio.Writer
	raw    syscall.RawConn // nil: none (TLS); see flushAwait
	pool   *connPool
	reused bool      // it served a request before this one
	idleAt time.Time // when it was last put back in the pool

	// rdl is the read deadline armed on conn (zero: none). A deadline is
	// left armed after the response header when the rest cannot need it,
	// and armed anew by the next wait, which saves a timer operation per
	// request; see await.
	rdl time.Time
	// peek looks at the socket without blocking: an idle connection
	// that has data waiting (unasked) or was closed cannot carry a
	// request.
	peek func() (data, closed bool)

	// The fast path of simple responses (see parseSimpleHead): the last
	// response's header, its http.Response (Header nil: the lines are in
	// simple.fields) and its body's reader, valid until release.
	simple simpleHead
	res    http.Response
	body   fixedBody

	fw        flushWrite         // see flushAwait
	writeHeld func(uintptr) bool // pc.writeHeld, bound once
}

// connReader reads a connection for its bufio.Reader, counting the bytes
// read and refusing to read past limit, which bounds a response header.
type connReader struct {
	conn  net.Conn
	n     int64 // bytes read so far
	limit int64 // read no more than this many bytes in all

	// raw: reads go straight to the socket fd and never wait, for a
	// caller inside the connection's raw read callback (see
	// serverConn.serveInline); a read that would wait returns
	// errWouldWait. drained notes that the socket held no more than the
	// last read took (it came back short, or with nothing): reading
	// again is of no use until the poller signals more.
	raw     bool
	fd      uintptr
	drained bool

	// record: (non-raw) reads append what they read to rec, for a caller
	// that must see the raw bytes another parser consumes (see
	// serverConn.readRequest).
	record bool
	rec    []byte

	// timedOut notes that a read ran into the connection's deadline:
	// bufio's line reader hands back a partial line without that error,
	// which a parser then reports as malformed instead.
	timedOut bool
}

var (
	errHeaderTooLarge = errors.New("gateway: the upstream's response header is too large")
	errWouldWait      = errors.New("gateway: no bytes to read yet")
)

func (r *connReader) Read(p []byte) (int, error) {
	if r.n >= r.limit {
		return 0, errHeaderTooLarge
	}
	if rest := r.limit - r.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	if r.raw {
		return r.readRaw(p)
	}
	n, err := r.conn.Read(p)
	r.n += int64(n)
	if r.record {
		r.rec = append(r.rec, p[:n]...)
	}
	if err != nil {
		var ne net.Error
		r.timedOut = r.timedOut || errors.As(err, &ne) && ne.Timeout()
	}
	return n, err
}

func (r *connReader) readRaw(p []byte) (int, error) {
	if r.drained {
		return 0, errWouldWait
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := readFD(r.fd, p)
	switch {
	case err == syscall.EAGAIN:
		r.drained = true
		return 0, errWouldWait
	case err != nil:
		return 0, sockErr("read", err)
	case n == 0:
		return 0, io.EOF
	}
	r.drained = n < len(p)
	r.n += int64(n)
	return n, nil
}

// sockErr wraps the error of a read or write system call made on a TCP
// socket directly, as the net package wraps its own.
func sockErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, err)}
}

// idleUsable reports whether an idle connection may carry a request: the
// upstream has neither closed it nor sent anything unasked. A connection
// the upstream closed while idle is so dropped before a request is written
// to it, not after.
func (pc *pconn) idleUsable() bool {
	if data, closed := pc.peek(); data || closed {
		return false
	}
	if tc, ok := pc.conn.(*tls.Conn); ok {
		return tlsIdle(pc, tc)
	}
	return true
}

// tlsIdle reports whether a TLS connection whose socket holds nothing
// holds nothing either in what crypto/tls read from it already: records
// that came with the last response (a second response, unasked) would
// answer the next request. A read that cannot wait finds them: with a
// deadline that has passed, it returns at once, and crypto/tls takes a
// timeout as no harm to the connection.
func tlsIdle(pc *pconn, tc *tls.Conn) bool {
	if tc.SetReadDeadline(aLongTimeAgo) != nil {
		return false
	}
	_, err := pc.br.Peek(1)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		return false // data, or closed
	}
	pc.rdl = time.Time{}
	return tc.SetReadDeadline(time.Time{}) == nil
}

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// close closes the connection; it is not returned to its pool.
func (pc *pconn) close() { pc.conn.Close() }

// connPool keeps the idle keep-alive connections to one upstream, most
// recently used last, and dials new ones. It is safe for concurrent use.
type connPool struct {
	addr        string      // host:port
	tls         *tls.Config // nil for http
	dialer      net.Dialer
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   []*pconn
	closed bool
	timer  *time.Timer // closes connections idle for too long; nil until needed
}

func newConnPool(u *url.URL) *connPool {
	p := &connPool{
		addr:        hostPort(u),
		dialer:      net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
		maxIdle:     maxIdlePerUpstream,
		idleTimeout: idleConnTimeout,
	}
	if u.Scheme == "https" {
		host, _, _ := net.SplitHostPort(p.addr)
		p.tls = &tls.Config{ServerName: host, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	}
	return p
}

// hostPort returns the address to dial for u, with the scheme's default
// port when u names none.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// get returns an idle connection that is still open, or a new one. Idle
// connections the upstream closed meanwhile are dropped on the way: no
// request was sent on them. Every idle connection is looked at before it
// is taken, however briefly it sat idle: bytes the upstream sent after its
// last response (a body to a HEAD, a second response) would otherwise be
// read as the answer to the next request, perhaps another client's. Its
// errors are those of dial.
func (p *connPool) get(ctx context.Context) (*pconn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return p.dial(ctx)
		}
		pc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		idle := now.Sub(pc.idleAt)
		if idle < p.idleTimeout && pc.idleUsable() {
			pc.reused = true
			return pc, nil
		}
		pc.close()
	}
}

// dial opens a new connection, with TLS for an https upstream.
func (p *connPool) dial(ctx context.Context) (*pconn, error) {
	c, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	pc := &pconn{conn: c, pool: p}
	pc.peek = peeker(c)
	if p.tls != nil {
		tc := tls.Client(c, p.tls)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, err
		}
		pc.conn = tc
	}
	pc.cr = connReader{conn: pc.conn, limit: math.MaxInt64}
	pc.cw = connWriter{conn: pc.conn}
	pc.br = bufio.NewReaderSize(&pc.cr, 4<<10)
	pc.bw = bufio.NewWriterSize(&pc.cw, 4<<10)
	if p.tls == nil {
		pc.raw, _ = syscallConn(c) // none: flushAwait flushes as usual
		pc.writeHeld = pc.writeHeldFD
	}
	return pc, nil
}

// put returns a connection whose last exchange ended cleanly. When the pool
// is full or closed, the connection is closed instead.
func (p *connPool) put(pc *pconn) {
	pc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		pc.close()
		return
	}
	p.idle = append(p.idle, pc)
	if p.timer == nil {
		p.timer = time.AfterFunc(p.idleTimeout, p.expire)
	}
	p.mu.Unlock()
}

// expire closes the connections idle for longer than idleTimeout, and runs
// again when the oldest left would expire.
func (p *connPool) expire() {
	now := time.Now()
	p.mu.Lock()
	var old []*pconn
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleAt) >= p.idleTimeout {
		i++
	}
	if i > 0 {
		old = append(old, p.idle[:i]...)
		n := copy(p.idle, p.idle[i:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	switch {
	case p.closed:
	case len(p.idle) > 0:
		p.timer.Reset(p.idleTimeout - now.Sub(p.idle[0].idleAt))
	default:
		p.timer = nil
	}
	p.mu.Unlock()
	for _, pc := range old {
		pc.close()
	}
}

// close closes the idle connections; connections put back later are
// closed, while get still dials new ones.
func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}
