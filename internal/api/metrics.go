package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/verify"
)

// metrics holds the Prometheus registry of one server. Labels are routes,
// status codes and outcomes only: never a token id or any secret.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	gwRequests *prometheus.CounterVec
	gwDuration *prometheus.HistogramVec
	gwUpstream *prometheus.HistogramVec
	gwHTTP2    *prometheus.CounterVec
	dashboard  *prometheus.CounterVec
	dashDur    *prometheus.HistogramVec
	// verifyDuration times verifications by where they were asked for.
	verifyDuration [numSources]prometheus.Observer
	handler        http.Handler
	// gwSeries keeps the gateway's series by route and status (gwKey), so
	// that a request costs a map lookup, not a label hash per metric.
	gwSeries sync.Map
}

// gwKey names the gateway series of one route and status; status
// upstreamSeries for the upstream latency histogram, which has no status
// label.
type gwKey struct {
	route  string
	status int
}

const upstreamSeries = -1

// gwSeries is what one gwKey counts into.
type gwSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// gateway returns the series of route and status.
func (m *metrics) gateway(route string, status int) *gwSeries {
	k := gwKey{route, status}
	if v, ok := m.gwSeries.Load(k); ok {
		return v.(*gwSeries)
	}
	var s gwSeries
	if status == upstreamSeries {
		s.duration = m.gwUpstream.WithLabelValues(route)
	} else {
		s.requests = m.gwRequests.WithLabelValues(route, strconv.Itoa(status))
		s.duration = m.gwDuration.WithLabelValues(route)
	}
	v, _ := m.gwSeries.LoadOrStore(k, &s)
	return v.(*gwSeries)
}

// Sources of verifications, the source label of
// keyward_verify_duration_seconds.
const (
	sourceAPI = iota
	sourceIntrospect
	sourceGateway
	numSources
)

var sourceNames = [numSources]string{sourceAPI: "api", sourceIntrospect: "introspect", sourceGateway: "gateway"}

func newMetrics(engine *verify.Engine, rec *usage.Recorder, version string, probes []Probe) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	verifyDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keyward_verify_duration_seconds",
		Help: "Time to verify a token, by where the verification was asked for (api, introspect, gateway): for the API from the request's arrival to its answer, for the gateway the verification step alone.",
		// From a cached token (microseconds) to a cold lookup in a busy
		// store, and up to the 2 s a lookup may wait for a store that
		// hangs (Redis's fallback takes 0.5 s): a top bucket of 0.1 s
		// made every quantile of an outage read 0.1 s.
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .25, .5, 1, 2.5},
	}, []string{"source"})
	for i, name := range sourceNames {
		m.verifyDuration[i] = verifyDuration.WithLabelValues(name)
	}
	m.reg.MustRegister(verifyDuration)
	if rec != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_usage_recorded_total", Help: "Verifications counted for usage analytics."},
				func() float64 { return float64(rec.Stats().Recorded) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyward_usage_buffer_rollups", Help: "Usage rollup rows gathered in memory and not yet written."},
				func() float64 { return float64(rec.Stats().PendingCounts) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyward_usage_buffer_events", Help: "Raw usage events gathered in memory and not yet written."},
				func() float64 { return float64(rec.Stats().PendingEvents) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_usage_events_dropped_total", Help: "Raw usage events dropped because the in-memory buffer was full (rollup counts are never dropped)."},
				func() float64 { return float64(rec.Stats().Dropped) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_usage_events_skipped_total", Help: "Failed verifications counted in the rollups but not kept as raw usage events: their token, route, outcome and status had already kept --usage-failure-events that minute on this node."},
				func() float64 { return float64(rec.Stats().Skipped) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_usage_write_errors_total", Help: "Usage rollup and event writes that failed; what they held is written by a later one."},
				func() float64 { return float64(rec.Stats().FlushErrors) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_usage_pruned_total", Help: "Usage rollup rows and raw events deleted by retention."},
				func() float64 { return float64(rec.Stats().Pruned) }),
		)
	}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_http_requests_total",
		Help: "HTTP requests answered by the API, by route and status code (route \"unmatched\": no route took the request).",
	}, []string{"route", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keyward_http_request_duration_seconds",
		Help: "Time to answer API requests, by route.",
		// Up to the 20 s a request may take (a store that hangs).
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
	}, []string{"route"})
	m.gwRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_gateway_requests_total",
		Help: "Requests answered by the gateway, by route (\"unmatched\": no route took the request, a 404, 405 or 400) and status code.",
	}, []string{"route", "code"})
	m.gwDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyward_gateway_request_duration_seconds",
		Help:    "Time the gateway took to answer, upstream included, by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
	m.gwUpstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyward_gateway_upstream_duration_seconds",
		Help:    "Time the upstream took to answer the gateway with its response header (retries included), by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
	m.gwHTTP2 = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_gateway_http2_errors_total",
		Help: "Streams and connections the gateway's HTTP/2 server refused or ended with an error before a request reached the gateway (no access-log line), by net/http's name for the error.",
	}, []string{"type"})
	m.dashboard = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_dashboard_requests_total",
		Help: "Requests answered by the dashboard, by route pattern (\"unmatched\": no route took the request) and status code.",
	}, []string{"route", "code"})
	m.dashDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keyward_dashboard_request_duration_seconds",
		Help: "Time to answer dashboard requests, by route pattern (a sign-in includes its password hash).",
		// Pages read the store; a sign-in hashes a password (tens of
		// ms); up to the 20 s a request may take.
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
	}, []string{"route"})
	m.reg.MustRegister(m.requests, m.duration, m.gwRequests, m.gwDuration, m.gwUpstream, m.gwHTTP2, m.dashboard, m.dashDur,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyward_build_info", Help: "Always 1; the version label names the build.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }),
	)
	if engine != nil {
		for o := keyward.Outcome(0); int(o) < keyward.NumOutcomes; o++ {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "keyward_verifications_total",
				Help:        "Token verifications by outcome code: those of the verify API and the gateway, and the authentication of management credentials; not introspections, which consume nothing (their count is in keyward_verify_duration_seconds{source=\"introspect\"}).",
				ConstLabels: prometheus.Labels{"outcome": o.String()},
			}, func() float64 { return float64(engine.Counts()[o]) }))
		}
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_cache_hits_total", Help: "Verifications answered from the token cache."},
				func() float64 { h, _, _ := engine.CacheStats(); return float64(h) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_cache_misses_total", Help: "Verifications of tokens the cache did not hold."},
				func() float64 { _, mi, _ := engine.CacheStats(); return float64(mi) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyward_cache_tokens", Help: "Tokens held in the verification cache."},
				func() float64 { _, _, n := engine.CacheStats(); return float64(n) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_cache_evictions_total", Help: "Tokens dropped from a full verification cache."},
				func() float64 { return float64(engine.Stats().Evictions) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyward_usage_pending", Help: "Tokens with usage (quota, last use) not yet written to the store."},
				func() float64 { return float64(engine.Stats().UsagePending) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_usage_flush_errors_total", Help: "Usage flushes that failed; their usage is kept and written by a later flush."},
				func() float64 { return float64(engine.Stats().FlushErrors) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_store_errors_total", Help: "Token lookups and change-feed reads that failed (not lookups whose caller gave up first)."},
				func() float64 { return float64(engine.Stats().StoreErrors) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_token_lookups_skipped_total", Help: "Lookups of tokens not in the cache that failed without asking the store, paused while it keeps failing."},
				func() float64 { return float64(engine.Stats().LookupsSkipped) }),
		)
	}
	for _, p := range probes {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyward_dependency_up", Help: "1 when the dependency answers, else 0.",
			ConstLabels: prometheus.Labels{"dependency": p.Name},
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if p.Check(ctx) != nil {
				return 0
			}
			return 1
		}))
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// routeMetrics are one route's collectors, resolved once so that counting a
// request does not look up labels.
type routeMetrics struct {
	m        *metrics
	route    string
	duration prometheus.Observer
	codes    [600]atomic.Pointer[prometheus.Counter]
}

func (rm *routeMetrics) count(code int) {
	if code < 100 || code >= len(rm.codes) {
		code = 500
	}
	c := rm.codes[code].Load()
	if c == nil {
		counter := rm.m.requests.WithLabelValues(rm.route, strconv.Itoa(code))
		c = &counter
		rm.codes[code].Store(c)
	}
	(*c).Inc()
}

// instrument counts and times the requests of one route.
func (m *metrics) instrument(route string, next http.Handler) http.Handler {
	rm := &routeMetrics{m: m, route: route, duration: m.duration.WithLabelValues(route)}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw, ok := w.(*statusWriter)
		if !ok {
			sw = &statusWriter{ResponseWriter: w}
		}
		// Counted in a defer, so that a handler that panicked is counted
		// as a 500, whatever it had answered: recoverPanics answers 500
		// when nothing was sent yet, else cuts the connection, and the
		// access log says 500 either way. The panic goes on, its stack
		// whole.
		finished := false
		defer func() {
			status := sw.status
			switch {
			case !finished:
				status = http.StatusInternalServerError
			case status == 0:
				status = http.StatusOK
			}
			rm.count(status)
			rm.duration.Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
		finished = true
	})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	s.metrics.handler.ServeHTTP(w, r)
}

// ObserveGatewayUpstream times one upstream exchange of the gateway, to
// its response header.
func (s *Server) ObserveGatewayUpstream(route string, d time.Duration) {
	s.metrics.gateway(route, upstreamSeries).duration.Observe(d.Seconds())
}

// ObserveGatewayVerify times one verification by the gateway.
func (s *Server) ObserveGatewayVerify(d time.Duration) {
	s.metrics.verifyDuration[sourceGateway].Observe(d.Seconds())
}

// ObserveGatewayHTTP2Error counts one stream or connection the gateway's
// HTTP/2 server refused (it satisfies gateway.HTTP2Observer).
func (s *Server) ObserveGatewayHTTP2Error(kind string) {
	s.metrics.gwHTTP2.WithLabelValues(kind).Inc()
}

// ObserveGateway counts and times one gateway request (it satisfies
// gateway.Observer, so serve can hand the gateway to the API's metrics).
func (s *Server) ObserveGateway(route string, status int, d time.Duration) {
	g := s.metrics.gateway(route, status)
	g.requests.Inc()
	g.duration.Observe(d.Seconds())
}

// ObserveDashboard counts and times one dashboard request (it satisfies
// dashboard.Observer, so serve can hand the dashboard to the API's
// metrics). route is a pattern of the dashboard's routes or
// "unmatched", never a path a client sent.
func (s *Server) ObserveDashboard(route string, status int, d time.Duration) {
	s.metrics.dashboard.WithLabelValues(route, strconv.Itoa(status)).Inc()
	s.metrics.dashDur.WithLabelValues(route).Observe(d.Seconds())
}

// ObserveGatewayRefused counts one request the gateway's own server
// refused before routing (it satisfies gateway.RefusedObserver), under
// the route "unmatched"; it has no duration.
func (s *Server) ObserveGatewayRefused(status int) {
	s.metrics.gateway(unmatchedRoute, status).requests.Inc()
}
