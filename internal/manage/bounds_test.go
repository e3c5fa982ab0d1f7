package manage

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// TestRateWithin: a rate limit is within another when it admits no more in
// any window of the other's length.
func TestRateWithin(t *testing.T) {
	rl := func(limit int64, w time.Duration) *keyward.RateLimit {
		return &keyward.RateLimit{Limit: limit, Window: keyward.Duration(w)}
	}
	bound := rl(50, time.Hour)
	for _, tc := range []struct {
		r    *keyward.RateLimit
		most int64
		ok   bool
	}{
		{rl(50, time.Hour), 50, true},
		{rl(49, time.Hour), 49, true},
		{rl(51, time.Hour), 51, false},
		{rl(50, 744*time.Hour), 50, true},
		{rl(51, 744*time.Hour), 51, false},
		{rl(25, 30*time.Minute), 50, true},
		{rl(26, 30*time.Minute), 52, false},
		{rl(1, 72*time.Second), 50, true},
		{rl(1, 71*time.Second), 51, false},
		{rl(1, time.Minute), 60, false},
		{rl(50, 59*time.Minute), 100, false},
		{rl(16, 20*time.Minute+time.Second), 48, true}, // 3 windows begin in an hour
		{rl(17, 20*time.Minute+time.Second), 51, false},
		{rl(math.MaxInt64, time.Second), math.MaxInt64, false},
		{rl(math.MaxInt64/3600+1, time.Second), math.MaxInt64, false},
	} {
		t.Run(fmt.Sprintf("%d/%s", tc.r.Limit, time.Duration(tc.r.Window)), func(t *testing.T) {
			if most, ok := rateWithin(tc.r, bound); most != tc.most || ok != tc.ok {
				t.Errorf("rateWithin = %d, %v; want %d, %v", most, ok, tc.most, tc.ok)
			}
		})
	}
}

// TestQuotaWithin: a quota is within another when it admits no more in
// any of the other's periods.
func TestQuotaWithin(t *testing.T) {
	for _, tc := range []struct {
		limit         int64
		period, bound string
		boundLimit    int64
		ok            bool
	}{
		{10, "day", "day", 10, true},
		{11, "day", "day", 10, false},
		{10, "month", "day", 10, true},
		{11, "month", "day", 10, false},
		{10, "none", "day", 10, true},
		{11, "none", "day", 10, false},
		{310, "month", "month", 310, true},
		{311, "month", "month", 310, false},
		{10, "day", "month", 310, true},
		{11, "day", "month", 310, false},
		{1, "day", "month", 30, false},
		{310, "none", "month", 310, true},
		{311, "none", "month", 310, false},
		{10, "none", "none", 10, true},
		{11, "none", "none", 10, false},
		{1, "day", "none", 10, false},
		{1, "month", "none", 10, false},
	} {
		t.Run(fmt.Sprintf("%d/%s_in_%d/%s", tc.limit, tc.period, tc.boundLimit, tc.bound), func(t *testing.T) {
			q := &keyward.Quota{Limit: tc.limit, Period: tc.period}
			if ok := quotaWithin(q, &keyward.Quota{Limit: tc.boundLimit, Period: tc.bound}); ok != tc.ok {
				t.Errorf("quotaWithin = %v, want %v", ok, tc.ok)
			}
		})
	}
}
