package verify

import (
	"context"
	"time"
)

// Buckets is the number of sub-windows a rate-limit window is split into,
// locally and in every GlobalLimits implementation: admissions are counted
// per sub-window of width window/Buckets, and an admission at time now is
// allowed when the counts of the Buckets+1 sub-windows that overlap
// (now-window, now] add up to less than the limit.
const Buckets = buckets

// GlobalLimits enforces rate limits and quotas across all nodes, such as
// with Redis. Implementations must apply exactly the sliding-window rule of
// Buckets, so that no window of any node mix holds more than the limit.
type GlobalLimits interface {
	// Check runs, atomically for all nodes, the rate-limit check and then
	// the quota check of one verification and, when both pass and
	// req.Consume is set, consumes one unit of each. The caller answers
	// without a check that returns an error, so the check should, as far
	// as it can tell, have consumed nothing: one that reaches the shared
	// store after the caller stopped waiting must not count.
	Check(ctx context.Context, req LimitRequest) (LimitResponse, error)
}

// LimitRequest is one verification's limits.
type LimitRequest struct {
	TokenID string
	Now     time.Time
	Consume bool

	// RateLimit and RateWindow describe the rate limit; RateLimit 0 means
	// none.
	RateLimit  int64
	RateWindow time.Duration

	// QuotaLimit, QuotaPeriod (a period key such as "2026-11" or "total")
	// and QuotaTTL (how long the period's count must be kept) describe the
	// quota; QuotaLimit 0 means none.
	QuotaLimit  int64
	QuotaPeriod string
	QuotaTTL    time.Duration
	// QuotaInit is the durable count of the period, from the store, for
	// when the global count is missing (a new period, or the limiter lost
	// its data); -1 when the caller has not read it.
	QuotaInit int64
}

// LimitResponse is the outcome of a Check.
type LimitResponse struct {
	RateLimited bool
	RateUsed    int64         // admissions counted in the window, this one included
	RateReset   time.Duration // until the oldest counted admission leaves the window

	// QuotaMissing reports that the limiter holds no count for the period
	// and QuotaInit was -1: call again with QuotaInit. Nothing was consumed.
	QuotaMissing  bool
	QuotaExceeded bool
	QuotaUsed     int64 // this one included
}
