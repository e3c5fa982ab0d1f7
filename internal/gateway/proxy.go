package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The proxy path below replaces httputil.ReverseProxy and http.Transport
// for every request but protocol upgrades: a profile of bench/gateway.sh
// put most of the gateway's time in their goroutine hand-offs (the
// Transport's read and write loops per connection) and in a 32 KB buffer
// allocated per request. Here the handler's goroutine writes the request
// to a pooled keep-alive connection and reads the response itself.

// hopHeaders are the hop-by-hop header fields (RFC 9110 §7.6.1, and those
// older proxies send); they are never forwarded, in either direction, nor
// are the fields that a Connection header names.
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// ownResponseFields are the response fields the gateway sets itself:
// an upstream's are not passed on.
var ownResponseFields = [...]string{"X-Request-Id", "Ratelimit", "Ratelimit-Policy"}

func isHopHeader(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// connectionTokens returns the field names that h's Connection header
// lists, canonicalized; nil when there are none (the common case).
func connectionTokens(h http.Header) []string {
	var toks []string
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				toks = append(toks, http.CanonicalHeaderKey(f))
			}
		}
	}
	return toks
}

// connectionValues returns the values of the Connection fields in the
// raw response header at the start of b (status line first), as
// textproto reads them: lines end with LF or CRLF, and a line that starts
// with a space or tab continues the one before.
func connectionValues(b []byte) []string {
	var vv []string
	in := false // the line before was a Connection field
	for first := true; ; first = false {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return vv
		}
		line := bytes.TrimSuffix(b[:i], []byte("\r"))
		b = b[i+1:]
		switch {
		case first:
		case len(line) == 0:
			return vv
		case line[0] == ' ' || line[0] == '\t':
			if in {
				// Joined as textproto joins them, its value's leading
				// white space trimmed after: "Connection:\r\n close"
				// is "close".
				last := &vv[len(vv)-1]
				*last = strings.TrimLeft(*last+" "+textproto.TrimString(string(line)), " \t")
			}
			continue
		case len(line) >= 11 && bytes.EqualFold(line[:11], []byte("connection:")):
			vv = append(vv, textproto.TrimString(string(line[11:])))
			in = true
			continue
		}
		in = false
	}
}

// closedConnectionValues is connectionValues when a Connection field
// says close, the one http.ReadResponse deletes; else nil, without
// allocating: most upstreams send "Connection: keep-alive" on every
// response, which ReadResponse keeps.
func closedConnectionValues(b []byte) []string {
	if !connectionSaysClose(b) {
		return nil
	}
	return connectionValues(b)
}

// connectionSaysClose reports whether a Connection field in the raw
// response header at the start of b, or a line continuing one, lists the
// token close. Looked at line by line, it may say so of a value
// textproto joins into something else, never the other way round: a
// token made of two joined lines holds a space.
func connectionSaysClose(b []byte) bool {
	in := false // the line before was a Connection field or continued one
	for first := true; ; first = false {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return false
		}
		line := bytes.TrimSuffix(b[:i], []byte("\r"))
		b = b[i+1:]
		switch {
		case first:
			continue
		case len(line) == 0:
			return false
		case line[0] == ' ' || line[0] == '\t':
		case len(line) >= 11 && bytes.EqualFold(line[:11], []byte("connection:")):
			line, in = line[11:], true
		default:
			in = false
		}
		if !in {
			continue
		}
		for len(line) > 0 {
			tok, rest, _ := bytes.Cut(line, []byte(","))
			if bytes.EqualFold(bytes.Trim(tok, " \t"), []byte("close")) {
				return true
			}
			line = rest
		}
	}
}

// headerHasToken reports whether a comma-separated header field lists
// token, but for the case of ASCII letters, as net/http reads Connection
// (httpguts): under Unicode's folding "\u212Aeep-alive" (the Kelvin sign)
// would be keep-alive, and the fast path would keep a connection the slow
// path closes.
func headerHasToken(vv []string, token string) bool {
	for _, v := range vv {
		for f := range strings.SplitSeq(v, ",") {
			if asciiEqualFold(trimOWS(f), token) {
				return true
			}
		}
	}
	return false
}

// isUpgrade reports whether r asks to switch to WebSocket; such requests
// go through httputil.ReverseProxy, which hijacks the connection. Other
// upgrades are not passed: their Upgrade field, hop-by-hop, is dropped and
// the request goes as any other. A tunnel to a protocol that carries
// requests of its own (h2c above all) would let a client send the
// upstream requests the gateway never sees, let alone authorizes.
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header["Upgrade"], "websocket") && headerHasToken(r.Header["Connection"], "upgrade")
}

// IsUpgrade reports whether the gateway serves r as a WebSocket upgrade:
// its handler takes the client's connection over and runs for as long as
// the connection, which neither server's Close or Shutdown ends (they let
// go of a hijacked connection).
func IsUpgrade(r *http.Request) bool { return isUpgrade(r) }

// bodiless reports whether r has no request body.
func bodiless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0
}

// Errors of one exchange with an upstream.
var (
	// errStale: the request could not be written to a connection taken
	// from the pool, or no byte came back on it: the upstream had closed
	// it. Retried on a fresh connection when that is safe.
	errStale = errors.New("the upstream closed an idle connection")
	// errUnexpected101: the upstream switched protocols on a request that
	// did not ask to.
	errUnexpected101 = errors.New("the upstream answered 101 to a request without Upgrade")
	// errTooMany1xx: an endless series of informational responses.
	errTooMany1xx = errors.New("the upstream sent too many 1xx responses")
	// errStatusBelow100: a status code under 100, which http.ReadResponse
	// reads ("HTTP/1.1 099"), but which is neither an interim answer
	// nor a final one (RFC 9110 §15), nor one a server may write.
	errStatusBelow100 = errors.New("the upstream answered with a status code under 100")
)

// clientBodyError is a failure to read the client's request body.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// clientSide reports whether err is no fault of the upstream's.
func clientSide(err error) bool {
	var ce *clientBodyError
	var fe *invalidFieldError
	return errors.As(err, &ce) || errors.As(err, &fe) || errors.Is(err, errClientGone)
}

func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// invalidFieldError is an identity header value that cannot be sent.
type invalidFieldError struct{ name string }

func (e *invalidFieldError) Error() string {
	return "gateway: invalid value for header field " + e.name
}

// bufPool holds the buffers that bodies are copied through.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// livenessInterval is how often a request waiting on a slow upstream
// checks that its client is still there; when it is not, the upstream
// exchange ends (and its connection is closed).
const livenessInterval = time.Second

// errClientGone: the client left while its request waited on the
// upstream.
var errClientGone = errors.New("the client went away")

// proxy forwards r to an upstream of its route and copies the response
// back. It answers 502/504 itself when no response header came.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request, st *reqState) {
	start := st.verifiedAt
	if start.IsZero() {
		start = time.Now()
	}
	pc, res, err := st.rt.balancer.forward(h, r, st, start)
	st.upstreamDur = time.Since(start)
	if err != nil {
		st.hold(nil)
		h.proxyError(w, r, st, err)
		return
	}
	// Trailers, and a body of unknown length (chunked, or until the
	// upstream closes), which may be a stream such as server-sent events,
	// are flushed as they come; a body of known length goes out in as
	// few writes as it can. A simple response (pc.simple) has neither.
	announced := len(res.Trailer)
	stream := res.ContentLength < 0 && res.Body != http.NoBody
	if pc.simple.ok {
		// Its header lines go to the client as they came, after the
		// gateway's own fields.
		st.sw.writeRawHeader(res.StatusCode, pc.simple.fields, res.ContentLength, pc.simple.hasDate)
	} else {
		copyResponseHeader(w.Header(), res)
		w.WriteHeader(res.StatusCode)
		if stream || announced > 0 {
			// With trailers this also forces chunking, which trailers need.
			flush(w)
		}
	}
	bufp := bufPool.Get().(*[]byte)
	done, readErr := copyBody(w, pc, res, *bufp, stream, st)
	bufPool.Put(bufp)
	st.hold(nil)
	if readErr != nil && !st.cutOff() {
		// The response is cut short: the client must not take it for whole.
		// (Not when the stop cut the client, which closed the upstream
		// connection too: the client left, as far as this request goes.)
		st.proxyErr, st.abort, st.cut = readErr, true, true
	}
	if done {
		hd := w.Header()
		prefix := ""
		if len(res.Trailer) != announced {
			prefix = http.TrailerPrefix
		}
		for k, vv := range res.Trailer {
			if !dropResponseTrailer(k) {
				hd[prefix+k] = vv
			}
		}
	}
	// Not after a HEAD, whose answer has no body whatever its header says:
	// an upstream that wrongly sends one anyway may send it a moment later,
	// after the look that get takes at a pooled connection, and it would
	// answer the next request, perhaps another client's. (204 and 304
	// answers that announce a body are caught in exchange. Bytes sent
	// unasked after any other answer are caught when they come before the
	// connection's next use; later, no HTTP/1.1 client can tell them from
	// that request's answer.)
	pc.release(done && !res.Close && r.Method != http.MethodHead)
}

// copyResponseHeader copies the upstream's response fields to hd but the
// hop-by-hop ones, those its Connection field names and the gateway's own,
// and announces its trailers.
func copyResponseHeader(hd http.Header, res *http.Response) {
	conn := connectionTokens(res.Header)
	for k, vv := range res.Header {
		if !dropResponseField(k, conn) {
			hd[k] = vv
		}
	}
	if _, ok := hd["Content-Type"]; !ok {
		// None came: net/http's servers (TLS, h2c) would guess one from
		// the body, text/html too, which a proxy must not invent (with
		// nosniff, a browser renders no untyped body: a guessed type
		// would make it HTML on the API's origin).
		hd["Content-Type"] = nil
	}
	if len(res.Trailer) > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			if !dropResponseTrailer(k) {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			hd["Trailer"] = []string{strings.Join(keys, ", ")}
		}
	}
}

// dropResponseField reports whether the upstream's response field k stays
// behind, of a final or an informational response: hop-by-hop fields,
// those its Connection field names (conn), and the gateway's own.
func dropResponseField(k string, conn []string) bool {
	return isHopHeader(k) || listed(conn, k) || slices.Contains(ownResponseFields[:], k)
}

// listed reports whether the field name k is among toks.
func listed(toks []string, k string) bool {
	for _, t := range toks {
		if t == k {
			return true
		}
	}
	return false
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// copyBody copies a response body to the client through buf, flushing
// after every write when stream is set. done reports whether the whole
// body was read and written; readErr is a failure to read the upstream's
// body (a failure to write to the client, who went away, is not one).
//
// While the body is not in pc's buffer, each read first waits for the
// upstream's next bytes in slices (await), so that a client that leaves a
// quiet stream ends it, and for at most the route's read timeout.
func copyBody(w http.ResponseWriter, pc *pconn, res *http.Response, buf []byte, stream bool, st *reqState) (done bool, readErr error) {
	if res.Body == http.NoBody || res.ContentLength >= 0 && int64(pc.br.Buffered()) >= res.ContentLength {
		// No body (HEAD, 204, 304), or the whole body is here: no read can
		// block, and the header's read deadline may stay.
		pc = nil
	}
	for {
		if pc != nil {
			var deadline time.Time
			d := st.rt.cfg.ReadTimeout
			if d > 0 {
				deadline = time.Now().Add(d)
			}
			if pc.br.Buffered() == 0 {
				err := pc.await(deadline, st)
				switch {
				case err == nil:
				case errors.Is(err, errClientGone):
					return false, nil
				case err == io.EOF:
					// The upstream closed: the end of a body that runs
					// until it does (RFC 9112 §6.3), which the body's
					// reader tells from one cut short.
				default:
					return false, err
				}
			}
			// The read too, which may want more than came (the rest of
			// a chunk's size line): a deadline armed for the wait may
			// stay, as await's slices do, rather than a timer re-armed
			// for every read of a long body.
			if deadline.IsZero() || !keepDeadline(pc.rdl, time.Now(), deadline, d) {
				pc.setReadDeadline(deadline)
			}
		}
		n, err := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false, nil
			}
			if stream {
				flush(w)
			}
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// setReadDeadline arms a read deadline on the connection, unless it is
// the one armed already.
func (pc *pconn) setReadDeadline(t time.Time) {
	if !t.Equal(pc.rdl) {
		pc.conn.SetReadDeadline(t)
		pc.rdl = t
	}
}

// connWriter writes a connection for its bufio.Writer; while hold is set
// it keeps what it is given in held instead (see flushAwait).
type connWriter struct {
	conn net.Conn
	hold bool
	held []byte
}

func (w *connWriter) Write(p []byte) (int, error) {
	if w.hold {
		w.held = p
		return len(p), nil
	}
	return w.conn.Write(p)
}

// flushAwait sends what pc.bw holds, all of a request, and waits for the
// first bytes of the answer as await's first slice would, without the
// read that finds nothing yet (a system call per request): the write is
// made in the raw connection's read callback, after the poller's
// readiness was reset, so the answer, which cannot come before the
// request went out, is signalled. Whatever ends the wait (the answer, a
// deadline, an error), the caller's await then reads on; only a failed
// write is returned. Without a raw connection it is pc.bw.Flush.
func (pc *pconn) flushAwait(deadline time.Time) error {
	if pc.raw == nil {
		return pc.bw.Flush()
	}
	pc.armSlice(time.Now(), deadline)
	pc.cw.hold = true
	err := pc.bw.Flush()
	pc.cw.hold = false
	rest := pc.cw.held // the writer's buffer: used up before it is written again
	pc.cw.held = nil
	if err != nil {
		return err
	}
	pc.fw = flushWrite{rest: rest}
	pc.raw.Read(pc.writeHeld)
	rest, werr := pc.fw.rest, pc.fw.err
	pc.fw = flushWrite{}
	if werr != nil {
		return werr
	}
	if len(rest) > 0 {
		// The socket took only part of it, or the wait could not start
		// (a deadline passed, the connection closed): the usual write.
		_, err = pc.conn.Write(rest)
	}
	return err
}

// flushWrite is the state of flushAwait's write in the raw read callback.
type flushWrite struct {
	rest   []byte // what is left to write
	called bool   // the callback ran: a second call means the poller signalled
	err    error  // the write failed
}

// writeHeldFD is flushAwait's raw read callback, made once per connection
// (a closure per request would cost allocations): on its first call it
// writes pc.fw.rest and asks to wait, on its second (the poller signalled
// the answer) it ends the wait.
func (pc *pconn) writeHeldFD(fd uintptr) bool {
	fw := &pc.fw
	if fw.called {
		return true
	}
	fw.called = true
	for len(fw.rest) > 0 {
		n, err := writeFD(fd, fw.rest)
		fw.rest = fw.rest[n:]
		if err != nil {
			if err != syscall.EAGAIN {
				fw.err = sockErr("write", err)
			}
			return true // the rest goes the usual way
		}
	}
	return false
}

// armSlice arms the read deadline of the wait slice starting at now (see
// await): a slice of livenessInterval, or less to end at deadline (zero:
// none). A deadline armed for an earlier slice may stay (keepDeadline).
func (pc *pconn) armSlice(now, deadline time.Time) {
	d := now.Add(livenessInterval)
	if !deadline.IsZero() && deadline.Before(d) {
		d = deadline
	}
	if !keepDeadline(pc.rdl, now, d, livenessInterval) {
		pc.setReadDeadline(d)
	}
}

// await waits for the upstream's next bytes, until deadline (zero: no
// end), in slices of livenessInterval: after each slice it asks whether the
// client is still there, and returns errClientGone when not, or when the
// server cut the client (its Close also closes this connection, which ends
// the wait at once). When bytes come, a slice's deadline stays armed; a
// caller that reads further must arm its own.
func (pc *pconn) await(deadline time.Time, st *reqState) error {
	for {
		now := time.Now()
		// A slice that ended before the call (flushAwait's first one, which
		// waits for the answer without asking about the client) is asked
		// about here: else the first look would come only after a second
		// slice.
		if !pc.rdl.IsZero() && !pc.rdl.After(now) && st.clientGone() {
			return errClientGone
		}
		if !deadline.IsZero() && !now.Before(deadline) {
			return os.ErrDeadlineExceeded
		}
		pc.armSlice(now, deadline)
		_, err := pc.br.Peek(1)
		if err == nil {
			return nil
		}
		if st.cutOff() {
			return errClientGone
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
	}
}

// release ends the use of a connection: back to its pool when reuse says
// the exchange ended cleanly, else closed.
func (pc *pconn) release(reuse bool) {
	if reuse && pc.br.Buffered() == 0 {
		pc.pool.put(pc)
		return
	}
	pc.close()
}

// forward sends r to an upstream of the balancer's route (see try) and
// returns the response, whose body is still to be read from the returned
// connection.
func (b *balancer) forward(h *Handler, r *http.Request, st *reqState, now time.Time) (pc *pconn, res *http.Response, err error) {
	err = b.try(r, now.UnixNano(), func(u *upstream) error {
		pc, res, err = h.send(u, r, st)
		return err
	})
	return pc, res, err
}

// send makes one exchange with upstream u: a pooled connection (or a new
// one), the request written, the response header read. When the pooled
// connection turns out to have been closed by the upstream before the
// request could be sent (or, for an idempotent request without a body,
// before any answer came), the exchange is made again on a new connection.
func (h *Handler) send(u *upstream, r *http.Request, st *reqState) (*pconn, *http.Response, error) {
	ctx := r.Context()
	pc, err := u.pool.get(ctx)
	if err != nil {
		return nil, nil, err
	}
	st.hold(pc)
	res, err := h.exchange(pc, r, st, u)
	if err != nil && pc.reused && errors.Is(err, errStale) && !st.cutOff() {
		pc.close()
		if pc, err = u.pool.dial(ctx); err != nil {
			return nil, nil, err
		}
		st.hold(pc)
		res, err = h.exchange(pc, r, st, u)
	}
	if err != nil {
		pc.close()
		if st.cutOff() {
			// Close cut the client and closed this connection with it,
			// whatever the exchange was doing (reading the header, say):
			// no fault of the upstream's.
			err = errClientGone
		}
		return nil, nil, err
	}
	return pc, res, nil
}

// exchange writes r to pc and reads the response header. The wait for
// the header is bounded by the route's timeout, and ends early when the
// client leaves.
func (h *Handler) exchange(pc *pconn, r *http.Request, st *reqState, u *upstream) (*http.Response, error) {
	noBody := bodiless(r)
	chunked := !noBody && r.ContentLength < 0
	if err := h.writeHead(pc.bw, r, st, u, noBody, chunked); err != nil {
		return nil, err
	}
	var wErr error // the upstream stopped taking the request
	// A body the client sent whole with its header goes with the
	// request's header, in one write, when the buffer holds both.
	held, _ := r.Body.(*heldBody)
	inOne := noBody || held != nil && !chunked && int64(held.Len()) == r.ContentLength && held.Len() <= pc.bw.Available()
	switch {
	case noBody:
	case inOne:
		if _, err := held.WriteTo(pc.bw); err != nil {
			return nil, &clientBodyError{err} // closed: the request is over
		}
	default:
		var cErr error
		cErr, wErr = copyRequestBody(pc, r, chunked, st.rt.cfg.Timeout, func(k string) bool { return h.dropRequestTrailer(k, &st.rt.cfg) })
		if cErr != nil {
			return nil, &clientBodyError{cErr}
		}
	}
	// Only the wait for the response header is bounded: a streamed body
	// may take as long as it takes. An upstream that stopped reading a
	// request body may have answered already (413, say): read on.
	deadline := time.Now().Add(st.rt.cfg.Timeout)
	if wErr == nil {
		if inOne {
			wErr = pc.flushAwait(deadline)
		} else {
			wErr = pc.bw.Flush()
		}
	}
	if wErr != nil && noBody {
		// Nothing of the request could be sent.
		if pc.reused {
			return nil, fmt.Errorf("%w: %v", errStale, wErr)
		}
		return nil, wErr
	}
	// The fast path writes the upstream's header lines to the client as
	// they came: only on the gateway's own server, and not for HEAD, whose
	// response has a length but no body.
	_, fast := st.sw.ResponseWriter.(*response)
	fast = fast && r.Method != http.MethodHead
	pc.simple.ok = false
	pc.cr.limit = pc.cr.n + maxResponseHeaderBytes
	before := pc.cr.n
	var res *http.Response
	var err error
	for n1xx := 0; ; n1xx++ {
		if err = pc.await(deadline, st); err != nil {
			break
		}
		if fast && n1xx == 0 {
			if sh, n, ok := parseSimpleHead(pc.br, pc.simple.fields[:0]); ok {
				pc.br.Discard(n)
				pc.simple = sh
				pc.res = http.Response{StatusCode: sh.status, ProtoMajor: 1, ProtoMinor: 1, ContentLength: sh.length, Body: http.NoBody}
				if sh.length > 0 {
					pc.body = fixedBody{r: pc.br, left: sh.length}
					pc.res.Body = &pc.body
				}
				res = &pc.res
				break
			}
		}
		if !pc.rdl.Equal(deadline) && !headerBuffered(pc.br) {
			// The header is still coming: the rest of it has until the
			// route's deadline, not a slice's.
			pc.setReadDeadline(deadline)
		}
		// A response with both Transfer-Encoding and Content-Length
		// (RFC 9112 §6.3: "ought to be handled as an error") is read by
		// its Transfer-Encoding, as ReadResponse does, but the upstream
		// and the gateway may disagree on where it ends: its connection
		// is not used again. Looked for in the buffered header, which
		// holds the whole of it but for very large ones.
		b, _ := pc.br.Peek(pc.br.Buffered())
		fr := scanFraming(b)
		// ReadResponse deletes a Connection field that says close, and
		// with it the names of the fields it lists, which must not be
		// passed on either (RFC 9110 §7.6.1): its values are read from the
		// raw header first, or, when it goes on past the buffer, from its
		// bytes kept as ReadResponse reads them.
		var conn []string
		if fr.complete {
			conn = closedConnectionValues(b)
		} else {
			pc.cr.rec = append(pc.cr.rec[:0], b...)
			pc.cr.record = true
		}
		res, err = http.ReadResponse(pc.br, r)
		if pc.cr.record {
			pc.cr.record = false
			conn = closedConnectionValues(pc.cr.rec)
			pc.cr.rec = nil
		}
		if err != nil {
			break
		}
		if len(conn) > 0 && res.Header["Connection"] == nil {
			res.Header["Connection"] = conn
		}
		if fr.te && fr.cl || !fr.complete && len(res.TransferEncoding) > 0 || announcesBody(res, fr) {
			res.Close = true
		}
		if res.StatusCode >= 200 {
			break
		}
		if res.StatusCode < 100 {
			return nil, errStatusBelow100
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			return nil, errUnexpected101
		}
		if n1xx == 5 {
			return nil, errTooMany1xx
		}
		// 100 Continue concerns this hop only (the server answered the
		// client's Expect itself); other 1xx, such as 103 Early Hints, go
		// to the client as they come.
		if res.StatusCode != http.StatusContinue {
			st.forward1xx(res)
		}
	}
	if err != nil {
		if errors.Is(err, errClientGone) {
			return nil, err
		}
		if wErr != nil {
			return nil, wErr
		}
		if pc.reused && pc.cr.n == before && noBody && idempotent(r.Method) && (err == io.ErrUnexpectedEOF || err == io.EOF || isConnReset(err)) {
			return nil, fmt.Errorf("%w: %v", errStale, err)
		}
		return nil, err
	}
	pc.cr.limit = math.MaxInt64
	if wErr != nil {
		res.Close = true // the request was not sent whole: no reuse
	}
	return res, nil
}

// announcesBody reports whether a 204 or 304 answer, which has no body,
// says in its header that one follows (a Transfer-Encoding, a Content-Length
// but 0; for a 304 both are lawful, but rare), or whose header was not seen
// whole: an upstream that sends one anyway may send it a moment later, when
// it would answer the next request on the connection.
func announcesBody(res *http.Response, fr framing) bool {
	if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusNotModified {
		return false
	}
	cl := res.Header.Get("Content-Length")
	return fr.te || !fr.complete || cl != "" && cl != "0"
}

// forward1xx sends an informational response to the client. Its fields go
// out with it and are then taken back, but those the final response drops
// too: hop-by-hop ones, those its Connection field names, and the
// gateway's own (X-Request-Id, RateLimit, ...), which it sends as it set
// them, if it did.
func (st *reqState) forward1xx(res *http.Response) {
	hd := st.sw.Header()
	conn := connectionTokens(res.Header)
	var added []string
	for k, vv := range res.Header {
		if _, set := hd[k]; set || dropResponseField(k, conn) {
			continue
		}
		hd[k] = vv
		added = append(added, k)
	}
	st.sw.WriteHeader(res.StatusCode)
	for _, k := range added {
		delete(hd, k)
	}
}

// writeHead writes the request line and header of the upstream request
// into bw (nothing is sent yet): the client's fields without hop-by-hop
// ones, the credential, client-sent X-Keyward-* and forwarding fields, then
// the identity, the request id, X-Forwarded-* and the body's framing.
func (h *Handler) writeHead(bw *bufio.Writer, r *http.Request, st *reqState, u *upstream, noBody, chunked bool) error {
	rt := &st.rt.cfg
	out := url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath}
	if rt.StripPrefix && rt.PathPrefix != "/" {
		stripPrefix(&out, r.URL, rt.PathPrefix, h.router.fold)
	}
	targetURL(&out, u.url)
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(out.EscapedPath())
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(u.url.Host)
	bw.WriteString("\r\n")

	conn := connectionTokens(r.Header)
	for k, vv := range r.Header {
		if h.dropRequestField(k, rt, conn) || dropProxyField(k, st.trusted) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	if headerHasToken(r.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if t := st.token; t != nil {
		if !validFieldValue(t.ID) {
			return &invalidFieldError{HeaderTokenID}
		}
		if !validFieldValue(t.Subject) {
			return &invalidFieldError{HeaderSubject}
		}
		writeField(bw, HeaderTokenID, t.ID)
		writeField(bw, HeaderSubject, t.Subject)
		bw.WriteString(HeaderScopes + ": ")
		for i, s := range t.Scopes {
			if !validFieldValue(s) {
				return &invalidFieldError{HeaderScopes}
			}
			if i > 0 {
				bw.WriteByte(' ')
			}
			bw.WriteString(s)
		}
		bw.WriteString("\r\n")
	}
	writeField(bw, "X-Request-Id", st.requestID)
	// The client's address as the gateway resolved it (trusted proxies
	// considered), where frameworks look first (chi's RealIP, say).
	bw.WriteString("X-Real-Ip: ")
	bw.Write(st.clientIP.AppendTo(bw.AvailableBuffer()))
	bw.WriteString("\r\n")

	// X-Forwarded-*: a trusted proxy's values are kept and appended to; an
	// untrusted client's are dropped, so upstreams can believe them.
	bw.WriteString("X-Forwarded-For: ")
	if prior := r.Header["X-Forwarded-For"]; st.trusted && len(prior) > 0 {
		for _, v := range prior {
			bw.WriteString(v)
			bw.WriteString(", ")
		}
	}
	bw.Write(st.remote.AppendTo(bw.AvailableBuffer()))
	bw.WriteString("\r\n")
	if v := r.Header.Get("X-Forwarded-Host"); st.trusted && v != "" {
		writeField(bw, "X-Forwarded-Host", v)
	} else {
		writeField(bw, "X-Forwarded-Host", r.Host)
	}
	if v := r.Header.Get("X-Forwarded-Proto"); st.trusted && v != "" {
		writeField(bw, "X-Forwarded-Proto", v)
	} else if r.TLS != nil {
		bw.WriteString("X-Forwarded-Proto: https\r\n")
	} else {
		bw.WriteString("X-Forwarded-Proto: http\r\n")
	}

	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case !noBody:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), r.ContentLength, 10))
		bw.WriteString("\r\n")
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
	return nil
}

// dropRequestField reports whether the client's header field k stays
// behind: hop-by-hop fields and those Connection names, fields the gateway
// sets itself or frames itself, and the credential.
func (h *Handler) dropRequestField(k string, rt *Route, conn []string) bool {
	if isHopHeader(k) || listed(conn, k) {
		return true
	}
	if strings.IndexByte(k, '_') >= 0 {
		// CGI-style servers (WSGI, Rack, PHP) read X_Keyward_Subject as
		// X-Keyward-Subject: a name that, read so, is one the gateway
		// drops is dropped too, or a client could forge the identity.
		if alias := underscoreAlias(k); alias != k {
			return h.dropRequestField(alias, rt, conn)
		}
	}
	switch k {
	case "Content-Length", "Expect", "Host", "X-Request-Id",
		"Forwarded", "X-Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		// Expect: the server answers 100 Continue to the client itself
		// when the body is first read.
		return true
	case "Authorization":
		return rt.Auth != AuthNone
	}
	if len(k) >= 10 && strings.EqualFold(k[:10], "X-Keyward-") {
		return true
	}
	return rt.TokenHeader != "" && k == rt.TokenHeader
}

// clientIPFields are the fields by which proxies and CDNs tell upstreams
// the client's address. An upstream that believes one would believe a
// client that forged it. The gateway sets X-Real-Ip itself, always (a
// trusted load balancer may pass a client's own X-Real-IP along as it
// came); of the others, only a CDN's own (cdnClientIPFields), from a
// trusted proxy, are kept.
var clientIPFields = [...]string{
	"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Client-Ip", "X-Cluster-Client-Ip",
	"Forwarded-For", "Cf-Connecting-Ip", "Fastly-Client-Ip",
}

// forwardingFields are the fields besides X-Forwarded-* by which proxies
// tell upstreams how the client reached them (scheme, port, original URL
// or host): frameworks build absolute URLs, redirects and reset links from
// them (Rack's X-Forwarded-Ssl, IIS's X-Original-Url, say).
var forwardingFields = [...]string{
	"Front-End-Https", "X-Url-Scheme", "X-Scheme", "X-Https", "X-Original-Host", "X-Host",
}

// rewriteFields name another path than the request's (IIS's URL rewriting
// routes by them): a load balancer passes a client's along as it came, so
// they are dropped from trusted proxies too, or a client could reach a
// path that the route it took does not cover.
var rewriteFields = [...]string{"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri"}

// dropProxyField reports whether the field k, one a proxy sets for its
// upstream, stays behind: every client-IP field (clientIPFields) but a
// trusted CDN's own, and, unless a trusted proxy sent the request, every
// X-Forwarded-* field and forwardingFields. (X-Forwarded-For, -Host and
// -Proto, dropped by dropRequestField, the gateway sets itself.) Names with
// underscores are read with dashes, as CGI-style servers read them.
func dropProxyField(k string, trusted bool) bool {
	switch k {
	case "True-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip":
		return !trusted // a CDN's own: set by the CDN, whatever the client sent
	case "X-Real-Ip", "X-Client-Ip", "Client-Ip", "X-Cluster-Client-Ip", "Forwarded-For",
		"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri":
		// clientIPFields and rewriteFields, as a switch: this runs for
		// every field.
		return true
	case "Front-End-Https", "X-Url-Scheme", "X-Scheme", "X-Https", "X-Original-Host", "X-Host":
		return !trusted // forwardingFields
	}
	if !trusted && len(k) > 12 && strings.EqualFold(k[:12], "X-Forwarded-") {
		return true
	}
	if strings.IndexByte(k, '_') >= 0 {
		a := underscoreAlias(k)
		if slices.Contains(clientIPFields[:], a) || slices.Contains(rewriteFields[:], a) {
			return true // no CDN sends underscores
		}
		return !trusted && (slices.Contains(forwardingFields[:], a) || len(a) > 12 && a[:12] == "X-Forwarded-")
	}
	return false
}

// underscoreAlias is the canonical name a CGI-style server takes k for:
// its underscores read as dashes.
func underscoreAlias(k string) string {
	return http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
}

// badTrailers are fields that must not come in a request's trailers (RFC
// 9110 §6.5.1: framing, routing, authentication, and what controls the
// request), on top of those the header drops: they are not passed on.
var badTrailers = [...]string{
	"Authorization", "Cache-Control", "Content-Encoding", "Content-Length",
	"Content-Range", "Content-Type", "Cookie", "Expect", "Host",
	"Max-Forwards", "Pragma", "Range", "Set-Cookie", "Www-Authenticate",
}

// dropRequestTrailer reports whether the client's trailer field k stays
// behind: what the header would drop, what a trailer may not carry, and a
// name that is not a token (Go's reader takes "Authorization :" in
// trailers, uncanonicalized, which an upstream may read as Authorization).
func (h *Handler) dropRequestTrailer(k string, rt *Route) bool {
	if !validFieldName(k) {
		return true
	}
	ck := k
	if strings.IndexByte(k, '_') >= 0 {
		ck = underscoreAlias(k)
	}
	return slices.Contains(badTrailers[:], ck) || h.dropRequestField(k, rt, nil) || dropProxyField(ck, false)
}

// dropResponseTrailer reports whether the upstream's trailer field k stays
// behind: what the response header drops, and what a trailer may not
// carry (badTrailers: Content-Length, Set-Cookie, ...).
func dropResponseTrailer(k string) bool {
	return !validFieldName(k) || isHopHeader(k) || slices.Contains(ownResponseFields[:], k) || slices.Contains(badTrailers[:], k)
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// validFieldValue reports whether v may be sent as a header field value:
// no control characters but horizontal tab.
func validFieldValue[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// stripPrefix sets out's path to in's without the route's prefix.
func stripPrefix(out, in *url.URL, prefix string, fold bool) {
	out.Path = in.Path
	if hasPathPrefix(in.Path, prefix, fold) {
		out.Path = ensureSlash(in.Path[len(prefix):])
	}
	out.RawPath = ""
	if in.RawPath != "" && hasPathPrefix(in.RawPath, prefix, fold) {
		out.RawPath = ensureSlash(in.RawPath[len(prefix):])
	}
}

// copyRequestBody streams the client's request body to the upstream,
// chunked when its length is unknown, flushing after every piece so that a
// slow upload reaches the upstream as it comes; nothing is held beyond one
// buffer. An upstream that takes no piece within timeout has stopped
// taking the body. clientErr is a failure to read the body; upErr a
// failure to send it.
func copyRequestBody(pc *pconn, r *http.Request, chunked bool, timeout time.Duration, drop func(string) bool) (clientErr, upErr error) {
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	defer pc.conn.SetWriteDeadline(time.Time{})
	bw := pc.bw
	buf := *bufp
	var sent int64
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if chunked {
				bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(n), 16))
				bw.WriteString("\r\n")
			}
			bw.Write(buf[:n])
			if chunked {
				bw.WriteString("\r\n")
			}
			pc.conn.SetWriteDeadline(time.Now().Add(timeout))
			if upErr = bw.Flush(); upErr != nil {
				return nil, upErr
			}
			sent += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err, nil
		}
	}
	if !chunked {
		if sent != r.ContentLength {
			return io.ErrUnexpectedEOF, nil
		}
		return nil, nil
	}
	bw.WriteString("0\r\n")
	for k, vv := range r.Trailer {
		if drop(k) {
			continue
		}
		for _, v := range vv {
			if validFieldValue(v) {
				writeField(bw, k, v)
			}
		}
	}
	bw.WriteString("\r\n")
	return nil, nil
}

// simpleHead is an upstream response header of the kind the fast path
// takes (see parseSimpleHead).
type simpleHead struct {
	ok      bool // the last response read on the connection was simple
	status  int
	length  int64
	fields  []byte // the header lines, each ending in CRLF
	hasDate bool
}

// parseSimpleHead looks at a response header wholly in br's buffer and,
// when it is simple, returns it with the number of bytes it takes, its
// lines appended to buf; nothing is consumed. Simple is: HTTP/1.1, a
// final status other than 204 and 304, a reason phrase without control
// characters (a bare LF in it would end the line for ReadResponse), one
// valid Content-Length, lines ending in CRLF with valid names and values,
// no line folding, and no field the slow path would drop or replace
// (hop-by-hop fields, Connection, Transfer-Encoding, Trailer, the
// gateway's own X-Request-Id and RateLimit fields, and a Pragma without
// Cache-Control, to which ReadResponse adds one). Anything else (ok
// false) is left to http.ReadResponse, field names keep the case the
// upstream gave them.
func parseSimpleHead(br *bufio.Reader, buf []byte) (sh simpleHead, n int, ok bool) {
	b, _ := br.Peek(br.Buffered())
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		return sh, 0, false
	}
	head := b[:end+2] // each line with its CRLF
	i := bytes.Index(head, crlf)
	line := head[:i]
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || len(line) > 12 && line[12] != ' ' {
		return sh, 0, false
	}
	if !validFieldValue(line[12:]) {
		// A bare LF ends the status line for http.ReadResponse, and what
		// follows it is a field of the header, or its end: "200 OK\n\r\n"
		// would put the fields below into the body.
		return sh, 0, false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return sh, 0, false
		}
		sh.status = sh.status*10 + int(c-'0')
	}
	if sh.status < 200 || sh.status == http.StatusNoContent || sh.status == http.StatusNotModified {
		return sh, 0, false
	}
	sh.length = -1
	pragma, cacheControl := false, false
	rest := head[i+2:]
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		line := rest[:i+2]
		rest = rest[i+2:]
		name, value, found := bytes.Cut(line[:i], []byte(":"))
		if !found || !validFieldName(name) || !validFieldValue(value) {
			return sh, 0, false // folding (a leading space) fails the name too
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			v := bytes.Trim(value, " \t")
			if sh.length >= 0 || len(v) == 0 || len(v) > 18 {
				return sh, 0, false
			}
			sh.length = 0
			for _, c := range v {
				if c < '0' || c > '9' {
					return sh, 0, false
				}
				sh.length = sh.length*10 + int64(c-'0')
			}
		case bytes.EqualFold(name, []byte("Date")):
			sh.hasDate = true
		case len(name) == 6 && bytes.EqualFold(name, []byte("Pragma")):
			pragma = true
		case len(name) == 13 && bytes.EqualFold(name, []byte("Cache-Control")):
			cacheControl = true
		case slowField(name):
			return sh, 0, false
		}
		buf = append(buf, line...)
	}
	if sh.length < 0 || pragma && !cacheControl {
		// ReadResponse adds "Cache-Control: no-cache" to a Pragma without
		// one: the client gets the same fields either way.
		return sh, 0, false
	}
	sh.fields, sh.ok = buf, true
	return sh, end + 4, true
}

var crlf = []byte("\r\n")

// slowField reports whether a response field sends its response down the
// slow path, which drops or replaces it: a hop-by-hop field, or one of the
// gateway's own.
func slowField(name []byte) bool {
	for _, f := range hopHeaders {
		if bytes.EqualFold(name, []byte(f)) {
			return true
		}
	}
	for _, f := range ownResponseFields {
		if bytes.EqualFold(name, []byte(f)) {
			return true
		}
	}
	return false
}

// fixedBody reads a response body of a known length on the fast path; an
// upstream that ends the connection before the length was read gives
// io.ErrUnexpectedEOF.
type fixedBody struct {
	r    io.Reader
	left int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		if b.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	if b.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }
