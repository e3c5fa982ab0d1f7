package dashboard

import (
	"fmt"
	"net/http"
	"time"

	"github.com/keyward/keyward"
)

// usageChart is a token's usage over the last day (by hour) or the last
// 30 days (by day), drawn by the server as SVG bars: no script, and
// nothing the Content-Security-Policy would refuse (presentation
// attributes only, no style attributes).
type usageChart struct {
	Range                string // "24h" or "30d"
	Total, Valid, Failed int64
	Width, Height        int
	Bars                 []usageBar
	From, To             time.Time
}

type usageBar struct {
	X, W                 int
	ValidY, ValidH       int
	FailedY, FailedH     int
	Label                string
	Total, Valid, Failed int64
}

// Chart geometry, in SVG user units.
const (
	chartHeight = 120
	barWidth    = 12
	barGap      = 3
)

// usageChart reads the token's usage for the range the page asks for
// (?usage=30d, else the last 24 hours).
func (s *Server) usageChart(r *http.Request, t *keyward.Token, now time.Time) (*usageChart, error) {
	c := &usageChart{Range: "24h", Height: chartHeight}
	g, n := keyward.Hour, 24
	if r.URL.Query().Get("usage") == "30d" {
		c.Range, g, n = "30d", keyward.Day, 30
	}
	step := g.Duration()
	c.To = g.Truncate(now).Add(step)
	c.From = c.To.Add(-time.Duration(n) * step)
	rows, err := s.store.UsageSeries(r.Context(), keyward.UsageFilter{
		WorkspaceID: t.WorkspaceID, TokenID: t.ID, From: c.From, To: c.To, Granularity: g,
	})
	if err != nil {
		return nil, err
	}
	valid, failed := make([]int64, n), make([]int64, n)
	for _, row := range rows {
		i := int(row.Bucket.Sub(c.From) / step)
		if i < 0 || i >= n {
			continue
		}
		if row.Outcome == keyward.Valid {
			valid[i] += row.Count
			c.Valid += row.Count
		} else {
			failed[i] += row.Count
			c.Failed += row.Count
		}
	}
	c.Total = c.Valid + c.Failed
	var peak int64 = 1
	for i := range n {
		peak = max(peak, valid[i]+failed[i])
	}
	c.Width = n * (barWidth + barGap)
	for i := range n {
		vh := int(valid[i] * chartHeight / peak)
		fh := int(failed[i] * chartHeight / peak)
		at := c.From.Add(time.Duration(i) * step)
		label := at.Format("Jan 2 15:04") + " UTC"
		if g == keyward.Day {
			label = at.Format("Jan 2")
		}
		c.Bars = append(c.Bars, usageBar{
			X: i * (barWidth + barGap), W: barWidth,
			ValidY: chartHeight - vh, ValidH: vh,
			FailedY: chartHeight - vh - fh, FailedH: fh,
			Label: label, Total: valid[i] + failed[i], Valid: valid[i], Failed: failed[i],
		})
	}
	return c, nil
}

// Summary describes the chart in words, for its accessible name.
func (c *usageChart) Summary() string {
	span := "24 hours"
	if c.Range == "30d" {
		span = "30 days"
	}
	return fmt.Sprintf("Verifications over the last %s: %d in all, %d valid, %d refused.", span, c.Total, c.Valid, c.Failed)
}
