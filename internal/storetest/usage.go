package storetest

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// count returns a rollup count at minute m past t0's hour.
func usageCount(wsID, tokenID string, m int, route string, o keyward.Outcome, status int, n int64) keyward.UsageCount {
	return keyward.UsageCount{
		WorkspaceID: wsID, TokenID: tokenID,
		Bucket: t0.Truncate(time.Hour).Add(time.Duration(m) * time.Minute),
		Route:  route, Outcome: o, Status: status, Count: n,
	}
}

// series reads a usage series and strips it to comparable rows.
func (f *fixture) series(u keyward.UsageFilter) []string {
	f.t.Helper()
	got, err := f.s.UsageSeries(f.ctx, u)
	if err != nil {
		f.t.Fatalf("UsageSeries(%+v): %v", u, err)
	}
	out := []string{}
	for _, c := range got {
		if c.WorkspaceID != u.WorkspaceID || c.TokenID != u.TokenID {
			f.t.Errorf("UsageSeries row for %q/%q, want %q/%q", c.WorkspaceID, c.TokenID, u.WorkspaceID, u.TokenID)
		}
		if c.Bucket.Location() != time.UTC {
			f.t.Errorf("UsageSeries bucket %v is not in UTC", c.Bucket)
		}
		out = append(out, fmt.Sprintf("%s %s %s %d %d", c.Bucket.Format(time.RFC3339), c.Route, c.Outcome, c.Status, c.Count))
	}
	return out
}

func (s *suite) testUsage(t *testing.T) {
	f := s.fixture(t)
	ws, other := f.workspace("acme"), f.workspace("other")
	hour := t0.Truncate(time.Hour)
	at := func(m int) string { return hour.Add(time.Duration(m) * time.Minute).Format(time.RFC3339) }

	// Two flushes (two nodes, say) add to the same buckets.
	first := []keyward.UsageCount{
		usageCount(ws.ID, "tok_a", 1, "/v1/verify", keyward.Valid, 200, 5),
		usageCount(ws.ID, "tok_a", 1, "/v1/verify", keyward.RateLimited, 200, 2),
		usageCount(ws.ID, "tok_a", 2, "orders", keyward.Valid, 200, 3),
		usageCount(ws.ID, "tok_b", 1, "/v1/verify", keyward.Valid, 200, 1),
		usageCount(ws.ID, "", 1, "orders", keyward.NotFound, 401, 4),
		usageCount(other.ID, "tok_c", 1, "/v1/verify", keyward.Valid, 200, 100),
	}
	second := []keyward.UsageCount{
		usageCount(ws.ID, "tok_a", 1, "/v1/verify", keyward.Valid, 200, 10),
		usageCount(ws.ID, "tok_a", 61, "/v1/verify", keyward.Valid, 200, 7), // the next hour
	}
	if err := f.s.WriteUsage(f.ctx, keyward.FlushID{}, first, nil); err != nil {
		t.Fatalf("WriteUsage: %v", err)
	}
	if err := f.s.WriteUsage(f.ctx, keyward.FlushID{}, second, nil); err != nil {
		t.Fatalf("WriteUsage: %v", err)
	}
	if err := f.s.WriteUsage(f.ctx, keyward.FlushID{}, nil, nil); err != nil {
		t.Fatalf("WriteUsage of nothing: %v", err)
	}

	t.Run("minutes of a token", func(t *testing.T) {
		got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_a", Granularity: keyward.Minute})
		want := []string{
			at(1) + " /v1/verify RATE_LIMITED 200 2",
			at(1) + " /v1/verify VALID 200 15",
			at(2) + " orders VALID 200 3",
			at(61) + " /v1/verify VALID 200 7",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("series = %q\nwant %q", got, want)
		}
	})
	t.Run("hours of a token", func(t *testing.T) {
		got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_a", Granularity: keyward.Hour})
		want := []string{
			at(0) + " /v1/verify RATE_LIMITED 200 2",
			at(0) + " /v1/verify VALID 200 15",
			at(0) + " orders VALID 200 3",
			at(60) + " /v1/verify VALID 200 7",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("series = %q\nwant %q", got, want)
		}
	})
	t.Run("days of the workspace", func(t *testing.T) {
		day := t0.Truncate(24 * time.Hour).Format(time.RFC3339)
		got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Day})
		want := []string{
			day + " /v1/verify RATE_LIMITED 200 2",
			day + " /v1/verify VALID 200 23",
			day + " orders NOT_FOUND 401 4",
			day + " orders VALID 200 3",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("series = %q\nwant %q", got, want)
		}
	})
	t.Run("range is from inclusive to exclusive", func(t *testing.T) {
		got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_a", Granularity: keyward.Minute,
			From: hour.Add(2 * time.Minute), To: hour.Add(61 * time.Minute)})
		want := []string{at(2) + " orders VALID 200 3"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("series = %q\nwant %q", got, want)
		}
	})
	t.Run("another workspace's token is not found", func(t *testing.T) {
		if got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_c", Granularity: keyward.Hour}); len(got) != 0 {
			t.Errorf("series of another workspace's token = %q, want none", got)
		}
	})
	t.Run("top tokens", func(t *testing.T) {
		got, err := f.s.UsageTopTokens(f.ctx, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour}, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := []keyward.UsageTokenTotal{{TokenID: "tok_a", Total: 27, Valid: 25}, {TokenID: "tok_b", Total: 1, Valid: 1}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("top = %+v, want %+v", got, want)
		}
		got, err = f.s.UsageTopTokens(f.ctx, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute,
			From: hour, To: hour.Add(time.Hour)}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if want := []keyward.UsageTokenTotal{{TokenID: "tok_a", Total: 20, Valid: 18}}; !reflect.DeepEqual(got, want) {
			t.Errorf("top 1 of the first hour = %+v, want %+v", got, want)
		}
	})
	t.Run("prune", func(t *testing.T) {
		n, err := f.s.PruneUsage(f.ctx, keyward.UsagePrune{MinutesBefore: hour.Add(2 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if n.Minutes != 5 || n.Hours != 0 || n.Events != 0 {
			t.Errorf("pruned %+v, want 5 minutes", n)
		}
		got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_a", Granularity: keyward.Minute})
		if want := []string{at(2) + " orders VALID 200 3", at(61) + " /v1/verify VALID 200 7"}; !reflect.DeepEqual(got, want) {
			t.Errorf("after prune, minutes = %q\nwant %q", got, want)
		}
		if got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_a", Granularity: keyward.Hour}); len(got) != 4 {
			t.Errorf("pruning minutes touched the hours: %q", got)
		}
		n, err = f.s.PruneUsage(f.ctx, keyward.UsagePrune{HoursBefore: hour.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if n.Hours != 6 || n.Minutes != 0 {
			t.Errorf("pruned %+v, want 6 hours", n)
		}
	})
}

func (s *suite) testUsageEvents(t *testing.T) {
	f := s.fixture(t)
	ws, other := f.workspace("acme"), f.workspace("other")
	ev := func(wsID, tokenID string, sec int, o keyward.Outcome, status int) *keyward.UsageEvent {
		at := t0.Add(time.Duration(sec) * time.Second)
		return &keyward.UsageEvent{
			ID: f.id(keyward.PrefixUsageEvent), WorkspaceID: wsID, TokenID: tokenID, Time: at,
			IP: "203.0.113.7", Method: "GET", Route: "orders", Path: "/orders/42", Outcome: o, Status: status,
			Latency: 1500 * time.Microsecond,
		}
	}
	evs := []*keyward.UsageEvent{
		ev(ws.ID, "tok_a", 0, keyward.Valid, 200),
		ev(ws.ID, "tok_a", 1, keyward.Revoked, 401),
		ev(ws.ID, "", 2, keyward.NotFound, 401),
		ev(other.ID, "tok_c", 3, keyward.Valid, 200),
		ev(ws.ID, "tok_b", 4, keyward.RateLimited, 429),
	}
	evs[2].IP, evs[2].Method, evs[2].Path = "", "POST", "/v1/verify"
	if err := f.s.WriteUsage(f.ctx, keyward.FlushID{}, nil, evs); err != nil {
		t.Fatalf("WriteUsage: %v", err)
	}
	find := func(u keyward.UsageEventFilter) []*keyward.UsageEvent {
		t.Helper()
		got, err := f.s.FindUsageEvents(f.ctx, u)
		if err != nil {
			t.Fatalf("FindUsageEvents(%+v): %v", u, err)
		}
		return got
	}
	ids := func(es []*keyward.UsageEvent) []string {
		out := []string{}
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	got := find(keyward.UsageEventFilter{WorkspaceID: ws.ID})
	if want := ids([]*keyward.UsageEvent{evs[4], evs[2], evs[1], evs[0]}); !reflect.DeepEqual(ids(got), want) {
		t.Fatalf("events = %q, want newest first %q", ids(got), want)
	}
	for _, e := range got {
		var want *keyward.UsageEvent
		for _, w := range evs {
			if w.ID == e.ID {
				want = w
			}
		}
		if !e.Time.Equal(want.Time) || e.Time.Location() != time.UTC {
			t.Errorf("event %s time = %v, want %v in UTC", e.ID, e.Time, want.Time)
		}
		g, w := *e, *want
		g.Time, w.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("event = %+v\nwant %+v", g, w)
		}
	}
	revoked := keyward.Revoked
	for name, tt := range map[string]struct {
		f    keyward.UsageEventFilter
		want []*keyward.UsageEvent
	}{
		"token":   {keyward.UsageEventFilter{WorkspaceID: ws.ID, TokenID: "tok_a"}, []*keyward.UsageEvent{evs[1], evs[0]}},
		"outcome": {keyward.UsageEventFilter{WorkspaceID: ws.ID, Outcome: &revoked}, []*keyward.UsageEvent{evs[1]}},
		"cursor":  {keyward.UsageEventFilter{WorkspaceID: ws.ID, Before: evs[2].ID, Limit: 1}, []*keyward.UsageEvent{evs[1]}},
		"range": {keyward.UsageEventFilter{WorkspaceID: ws.ID, From: t0.Add(time.Second), To: t0.Add(4 * time.Second)},
			[]*keyward.UsageEvent{evs[2], evs[1]}},
		"other workspace's token": {keyward.UsageEventFilter{WorkspaceID: ws.ID, TokenID: "tok_c"}, nil},
	} {
		if got := ids(find(tt.f)); !reflect.DeepEqual(got, ids(tt.want)) {
			t.Errorf("%s: events = %q, want %q", name, got, ids(tt.want))
		}
	}
	n, err := f.s.PruneUsage(f.ctx, keyward.UsagePrune{EventsBefore: t0.Add(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if n.Events != 2 {
		t.Errorf("pruned %+v, want 2 events", n)
	}
	if got, want := ids(find(keyward.UsageEventFilter{WorkspaceID: ws.ID})), ids([]*keyward.UsageEvent{evs[4], evs[2]}); !reflect.DeepEqual(got, want) {
		t.Errorf("after prune, events = %q, want %q", got, want)
	}
}

// testUsagePruneLimit: a prune with a limit deletes at most that many rows
// of each kind, the oldest first, so that retention can work through a
// backlog in short transactions; without one it deletes all that is due.
func (s *suite) testUsagePruneLimit(t *testing.T) {
	f := s.fixture(t)
	ws := f.workspace("acme")
	hour := t0.Truncate(time.Hour)
	var counts []keyward.UsageCount
	var evs []*keyward.UsageEvent
	// Five minutes and, through them, three hours of rollups; five events.
	for i, m := range []int{0, 1, 60, 61, 120} {
		counts = append(counts, usageCount(ws.ID, "tok_a", m, "/v1/verify", keyward.Valid, 200, 1))
		evs = append(evs, &keyward.UsageEvent{
			ID: f.id(keyward.PrefixUsageEvent), WorkspaceID: ws.ID, TokenID: "tok_a", Time: t0.Add(time.Duration(i) * time.Second),
			Method: "POST", Route: "/v1/verify", Path: "/v1/verify", Outcome: keyward.NotFound, Status: 200,
		})
	}
	if err := f.s.WriteUsage(f.ctx, keyward.FlushID{}, counts, evs); err != nil {
		t.Fatalf("WriteUsage: %v", err)
	}
	// Everything is past retention but the last minute, hour and event.
	p := keyward.UsagePrune{MinutesBefore: hour.Add(120 * time.Minute), HoursBefore: hour.Add(2 * time.Hour),
		EventsBefore: t0.Add(4 * time.Second), Limit: 2}
	for i, want := range []keyward.UsagePruned{{Minutes: 2, Hours: 2, Events: 2}, {Minutes: 2, Events: 2}, {}} {
		n, err := f.s.PruneUsage(f.ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("prune %d with limit 2 = %+v, want %+v", i+1, n, want)
		}
	}
	minutes := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_a", Granularity: keyward.Minute})
	if want := []string{hour.Add(120*time.Minute).Format(time.RFC3339) + " /v1/verify VALID 200 1"}; !reflect.DeepEqual(minutes, want) {
		t.Errorf("minutes left = %q, want %q", minutes, want)
	}
	hours := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: "tok_a", Granularity: keyward.Hour})
	if want := []string{hour.Add(2*time.Hour).Format(time.RFC3339) + " /v1/verify VALID 200 1"}; !reflect.DeepEqual(hours, want) {
		t.Errorf("hours left = %q, want %q", hours, want)
	}
	left, err := f.s.FindUsageEvents(f.ctx, keyward.UsageEventFilter{WorkspaceID: ws.ID, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].ID != evs[4].ID {
		t.Errorf("%d events left, want only the newest", len(left))
	}
}

// testUsageConcurrent has several writers (nodes) add to the same buckets
// at once, each batch in its own order: every count lands, and no writer
// deadlocks another.
func (s *suite) testUsageConcurrent(t *testing.T) {
	f := s.fixture(t)
	ws := f.workspace("acme")
	const writers, batches, tokens = 4, 10, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				var counts []keyward.UsageCount
				for i := range tokens {
					k := (i + w*7 + b) % tokens // each writer walks the keys from its own start
					counts = append(counts, usageCount(ws.ID, fmt.Sprintf("tok_%02d", k), k%3, "/v1/verify", keyward.Valid, 200, 1))
				}
				errs <- f.s.WriteUsage(f.ctx, keyward.FlushID{}, counts, nil)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("WriteUsage: %v", err)
		}
	}
	top, err := f.s.UsageTopTokens(f.ctx, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != tokens {
		t.Fatalf("%d tokens counted, want %d", len(top), tokens)
	}
	for _, tt := range top {
		if tt.Total != writers*batches {
			t.Errorf("%s: %d, want %d", tt.TokenID, tt.Total, writers*batches)
		}
	}
}

// testUsageBatch: a batch written again with its id, because the answer
// to its write was lost, is not counted twice, nor are its events kept
// twice.
func (s *suite) testUsageBatch(t *testing.T) {
	hour := t0.Truncate(time.Hour)
	f := s.fixture(t)
	ws := f.workspace("acme")
	counts := []keyward.UsageCount{usageCount(ws.ID, "tok_a", 1, "/v1/verify", keyward.Revoked, 401, 2)}
	events := []*keyward.UsageEvent{{ID: f.id(keyward.PrefixUsageEvent), WorkspaceID: ws.ID, TokenID: "tok_a",
		Time: hour.Add(time.Minute), Method: "GET", Route: "/v1/verify", Path: "/v1/verify", Outcome: keyward.Revoked, Status: 401}}
	id := keyward.FlushID{Writer: "flw_a", Seq: 1, At: t0}
	for range 2 { // the second time because the first's answer was lost
		if err := f.s.WriteUsage(f.ctx, id, counts, events); err != nil {
			t.Fatalf("WriteUsage(%+v): %v", id, err)
		}
	}
	id.Seq++
	if err := f.s.WriteUsage(f.ctx, id, counts, nil); err != nil {
		t.Fatalf("WriteUsage(%+v): %v", id, err)
	}
	got := f.series(keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour})
	if want := []string{hour.Format(time.RFC3339) + " /v1/verify REVOKED 401 4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("hours = %q, want %q", got, want)
	}
	evs, err := f.s.FindUsageEvents(f.ctx, keyward.UsageEventFilter{WorkspaceID: ws.ID})
	if err != nil {
		t.Fatalf("FindUsageEvents: %v", err)
	}
	if len(evs) != 1 || evs[0].ID != events[0].ID {
		t.Errorf("events = %v, want only %s", evs, events[0].ID)
	}
}
