package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
)

// TestUsageAnalytics verifies tokens through the real server and reads
// the counts back: first as the periodic flush writes them, then after a
// graceful restart, which writes what was still in memory.
func TestUsageAnalytics(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) { testUsageAnalytics(t, sqliteStore(t)) })
	t.Run("PostgreSQL", func(t *testing.T) { testUsageAnalytics(t, postgresStore(t)) })
}

func testUsageAnalytics(t *testing.T, st *store) {
	ctx := ctxT(t)
	root := initRoot(t, st)
	// A flush interval longer than the test: only the shutdown writes.
	srv := startServer(t, st, "--usage-flush-interval", "10m", "--usage-sample", "1")
	admin := newClient(t, srv.URL, root)
	tok, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "reporting", Scopes: []string{"reports:read"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		expectCode(t, admin, client.VerifyRequest{Token: tok.Secret, IP: "198.51.100.4"}, "VALID")
	}
	expectCode(t, admin, client.VerifyRequest{Token: tok.Secret, Scopes: []string{"reports:write"}}, "INSUFFICIENT_SCOPE")
	expectCode(t, admin, client.VerifyRequest{Token: "kw_thisisnotatoken"}, "MALFORMED")

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"keyward_usage_recorded_total 6",
		"keyward_usage_buffer_events 6",
		"keyward_usage_events_dropped_total 0",
		`keyward_verify_duration_seconds_count{source="api"} 6`,
	} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(string(metrics), tok.ID) {
		t.Errorf("/metrics names a token id")
	}
	u, err := admin.TokenUsage(ctx, tok.ID, client.UsageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Total != 0 {
		t.Fatalf("usage written before any flush: %+v", u)
	}

	srv.stop()
	srv = startServer(t, st)
	admin = newClient(t, srv.URL, root)
	u, err = admin.TokenUsage(ctx, tok.ID, client.UsageQuery{Granularity: "minute"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Total != 5 || u.ByOutcome["VALID"] != 4 || u.ByOutcome["INSUFFICIENT_SCOPE"] != 1 || u.ByRoute["/v1/verify"] != 5 {
		t.Fatalf("after a restart, usage = %+v", u)
	}
	out, errOut, code := cli(t, "", []string{"KEYWARD_SERVER=" + srv.URL, "KEYWARD_TOKEN=" + root}, "token", "usage", tok.ID, "--granularity", "minute")
	if code != 0 || !regexp.MustCompile(`(?m)^TOTAL +5$`).MatchString(out) ||
		!strings.Contains(out, "VALID=4 INSUFFICIENT_SCOPE=1") || !strings.Contains(out, "/v1/verify=5") {
		t.Fatalf("keyward token usage: exit %d\n%s%s", code, out, errOut)
	}
	all, err := admin.Usage(ctx, client.UsageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if all.Total != 6 || all.ByOutcome["MALFORMED"] != 1 || len(all.TopTokens) != 1 || all.TopTokens[0].TokenID != tok.ID || all.TopTokens[0].Name != "reporting" {
		t.Fatalf("workspace usage = %+v", all)
	}
	evs, err := admin.ListUsageEvents(ctx, client.UsageEventFilter{TokenID: tok.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 5 {
		t.Fatalf("%d events, want 5 (every failure, and every success at --usage-sample 1)", len(evs.Items))
	}
	for _, e := range evs.Items {
		if e.Outcome == "VALID" && e.IP != "198.51.100.4" {
			t.Errorf("event %+v lost the client IP", e)
		}
		if time.Since(e.Time) > time.Minute || e.Route != "/v1/verify" || e.Status != 200 {
			t.Errorf("event %+v", e)
		}
	}

	// With a short interval, usage shows up while the server runs.
	srv.stop()
	srv = startServer(t, st, "--usage-flush-interval", "100ms")
	admin = newClient(t, srv.URL, root)
	expectCode(t, admin, client.VerifyRequest{Token: tok.Secret}, "VALID")
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := admin.TokenUsage(ctx, tok.ID, client.UsageQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if u.Total == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage never reached 6: %+v", u)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUsageFailureEventsBounded floods the real server with a revoked
// token: every verification is counted, but only --usage-failure-events
// of them a minute are kept as raw events, the rest counted in
// keyward_usage_events_skipped_total.
func TestUsageFailureEventsBounded(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) { testUsageFailureEventsBounded(t, sqliteStore(t)) })
	t.Run("PostgreSQL", func(t *testing.T) { testUsageFailureEventsBounded(t, postgresStore(t)) })
}

func testUsageFailureEventsBounded(t *testing.T, st *store) {
	ctx := ctxT(t)
	root := initRoot(t, st)
	// Only the shutdown writes: what /metrics says is all there is.
	srv := startServer(t, st, "--usage-flush-interval", "10m", "--usage-failure-events", "20")
	admin := newClient(t, srv.URL, root)
	tok, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeToken(ctx, tok.ID, "leaked"); err != nil {
		t.Fatal(err)
	}
	// The bound is a minute's: the flood stays within one.
	if s := time.Now().Second(); s >= 50 {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	for range 150 {
		expectCode(t, admin, client.VerifyRequest{Token: tok.Secret}, "REVOKED")
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"keyward_usage_recorded_total 150",
		"keyward_usage_buffer_events 20",
		"keyward_usage_events_skipped_total 130",
		"keyward_usage_events_dropped_total 0",
	} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	srv.stop()
	srv = startServer(t, st)
	admin = newClient(t, srv.URL, root)
	u, err := admin.TokenUsage(ctx, tok.ID, client.UsageQuery{Granularity: "minute"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Total != 150 || u.ByOutcome["REVOKED"] != 150 {
		t.Errorf("usage = %+v, want all 150 REVOKED counted", u)
	}
	evs, err := admin.ListUsageEvents(ctx, client.UsageEventFilter{TokenID: tok.ID, ListOptions: client.ListOptions{Limit: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 20 {
		t.Fatalf("%d raw events, want 20 (--usage-failure-events)", len(evs.Items))
	}
	for _, e := range evs.Items {
		if e.Outcome != "REVOKED" || e.TokenID != tok.ID {
			t.Errorf("event %+v", e)
		}
	}
}
