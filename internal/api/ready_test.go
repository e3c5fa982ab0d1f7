package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/sqlite"
)

// flakyPing is a real store whose Ping fails while down is set.
type flakyPing struct {
	*sqlite.DB
	down *atomic.Bool
}

func (s flakyPing) Ping(ctx context.Context) error {
	if s.down.Load() {
		return errors.New("connection refused")
	}
	return s.DB.Ping(ctx)
}

// TestReadyzLogsOnce checks that /readyz, asked every second by a load
// balancer, logs a failing store or probe once when it begins to fail,
// then at most once a minute with how many checks failed, and once when
// it passes again: not a line at every answer.
func TestReadyzLogsOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	var logged syncBuffer
	var storeDown, redisDown atomic.Bool
	probe := api.Probe{Name: "redis", Fallback: "limits per node", Check: func(context.Context) error {
		if redisDown.Load() {
			return errors.New("redis: connection refused")
		}
		return nil
	}}
	// No engine: the clock moves on past the cache's staleness, which
	// is not what is tested here.
	clk := &clock{}
	h := api.New(api.Config{Service: s.svc, Store: flakyPing{s.db, &storeDown}, Now: clk.Now, Version: "test",
		Log: slog.New(slog.NewJSONHandler(&logged, nil)), Probes: []api.Probe{probe}}).Handler()
	ready := func(want int) {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
		if w.Code != want {
			t.Fatalf("/readyz: %d %s, want %d", w.Code, w.Body, want)
		}
	}
	// lines returns the log lines but the access log's, each as "msg
	// probe failures", and forgets them.
	lines := func() []string {
		t.Helper()
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
			var m map[string]any
			if l == "" || json.Unmarshal([]byte(l), &m) != nil || m["msg"] == "request" {
				continue
			}
			f := ""
			if n, ok := m["failures"].(float64); ok {
				f = fmt.Sprintf(" %d", int(n))
			}
			p, _ := m["probe"].(string)
			out = append(out, strings.TrimSpace(m["msg"].(string)+" "+p)+f)
		}
		logged.mu.Lock()
		logged.b.Reset()
		logged.mu.Unlock()
		return out
	}
	want := func(w ...string) {
		t.Helper()
		if got := lines(); strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("logged %q, want %q", got, w)
		}
	}

	ready(200)
	want()
	storeDown.Store(true)
	redisDown.Store(true)
	for range 30 {
		ready(503)
		clk.Advance(time.Second)
	}
	want("readiness check failed", "readiness probe failed redis")
	clk.Advance(30 * time.Second)
	ready(503) // a minute after the first line: the count so far
	ready(503)
	want("readiness check failed 31", "readiness probe failed redis 31")
	storeDown.Store(false)
	redisDown.Store(false)
	ready(200)
	want("readiness check passed again 32", "readiness probe passed again redis 32")
	ready(200)
	want()
}
