package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/logfmt"
	"github.com/keyward/keyward/internal/realip"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/verify"
)

// Verifier verifies tokens; *verify.Engine is one.
type Verifier interface {
	Verify(ctx context.Context, req verify.Request) verify.Result
}

// Identity headers set on upstream requests. Every client-sent X-Keyward-*
// header is removed first.
const (
	HeaderTokenID = "X-Keyward-Token-Id"
	HeaderSubject = "X-Keyward-Subject"
	HeaderScopes  = "X-Keyward-Scopes"
)

// Handler is the gateway: an http.Handler that routes, verifies and
// proxies. It is safe for concurrent use and holds no per-request state, so
// that a reload can build a new Handler and swap it in.
type Handler struct {
	log         *slog.Logger
	verifier    Verifier
	workspaceID string
	trusted     realip.Proxies
	router      router
	checks      *checker
	obs         Observer        // nil: no metrics
	usage       *usage.Recorder // nil: no usage counting
}

type route struct {
	cfg      Route
	proxy    *httputil.ReverseProxy
	balancer *balancer
	scopes   string // space-separated, for the insufficient_scope challenge
	// needToken is the detail of a 401 without a credential: the fields
	// the route reads one from.
	needToken string
}

// NewHandler returns a gateway for cfg, which must come from Parse or Load.
// Tokens are verified with v in the workspace workspaceID (resolved by the
// caller from cfg.Workspace).
func NewHandler(cfg *Config, v Verifier, workspaceID string, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{log: log, verifier: v, workspaceID: workspaceID, trusted: cfg.TrustedProxies}
	h.router.fold = cfg.CaseInsensitivePaths
	for i := range cfg.Routes {
		rt := &route{cfg: cfg.Routes[i], scopes: strings.Join(cfg.Routes[i].Scopes, " ")}
		rt.needToken = "this route needs a token: Authorization: Bearer <token>"
		if th := rt.cfg.TokenHeader; th != "" {
			rt.needToken += ", or " + th + ": <token>"
		}
		rt.proxy = h.newProxy(rt)
		h.router.routes = append(h.router.routes, rt)
	}
	h.startChecks()
	return h
}

// newTransport returns a transport for one route: the default transport's
// settings with explicit timeouts. ResponseHeaderTimeout is the route's
// timeout: it bounds the wait for the headers, never a streamed body.
func newTransport(timeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // upstreams are reached directly, whatever HTTP_PROXY says
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = timeout
	t.ExpectContinueTimeout = time.Second
	t.IdleConnTimeout = 90 * time.Second
	t.MaxIdleConnsPerHost = 64
	// The client's Accept-Encoding goes as sent: by default the transport
	// adds "gzip" to a request without one and decodes the answer,
	// which the upstream would log as the client's and the client would
	// get altered, unlike on the lean path.
	t.DisableCompression = true
	return t
}

// reqState is one request's state, from ServeHTTP through verification
// and proxying; for an upgrade it travels in the request context to
// httputil.ReverseProxy's hooks.
type reqState struct {
	sw        statusWriter // the response, through which status is recorded
	ctx       context.Context
	rt        *route
	requestID string
	token     *keyward.Token // nil without identity
	remote    netip.Addr     // the connection's address
	clientIP  netip.Addr
	// clientIPText is clientIP's text when the server had it at hand;
	// "" otherwise.
	clientIPText string
	// Backing arrays of header values the gateway sets, held here so
	// that they cost no allocation of their own.
	idVals   [1]string
	rlVals   [2]string
	trusted  bool // the connection comes from a trusted proxy
	proxyErr error
	// upConn is the upstream connection of a protocol upgrade, taken
	// through httputil.ReverseProxy.
	upConn *headConn
	// What the verification found, for usage analytics: whether a
	// credential was verified, its outcome, the token it identified and
	// how long verifying took.
	verified  bool
	outcome   keyward.Outcome
	usedToken *keyward.Token
	verifyDur time.Duration
	// verifiedAt is when verifying ended; the wait for the upstream is
	// timed from it (zero: from when proxying starts).
	verifiedAt time.Time
	// upstreamDur is how long the upstream took to answer with its response
	// header (retries included); 0 when the request did not go upstream.
	upstreamDur time.Duration
	// abort: the upstream's response broke off after its header was sent
	// on; the client's connection is cut so that it cannot take the
	// response for whole.
	abort bool
	// cut: that is why (not the client's leaving).
	cut bool
}

type ctxKey struct{}

// clientGone reports whether the request's client has left: net/http's
// server cancels the request's context; the gateway's own Server is asked.
func (st *reqState) clientGone() bool {
	if st.ctx.Err() != nil {
		return true
	}
	if w, ok := st.sw.ResponseWriter.(*response); ok {
		return w.clientGone()
	}
	return false
}

// cutOff reports whether the gateway's own server cut the client's
// connection (Server.Close, at the end of a stop's shutdown timeout):
// nothing written from then on reaches the client. An atomic load; false
// on net/http's servers, whose cut cancels the request's context.
func (st *reqState) cutOff() bool {
	w, ok := st.sw.ResponseWriter.(*response)
	return ok && w.cutOff()
}

// hold makes pc the upstream connection that Server.Close closes when it
// cuts the client's connection, so that a request waiting on a slow
// upstream ends at once; nil: none any more. A cut that came first finds
// no connection to close: hold closes it itself.
func (st *reqState) hold(pc *pconn) {
	w, ok := st.sw.ResponseWriter.(*response)
	if !ok {
		return
	}
	w.c.upstream.Store(pc)
	if pc != nil && w.cutOff() {
		pc.close()
	}
}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(ctxKey{}).(*reqState)
	return st
}

// newProxy builds the route's balancer, with a connection pool per upstream
// for the lean proxy path (proxy.go), and the httputil.ReverseProxy that
// serves the route's protocol upgrades over the balancer's transport, which
// also runs the health checks.
func (h *Handler) newProxy(rt *route) *httputil.ReverseProxy {
	tr := newTransport(rt.cfg.Timeout)
	b := &balancer{rt: rt, next: tr, log: h.log, cooldown: DefaultEjectCooldown}
	for _, u := range rt.cfg.Upstreams {
		b.ups = append(b.ups, &upstream{url: u, pool: newConnPool(u)})
	}
	rt.balancer = b
	b.recordHeads(tr)
	return &httputil.ReverseProxy{
		Rewrite:   h.rewrite,
		Transport: b,
		// Zero: ReverseProxy still flushes at once what streams (SSE,
		// chunked or unknown length); a fixed-size body goes out in one
		// write instead of one write per copy.
		FlushInterval: 0,
		ModifyResponse: func(res *http.Response) error {
			if res.StatusCode < 100 {
				return errStatusBelow100 // the transport takes it for final
			}
			// The gateway's own headers win over the upstream's.
			for _, f := range ownResponseFields {
				res.Header.Del(f)
			}
			// ReverseProxy drops the fields Connection lists, but not
			// those of a Connection field that said close, which the
			// transport's reader deleted: they are read from the header
			// as it came. (A 101 keeps its Connection: Upgrade, whose
			// Upgrade field ReverseProxy still needs.) A header not kept
			// whole (larger than the lean path takes) is refused as the
			// lean path refuses it: what it names is not known.
			if st := stateOf(res.Request.Context()); st != nil && st.upConn != nil && res.Header["Connection"] == nil {
				vv, ok := st.upConn.connectionValues()
				if !ok {
					return errHeaderTooLarge
				}
				for _, k := range connectionTokens(http.Header{"Connection": vv}) {
					delete(res.Header, k)
				}
			}
			// Trailers lose what the lean path's lose: those announced
			// now, those that came unannounced once the body is read.
			for k := range res.Trailer {
				if dropResponseTrailer(k) {
					delete(res.Trailer, k)
				}
			}
			if res.StatusCode != http.StatusSwitchingProtocols {
				// (A 101's body is the connection, which ReverseProxy
				// takes as it is.)
				res.Body = &trailerFilter{ReadCloser: res.Body, res: res}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.proxyError(w, r, stateOf(r.Context()), err)
		},
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
}

// trailerFilter drops, at the end of a response body read by
// httputil.ReverseProxy, the trailers the gateway does not pass on: they
// are read into res.Trailer with the body's end, then copied.
type trailerFilter struct {
	io.ReadCloser
	res *http.Response
}

func (f *trailerFilter) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err == io.EOF {
		for k := range f.res.Trailer {
			if dropResponseTrailer(k) {
				delete(f.res.Trailer, k)
			}
		}
	}
	return n, err
}

// rewrite builds the upstream request. The URL's scheme and host are
// chosen by the balancer.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	// The connection the request goes on, for ModifyResponse to read
	// the response header as it came (headConn).
	pr.Out = pr.Out.WithContext(httptrace.WithClientTrace(pr.Out.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { st.upConn, _ = i.Conn.(*headConn) },
	}))
	out, in := pr.Out, pr.In
	for k := range out.Header {
		if len(k) >= 10 && strings.EqualFold(k[:10], "X-Keyward-") ||
			strings.IndexByte(k, '_') >= 0 && h.dropRequestField(underscoreAlias(k), &st.rt.cfg, nil) {
			delete(out.Header, k)
		}
	}
	if st.rt.cfg.Auth != AuthNone {
		out.Header.Del("Authorization")
	}
	if th := st.rt.cfg.TokenHeader; th != "" {
		out.Header.Del(th)
	}
	if t := st.token; t != nil {
		out.Header.Set(HeaderTokenID, t.ID)
		out.Header.Set(HeaderSubject, t.Subject)
		out.Header.Set(HeaderScopes, strings.Join(t.Scopes, " "))
	}
	out.Header.Set("X-Request-Id", st.requestID)
	// Before the gateway sets its own forwarding fields below, which an
	// untrusted client's would otherwise take away.
	for k := range out.Header {
		if dropProxyField(k, st.trusted) {
			delete(out.Header, k)
		}
	}

	// X-Forwarded-*: a trusted proxy's values are kept and appended to; an
	// untrusted client's are dropped, so upstreams can believe them.
	remote := st.remote
	if st.trusted {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			out.Header.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+remote.String())
		} else {
			out.Header.Set("X-Forwarded-For", remote.String())
		}
	} else {
		out.Header.Set("X-Forwarded-For", remote.String())
	}
	if v := in.Header.Get("X-Forwarded-Host"); st.trusted && v != "" {
		out.Header.Set("X-Forwarded-Host", v)
	} else {
		out.Header.Set("X-Forwarded-Host", in.Host)
	}
	if v := in.Header.Get("X-Forwarded-Proto"); st.trusted && v != "" {
		out.Header.Set("X-Forwarded-Proto", v)
	} else if in.TLS != nil {
		out.Header.Set("X-Forwarded-Proto", "https")
	} else {
		out.Header.Set("X-Forwarded-Proto", "http")
	}
	out.Header.Del("X-Forwarded") // as the lean path drops it
	out.Header.Set("X-Real-Ip", st.clientIP.String())

	if st.rt.cfg.StripPrefix && st.rt.cfg.PathPrefix != "/" {
		stripPrefix(out.URL, in.URL, st.rt.cfg.PathPrefix, h.router.fold)
	}
	out.Host = "" // the Host header is the upstream's
}

func ensureSlash(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "/" + p
	}
	return p
}

// balancer spreads requests over a route's healthy upstreams in turn, and
// retries an idempotent request once on another upstream when the
// connection could not be made. When no upstream is healthy it
// tries them anyway, so the client gets the proxy's 502.
type balancer struct {
	rt       *route
	ups      []*upstream
	next     http.RoundTripper
	pos      atomic.Uint64 // round robin position
	log      *slog.Logger
	cooldown time.Duration // of passive ejection
}

// try calls exchange with an upstream of the route, taken in turn among
// the healthy ones, and once more with another upstream when the
// connection could not be made and r is idempotent. Nothing of r was sent
// then, nor was its body read (it is read once a connection is made), so
// a PUT with a body goes again as well as a GET. Each outcome counts towards passive ejection, unless the client
// left or was at fault. now is the time, in Unix nanoseconds, that
// ejections are judged at. It returns exchange's last error.
func (b *balancer) try(r *http.Request, now int64, exchange func(u *upstream) error) error {
	ups := b.ups
	start := int(b.pos.Add(1)-1) % len(ups)
	attempts := 1
	if len(ups) > 1 && idempotent(r.Method) {
		attempts = 2
	}
	ctx := r.Context()
	var err error
	prev := -1
	for i := 0; i < attempts; i++ {
		j := start
		if i > 0 {
			j = prev + 1
		}
		j = pick(ups, j, prev, now)
		prev = j
		err = exchange(ups[j])
		if ctx.Err() == nil && (err == nil || !clientSide(err)) {
			b.observe(ups[j], err)
		}
		if err == nil || !connError(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// RoundTrip sends req through the route's transport to one of its
// upstreams; httputil.ReverseProxy calls it for protocol upgrades.
func (b *balancer) RoundTrip(req *http.Request) (res *http.Response, err error) {
	if st := stateOf(req.Context()); st != nil {
		var done func()
		req, done = forwardInterim(req, st)
		defer done()
	}
	clone := len(b.ups) > 1 // a retry must not see the first try's URL
	err = b.try(req, time.Now().UnixNano(), func(u *upstream) error {
		out := req
		if clone {
			out = req.Clone(req.Context())
		}
		targetURL(out.URL, u.url)
		res, err = b.next.RoundTrip(out)
		return err
	})
	return res, err
}

// forwardInterim has the transport pass the upstream's 1xx answers to req
// on as the lean path does (reqState.forward1xx): without 100 Continue,
// without hop-by-hop fields, those the Connection field names and the
// gateway's own, whose values the final answer keeps. ReverseProxy's own
// hook, which it replaces, passes every field on and then empties the
// header map, the gateway's X-Request-Id and RateLimit fields with it.
// done is called when the round trip is over: a late 1xx goes nowhere.
func forwardInterim(req *http.Request, st *reqState) (_ *http.Request, done func()) {
	ctx := req.Context()
	old := httptrace.ContextClientTrace(ctx)
	if old == nil || old.Got1xxResponse == nil {
		return req, func() {}
	}
	var mu sync.Mutex
	over := false
	trace := *old // the other hooks (rewrite's GotConn) stay
	trace.Got1xxResponse = func(code int, hdr textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if !over && code != http.StatusContinue {
			st.forward1xx(&http.Response{StatusCode: code, Header: http.Header(hdr)})
		}
		return nil
	}
	req = req.WithContext(httptrace.WithClientTrace(traceless{ctx}, &trace))
	return req, func() {
		mu.Lock()
		over = true
		mu.Unlock()
	}
}

// traceless is a context without the client trace of its parent, for
// one that replaces it rather than runs after it.
type traceless struct{ context.Context }

func (c traceless) Value(k any) any {
	v := c.Context.Value(k)
	if _, trace := v.(*httptrace.ClientTrace); trace {
		return nil
	}
	return v
}

// targetURL points u at upstream, joining the upstream's base path.
func targetURL(u *url.URL, upstream *url.URL) {
	u.Scheme, u.Host = upstream.Scheme, upstream.Host
	if upstream.Path != "" && upstream.Path != "/" {
		base := strings.TrimSuffix(upstream.Path, "/")
		if u.RawPath != "" {
			u.RawPath = strings.TrimSuffix(upstream.EscapedPath(), "/") + u.RawPath
		}
		u.Path = base + u.Path
	}
}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// connError reports whether err means the connection to the upstream could
// not be made, so the request was never sent.
func connError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// proxyError answers a failed upstream exchange: 504 when the upstream was
// too slow, else 502.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, st *reqState, err error) {
	st.proxyErr = err
	var ne net.Error
	switch {
	case errors.As(err, new(*clientBodyError)) && errors.Is(err, os.ErrDeadlineExceeded):
		// The client stalled in its body past the body timeout. It is
		// still there to read the answer, though net/http's server has
		// cancelled the request as it does for any failed read.
		writeProblem(w, http.StatusBadRequest, keyward.EINVALID, "the request body could not be read", st.requestID)
	case r.Context().Err() != nil || errors.Is(err, errClientGone) || st.cutOff():
		// The client went away; nobody reads this answer, and the
		// connection is dropped.
		w.WriteHeader(499)
		st.abort = true
	case errors.As(err, new(*clientBodyError)):
		writeProblem(w, http.StatusBadRequest, keyward.EINVALID, "the request body could not be read", st.requestID)
	case !connError(err) && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()):
		writeProblem(w, http.StatusGatewayTimeout, "gateway_timeout", "the upstream did not answer in time", st.requestID)
	case connError(err):
		writeProblem(w, http.StatusBadGateway, "bad_gateway", "the upstream is unreachable", st.requestID)
	default:
		// Reset, closed before answering, or an answer that is not HTTP.
		writeProblem(w, http.StatusBadGateway, "bad_gateway", "the upstream gave no valid answer", st.requestID)
	}
}

// problem is an RFC 9457 problem detail.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, code, detail, requestID string) {
	b, _ := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Code: code, RequestID: requestID})
	hd := w.Header()
	hd.Set("Content-Type", "application/problem+json")
	hd.Set("Content-Length", strconv.Itoa(len(b)+1))
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// Observer receives one call per gateway request, for metrics: the route
// name (UnmatchedRoute when none matched), the status answered and how
// long it took; and one per verification, with how long verifying took.
// What the client sends (path, host, method) reaches it only through the
// configured route names and the status.
type Observer interface {
	ObserveGateway(route string, status int, d time.Duration)
	ObserveGatewayVerify(d time.Duration)
	ObserveGatewayUpstream(route string, d time.Duration)
}

// HTTP2Observer receives the kind of each stream or connection net/http's
// HTTP/2 server refuses or ends with an error before the handler sees a
// request ("stream_REFUSED_STREAM_over_max_streams",
// "conn_PROTOCOL_ERROR_headers_even": net/http's http.HTTP2Config.CountError
// names, a fixed set), which leave no access-log line.
type HTTP2Observer interface {
	ObserveGatewayHTTP2Error(kind string)
}

// RefusedObserver receives the status of each request the gateway's own
// server refuses before routing (Server.Refused), counted under
// UnmatchedRoute like the 404s and 405s, with no duration.
type RefusedObserver interface {
	ObserveGatewayRefused(status int)
}

// UnmatchedRoute is the route name Observer gets for the requests no
// route took: 404s, 405s, and those refused before routing (400s, 501
// for CONNECT). No route may be named so.
const UnmatchedRoute = "unmatched"

// SetObserver makes the handler report every request to o. Call it before
// serving.
func (h *Handler) SetObserver(o Observer) { h.obs = o }

// SetUsage makes the handler count every request that presented a
// credential in r, the usage path the verify API counts into. Call it
// before serving.
func (h *Handler) SetUsage(r *usage.Recorder) { h.usage = r }

// ServeHTTP routes, verifies and proxies one request, and logs it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// One allocation holds the request's state and its response writer.
	st := &reqState{sw: statusWriter{ResponseWriter: w}, ctx: r.Context()}
	sw := &st.sw
	id := keyward.RequestID(r.Header.Get("X-Request-Id"))
	st.idVals[0] = id
	sw.Header()["X-Request-Id"] = st.idVals[:]
	st.requestID = id
	h.serve(sw, r, st)
	if rw, ok := sw.ResponseWriter.(*response); ok {
		switch {
		case !rw.commit() && rw.nothingSent():
			// The stop cut the client's connection (its shutdown timeout
			// ran out) before any of the answer reached it, which an
			// upstream may have sent meanwhile: the client got nothing,
			// and the records say so, as for a client that left.
			sw.status = 499
		case st.cut && rw.nothingSent():
			// The upstream broke off before any of its answer reached
			// the client, who gets its connection cut and no answer:
			// what happened was a bad gateway, not the upstream's status,
			// and that is what the records say.
			sw.status = http.StatusBadGateway
		}
	}
	// The request's outcome is known from here on: its route (st.rt), the
	// token (st.token, nil without identity), the status answered
	// (sw.status) and the time taken. Metrics and the access log take it
	// here; per-request usage events belong here too. One reading of the
	// clock serves them all.
	end := time.Now()
	took := end.Sub(start)
	if h.obs != nil {
		name := UnmatchedRoute
		if st.rt != nil {
			name = st.rt.cfg.Name
		}
		h.obs.ObserveGateway(name, sw.status, took)
		if st.verified {
			h.obs.ObserveGatewayVerify(st.verifyDur)
		}
		if st.upstreamDur > 0 {
			h.obs.ObserveGatewayUpstream(name, st.upstreamDur)
		}
	}
	// The path as the request escaped it (decoded, a %3F would read as a
	// query), for usage and the access log: read once, since EscapedPath
	// decodes it again to check it, an allocation when anything is escaped.
	escPath := ""
	if h.usage != nil && st.verified {
		escPath = r.URL.EscapedPath()
		q := usage.Request{
			WorkspaceID: h.workspaceID, At: end.UnixNano(), IP: st.clientIP,
			Method: r.Method, Route: st.rt.cfg.Name, Path: escPath,
			Outcome: st.outcome, Status: sw.status, Latency: took,
		}
		if st.usedToken != nil {
			q.TokenID = st.usedToken.ID
		}
		h.usage.Record(&q)
	}
	if !h.log.Enabled(r.Context(), slog.LevelInfo) {
		h.finish(st)
		return
	}
	ipText := st.clientIPText
	if ipText == "" {
		ipText = st.clientIP.String()
	}
	if escPath == "" {
		escPath = r.URL.EscapedPath()
	}
	var buf [9]slog.Attr
	attrs := append(buf[:0],
		slog.String("request_id", id),
		slog.String("method", secret.Redact(r.Method)),
		slog.String("path", secret.RedactEscapedPath(escPath)),
		slog.Int("status", sw.status),
		slog.Duration("duration", took),
		slog.String("client_ip", ipText),
	)
	if st.rt != nil {
		attrs = append(attrs, slog.String("route", st.rt.cfg.Name))
	}
	if st.token != nil {
		attrs = append(attrs, slog.String("token_id", st.token.ID))
	}
	if st.proxyErr != nil {
		attrs = append(attrs, slog.String("upstream_error", st.proxyErr.Error()))
	}
	// Straight to the handler: Logger.LogAttrs would walk the stack for a
	// source position on every request; keyward's own handler takes the
	// attributes without a record.
	logfmt.HandleAttrs(r.Context(), h.log.Handler(), end, slog.LevelInfo, "gateway request", attrs...)
	h.finish(st)
}

// finish ends a request whose response was cut short by the upstream:
// http.ErrAbortHandler makes the server drop the client's connection
// instead of ending the response as if it were whole.
func (h *Handler) finish(st *reqState) {
	if st.abort {
		panic(http.ErrAbortHandler)
	}
}

// routePath is the path a request is routed on: u's path with each
// segment's ;parameters removed, as servlet containers (Tomcat, Jetty,
// Spring) read it. /admin;x=1/users must take the /admin route's checks,
// since such an upstream serves it as /admin/users. Parameters begin at
// a literal ';' only: an encoded one (%3B) is part of its segment, as
// those servers read it. The upstream gets the path as it came.
func routePath(u *url.URL) string {
	if strings.IndexByte(u.Path, ';') < 0 {
		return u.Path
	}
	ep := u.EscapedPath()
	if strings.IndexByte(ep, ';') < 0 {
		return u.Path // the ';' were all encoded
	}
	var b strings.Builder
	b.Grow(len(ep))
	for {
		seg, rest, more := strings.Cut(ep, "/")
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		b.WriteString(seg)
		if !more {
			break
		}
		b.WriteByte('/')
		ep = rest
	}
	p, err := url.PathUnescape(b.String())
	if err != nil {
		return u.Path // cannot be: EscapedPath's own escaping
	}
	return p
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, st *reqState) {
	var text string
	st.remote, text = remoteAddr(st.sw.ResponseWriter, r)
	st.clientIP, st.trusted = h.clientIP(r, st.remote)
	if st.clientIP == st.remote {
		st.clientIPText = text
	}
	if r.Method == http.MethodConnect {
		// A tunnel is no request to an API; after a 2xx the upstream
		// connection would carry whatever the client sends next. Before
		// the path's check: CONNECT's target is an authority, no path.
		writeProblem(w, http.StatusNotImplemented, "not_implemented", "the gateway does not tunnel: CONNECT is not supported", st.requestID)
		return
	}
	if _, own := st.sw.ResponseWriter.(*response); !own && (!validHost(r.Host) || r.URL.Host != "" && !strings.EqualFold(r.URL.Host, r.Host)) {
		// The gateway's own HTTP/1 server refuses these already (and
		// routes an absolute target by its host). Requests through
		// net/http's (TLS, h2c) are looked at here: an HTTP/2 absolute
		// :path (not allowed, RFC 9113 §8.3.1) could name another host
		// than :authority.
		writeProblem(w, http.StatusBadRequest, "invalid", "the Host header is malformed or disagrees with the request target", st.requestID)
		return
	}
	if _, own := st.sw.ResponseWriter.(*response); !own {
		if msg := checkNetHTTP(r); msg != "" {
			writeProblem(w, http.StatusBadRequest, "invalid", msg, st.requestID)
			return
		}
	}
	if r.URL.Path == "" || r.URL.Path[0] != '/' || hasDotSegment(r.URL.Path) {
		// Upstreams may resolve dot segments, which would escape the route
		// whose scopes were checked.
		writeProblem(w, http.StatusBadRequest, "invalid", "the request path is not clean", st.requestID)
		return
	}
	rt, allow := h.router.match(r.Host, routePath(r.URL), r.Method)
	if rt == nil {
		if allow != nil {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed", "this path does not take the method "+secret.Redact(r.Method), st.requestID)
			return
		}
		writeProblem(w, http.StatusNotFound, keyward.ENOTFOUND, "no route matches this request", st.requestID)
		return
	}
	st.rt = rt
	if rt.cfg.StripPrefix && !prefixMatch(rt.cfg.PathPrefix, r.URL.Path, h.router.fold) {
		// ;parameters inside the prefix (/orders;x/1): there is no prefix
		// as sent to strip.
		writeProblem(w, http.StatusBadRequest, "invalid", "the request path is not clean", st.requestID)
		return
	}
	if rt.cfg.Auth != AuthNone && !h.authorize(w, r, st) {
		return
	}
	if isUpgrade(r) {
		// The connection is hijacked and both directions copied:
		// httputil.ReverseProxy does it well, and upgrades are rare. The
		// upstream is offered WebSocket alone (see isUpgrade).
		r.Header.Set("Upgrade", "websocket")
		// An upgrade refused with an answer without Content-Type gets
		// none, as on the lean path: ReverseProxy adds the upstream's
		// fields to this nil one, and net/http's servers then guess none.
		w.Header()["Content-Type"] = nil
		rt.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
		return
	}
	h.proxy(w, r, st)
}

const (
	challenge        = `Bearer realm="keyward"`
	challengeInvalid = `Bearer realm="keyward", error="invalid_token"`
)

// authorize verifies the request's credential for its route and reports
// whether the request may proceed; when not, it has answered.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, st *reqState) bool {
	rt := st.rt
	if len(r.Header["Authorization"]) > 1 || rt.cfg.TokenHeader != "" && (len(r.Header[rt.cfg.TokenHeader]) > 1 || bearerAndHeader(r, rt.cfg.TokenHeader)) {
		// RFC 6750 §3.1: which credential counts would be a guess, and
		// the upstream's framework may guess otherwise.
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyward", error="invalid_request"`)
		writeProblem(w, http.StatusBadRequest, keyward.EINVALID, "give one credential field, not several", st.requestID)
		return false
	}
	tok := credential(r, rt.cfg.TokenHeader)
	if tok == "" {
		if rt.cfg.Auth == AuthOptional {
			return true
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeProblem(w, http.StatusUnauthorized, keyward.EUNAUTHORIZED, rt.needToken, st.requestID)
		return false
	}
	vstart := time.Now()
	res := h.verifier.Verify(r.Context(), verify.Request{Token: tok, WorkspaceID: h.workspaceID, Scopes: rt.cfg.Scopes, IP: st.clientIP})
	st.verifiedAt = time.Now()
	st.verified, st.outcome, st.verifyDur = true, res.Outcome, st.verifiedAt.Sub(vstart)
	if res.Outcome.Identified() {
		st.usedToken = res.Token
	}
	if res.Err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "token store unavailable", slog.String("request_id", st.requestID), slog.Any("err", res.Err))
		w.Header().Set("Retry-After", "5")
		writeProblem(w, http.StatusServiceUnavailable, keyward.EUNAVAILABLE, "the token store is unavailable", st.requestID)
		return false
	}
	if res.Outcome.Identified() {
		// On every response of a limited token (PRODUCT §5), its 401s
		// too, though they tell a revoked or expired token from an
		// unknown one; the body does not say which check failed.
		setRateLimit(w.Header(), res, st.rlVals[:])
	}
	switch res.Outcome {
	case keyward.Valid:
		st.token = res.Token
		return true
	case keyward.InsufficientScope:
		st.token = res.Token
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="keyward", error="insufficient_scope", scope="%s"`, rt.scopes))
		writeProblem(w, http.StatusForbidden, keyward.EFORBIDDEN, "the token lacks a scope this route needs", st.requestID)
		return false
	case keyward.RateLimited, keyward.QuotaExceeded:
		st.token = res.Token
		w.Header().Set("Retry-After", strconv.FormatInt(res.RetryAfter(), 10))
		writeProblem(w, http.StatusTooManyRequests, keyward.ERATELIMITED, "the token is over its limit; retry later", st.requestID)
		return false
	default:
		// The body never says which check failed.
		w.Header().Set("WWW-Authenticate", challengeInvalid)
		writeProblem(w, http.StatusUnauthorized, keyward.EUNAUTHORIZED, "the token is not valid", st.requestID)
		return false
	}
}

// setRateLimit writes the draft-ietf-httpapi-ratelimit-headers fields of the
// token's rate limit or quota, whichever has fewer requests remaining
// (verify.Result.Tighter). vals holds the two values.
func setRateLimit(hd http.Header, res verify.Result, vals []string) {
	l, ok := res.Tighter()
	if !ok {
		return
	}
	// Built by hand and stored under the canonical keys: this runs on
	// every request of a limited token.
	// A quota counted in total has no window, and no reset unless the
	// fallback for a failing global limiter asks to come back: w and t
	// are optional in the draft.
	var b [64]byte
	p := append(b[:0], `"default";q=`...)
	p = strconv.AppendInt(p, l.Limit, 10)
	if l.Window > 0 {
		p = append(p, ";w="...)
		p = strconv.AppendInt(p, verify.Seconds(l.Window), 10)
	}
	n := len(p)
	p = append(p, `"default";r=`...)
	p = strconv.AppendInt(p, max(0, l.Remaining), 10)
	if l.Window > 0 || l.Reset > 0 {
		p = append(p, ";t="...)
		p = strconv.AppendInt(p, verify.Seconds(l.Reset), 10)
	}
	both := string(p)
	vals[0], vals[1] = both[:n], both[n:]
	hd["Ratelimit-Policy"] = vals[:1:1]
	hd["Ratelimit"] = vals[1:]
}

// credential returns the token a request presents: a Bearer token
// (secret.Bearer: one set off by a tab comes with it, and verifies as
// MALFORMED), or the value of the route's token header without the spaces
// and tabs around it (OWS; any other whitespace stays, as with Bearer).
// The query string is never read.
func credential(r *http.Request, tokenHeader string) string {
	if t, _ := secret.Bearer(r.Header.Get("Authorization")); t != "" {
		return t
	}
	if tokenHeader != "" {
		return trimOWS(r.Header.Get(tokenHeader))
	}
	return ""
}

// bearerAndHeader reports whether r presents a Bearer token and a value in
// the route's token header both: two credentials (RFC 6750 §2 allows one
// method a request), of which the gateway would verify one and the
// upstream might read the other.
func bearerAndHeader(r *http.Request, tokenHeader string) bool {
	_, bearer := secret.Bearer(r.Header.Get("Authorization"))
	return bearer && trimOWS(r.Header.Get(tokenHeader)) != ""
}

// remoteAddr returns the address of r's connection, and its text when the
// gateway's own server has it at hand ("" otherwise): that server parsed
// it once for the connection.
func remoteAddr(w http.ResponseWriter, r *http.Request) (netip.Addr, string) {
	if rw, ok := w.(*response); ok && rw.c.remoteIP.IsValid() {
		return rw.c.remoteIP, rw.c.remoteIPText
	}
	return parseRemoteAddr(r), ""
}

// parseRemoteAddr parses r.RemoteAddr.
func parseRemoteAddr(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// clientIP returns the client's address: the connection's, or, when the
// connection comes from a trusted proxy, the rightmost address of
// X-Forwarded-For that is not a trusted proxy. trusted reports the latter
// case.
func (h *Handler) clientIP(r *http.Request, remote netip.Addr) (ip netip.Addr, trusted bool) {
	if len(h.trusted) == 0 {
		return remote, false
	}
	return h.trusted.Client(remote, r.Header.Values("X-Forwarded-For"))
}

// statusWriter records the status of a response for the access log.
// Unwrap lets http.ResponseController reach Flush and Hijack, which
// streaming and WebSocket upgrades need.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		w.status = code
	}
	if code == 499 {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// writeRawHeader is response.writeRawHeader, the status recorded; w is
// the gateway's own server's.
func (w *statusWriter) writeRawHeader(code int, raw []byte, length int64, hasDate bool) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.(*response).writeRawHeader(code, raw, length, hasDate)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack takes the connection over, as httputil.ReverseProxy does for an
// upgrade the upstream accepted: it writes the 101 itself, past
// WriteHeader, so the status is recorded here, for the access log, usage
// and metrics.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// Flush sends what was written so far to the client, when the underlying
// writer can.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// checkNetHTTP returns why a request that came through net/http's servers
// (HTTP/2 on h2c or TLS, HTTP/1 on TLS) is refused, or "": what they let
// through and the gateway's own server refuses.
func checkNetHTTP(r *http.Request) string {
	switch {
	case !validFieldName(r.Method) || !lineSafe(r.URL.RawQuery):
		// HTTP/2 takes a :method or a :path query with spaces, which the
		// upstream's request line would split into another target than
		// the one routed and authorized here.
		return "the method or the query holds characters a request line cannot carry"
	case r.Host == "" && r.ProtoMajor == 2:
		return "the request names no host: give :authority"
	case len(r.Header["Host"]) > 1 || len(r.Header["Host"]) == 1 && authority(r.Header["Host"][0]) != authority(r.Host):
		// RFC 9113 §8.3.1: a Host that names another authority than
		// :authority.
		return "the Host header is repeated or disagrees with the request's authority"
	}
	if cl, ok := r.Header["Content-Length"]; ok {
		// HTTP/2 reads a content-length it cannot parse as none, and a
		// request that ended at its header as bodiless whatever its
		// content-length said: malformed (RFC 9113 §8.1.1), not to be
		// forwarded as a request without a body. Equal copies are one,
		// as on HTTP/1.
		n, err := strconv.ParseUint(cl[0], 10, 63)
		if err != nil || int64(n) != r.ContentLength || !allSame(cl) {
			return "the Content-Length is malformed or disagrees with the body"
		}
	}
	return ""
}

// authority returns a Host value as it names an authority (RFC 3986
// §6.2): in lower case, without a default port.
func authority(h string) string {
	h = strings.ToLower(h)
	if t, ok := strings.CutSuffix(h, ":443"); ok {
		return t
	}
	return strings.TrimSuffix(h, ":80")
}

// lineSafe reports whether s has no space, control character or DEL: what
// would break an HTTP/1.1 request line it is written into.
func lineSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// recordHeads has the balancer's transport, which serves protocol
// upgrades (and health checks), make its connections headConns: over
// TLS too, with the handshake made here as the lean path's pool makes it
// (HTTP/1.1, whose upgrades alone the transport makes anyway).
func (b *balancer) recordHeads(tr *http.Transport) {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &headConn{Conn: c}, nil
	}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var cfg *tls.Config
		for _, u := range b.ups {
			if u.pool.addr == addr && u.pool.tls != nil {
				cfg = u.pool.tls
				break
			}
		}
		if cfg == nil {
			host, _, _ := net.SplitHostPort(addr)
			cfg = &tls.Config{ServerName: host, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
		}
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, tr.TLSHandshakeTimeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, err
		}
		return &headConn{Conn: tc}, nil
	}
}

// headConn is a connection of the balancer's transport. It keeps the
// bytes read since a request was last written, up to the end of the
// first final (not 1xx) response header: the transport's reader deletes a
// Connection field that says close, and with it the names of the fields
// it lists, which must not be passed on either (RFC 9110 §7.6.1).
type headConn struct {
	net.Conn
	mu       sync.Mutex
	head     []byte
	done     bool // the header is whole, or too large to keep on
	switched bool // it was a 101's: what follows is no HTTP/1.1
}

func (c *headConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if !c.switched {
		c.head, c.done = c.head[:0], false
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *headConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if !c.done {
			from := max(0, len(c.head)-2)
			c.head = append(c.head, p[:n]...)
			if end := c.head[from:]; bytes.Contains(end, []byte("\n\r\n")) || bytes.Contains(end, []byte("\n\n")) {
				if h := finalHead(c.head); h != nil {
					c.done = true
					c.switched = statusCode(h) == "101"
				}
			}
			c.done = c.done || len(c.head) > maxResponseHeaderBytes
		}
		c.mu.Unlock()
	}
	return n, err
}

// connectionValues returns the values of the Connection fields of the
// last final response header read; false when it was not kept whole.
func (c *headConn) connectionValues() ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := finalHead(c.head)
	return connectionValues(h), h != nil
}

// finalHead returns the first final response header in b (not 1xx, but
// 101 that ends the exchange), status line first, up to its empty line;
// nil when b does not hold it whole.
func finalHead(b []byte) []byte {
	for {
		end := -1
		for i := 0; i < len(b); i++ {
			if b[i] != '\n' {
				continue
			}
			if rest := b[i+1:]; len(rest) > 0 && rest[0] == '\n' {
				end = i + 2
			} else if len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n' {
				end = i + 3
			}
			if end >= 0 {
				break
			}
		}
		if end < 0 {
			return nil
		}
		if code := statusCode(b); code == "" || code[0] != '1' || code == "101" {
			return b[:end]
		}
		b = b[end:]
	}
}

// statusCode returns the status code of the status line at the start of
// b; "" when there is none. It reads the line as http.ReadResponse does:
// any version of the form HTTP/d.d, and spaces before the code skipped
// ("HTTP/1.1  100" and "HTTP/2.0 100" are interim responses to the
// transport, and the final one's header comes after them).
func statusCode(b []byte) string {
	digit := func(c byte) bool { return '0' <= c && c <= '9' }
	if len(b) < 9 || string(b[:5]) != "HTTP/" || !digit(b[5]) || b[6] != '.' || !digit(b[7]) || b[8] != ' ' {
		return ""
	}
	b = bytes.TrimLeft(b[8:], " ")
	if len(b) < 3 || len(b) > 3 && b[3] != ' ' && b[3] != '\r' && b[3] != '\n' {
		return ""
	}
	return string(b[:3])
}
