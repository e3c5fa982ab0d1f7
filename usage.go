package keyward

import (
	"fmt"
	"time"
)

// PrefixUsageEvent is the id prefix of raw usage events.
const PrefixUsageEvent = "use_"

// Granularity is the bucket size of a usage series.
type Granularity string

// Granularities. Minute series come from the minute rollups; hour and day
// series from the hour rollups, which are kept longer.
const (
	Minute Granularity = "minute"
	Hour   Granularity = "hour"
	Day    Granularity = "day"
)

// MaxUsageBuckets is the most buckets one usage series holds: a longer
// range needs a coarser granularity.
const MaxUsageBuckets = 10_000

// Duration returns the length of one bucket.
func (g Granularity) Duration() time.Duration {
	switch g {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	}
	return 0
}

// ParseGranularity checks a granularity name.
func ParseGranularity(s string) (Granularity, error) {
	switch g := Granularity(s); g {
	case Minute, Hour, Day:
		return g, nil
	}
	return "", fmt.Errorf("granularity must be minute, hour or day")
}

// Truncate returns the start of the bucket holding t, in UTC.
func (g Granularity) Truncate(t time.Time) time.Time {
	d := g.Duration()
	if d == 0 {
		return t
	}
	return t.UTC().Truncate(d)
}

// UsageCount is a number of verifications that share one token, bucket,
// route, outcome and answered status: a row of the usage rollups.
type UsageCount struct {
	WorkspaceID string
	// TokenID is the token verified, or "" for presented credentials that
	// identified no token (MALFORMED, NOT_FOUND).
	TokenID string
	Bucket  time.Time // the bucket's start, UTC
	// Route is where the verification happened: "/v1/verify",
	// "/oauth2/introspect", or the name of a gateway route.
	Route   string
	Outcome Outcome
	Status  int // the HTTP status answered
	Count   int64
}

// UsageEvent is one verification kept whole: a failure (every one, unless
// --usage-failure-events bounds them a minute of each token, route,
// outcome and status), or a sampled success.
type UsageEvent struct {
	ID          string
	WorkspaceID string
	TokenID     string // "" when no token was identified
	Time        time.Time
	IP          string // "" when unknown
	Method      string
	Route       string
	Path        string // the request path, never its query
	Outcome     Outcome
	Status      int
	Latency     time.Duration
}

// UsageFilter selects usage rollups of a workspace.
type UsageFilter struct {
	WorkspaceID string
	TokenID     string // one token's usage; "" for the whole workspace
	From        time.Time
	To          time.Time // exclusive
	Granularity Granularity
}

// UsageTokenTotal is one token's total over a time range, for the top
// tokens of a workspace.
type UsageTokenTotal struct {
	TokenID string
	Total   int64
	Valid   int64
}

// UsageEventFilter selects a page of raw usage events, newest first.
type UsageEventFilter struct {
	WorkspaceID string
	TokenID     string // "" for any
	Outcome     *Outcome
	From, To    time.Time // when not zero; To exclusive
	Before      string    // id cursor: only events older than this one
	Limit       int
}

// UsagePrune says up to when each kind of usage data is deleted.
type UsagePrune struct {
	MinutesBefore time.Time // minute rollups whose bucket starts before it
	HoursBefore   time.Time // hour rollups whose bucket starts before it
	EventsBefore  time.Time // raw events older than it
	// Limit, when more than 0, bounds the rows deleted of each kind,
	// the oldest first: a backlog (a flood of failures a week ago, a
	// shortened retention) is then deleted in transactions short
	// enough not to hold other writes up, by calling again until a
	// call deletes fewer than Limit of each kind.
	Limit int
}

// UsagePruned counts what a prune deleted.
type UsagePruned struct {
	Minutes, Hours, Events int64
}
