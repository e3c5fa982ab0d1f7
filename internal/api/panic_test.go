package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/api/spectest"
	"github.com/keyward/keyward/internal/sqlite"
)

// panickyStore is a real store whose raw usage events panic, as a bug in a
// handler or a store would.
type panickyStore struct{ *sqlite.DB }

func (panickyStore) FindUsageEvents(context.Context, keyward.UsageEventFilter) ([]*keyward.UsageEvent, error) {
	panic("boom")
}

// TestPanicSeen checks that a request whose handler panics is seen as any
// other failed request: a 500 whose request_id is the X-Request-Id it
// answers with, one access-log line and one error line (with the panic's
// stack) under that id, and
// a count in keyward_http_requests_total under its route.
func TestPanicSeen(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	var logged syncBuffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	srv := httptest.NewServer(api.New(api.Config{Service: s.svc, Engine: s.engine, Store: panickyStore{s.db}, Log: log, Version: "test"}).Handler())
	t.Cleanup(srv.Close)

	req, _ := http.NewRequest("GET", srv.URL+"/v1/usage/events", nil)
	req.Header.Set("Authorization", "Bearer "+s.root)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("status %d, want 500: %s", resp.StatusCode, body)
	}
	if err := spectest.Check(req, resp.StatusCode, resp.Header, body); err != nil {
		t.Errorf("the response departs from openapi.json: %v", err)
	}
	id := resp.Header.Get("X-Request-Id")
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if !strings.HasPrefix(id, "req_") || p["request_id"] != id || p["detail"] != "internal error" {
		t.Errorf("X-Request-Id %q, body %s: want the same request_id in both", id, body)
	}

	lines := map[string]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if _, twice := lines[m["msg"].(string)]; twice {
			t.Errorf("logged twice: %s", l)
		}
		lines[m["msg"].(string)] = m
	}
	if m := lines["internal error"]; m == nil || m["request_id"] != id || m["err"] != "panic: boom" || !strings.Contains(fmt.Sprint(m["stack"]), "panickyStore.FindUsageEvents") {
		t.Errorf("error line %v, want request_id %s and the panic", m, id)
	}
	if m := lines["request"]; m == nil || m["request_id"] != id || m["status"] != float64(500) || m["path"] != "/v1/usage/events" || m["token_id"] != s.rootID {
		t.Errorf("access-log line %v, want request_id %s, status 500 and the caller", m, id)
	}

	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `keyward_http_requests_total{code="500",route="GET /v1/usage/events"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// TestLatencyBucketsCoverTimeouts checks that the latency histograms reach
// past the longest a request may wait: a store lookup 2 s, a request 20 s.
// Above the top finite bucket every quantile reads as that bucket, so an
// outage that made verifications take 2 s showed as 0.1 s.
func TestLatencyBucketsCoverTimeouts(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	wantStatus(t, s.do("POST", "/v1/verify", s.root, map[string]any{"token": s.root}), 200)
	body := string(s.do("GET", "/metrics", "", nil).Body)
	for _, want := range []string{
		`keyward_verify_duration_seconds_bucket{source="api",le="2.5"} 1`,
		`keyward_http_request_duration_seconds_bucket{route="POST /v1/verify",le="20"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// failingPagesStore is a real store whose token lists fill a whole page
// (the first page's tokens repeated) and then fail at the next page, with
// an error or a panic, as a store lost in the middle of a long export.
type failingPagesStore struct {
	*sqlite.DB
	panics bool
}

func (s failingPagesStore) FindTokens(ctx context.Context, f keyward.TokenFilter) ([]*keyward.Token, error) {
	if f.After != "" {
		if s.panics {
			panic("boom")
		}
		return nil, errors.New("the store went away")
	}
	ts, err := s.DB.FindTokens(ctx, f)
	for err == nil && len(ts) > 0 && len(ts) < f.Limit {
		ts = append(ts, ts[0])
	}
	return ts, err
}

// TestCutResponseSeen checks that a response cut short after its header
// went out (the CSV inventory whose store fails at its second page) is
// recorded as a 500 in the access log and in keyward_http_requests_total
// alike, under the request id it answered with, and not as the 200 its
// header said: the client got its connection cut, never a whole answer.
func TestCutResponseSeen(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		panics bool
		errMsg string // the error line logged under the request id
	}{
		{"Aborted", false, "token inventory aborted"},
		{"Panicked", true, "internal error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t)
			var logged syncBuffer
			log := slog.New(slog.NewJSONHandler(&logged, nil))
			svc := *s.svc
			svc.Store = failingPagesStore{s.db, tt.panics}
			srv := httptest.NewServer(api.New(api.Config{Service: &svc, Engine: s.engine, Store: s.db, Log: log, Version: "test"}).Handler())
			t.Cleanup(srv.Close)

			req, _ := http.NewRequest("GET", srv.URL+"/v1/reports/tokens?format=csv", nil)
			req.Header.Set("Authorization", "Bearer "+s.root)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || err == nil {
				t.Fatalf("status %d, body read error %v: want the 200 the header said and a cut body", resp.StatusCode, err)
			}
			if bytes.Contains(body, []byte("internal error")) {
				t.Errorf("the cut body ends with an error document, as if it were whole: %q", body[max(0, len(body)-200):])
			}
			id := resp.Header.Get("X-Request-Id")

			lines := map[string]map[string]any{}
			for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				if _, twice := lines[m["msg"].(string)]; twice {
					t.Errorf("logged twice: %s", l)
				}
				lines[m["msg"].(string)] = m
			}
			if m := lines[tt.errMsg]; m == nil || m["request_id"] != id {
				t.Errorf("error line %q: %v, want request_id %s", tt.errMsg, m, id)
			}
			if m := lines["request"]; m == nil || m["request_id"] != id || m["status"] != float64(500) || m["path"] != "/v1/reports/tokens" || m["token_id"] != s.rootID {
				t.Errorf("access-log line %v, want request_id %s, status 500 and the caller", m, id)
			}

			resp, err = http.Get(srv.URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := `keyward_http_requests_total{code="500",route="GET /v1/reports/tokens"} 1`; !strings.Contains(string(metrics), want) {
				t.Errorf("metrics lack %s", want)
			}
			if bad := `keyward_http_requests_total{code="200",route="GET /v1/reports/tokens"}`; strings.Contains(string(metrics), bad) {
				t.Errorf("metrics count the cut response as a 200: %s", bad)
			}
		})
	}
}
