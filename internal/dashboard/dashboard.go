// Package dashboard serves keyward's server-rendered dashboard: sign-in
// with password and TOTP, sessions, tokens (list, create with show-once,
// rotate, revoke) and workspace settings. It shares the listener with the
// JSON API but not its mux: browser routes get cookies, CSRF tokens, an
// Origin check and a strict Content-Security-Policy; the API takes bearer
// tokens only.
//
// Templates and static files are embedded. There is no inline script; the
// one small script (copy buttons) is a static file.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Defaults of Config.
const (
	DefaultIdleTimeout     = time.Hour
	DefaultAbsoluteTimeout = 24 * time.Hour
)

// Config configures a Server.
type Config struct {
	Service  *manage.Service
	Store    keyward.Store
	Accounts keyward.AccountStore
	Keys     *secret.Keyring
	Log      *slog.Logger
	Now      func() time.Time
	// PublicURL is the origin people reach the dashboard at; requests
	// from it pass the Origin check.
	PublicURL *url.URL
	// Secure marks cookies Secure and names the session cookie with the
	// __Host- prefix; set it when the dashboard is served over TLS, on
	// loopback, or behind a TLS proxy (PublicURL https).
	Secure bool
	// IdleTimeout ends a session unused for so long; AbsoluteTimeout ends
	// any session that old.
	IdleTimeout     time.Duration
	AbsoluteTimeout time.Duration
	// PasswordParams are argon2id's costs (account.DefaultParams when zero).
	PasswordParams account.Params
	// InviteTTL is how long an invitation link works
	// (keyward.DefaultInviteTTL when zero).
	InviteTTL time.Duration
	// Observer, when not nil, receives every request, for metrics.
	Observer Observer
}

// Observer receives one call per dashboard request, for metrics: the
// pattern of the route that took it (UnmatchedRoute when none did, so
// that no path a client sends becomes a label), its status and how long
// it took.
type Observer interface {
	ObserveDashboard(route string, status int, d time.Duration)
}

// UnmatchedRoute is the route Observer gets for requests no route takes.
const UnmatchedRoute = "unmatched"

// Server is the dashboard. Build it with New and serve its Handler.
type Server struct {
	mux      *http.ServeMux // the routes, for the Allow of a wrong method
	svc      *manage.Service
	store    keyward.Store
	accounts keyward.AccountStore
	log      *slog.Logger
	now      func() time.Time
	public   *url.URL
	secure   bool
	idle     time.Duration
	absolute time.Duration
	params   account.Params
	sealer   *account.Sealer

	inviteTTL time.Duration

	sessionKey []byte
	csrfKey    []byte
	inviteKey  []byte
	deviceKey  []byte
	webauthn   *webauthn.WebAuthn
	pages      map[string]*template.Template
	throttle   *throttle
	begins     *windows // passkey sign-ins begun, by address
	// hashing bounds how many argon2id hashes run at once: each takes
	// params.Memory (19 MiB by default), so parallel sign-ins could
	// otherwise exhaust memory.
	hashing chan struct{}
	// background holds the work done after answering (audit records of
	// failed sign-ins, deletion of dead sessions).
	background sync.WaitGroup
	handler    http.Handler
	obs        Observer
}

// Wait waits for the work the Server does after answering requests, such
// as audit records of failed sign-ins and the deletion of dead sessions.
// Call it after the HTTP server shut down, before closing the store.
func (s *Server) Wait() { s.background.Wait() }

// New returns a Server.
func New(cfg Config) (*Server, error) {
	s := &Server{
		svc: cfg.Service, store: cfg.Store, accounts: cfg.Accounts, log: cfg.Log, now: cfg.Now, obs: cfg.Observer,
		public: cfg.PublicURL, secure: cfg.Secure, idle: cfg.IdleTimeout, absolute: cfg.AbsoluteTimeout,
		params: cfg.PasswordParams, inviteTTL: cfg.InviteTTL,
	}
	if s.inviteTTL <= 0 {
		s.inviteTTL = keyward.DefaultInviteTTL
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.idle <= 0 {
		s.idle = DefaultIdleTimeout
	}
	if s.absolute <= 0 {
		s.absolute = DefaultAbsoluteTimeout
	}
	if s.params == (account.Params{}) {
		s.params = account.DefaultParams
	}
	if s.public == nil {
		s.public = &url.URL{Scheme: "http", Host: "localhost:8080"}
	}
	if cfg.Keys == nil || s.accounts == nil || s.svc == nil || s.store == nil {
		return nil, errors.New("dashboard: Service, Store, Accounts and Keys are required")
	}
	s.sealer = account.NewSealer(cfg.Keys)
	s.sessionKey = cfg.Keys.Current.Derive("dashboard-session/v1")
	s.csrfKey = cfg.Keys.Current.Derive("dashboard-csrf/v1")
	s.inviteKey = cfg.Keys.Current.Derive("dashboard-invite/v1")
	s.deviceKey = cfg.Keys.Current.Derive("dashboard-device/v1")
	s.throttle, s.begins = newThrottle(), newWindows()
	s.hashing = make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	var err error
	// Passkeys belong to the host of the public URL (browsers refuse an IP
	// address as relying party), and only its origin may use them.
	if s.webauthn, err = webauthn.New(&webauthn.Config{
		RPID: s.public.Hostname(), RPDisplayName: "keyward", RPOrigins: []string{s.public.Scheme + "://" + s.public.Host},
		// The library then refuses a ceremony older than challengeTTL too
		// (its SessionData.Expires stays zero otherwise).
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: challengeTTL, TimeoutUVD: challengeTTL},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: challengeTTL, TimeoutUVD: challengeTTL},
		},
	}); err != nil {
		s.webauthn = nil
		s.log.Warn("passkeys are off: they need --public-url with a host name, not an IP address", "public_url", s.public.String())
	}
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	s.mux = mux
	for _, rt := range s.routes() {
		h := rt.handler
		if strings.Contains(rt.pattern, "passkey") {
			h = s.requirePasskeys(h)
		}
		switch rt.auth {
		case authVerified:
			h = s.requireSession(h, false)
		case authPending:
			h = s.requireSession(h, true)
		}
		mux.Handle(rt.pattern, h)
	}
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(http.FileServerFS(static))))
	// Where browsers look for an icon when a page names none (a JSON
	// answer, an image): the pages name /static/icon.svg.
	mux.Handle("GET /favicon.ico", http.RedirectHandler("/static/icon.svg", http.StatusMovedPermanently))
	mux.Handle("/", http.HandlerFunc(s.handleNotFound))

	cop := http.NewCrossOriginProtection()
	if err := cop.AddTrustedOrigin(s.public.Scheme + "://" + s.public.Host); err != nil {
		return nil, err
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.renderError(w, r, http.StatusForbidden, "This request came from another site and was refused.")
	}))
	// A panic is recovered inside the access log, so that its 500 gets
	// an access-log line like any other answer.
	s.handler = s.requestID(s.accessLog(s.recoverPanics(s.headers(cop.Handler(s.loadSession(s.checkCSRF(mux)))))))
	return s, nil
}

// requirePasskeys answers 404 while passkeys are off.
func (s *Server) requirePasskeys(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.webauthn == nil {
			writeJSON(w, http.StatusNotFound, jsonError{Error: "Passkeys are not available on this server."})
			return
		}
		next(w, r)
	}
}

// Handler returns the HTTP handler of the dashboard.
func (s *Server) Handler() http.Handler { return s.handler }

type authLevel int

const (
	authNone     authLevel = iota // anyone
	authPending                   // a session that may still owe its second factor
	authVerified                  // a session with every factor presented
)

type route struct {
	pattern string
	auth    authLevel
	handler http.HandlerFunc
}

// routes lists every route of the dashboard. No GET route changes state.
func (s *Server) routes() []route {
	return []route{
		{"GET /{$}", authNone, s.handleHome},
		{"GET /signin", authNone, s.handleSignInPage},
		{"POST /signin", authNone, s.handleSignIn},
		{"GET /signin/mfa", authPending, s.handleMFAPage},
		{"POST /signin/mfa", authPending, s.handleMFA},
		{"POST /signout", authPending, s.handleSignOut},
		{"POST /signout/everywhere", authVerified, s.handleSignOutEverywhere},
		{"GET /sessions", authVerified, s.handleSessions},
		{"POST /workspace", authVerified, s.handleWorkspaceSwitch},
		{"POST /sessions/{id}/end", authVerified, s.handleSessionEnd},
		{"GET /reauth", authVerified, s.handleReauthPage},
		{"POST /reauth", authVerified, s.handleReauth},
		{"GET /account/password", authVerified, s.handlePasswordPage},
		{"POST /account/password", authVerified, s.handlePasswordChange},
		{"GET /account/mfa", authVerified, s.handleMFASettings},
		{"POST /account/mfa/totp", authVerified, s.handleTOTPEnrol},
		{"POST /account/mfa/totp/confirm", authVerified, s.handleTOTPConfirm},
		{"POST /account/mfa/totp/disable", authVerified, s.handleTOTPDisable},
		{"POST /account/mfa/recovery", authVerified, s.handleRecoveryCodes},
		{"GET /account/mfa/recovery", authVerified, s.handleRecoveryPage},
		{"GET /tokens", authVerified, s.handleTokenList},
		{"GET /tokens/new", authVerified, s.handleTokenNew},
		{"POST /tokens", authVerified, s.handleTokenCreate},
		{"GET /tokens/{id}", authVerified, s.handleTokenPage},
		{"GET /tokens/{id}/created", authVerified, s.handleTokenCreated},
		{"GET /tokens/{id}/rotated", authVerified, s.handleTokenRotated},
		{"POST /tokens/{id}/rotate", authVerified, s.handleTokenRotate},
		{"POST /tokens/{id}/revoke", authVerified, s.handleTokenRevoke},
		{"POST /tokens/{id}/expiry", authVerified, s.handleTokenExpiry},
		{"GET /settings", authVerified, s.handleSettings},
		{"POST /settings", authVerified, s.handleSettingsSave},
		{"GET /audit", authVerified, s.handleAudit},
		{"POST /account/passkeys/begin", authVerified, s.handlePasskeyRegisterBegin},
		{"POST /account/passkeys/finish", authVerified, s.handlePasskeyRegisterFinish},
		{"POST /account/passkeys/{id}/remove", authVerified, s.handlePasskeyRemove},
		{"POST /signin/passkey/begin", authNone, s.handlePasskeySignInBegin},
		{"POST /signin/passkey/finish", authNone, s.handlePasskeySignInFinish},
		{"POST /signin/mfa/passkey/begin", authPending, s.handlePasskeyMFABegin},
		{"POST /signin/mfa/passkey/finish", authPending, s.handlePasskeyMFAFinish},
		{"GET /members", authVerified, s.handleMembers},
		{"POST /members/invite", authVerified, s.handleInviteCreate},
		{"GET /members/invited/{id}", authVerified, s.handleInvited},
		{"POST /members/invites/{id}/cancel", authVerified, s.handleInviteCancel},
		{"POST /members/{user}/role", authVerified, s.handleMemberRole},
		{"POST /members/{user}/remove", authVerified, s.handleMemberRemove},
		{"GET /invite", authNone, s.handleInvitePage},
		{"POST /invite", authNone, s.handleInviteAccept},
	}
}

// cspPolicy allows nothing inline: scripts, styles, forms and the passkey
// script's requests are this origin's only; no framing.
const cspPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// headers sets the security headers of every dashboard response.
func (s *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", cspPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		// Browsers reach the dashboard over TLS when keyward serves it,
		// and when the public URL names a TLS proxy in front: the proxy
		// passes the field on. (Sent over plain http, to a client that
		// bypasses the proxy, it is ignored: RFC 6797 §8.1.)
		if s.secure && r.TLS != nil || s.public != nil && s.public.Scheme == "https" {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// staticHandler lets browsers cache the embedded assets for a day, and
// serves files only: a directory answers 404, not a listing.
func staticHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=86400")
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type requestIDKey struct{}

// requestID gives every request an id by the API's rules: the client's
// X-Request-Id when it is well-formed, else a new one. It echoes the id in
// the response, so that a person reporting a problem can quote it, and
// the access log and audit events carry it.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := keyward.RequestID(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// requestIDOf returns the id requestID gave r.
func requestIDOf(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// accessLog logs each request's id, method, path (never the query
// string), status and duration, and reports it to the observer.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		// Deferred, so that a response cut short (http.ErrAbortHandler,
		// which recoverPanics lets through to net/http) gets its line and
		// its count too, with the status recoverPanics recorded.
		defer func() { s.logRequest(r, sw.status, start) }()
		next.ServeHTTP(sw, r)
	})
}

// logRequest writes the access-log line of r, answered with status, and
// reports it to the observer.
func (s *Server) logRequest(r *http.Request, status int, start time.Time) {
	took := time.Since(start)
	// The fields of the API's and the gateway's access-log lines, under
	// the same names.
	s.log.Info("dashboard request", "request_id", requestIDOf(r), "method", secret.Redact(r.Method), "path", secret.RedactPath(r.URL), "status", status,
		"duration", took, "client_ip", clientIP(r))
	if s.obs != nil {
		if status == 0 {
			status = http.StatusOK
		}
		s.obs.ObserveDashboard(s.routeOf(r), status, took)
	}
}

// routeOf returns the pattern of the route that takes r, UnmatchedRoute
// for none (the catch-all 404, a method the path does not take).
func (s *Server) routeOf(r *http.Request) string {
	if _, pattern := s.mux.Handler(r); pattern != "" && pattern != "/" {
		return pattern
	}
	return UnmatchedRoute
}

// recoverPanics turns a panic in a page into a 500, logged with the
// panic's stack. A page that panics after its answer began
// (http.ErrAbortHandler, a handler's way to cut a response short, or any
// other panic) gets its connection cut, so that the browser cannot take
// what it got for the whole page, and the request is recorded as the 500
// it is, in the access log as in the metrics, as the API's are. w is
// accessLog's statusWriter.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v != http.ErrAbortHandler {
				s.log.Error("dashboard handler panicked", "request_id", requestIDOf(r), "path", secret.RedactPath(r.URL), "panic", v, "stack", string(debug.Stack()))
			}
			sw, _ := w.(*statusWriter)
			if v != http.ErrAbortHandler && (sw == nil || sw.status == 0) {
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			if sw != nil {
				sw.status = http.StatusInternalServerError
			}
			panic(http.ErrAbortHandler)
		}()
		next.ServeHTTP(w, r)
	})
}

// clientIP returns the client's address: the connection's, or the one
// behind a trusted proxy that serve's realip.Proxies put in RemoteAddr.
// The dashboard reads no forwarding header itself.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// IsLoopback reports whether the listen address addr (host:port) is on
// loopback, where browsers treat http:// as a secure context.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	// A page that takes other methods answers 405 with them: the catch-all
	// route would otherwise hide them.
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.renderError(w, r, http.StatusMethodNotAllowed, "This page does not take that kind of request.")
		return
	}
	s.renderError(w, r, http.StatusNotFound, "There is no such page.")
}

// fail answers err: a keyward error by its meaning, anything else as an
// internal error, logged once and never shown.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch keyward.ErrorCode(err) {
	case keyward.ENOTFOUND:
		s.renderError(w, r, http.StatusNotFound, "There is no such page.")
	case keyward.EFORBIDDEN:
		s.renderError(w, r, http.StatusForbidden, keyward.ErrorMessage(err))
	case keyward.ECONFLICT:
		s.renderError(w, r, http.StatusConflict, keyward.ErrorMessage(err))
	case keyward.EINVALID:
		s.renderError(w, r, http.StatusBadRequest, keyward.ErrorMessage(err))
	case keyward.EUNAVAILABLE:
		s.log.Warn("store unavailable", "request_id", requestIDOf(r), "path", secret.RedactPath(r.URL), "err", err)
		s.renderError(w, r, http.StatusServiceUnavailable, "The store is unavailable; try again shortly.")
	default:
		if errors.Is(err, context.Canceled) {
			return
		}
		if r.Context().Err() != nil {
			// The request ran out of its time (serve's deadline), waiting
			// on a store that hangs.
			s.log.Warn("dashboard request ended before its answer", "request_id", requestIDOf(r), "path", secret.RedactPath(r.URL), "err", err)
			s.renderError(w, r, http.StatusServiceUnavailable, "The store is unavailable; try again shortly.")
			return
		}
		s.log.Error("dashboard request failed", "request_id", requestIDOf(r), "path", secret.RedactPath(r.URL), "err", err)
		s.renderError(w, r, http.StatusInternalServerError, "Something went wrong on our side.")
	}
}

// logError logs an error of the request that its answer goes on despite.
func (s *Server) logError(r *http.Request, msg string, err error) {
	s.log.Error(msg, "request_id", requestIDOf(r), "path", secret.RedactPath(r.URL), "err", err)
}

// localPath returns p when it is a path on this site, "/tokens" when it
// is empty, and "/" otherwise, so that a "next" parameter cannot send
// anyone elsewhere. Browsers drop tabs and newlines from a URL and read a
// backslash as a slash, so "/\t/evil.com" and "/\\evil.com" mean
// "//evil.com": p must have no control character or backslash, also once
// decoded, parse with no scheme, host or user, and start with exactly one
// slash.
func localPath(p string) string {
	if p == "" {
		return "/tokens"
	}
	const fallback = "/"
	unsafe := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\' {
				return true
			}
		}
		return !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//")
	}
	if unsafe(p) {
		return fallback
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || unsafe(u.Path) {
		return fallback
	}
	return p
}
