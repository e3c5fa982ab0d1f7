// Package api serves keyward's JSON management API, the verify API, the
// OAuth introspection and revocation endpoints (RFC 7662, RFC 7009) and the
// operational endpoints (health, readiness, metrics, OpenAPI). It takes
// bearer tokens and JSON only: no cookies, no forms but OAuth's.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/logfmt"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/verify"
)

// DefaultMaxBody is the default request body limit.
const DefaultMaxBody = 1 << 20

// Config configures a Server.
type Config struct {
	Service *manage.Service
	Engine  *verify.Engine
	Store   keyward.Store
	Log     *slog.Logger
	Now     func() time.Time
	// MaxBody bounds request bodies (default DefaultMaxBody).
	MaxBody int64
	// Version is reported in metrics.
	Version string
	// Probes are dependencies besides the store that /readyz and /metrics
	// report on.
	Probes []Probe
	// Usage, when set, counts every verification and introspection for
	// usage analytics; nil counts none.
	Usage *usage.Recorder
}

// Probe checks one dependency. A failing critical probe makes /readyz
// answer 503; any other failing probe shows in its body as degraded, with
// Fallback saying what the node does meanwhile.
type Probe struct {
	Name     string
	Check    func(ctx context.Context) error
	Critical bool
	Fallback string
}

// Server is the HTTP API. Build it with New and serve its Handler.
type Server struct {
	svc     *manage.Service
	engine  *verify.Engine
	store   keyward.Store
	log     *slog.Logger
	now     func() time.Time
	maxBody int64
	metrics *metrics
	handler http.Handler
	mux     *http.ServeMux
	probes  []Probe
	usage   *usage.Recorder
	// readyStore and readyProbes (one per probe) log /readyz's failures
	// of the store and of each probe: a load balancer asks every second
	// or so, and a line at each answer would bury the rest of the log.
	readyStore  failureLog
	readyProbes []failureLog
}

// failureLog is a logfmt.Failures that concurrent requests may report to.
type failureLog struct {
	mu  sync.Mutex
	f   logfmt.Failures
	log *slog.Logger
}

// report records the outcome of one check at now.
func (l *failureLog) report(now time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Report(l.log, now, err)
}

// route is one endpoint. Every route of the API is listed in routes, which
// also drives the OpenAPI check and the cross-workspace tests.
type route struct {
	Method  string
	Path    string
	Scope   string // required scope; "" for a public route
	Handler http.HandlerFunc
	// OAuth routes answer errors in OAuth's format and accept HTTP Basic.
	OAuth bool
}

// routes lists every endpoint of the API.
func (s *Server) routes() []route {
	return []route{
		{Method: "POST", Path: "/v1/tokens", Scope: keyward.ScopeTokensWrite, Handler: s.handleTokenCreate},
		{Method: "GET", Path: "/v1/tokens", Scope: keyward.ScopeTokensRead, Handler: s.handleTokenList},
		{Method: "GET", Path: "/v1/tokens/{id}", Scope: keyward.ScopeTokensRead, Handler: s.handleTokenGet},
		{Method: "PATCH", Path: "/v1/tokens/{id}", Scope: keyward.ScopeTokensWrite, Handler: s.handleTokenUpdate},
		{Method: "POST", Path: "/v1/tokens/{id}/rotate", Scope: keyward.ScopeTokensWrite, Handler: s.handleTokenRotate},
		{Method: "POST", Path: "/v1/tokens/{id}/revoke", Scope: keyward.ScopeTokensWrite, Handler: s.handleTokenRevoke},
		{Method: "POST", Path: "/v1/tokens/{id}/suspend", Scope: keyward.ScopeTokensWrite, Handler: s.handleTokenSuspend},
		{Method: "POST", Path: "/v1/tokens/{id}/resume", Scope: keyward.ScopeTokensWrite, Handler: s.handleTokenResume},
		{Method: "GET", Path: "/v1/tokens/{id}/usage", Scope: keyward.ScopeTokensRead, Handler: s.handleTokenUsage},
		{Method: "GET", Path: "/v1/usage", Scope: keyward.ScopeTokensRead, Handler: s.handleUsage},
		{Method: "GET", Path: "/v1/usage/events", Scope: keyward.ScopeTokensRead, Handler: s.handleUsageEvents},
		{Method: "GET", Path: "/v1/reports/dormant", Scope: keyward.ScopeTokensRead, Handler: s.handleReportDormant},
		{Method: "GET", Path: "/v1/reports/tokens", Scope: keyward.ScopeTokensRead, Handler: s.handleReportTokens},
		{Method: "POST", Path: "/v1/verify", Scope: keyward.ScopeVerify, Handler: s.handleVerify},
		{Method: "POST", Path: "/v1/workspaces", Scope: keyward.ScopeInstance, Handler: s.handleWorkspaceCreate},
		{Method: "GET", Path: "/v1/workspaces", Scope: keyward.ScopeInstance, Handler: s.handleWorkspaceList},
		{Method: "GET", Path: "/v1/audit", Scope: keyward.ScopeAuditRead, Handler: s.handleAuditList},
		{Method: "POST", Path: "/oauth2/introspect", Scope: keyward.ScopeVerify, Handler: s.handleIntrospect, OAuth: true},
		{Method: "POST", Path: "/oauth2/revoke", Scope: keyward.ScopeTokensWrite, Handler: s.handleOAuthRevoke, OAuth: true},
		{Method: "GET", Path: "/healthz", Handler: s.handleHealth},
		{Method: "GET", Path: "/readyz", Handler: s.handleReady},
		{Method: "GET", Path: "/metrics", Handler: s.handleMetrics},
		{Method: "GET", Path: "/openapi.json", Handler: s.handleOpenAPI},
	}
}

// New returns a Server.
func New(cfg Config) *Server {
	s := &Server{
		svc:     cfg.Service,
		engine:  cfg.Engine,
		store:   cfg.Store,
		log:     cfg.Log,
		now:     cfg.Now,
		maxBody: cfg.MaxBody,
		probes:  cfg.Probes,
		usage:   cfg.Usage,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	s.readyStore = failureLog{log: s.log, f: logfmt.Failures{Level: slog.LevelWarn, Failed: "readiness check failed", Recovered: "readiness check passed again"}}
	s.readyProbes = make([]failureLog, len(s.probes))
	for i, p := range s.probes {
		s.readyProbes[i] = failureLog{log: s.log.With("probe", p.Name), f: logfmt.Failures{Level: slog.LevelWarn, Failed: "readiness probe failed", Recovered: "readiness probe passed again"}}
	}
	// The store is a dependency too, for keyward_dependency_up; /readyz
	// checks it apart from the probes, as its absence says more.
	deps := cfg.Probes
	if s.store != nil {
		deps = append([]Probe{{Name: "store", Check: s.store.Ping}}, cfg.Probes...)
	}
	s.metrics = newMetrics(s.engine, s.usage, cfg.Version, deps)
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		var h http.Handler = rt.Handler
		if strings.HasPrefix(rt.Path, "/v1/") {
			// After authentication: a stranger learns nothing of the
			// route. Not on the OAuth routes, which refuse every query
			// string in OAuth's own error format, nor on the public
			// ones, which read none.
			h = s.onceEachParam(h)
		}
		if rt.Scope != "" {
			h = s.authenticate(rt, h)
		}
		h = s.metrics.instrument(rt.Method+" "+rt.Path, h)
		mux.Handle(rt.Method+" "+rt.Path, h)
	}
	// Requests no route takes (404, 405, paths not clean) are counted
	// under one route label, so that a scan shows in monitoring without
	// its paths becoming labels.
	mux.Handle("/", s.metrics.instrument(unmatchedRoute, http.HandlerFunc(s.handleNotFound)))
	s.mux = mux
	// A panic is recovered inside the access log and the request id, so
	// that its 500 carries the id it is logged under and gets its
	// access-log line like any other answer.
	s.handler = s.requestID(s.accessLog(s.recoverPanics(s.headers(s.canonical(mux)))))
	return s
}

// onceEachParam answers 400 to a request that gives a query parameter more
// than once: the handlers read one value, and which one a proxy or cache
// before keyward read is anyone's guess.
func (s *Server) onceEachParam(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			if q, err := url.ParseQuery(r.URL.RawQuery); err == nil {
				for name, vs := range q {
					if len(vs) > 1 {
						s.writeError(w, r, keyward.Invalid(keyward.FieldError{Pointer: "/" + name,
							Detail: fmt.Sprintf("the query parameter %q is given %d times; give it once", name, len(vs))}))
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// unmatchedRoute is the route label of requests no route takes.
const unmatchedRoute = "unmatched"

// canonical answers 404 to a path that is not in its clean form (a double
// slash, a "." or ".." segment), which http.ServeMux would redirect to the
// clean one: a redirect in text/html that repeats the path (a secret
// pasted into it, say) in Location, and that a client would follow with
// its credential, a POST included.
func (s *Server) canonical(next http.Handler) http.Handler {
	unclean := s.metrics.instrument(unmatchedRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, keyward.Errorf(keyward.ENOTFOUND, "no such endpoint: %s %s (paths are not cleaned: no empty, \".\" or \"..\" segments)", r.Method, secret.Redact(r.URL.Path)))
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p != cleanPath(p) {
			unclean.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is the path http.ServeMux serves p under: rooted, without
// empty, "." or ".." segments, keeping a final slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.handler }

// handleNotFound answers a request that no route matched: 405 with Allow
// when the path exists for other methods, else 404.
func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	var allow []string
	// HEAD is served wherever GET is (http.ServeMux), so it is allowed there.
	for _, m := range []string{"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(w, r, &keyward.Error{Code: errMethod, Message: fmt.Sprintf("%s is not allowed here; allowed: %s", r.Method, strings.Join(allow, ", "))})
		return
	}
	s.writeError(w, r, keyward.Errorf(keyward.ENOTFOUND, "no such endpoint: %s %s", r.Method, secret.Redact(r.URL.Path)))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// staleAfter is how old the cache's last read of the change feed may be
// before the node reports itself degraded.
const staleAfter = 5 * time.Second

// readyPingTimeout bounds /readyz's query of the store. A store that hangs
// rather than refuses would otherwise hold the answer for as long as the
// request may last (20 s): a load balancer's or monitor's check gives up
// long before, and learns neither the status nor what is wrong.
const readyPingTimeout = 2 * time.Second

// degrade marks a readiness answer degraded, unless it is unavailable
// already (the store is down), which says more.
func degrade(out map[string]string) {
	if out["status"] == "ok" {
		out["status"] = "degraded"
	}
}

// handleReady answers 200 when the store answers and the verification cache
// is current (the change feed was read within staleAfter), else 503 with
// what is wrong. A store that answers but failed the last usage write, and
// Redis down, answer 200 "degraded". It writes nothing: the last write
// the engine tried tells.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	out := map[string]string{"status": "ok", "store": "ok", "cache": "ok"}
	status := http.StatusOK
	pctx, cancel := context.WithTimeout(r.Context(), readyPingTimeout)
	err := s.store.Ping(pctx)
	cancel()
	// Logged when the store first fails, then once a minute with a count
	// while it goes on, and once when it answers again.
	s.readyStore.report(s.now(), err)
	if err != nil {
		out["store"], out["status"], status = "unreachable", "unavailable", http.StatusServiceUnavailable
	}
	if s.engine != nil {
		h := s.engine.Health()
		if h.SyncErr != nil || s.now().Sub(h.LastSync) > staleAfter {
			out["cache"], status = "stale", http.StatusServiceUnavailable
			degrade(out)
		}
		if h.PushErr != nil {
			out["notifications"], status = "reconnecting", http.StatusServiceUnavailable
			degrade(out)
		}
		if h.FlushErr != nil && out["store"] == "ok" {
			// The store answers but refused the last write of usage (its
			// disk is full, say): verifications go on from the cache and
			// reads, their usage held until a write succeeds; every node
			// shares the store, so none is better to send traffic to.
			// Said in the body, for monitors, not in the status, which
			// would take the node out of rotation for nothing. The
			// engine logged the error.
			out["store"] = "writes failing"
			degrade(out)
		}
	}
	for i, p := range s.probes {
		out[p.Name] = "ok"
		err := p.Check(r.Context())
		s.readyProbes[i].report(s.now(), err)
		if err != nil {
			out[p.Name] = "unreachable"
			if p.Fallback != "" {
				out[p.Name] += "; " + p.Fallback
			}
			degrade(out)
			if p.Critical {
				status = http.StatusServiceUnavailable
			}
		}
	}
	writeJSON(w, status, out)
}
