package dashboard

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
)

// TestUsageChart writes known rollups for a token and reads its page: the
// summary counts them, and the bars stand where the hours and days are.
func TestUsageChart(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	tok, _, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Token{Name: "charted"})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now() // 09:00 UTC
	count := func(at time.Time, o keyward.Outcome, n int64) keyward.UsageCount {
		return keyward.UsageCount{WorkspaceID: e.ws.ID, TokenID: tok.ID, Bucket: at, Route: "/v1/verify", Outcome: o, Status: 200, Count: n}
	}
	if err := e.store.WriteUsage(context.Background(), keyward.FlushID{}, []keyward.UsageCount{
		count(now.Add(-30*time.Minute), keyward.Valid, 40), // the bar before last (08:00)
		count(now.Add(-30*time.Minute), keyward.Revoked, 10),
		count(now.Add(5*time.Minute), keyward.Valid, 8), // the last bar (09:00)
		count(now.Add(-10*24*time.Hour), keyward.Valid, 500),
	}, nil); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("ann@example.com")

	svg := regexp.MustCompile(`(?s)<svg class="chart".*</svg>`)
	_, page := b.get("/tokens/" + tok.ID)
	wantText(t, page, "Verifications over the last 24 hours: 58 in all, 48 valid, 10 refused.")
	bars := regexp.MustCompile(`<title>([^<]*)</title>`).FindAllStringSubmatch(svg.FindString(page), -1)
	if len(bars) != 24 {
		t.Fatalf("%d bars, want 24", len(bars))
	}
	if got := bars[22][1]; got != "Mar 14 08:00 UTC: 50 (40 valid, 10 refused)" {
		t.Errorf("bar 22 = %q", got)
	}
	if got := bars[23][1]; got != "Mar 14 09:00 UTC: 8 (8 valid, 0 refused)" {
		t.Errorf("bar 23 = %q", got)
	}
	// The tallest bar fills the chart: 40 valid below 10 refused; no
	// style attribute (the CSP refuses them).
	wantText(t, page, `<rect x="330" y="24" width="12" height="96" fill="#0b5cad">`, `<rect x="330" y="0" width="12" height="24" fill="#b42318">`)
	if strings.Contains(page, "style=") {
		t.Errorf("the page has a style attribute, which the CSP refuses")
	}

	_, page = b.get("/tokens/" + tok.ID + "?usage=30d")
	wantText(t, page, "Verifications over the last 30 days: 558 in all, 548 valid, 10 refused.")
	if n := strings.Count(svg.FindString(page), "<title>"); n != 30 {
		t.Errorf("%d bars, want 30", n)
	}
	wantText(t, page, "<title>Mar 4: 500 (500 valid, 0 refused)</title>")
}
