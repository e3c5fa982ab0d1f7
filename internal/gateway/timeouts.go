package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ClientTimeouts gives h, served by net/http's server (the gateway's TLS
// listener), the send and body timeouts the gateway's own server keeps: a
// client that takes nothing of a response for send, or sends nothing of
// a request body for body, is cut off, and the handler and the upstream
// connection it holds are freed. A stream that keeps flowing is not cut,
// however long it lasts; net/http's own ReadTimeout and WriteTimeout
// would bound the whole exchange instead.
//
// The deadlines go through http.ResponseController. On HTTP/1.1 they are
// the connection's, which matter only while a read or write waits, so
// they are armed before one, anew only when an eighth of the timeout has
// gone. On HTTP/2 they are the stream's, whose timers reset the stream
// when they fire whether or not anything waits, so each is armed for one
// write or read and cleared after it: a quiet stream between two events
// is not a stalled client.
func ClientTimeouts(h http.Handler, send, body time.Duration) http.Handler {
	if send <= 0 && body <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		h2 := r.ProtoMajor >= 2
		var tb *timedBody
		if body > 0 && r.Body != nil && r.Body != http.NoBody {
			tb = &timedBody{ReadCloser: r.Body, d: deadline{set: rc.SetReadDeadline, t: body, h2: h2}}
			// A copy of the request: net/http looks at its own request's
			// body after the handler (whether it was closed, how much of
			// it is left), which must stay its own.
			r = r.WithContext(r.Context())
			r.Body = tb
			if !h2 {
				// net/http reads away what the handler leaves of a body
				// (256 KB at most) before the response's header goes out:
				// a body never read is bounded too.
				tb.d.before()
			}
		}
		var tw *timedWriter
		if send > 0 {
			tw = &timedWriter{ResponseWriter: w, rc: rc, d: deadline{set: rc.SetWriteDeadline, t: send, h2: h2}, body: tb}
			w = tw
		}
		h.ServeHTTP(w, r)
		if tw != nil && tw.hijacked {
			return // the connection is the handler's now, deadlines and all
		}
		// After the handler net/http still writes what it left buffered
		// and the end of the body, on HTTP/1.1 after reading away the
		// rest of the request's body: the deadlines armed last may have
		// passed by then. A TLS write that times out leaves the
		// connection's records corrupt; on HTTP/2 a stream whose client
		// takes nothing would hold its slot for ever. (net/http clears
		// the connection's write deadline once the response is out, and
		// a closed stream stops its timers.)
		if tb.pending() {
			rc.SetReadDeadline(time.Now().Add(body))
		}
		if tw != nil {
			rc.SetWriteDeadline(time.Now().Add(send + tw.slack()))
		}
	})
}

// deadline arms one direction's deadline around the operations that may
// wait on the client. Only one goroutine uses it at a time: the one that
// writes the response, or the one that reads the body.
type deadline struct {
	set   func(time.Time) error
	t     time.Duration
	h2    bool
	armed time.Time // on HTTP/1.1, the deadline last set
}

// before arms the deadline ahead of an operation.
func (d *deadline) before() { d.beforeSlack(0) }

// beforeSlack arms the deadline ahead of an operation that may first wait
// for up to slack on something else.
func (d *deadline) beforeSlack(slack time.Duration) {
	now := time.Now()
	t := d.t + slack
	want := now.Add(t)
	if !d.h2 && keepDeadline(d.armed, now, want, t) {
		return
	}
	d.armed = want
	d.set(want)
}

// after clears a stream's deadline once the operation is done.
func (d *deadline) after() {
	if d.h2 {
		d.set(time.Time{})
	}
}

// timedWriter arms the send timeout around what writes to the client.
// Unwrap lets http.ResponseController reach the rest.
type timedWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	d        deadline
	body     *timedBody // nil: none, or no body timeout
	hijacked bool
}

// Hijack hands the connection over (net/http clears its deadlines); the
// timeouts no longer touch it.
func (w *timedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.rc.Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

// before arms the send timeout.
func (w *timedWriter) before() { w.d.beforeSlack(w.slack()) }

// slack is how long a write may wait before it writes: the body timeout
// while net/http may first read away the rest of the body (pending).
func (w *timedWriter) slack() time.Duration {
	if w.body.pending() {
		return w.body.d.t
	}
	return 0
}

func (w *timedWriter) WriteHeader(code int) {
	w.before() // a 1xx response is written at once
	w.ResponseWriter.WriteHeader(code)
	w.d.after()
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.before()
	n, err := w.ResponseWriter.Write(p)
	w.d.after()
	return n, err
}

func (w *timedWriter) Flush() { w.FlushError() }

func (w *timedWriter) FlushError() error {
	w.before()
	err := w.rc.Flush()
	w.d.after()
	return err
}

func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// timedBody arms the body timeout around each read of the request body,
// until the body ends or fails. On HTTP/1.1 net/http then reads on its
// own: at the end, a read that notices a client leaving, which a deadline
// armed afterwards would end and take for the client gone (net/http
// clears the deadline before it); after a failure, a read away of the
// rest of the body, which the deadline, left armed, keeps from waiting.
type timedBody struct {
	io.ReadCloser
	d     deadline
	ended atomic.Bool // read to its end, or failed
}

// pending reports whether net/http may still read away the rest of the
// body (HTTP/1.1, before the response's header goes out or after the
// handler) with the body timeout as the only bound; false for no body.
func (b *timedBody) pending() bool {
	return b != nil && !b.d.h2 && !b.ended.Load()
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.ended.Load() {
		return b.ReadCloser.Read(p)
	}
	b.d.before()
	n, err := b.ReadCloser.Read(p)
	b.d.after()
	if err != nil {
		b.ended.Store(true)
	}
	return n, err
}

// HTTP2HeaderTimeout returns a ConnState hook for net/http's server that
// gives an HTTP/2 connection (TLS, negotiated "h2") d from its preface to
// the header block of its first request, as ReadHeaderTimeout does for
// HTTP/1 (which net/http applies to HTTP/1 only): a client that sends the
// preface and then nothing, or a HEADERS frame whose block it never ends,
// is cut off after d instead of holding the connection until the idle
// timeout. Once a request came, the idle timeout bounds the waits between
// requests, as on HTTP/1, where a kept-alive connection may wait that long
// for its next request too. d <= 0: no hook, nil.
func HTTP2HeaderTimeout(d time.Duration) func(net.Conn, http.ConnState) {
	return h2HeaderTimeout(d, func(c net.Conn) bool {
		tc, ok := c.(*tls.Conn)
		return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
	})
}

// h2HeaderTimeout is HTTP2HeaderTimeout for the connections that isH2
// reports as HTTP/2.
//
// net/http reports a new connection (StateNew), then for HTTP/2 the
// preface read (StateActive, StateIdle at once), then each time a stream
// opens on a connection without any (StateActive): the first StateActive
// arms the read deadline, the second, the first request's complete
// header block, clears it. On HTTP/1, whose first StateActive is a
// request's, the connection is left to net/http's own deadlines.
func h2HeaderTimeout(d time.Duration, isH2 func(net.Conn) bool) func(net.Conn, http.ConnState) {
	if d <= 0 {
		return nil
	}
	// The connections yet to get their first request: true once the
	// preface armed the deadline. net/http calls the hook on every
	// HTTP/1 request (StateActive): a sync.Map, whose look-ups take no
	// lock, keeps that path free of one shared by all connections. A
	// connection's calls come one after another.
	var waiting sync.Map // net.Conn: bool
	return func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			waiting.Store(c, false)
		case http.StateActive:
			v, ok := waiting.Load(c)
			if !ok {
				return // past its first request
			}
			if armed := v.(bool); !armed && isH2(c) {
				waiting.Store(c, true)
				c.SetReadDeadline(time.Now().Add(d))
				return
			}
			waiting.Delete(c)
			if v.(bool) {
				c.SetReadDeadline(time.Time{})
			}
		case http.StateClosed, http.StateHijacked:
			waiting.Delete(c)
		}
	}
}
