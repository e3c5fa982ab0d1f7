package verify

import (
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// TestCoalesce: entries of failed flushes merge per token and quota
// period, quota use adding up, the latest last use and the newest rate
// window (one per token) kept, in the order first seen.
func TestCoalesce(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	w1 := &keyward.RateWindow{TokenID: "a", Head: 1}
	w2 := &keyward.RateWindow{TokenID: "a", Head: 2}
	got := coalesce([]keyward.UsageFlush{
		{TokenID: "a", Period: "2026-10", QuotaDelta: 3, LastUsedAt: t0, LastUsedIP: "10.0.0.1", Rate: w1},
		{TokenID: "b", LastUsedAt: t0},
		{TokenID: "a", Period: "2026-11", QuotaDelta: 1, LastUsedAt: t0.Add(2 * time.Second), LastUsedIP: "10.0.0.3", Rate: w2},
		{TokenID: "a", Period: "2026-10", QuotaDelta: 2, LastUsedAt: t0.Add(time.Second), LastUsedIP: "10.0.0.2"},
		{TokenID: "b", LastUsedAt: t0.Add(-time.Second), LastUsedIP: "10.9.9.9"},
	})
	want := []keyward.UsageFlush{
		{TokenID: "a", Period: "2026-10", QuotaDelta: 5, LastUsedAt: t0.Add(time.Second), LastUsedIP: "10.0.0.2"},
		{TokenID: "b", LastUsedAt: t0},
		{TokenID: "a", Period: "2026-11", QuotaDelta: 1, LastUsedAt: t0.Add(2 * time.Second), LastUsedIP: "10.0.0.3", Rate: w2},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.TokenID != w.TokenID || g.Period != w.Period || g.QuotaDelta != w.QuotaDelta || !g.LastUsedAt.Equal(w.LastUsedAt) || g.LastUsedIP != w.LastUsedIP || g.Rate != w.Rate {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}
}
