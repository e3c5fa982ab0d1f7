package gateway

import (
	"io"
	"net/http"
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
		if body > 0 && r.Body != nil && r.Body != http.NoBody {
			r.Body = &timedBody{ReadCloser: r.Body, d: deadline{set: rc.SetReadDeadline, t: body, h2: h2}}
		}
		if send <= 0 {
			h.ServeHTTP(w, r)
			return
		}
		tw := &timedWriter{ResponseWriter: w, rc: rc, d: deadline{set: rc.SetWriteDeadline, t: send, h2: h2}}
		h.ServeHTTP(tw, r)
		if !h2 {
			// net/http writes what the handler left buffered, and the
			// end of a chunked body, after the handler returns; the
			// deadline armed last may have passed by then, and a TLS
			// write that times out leaves the connection's records
			// corrupt.
			rc.SetWriteDeadline(time.Now().Add(send))
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
func (d *deadline) before() {
	now := time.Now()
	want := now.Add(d.t)
	if !d.h2 && keepDeadline(d.armed, now, want, d.t) {
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
// Unwrap lets http.ResponseController reach the rest (Hijack for
// upgrades; a hijacked connection has its deadlines cleared by net/http).
type timedWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  deadline
}

func (w *timedWriter) WriteHeader(code int) {
	w.d.before() // a 1xx response is written at once
	w.ResponseWriter.WriteHeader(code)
	w.d.after()
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.d.before()
	n, err := w.ResponseWriter.Write(p)
	w.d.after()
	return n, err
}

func (w *timedWriter) Flush() { w.FlushError() }

func (w *timedWriter) FlushError() error {
	w.d.before()
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
	d    deadline
	done bool
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	b.d.before()
	n, err := b.ReadCloser.Read(p)
	b.d.after()
	b.done = err != nil
	return n, err
}
