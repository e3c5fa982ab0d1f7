package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/verify"
)

// Routes under which the API's own verifications are counted.
const (
	usageRouteVerify     = "/v1/verify"
	usageRouteIntrospect = "/oauth2/introspect"
)

// recordUse times one verification answered by the API and counts it for
// usage analytics.
func (s *Server) recordUse(r *http.Request, route string, start time.Time, req *verify.Request, res *verify.Result, status int) {
	now := s.engine.Now()
	src := sourceAPI
	if route == usageRouteIntrospect {
		src = sourceIntrospect
	}
	s.metrics.verifyDuration[src].Observe(now.Sub(start).Seconds())
	if s.usage == nil {
		return
	}
	q := usage.Request{
		WorkspaceID: req.WorkspaceID,
		At:          now.UnixNano(),
		IP:          req.IP,
		Method:      r.Method,
		Route:       route,
		Path:        route,
		Outcome:     res.Outcome,
		Status:      status,
		Latency:     now.Sub(start),
	}
	if res.Token != nil && res.Outcome.Identified() {
		q.TokenID = res.Token.ID
	}
	s.usage.Record(&q)
}

// Bounds of usage queries.
const (
	maxUsageBuckets = keyward.MaxUsageBuckets
	defaultTopN     = 10
	maxTopN         = 100
)

// minUsageTime and maxUsageTime are the first and last times RFC 3339,
// and so a usage answer, can write.
var (
	minUsageTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	maxUsageTime = time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
)

// usageQuery is a parsed usage range.
type usageQuery struct {
	g        keyward.Granularity
	from, to time.Time
}

// parseUsageQuery reads granularity (default hour), from and to (RFC 3339;
// to defaults to now, from to one day, 30 days or one hour before to,
// by granularity), widened to whole buckets.
func (s *Server) parseUsageQuery(r *http.Request) (usageQuery, []keyward.FieldError) {
	q := r.URL.Query()
	var errs []keyward.FieldError
	uq := usageQuery{g: keyward.Hour}
	if v := q.Get("granularity"); v != "" {
		g, err := keyward.ParseGranularity(v)
		if err != nil {
			errs = append(errs, keyward.FieldError{Pointer: "/granularity", Detail: err.Error()})
		}
		uq.g = g
	}
	errs = append(errs, queryRange(q, &uq.from, &uq.to)...)
	if len(errs) > 0 {
		return uq, errs
	}
	givenTo := !uq.to.IsZero()
	if !givenTo {
		uq.to = s.now().UTC()
	}
	if givenTo && !uq.to.After(minUsageTime) {
		// Said of to, which the client gave, not of the from it implies.
		return uq, append(errs, keyward.FieldError{Pointer: "/to", Detail: fmt.Sprintf(
			"to must be after %s: an earlier range cannot be written in RFC 3339", minUsageTime.Format(time.RFC3339))})
	}
	if uq.from.IsZero() {
		span := map[keyward.Granularity]time.Duration{keyward.Minute: time.Hour, keyward.Hour: 24 * time.Hour, keyward.Day: 30 * 24 * time.Hour}[uq.g]
		// The default span, cut at the first instant RFC 3339 writes.
		if uq.from = uq.to.Add(-span); uq.from.Before(minUsageTime) {
			uq.from = minUsageTime
		}
	}
	// [from, to) empty as asked, before it is widened to whole buckets:
	// widening would make it one bucket that nobody asked for.
	if !uq.from.Before(uq.to) {
		if givenTo {
			return uq, append(errs, keyward.FieldError{Pointer: "/to", Detail: "to must be after from"})
		}
		return uq, append(errs, keyward.FieldError{Pointer: "/from", Detail: "from must be before to, which is now when not given"})
	}
	// Whole buckets: from down to its bucket's start, to up to the next.
	// The answer gives both ends and every bucket's start as RFC 3339,
	// whose years run from 0000 to 9999: a from before it (an offset can
	// put one there in UTC), or a to widened past it, could not be written.
	if uq.from.Before(minUsageTime) {
		return uq, append(errs, keyward.FieldError{Pointer: "/from", Detail: fmt.Sprintf(
			"from must be at least %s: an earlier one cannot be written in RFC 3339", minUsageTime.Format(time.RFC3339))})
	}
	if last := uq.g.Truncate(maxUsageTime); uq.to.After(last) {
		return uq, append(errs, keyward.FieldError{Pointer: "/to", Detail: fmt.Sprintf(
			"to must be at most %s: widened to a whole %s, a later one would end after the year 9999", last.Format(time.RFC3339), uq.g)})
	}
	uq.from = uq.g.Truncate(uq.from)
	if t := uq.g.Truncate(uq.to); t.Before(uq.to) {
		uq.to = t.Add(uq.g.Duration())
	}
	switch n := uq.to.Sub(uq.from) / uq.g.Duration(); {
	case !uq.from.Before(uq.to):
		errs = append(errs, keyward.FieldError{Pointer: "/to", Detail: "to must be after from"})
	case n > maxUsageBuckets:
		errs = append(errs, keyward.FieldError{Pointer: "/from", Detail: fmt.Sprintf(
			"the range holds %d %s buckets, more than %d: ask for a shorter range or a coarser granularity", n, uq.g, maxUsageBuckets)})
	}
	return uq, errs
}

// usagePoint is one bucket of a usage series.
type usagePoint struct {
	Time      time.Time        `json:"time"`
	Total     int64            `json:"total"`
	ByOutcome map[string]int64 `json:"by_outcome"`
}

// usageView is a usage series with its totals.
type usageView struct {
	TokenID     string           `json:"token_id,omitempty"`
	Granularity string           `json:"granularity"`
	From        time.Time        `json:"from"`
	To          time.Time        `json:"to"`
	Total       int64            `json:"total"`
	ByOutcome   map[string]int64 `json:"by_outcome"`
	ByRoute     map[string]int64 `json:"by_route"`
	ByStatus    map[string]int64 `json:"by_status"`
	Points      []usagePoint     `json:"points"`
	TopTokens   []topTokenView   `json:"top_tokens,omitzero"` // [] when asked for and none was used
}

type topTokenView struct {
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	Total   int64  `json:"total"`
	Valid   int64  `json:"valid"`
	Failed  int64  `json:"failed"`
}

// viewUsage sums rows into totals and one point per bucket of the range,
// empty buckets included, so that a chart needs no gap filling.
func viewUsage(uq usageQuery, rows []keyward.UsageCount) usageView {
	v := usageView{
		Granularity: string(uq.g), From: uq.from, To: uq.to,
		ByOutcome: map[string]int64{}, ByRoute: map[string]int64{}, ByStatus: map[string]int64{},
	}
	step := uq.g.Duration()
	v.Points = make([]usagePoint, 0, uq.to.Sub(uq.from)/step)
	for t := uq.from; t.Before(uq.to); t = t.Add(step) {
		v.Points = append(v.Points, usagePoint{Time: t, ByOutcome: map[string]int64{}})
	}
	for _, c := range rows {
		o := c.Outcome.String()
		v.Total += c.Count
		v.ByOutcome[o] += c.Count
		v.ByRoute[c.Route] += c.Count
		v.ByStatus[strconv.Itoa(c.Status)] += c.Count
		if i := int(c.Bucket.Sub(uq.from) / step); i >= 0 && i < len(v.Points) {
			v.Points[i].Total += c.Count
			v.Points[i].ByOutcome[o] += c.Count
		}
	}
	return v
}

// handleTokenUsage answers one token's usage series.
func (s *Server) handleTokenUsage(w http.ResponseWriter, r *http.Request) {
	t, err := s.svc.Token(r.Context(), caller(r), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	uq, errs := s.parseUsageQuery(r)
	if len(errs) > 0 {
		s.writeError(w, r, keyward.Invalid(errs...))
		return
	}
	rows, err := s.store.UsageSeries(r.Context(), keyward.UsageFilter{
		WorkspaceID: t.WorkspaceID, TokenID: t.ID, From: uq.from, To: uq.to, Granularity: uq.g,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := viewUsage(uq, rows)
	v.TokenID = t.ID
	writeJSON(w, http.StatusOK, v)
}

// handleUsage answers the workspace's usage series and its top tokens.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	uq, errs := s.parseUsageQuery(r)
	top := defaultTopN
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxTopN {
			errs = append(errs, keyward.FieldError{Pointer: "/top", Detail: "top must be a whole number from 0 to 100"})
		}
		top = n
	}
	if len(errs) > 0 {
		s.writeError(w, r, keyward.Invalid(errs...))
		return
	}
	f := keyward.UsageFilter{WorkspaceID: caller(r).WorkspaceID, From: uq.from, To: uq.to, Granularity: uq.g}
	rows, err := s.store.UsageSeries(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := viewUsage(uq, rows)
	if top > 0 {
		v.TopTokens = []topTokenView{}
		tops, err := s.store.UsageTopTokens(r.Context(), f, top)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		for _, tt := range tops {
			tv := topTokenView{TokenID: tt.TokenID, Total: tt.Total, Valid: tt.Valid, Failed: tt.Total - tt.Valid}
			if t, err := s.store.FindToken(r.Context(), f.WorkspaceID, tt.TokenID); err == nil {
				tv.Name = t.Name
			}
			v.TopTokens = append(v.TopTokens, tv)
		}
	}
	writeJSON(w, http.StatusOK, v)
}

// usageEventView is one raw usage event.
type usageEventView struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	TokenID   string    `json:"token_id"`
	IP        string    `json:"ip"`
	Method    string    `json:"method"`
	Route     string    `json:"route"`
	Path      string    `json:"path"`
	Outcome   string    `json:"outcome"`
	Status    int       `json:"status"`
	LatencyMS float64   `json:"latency_ms"`
}

func viewUsageEvent(e *keyward.UsageEvent) usageEventView {
	return usageEventView{
		ID: e.ID, Time: e.Time, TokenID: e.TokenID, IP: e.IP, Method: e.Method, Route: e.Route, Path: e.Path,
		Outcome: e.Outcome.String(), Status: e.Status, LatencyMS: float64(e.Latency.Microseconds()) / 1000,
	}
}

// handleUsageEvents lists raw usage events, newest first: the failed
// verifications the recorder kept (usage.Config.FailureEvents) and a
// sample of the successful ones.
func (s *Server) handleUsageEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var errs []keyward.FieldError
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		errs = append(errs, fieldErrors(err)...)
	}
	cursor, err := pageCursor(q, keyward.PrefixUsageEvent)
	if err != nil {
		errs = append(errs, fieldErrors(err)...)
	}
	f := keyward.UsageEventFilter{WorkspaceID: caller(r).WorkspaceID, TokenID: q.Get("token_id"), Before: cursor, Limit: limit + 1}
	if v := q.Get("outcome"); v != "" {
		o, ok := keyward.ParseOutcome(v)
		if !ok {
			errs = append(errs, keyward.FieldError{Pointer: "/outcome", Detail: "outcome must be an outcome code such as VALID or REVOKED"})
		}
		f.Outcome = &o
	}
	errs = append(errs, queryRange(q, &f.From, &f.To)...)
	if len(errs) > 0 {
		s.writeError(w, r, keyward.Invalid(errs...))
		return
	}
	evs, err := s.store.FindUsageEvents(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page(evs, limit, func(e *keyward.UsageEvent) string { return e.ID }, viewUsageEvent))
}
