package api_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"
)

// flushUsage writes the stack's gathered usage.
func (s *stack) flushUsage() {
	s.tb.Helper()
	if err := s.usage.Flush(context.Background()); err != nil {
		s.tb.Fatalf("usage flush: %v", err)
	}
}

func counts(m any) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m.(map[string]any) {
		out[k] = v.(float64)
	}
	return out
}

// TestUsage verifies a token a known number of times, through the verify
// API and introspection, and reads the counts back through every usage
// endpoint.
func TestUsage(t *testing.T) {
	s := newStack(t)
	// Before any use, top_tokens is an empty list, not absent or null.
	r := s.do("GET", "/v1/usage", s.root, nil)
	wantStatus(t, r, http.StatusOK)
	if !bytes.Contains(r.Body, []byte(`"top_tokens":[]`)) {
		t.Errorf("usage before any use = %s", r.Body)
	}
	id, text := s.newToken("billing", "orders:read")
	other, otherText := s.newToken("quiet", "orders:read")
	for range 3 {
		s.wantCode(text, "VALID")
	}
	if got := s.verify(text, "orders:write")["code"]; got != "INSUFFICIENT_SCOPE" {
		t.Fatalf("verify with a missing scope = %v", got)
	}
	wantStatus(t, s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {text}}), http.StatusOK)
	s.wantCode(otherText, "VALID")
	s.wantCode("kw_nothing_like_a_token", "MALFORMED")
	s.flushUsage()

	r = s.do("GET", "/v1/tokens/"+id+"/usage?granularity=minute", s.root, nil)
	wantStatus(t, r, http.StatusOK)
	v := r.object(t)
	if v["token_id"] != id || v["granularity"] != "minute" || v["total"] != 5.0 {
		t.Fatalf("usage = %s", r.Body)
	}
	if got, want := counts(v["by_outcome"]), map[string]float64{"VALID": 4, "INSUFFICIENT_SCOPE": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("by_outcome = %v, want %v", got, want)
	}
	if got, want := counts(v["by_route"]), map[string]float64{"/v1/verify": 4, "/oauth2/introspect": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("by_route = %v, want %v", got, want)
	}
	if got, want := counts(v["by_status"]), map[string]float64{"200": 5}; !reflect.DeepEqual(got, want) {
		t.Errorf("by_status = %v, want %v", got, want)
	}
	points := v["points"].([]any)
	// The default minute range is the last hour, widened to whole minutes.
	if len(points) != 60 && len(points) != 61 {
		t.Errorf("%d points, want an hour of minutes", len(points))
	}
	var sum float64
	for _, p := range points {
		sum += p.(map[string]any)["total"].(float64)
	}
	if sum != 5 {
		t.Errorf("points add up to %v, want 5", sum)
	}
	from, _ := time.Parse(time.RFC3339, v["from"].(string))
	if from.Second() != 0 || from.Nanosecond() != 0 {
		t.Errorf("from = %v, not a minute's start", from)
	}

	r = s.do("GET", "/v1/usage?top=1", s.root, nil)
	wantStatus(t, r, http.StatusOK)
	v = r.object(t)
	if v["total"] != 7.0 || v["granularity"] != "hour" {
		t.Errorf("workspace usage = %s", r.Body)
	}
	if got := counts(v["by_outcome"]); got["MALFORMED"] != 1 || got["VALID"] != 5 {
		t.Errorf("workspace by_outcome = %v", got)
	}
	top := v["top_tokens"].([]any)
	if len(top) != 1 || !reflect.DeepEqual(top[0], map[string]any{"token_id": id, "name": "billing", "total": 5.0, "valid": 4.0, "failed": 1.0}) {
		t.Errorf("top_tokens = %v", top)
	}

	// Raw events: every failure; the stack samples successes 1 in 100.
	r = s.do("GET", "/v1/usage/events?outcome=INSUFFICIENT_SCOPE", s.root, nil)
	wantStatus(t, r, http.StatusOK)
	items := r.object(t)["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("events = %s", r.Body)
	}
	ev := items[0].(map[string]any)
	if ev["token_id"] != id || ev["route"] != "/v1/verify" || ev["method"] != "POST" || ev["status"] != 200.0 || ev["outcome"] != "INSUFFICIENT_SCOPE" {
		t.Errorf("event = %v", ev)
	}
	r = s.do("GET", "/v1/usage/events?token_id="+other, s.root, nil)
	wantStatus(t, r, http.StatusOK)
	if items := r.object(t)["items"].([]any); len(items) != 0 {
		t.Errorf("a sampled-out success was kept: %s", r.Body)
	}
	r = s.do("GET", "/v1/usage/events?outcome=MALFORMED", s.root, nil)
	wantStatus(t, r, http.StatusOK)
	if items := r.object(t)["items"].([]any); len(items) != 1 || items[0].(map[string]any)["token_id"] != "" {
		t.Errorf("malformed events = %s", r.Body)
	}
}

// TestIntrospectionUsage: an introspection answered active is counted
// as such (VALID), though the token's allowlist would refuse a use
// without the caller's IP; one answered inactive keeps its reason.
func TestIntrospectionUsage(t *testing.T) {
	s := newStack(t)
	m := s.create(map[string]any{"name": "fenced", "allowed_cidrs": []string{"10.0.0.0/8"}})
	id, text := m["id"].(string), m["token"].(string)
	if r := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {text}}).object(t); r["active"] != true {
		t.Fatalf("introspection = %v", r)
	}
	wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, nil), http.StatusOK)
	s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {text}})
	s.flushUsage()
	v := s.do("GET", "/v1/tokens/"+id+"/usage?granularity=minute", s.root, nil).object(t)
	if got, want := counts(v["by_outcome"]), map[string]float64{"VALID": 1, "REVOKED": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("by_outcome = %v, want %v", got, want)
	}
}

func TestUsageValidation(t *testing.T) {
	s := newStack(t)
	id, _ := s.newToken("t")
	for _, tt := range []struct{ path, pointer string }{
		{"/v1/tokens/" + id + "/usage?granularity=week", "/granularity"},
		{"/v1/tokens/" + id + "/usage?from=yesterday", "/from"},
		{"/v1/tokens/" + id + "/usage?to=2026-13-01T00:00:00Z", "/to"},
		{"/v1/tokens/" + id + "/usage?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "/to"},
		{"/v1/tokens/" + id + "/usage?granularity=minute&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "/from"},
		// An empty range, even within one bucket; a from in the future
		// with no to blames from.
		{"/v1/usage?granularity=minute&from=2026-11-24T12:07:10Z&to=2026-11-24T12:07:10Z", "/to"},
		{"/v1/usage?from=2999-01-01T00:00:00Z", "/from"},
		// Go's zero time, given on purpose, is not "not given".
		{"/v1/usage?granularity=day&from=0001-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "/from"},
		{"/v1/usage/events?to=0001-01-01T00:00:00Z", "/to"},
		{"/v1/usage?top=101", "/top"},
		{"/v1/usage?top=-1", "/top"},
		{"/v1/usage?granularity=second", "/granularity"},
		{"/v1/usage/events?outcome=FINE", "/outcome"},
		{"/v1/usage/events?from=now", "/from"},
		{"/v1/usage/events?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "/to"},
		{"/v1/usage/events?limit=501", "/limit"},
		// A to that whole buckets would widen past the year 9999, which
		// RFC 3339 cannot write, at every granularity.
		{"/v1/usage?granularity=day&to=9999-12-31T23:59:59Z", "/to"},
		{"/v1/usage?granularity=day&to=9999-12-31T00:00:01Z", "/to"},
		{"/v1/usage?to=9999-12-31T23:00:00.5Z", "/to"},
		{"/v1/usage?granularity=minute&to=9999-12-31T23:59:30Z", "/to"},
		{"/v1/tokens/" + id + "/usage?granularity=day&from=9999-12-30T00:00:00Z&to=9999-12-31T12:00:00Z", "/to"},
		// A from that is before the year 0000 in UTC (its offset puts it
		// there), which RFC 3339 cannot write either.
		{"/v1/usage?from=0000-01-01T00:30:00%2B01:00&to=0000-01-01T02:00:00Z", "/from"},
		{"/v1/tokens/" + id + "/usage?granularity=day&from=0000-01-01T00:00:00%2B00:01&to=0000-01-02T00:00:00Z", "/from"},
		// A to there, with no from: the error is said of to.
		{"/v1/usage?to=0000-01-01T00:30:00%2B01:00", "/to"},
		{"/v1/usage?to=0000-01-01T00:00:00Z", "/to"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			wantInvalid(t, s.do("GET", tt.path, s.root, nil), tt.pointer)
		})
	}
	// The first bucket RFC 3339 can write is answered.
	for _, g := range []string{"day", "hour", "minute"} {
		r := s.do("GET", "/v1/usage?granularity="+g+"&from=0000-01-01T00:00:00Z&to=0000-01-01T00:00:01Z", s.root, nil)
		wantStatus(t, r, http.StatusOK)
		if v := r.object(t); v["from"] != "0000-01-01T00:00:00Z" {
			t.Errorf("granularity %s: from = %v, want 0000-01-01T00:00:00Z", g, v["from"])
		}
	}
	// A to near the start, with no from: the default span is cut there.
	r := s.do("GET", "/v1/usage?to=0000-01-01T05:00:00Z", s.root, nil)
	wantStatus(t, r, http.StatusOK)
	if v := r.object(t); v["from"] != "0000-01-01T00:00:00Z" || v["to"] != "0000-01-01T05:00:00Z" {
		t.Errorf("to near the start: from %v, to %v; want 0000-01-01T00:00:00Z, 0000-01-01T05:00:00Z", v["from"], v["to"])
	}
	// The last buckets RFC 3339 can write are answered.
	for g, to := range map[string]string{"day": "9999-12-31T00:00:00Z", "hour": "9999-12-31T23:00:00Z", "minute": "9999-12-31T23:59:00Z"} {
		r := s.do("GET", "/v1/usage?granularity="+g+"&to="+to, s.root, nil)
		wantStatus(t, r, http.StatusOK)
		if v := r.object(t); v["to"] != to {
			t.Errorf("granularity %s: to = %v, want %s", g, v["to"], to)
		}
	}
	wantProblem(t, s.do("GET", "/v1/tokens/tok_unknown/usage", s.root, nil), http.StatusNotFound, "not_found")
	_, verifier := s.newToken("verifier", "keyward:verify")
	for _, path := range []string{"/v1/usage", "/v1/usage/events", "/v1/tokens/" + id + "/usage"} {
		wantStatus(t, s.do("GET", path, verifier, nil), http.StatusForbidden)
	}
}

// TestRepeatedQueryParameter: a query parameter given twice answers 400
// at it, once the caller is authenticated, rather than taking one of the
// two unseen.
func TestRepeatedQueryParameter(t *testing.T) {
	s := newStack(t)
	for _, tt := range []struct{ path, pointer string }{
		{"/v1/usage?granularity=hour&granularity=day", "/granularity"},
		{"/v1/tokens?state=active&state=revoked", "/state"},
		{"/v1/audit?limit=5&limit=500", "/limit"},
	} {
		wantInvalid(t, s.do("GET", tt.path, s.root, nil), tt.pointer)
	}
	wantStatus(t, s.do("GET", "/v1/tokens?state=active&state=revoked", "", nil), http.StatusUnauthorized)
	wantStatus(t, s.do("GET", "/v1/tokens?state=active&name=x", s.root, nil), http.StatusOK)
	// The OAuth routes answer any query string in OAuth's format, the
	// document's only 400 there; the public routes read none.
	_, verifier := s.newToken("verifier", "keyward:verify")
	r := s.form("/oauth2/introspect?a=1&a=2", "Bearer "+verifier, url.Values{"token": {"kw_x"}})
	wantStatus(t, r, http.StatusBadRequest)
	if ct := r.Header.Get("Content-Type"); ct != "application/json" || r.object(t)["error"] != "invalid_request" {
		t.Errorf("introspect with a repeated query parameter: %s %s", ct, r.Body)
	}
	wantStatus(t, s.do("GET", "/healthz?probe=1&probe=2", "", nil), http.StatusOK)
}
