package usage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/sqlite"
)

var t0 = time.Date(2026, time.November, 23, 10, 0, 0, 0, time.UTC)

func openStore(t testing.TB) (keyward.Store, *keyward.Workspace) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0), Name: "acme", TokenPrefix: keyward.DefaultTokenPrefix, CreatedAt: t0}
	if err := db.CreateWorkspace(context.Background(), ws, nil, nil); err != nil {
		t.Fatal(err)
	}
	return db, ws
}

// req returns a verification of token tok at t0 plus sec seconds.
func req(ws, tok string, sec int, route string, o keyward.Outcome, status int) *Request {
	return &Request{
		WorkspaceID: ws, TokenID: tok, At: t0.Add(time.Duration(sec) * time.Second).UnixNano(),
		IP: netip.MustParseAddr("203.0.113.9"), Method: "POST", Route: route, Path: route,
		Outcome: o, Status: status, Latency: 40 * time.Microsecond,
	}
}

func rows(t *testing.T, st keyward.Store, f keyward.UsageFilter) []string {
	t.Helper()
	got, err := st.UsageSeries(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, c := range got {
		out = append(out, fmt.Sprintf("%s %s %s %d %d", c.Bucket.Format("15:04"), c.Route, c.Outcome, c.Status, c.Count))
	}
	return out
}

func events(t *testing.T, st keyward.Store, ws string) []*keyward.UsageEvent {
	t.Helper()
	evs, err := st.FindUsageEvents(context.Background(), keyward.UsageEventFilter{WorkspaceID: ws})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestKnownSequence records a known sequence of verifications and checks
// the exact rollups and events they become.
func TestKnownSequence(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, SampleEvery: -1})
	const a, b = "tok_0000000000000000000000000a", "tok_0000000000000000000000000b"
	for i := range 7 {
		r.Record(req(ws.ID, a, i, "/v1/verify", keyward.Valid, 200)) // minute 0
	}
	r.Record(req(ws.ID, a, 30, "/v1/verify", keyward.RateLimited, 200))
	r.Record(req(ws.ID, a, 61, "orders", keyward.Valid, 200)) // minute 1
	r.Record(req(ws.ID, a, 62, "orders", keyward.InsufficientScope, 403))
	r.Record(req(ws.ID, b, 3700, "/v1/verify", keyward.Valid, 200)) // the next hour
	r.Record(req(ws.ID, "", 5, "orders", keyward.NotFound, 401))
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A second flush adds to what the first wrote.
	r.Record(req(ws.ID, a, 10, "/v1/verify", keyward.Valid, 200))
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	got := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: a, Granularity: keyward.Minute})
	want := []string{
		"10:00 /v1/verify RATE_LIMITED 200 1",
		"10:00 /v1/verify VALID 200 8",
		"10:01 orders INSUFFICIENT_SCOPE 403 1",
		"10:01 orders VALID 200 1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("minutes of a = %q\nwant %q", got, want)
	}
	got = rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour})
	want = []string{
		"10:00 /v1/verify RATE_LIMITED 200 1",
		"10:00 /v1/verify VALID 200 8",
		"10:00 orders INSUFFICIENT_SCOPE 403 1",
		"10:00 orders NOT_FOUND 401 1",
		"10:00 orders VALID 200 1",
		"11:00 /v1/verify VALID 200 1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hours of the workspace = %q\nwant %q", got, want)
	}
	// Every failure is kept whole; with sampling off, no success is.
	evs := events(t, st, ws.ID)
	var outcomes []string
	for _, e := range evs {
		outcomes = append(outcomes, e.Outcome.String())
		if e.IP != "203.0.113.9" || e.Method != "POST" || e.Latency != 40*time.Microsecond {
			t.Errorf("event %+v lost a field", e)
		}
	}
	sort.Strings(outcomes)
	if want := []string{"INSUFFICIENT_SCOPE", "NOT_FOUND", "RATE_LIMITED"}; !reflect.DeepEqual(outcomes, want) {
		t.Errorf("events = %q, want %q", outcomes, want)
	}
	if s := r.Stats(); s.Recorded != 13 || s.PendingCounts != 0 || s.PendingEvents != 0 || s.Dropped != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestSampling(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, SampleEvery: 10})
	const a = "tok_0000000000000000000000000a"
	for i := range 100 {
		r.Record(req(ws.ID, a, i, "/v1/verify", keyward.Valid, 200))
	}
	r.Record(req(ws.ID, a, 1, "/v1/verify", keyward.Expired, 200))
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	valid, failed := 0, 0
	for _, e := range events(t, st, ws.ID) {
		if e.Outcome == keyward.Valid {
			valid++
		} else {
			failed++
		}
	}
	if valid != 10 || failed != 1 {
		t.Errorf("kept %d successes and %d failures, want 10 and 1", valid, failed)
	}
	if got := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour}); !reflect.DeepEqual(got,
		[]string{"10:00 /v1/verify EXPIRED 200 1", "10:00 /v1/verify VALID 200 100"}) {
		t.Errorf("sampling changed the counts: %q", got)
	}
}

// TestOverflowCounted fills the raw-event buffer: the events beyond it are
// dropped and counted, and the counts stay exact. The bound is on the
// buffer as a whole: one token's failures, or those that name no token
// (a flood of made-up tokens), may fill all of it.
func TestOverflowCounted(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, MaxEvents: 40})
	const a = "tok_0000000000000000000000000a"
	for i := range 30 {
		r.Record(req(ws.ID, a, i%60, "/v1/verify", keyward.Revoked, 200))
	}
	if s := r.Stats(); s.Dropped != 0 || s.PendingEvents != 30 {
		t.Errorf("stats = %+v, want 30 pending, none dropped (one token may use the whole buffer)", s)
	}
	for i := range 25 {
		r.Record(req(ws.ID, "", i%60, "/v1/verify", keyward.NotFound, 200))
	}
	if s := r.Stats(); s.Dropped != 15 || s.PendingEvents != 40 {
		t.Errorf("stats = %+v, want 15 dropped and 40 pending", s)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(events(t, st, ws.ID)); n != 40 {
		t.Errorf("%d events stored, want 40", n)
	}
	if got := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour}); !reflect.DeepEqual(got,
		[]string{"10:00 /v1/verify NOT_FOUND 200 25", "10:00 /v1/verify REVOKED 200 30"}) {
		t.Errorf("counts = %q, want all 55", got)
	}
	// Written, the events free the buffer.
	r.Record(req(ws.ID, a, 1, "/v1/verify", keyward.Revoked, 200))
	if s := r.Stats(); s.Dropped != 15 || s.PendingEvents != 1 {
		t.Errorf("stats after the flush = %+v, want 1 pending", s)
	}
}

// failingStore fails WriteUsage while fail is set.
type failingStore struct {
	keyward.Store
	mu   sync.Mutex
	fail bool
}

func (s *failingStore) WriteUsage(ctx context.Context, id keyward.FlushID, c []keyward.UsageCount, e []*keyward.UsageEvent) error {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return errors.New("store down")
	}
	return s.Store.WriteUsage(ctx, id, c, e)
}

func TestFailedFlushKeepsUsage(t *testing.T) {
	st, ws := openStore(t)
	fs := &failingStore{Store: st, fail: true}
	r := New(Config{Store: fs})
	const a = "tok_0000000000000000000000000a"
	r.Record(req(ws.ID, a, 0, "/v1/verify", keyward.Valid, 200))
	r.Record(req(ws.ID, a, 1, "/v1/verify", keyward.Suspended, 200))
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("flush to a failing store succeeded")
	}
	if s := r.Stats(); s.FlushErrors != 1 || s.PendingCounts != 2 || s.PendingEvents != 1 {
		t.Errorf("after a failed flush, stats = %+v", s)
	}
	r.Record(req(ws.ID, a, 2, "/v1/verify", keyward.Valid, 200))
	fs.fail = false
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: a, Granularity: keyward.Minute}); !reflect.DeepEqual(got,
		[]string{"10:00 /v1/verify SUSPENDED 200 1", "10:00 /v1/verify VALID 200 2"}) {
		t.Errorf("after recovery, counts = %q", got)
	}
	if n := len(events(t, st, ws.ID)); n != 1 {
		t.Errorf("%d events stored, want 1", n)
	}
}

// TestRetention deletes only what is past each retention, by the injected
// clock.
func TestRetention(t *testing.T) {
	st, ws := openStore(t)
	now := t0.Add(30 * 24 * time.Hour)
	r := New(Config{Store: st, Now: func() time.Time { return now },
		MinuteRetention: 14 * 24 * time.Hour, HourRetention: 20 * 24 * time.Hour, EventRetention: 7 * 24 * time.Hour})
	const a = "tok_0000000000000000000000000a"
	day := 24 * 60 * 60
	for _, d := range []int{0, 12, 17, 25} { // days after t0, i.e. 30, 18, 13 and 5 days old
		r.Record(req(ws.ID, a, d*day, "/v1/verify", keyward.Revoked, 200))
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err := r.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Minutes: 30 and 18 days old go; hours: 30; events: all but 5 days.
	if n != (keyward.UsagePruned{Minutes: 2, Hours: 1, Events: 3}) {
		t.Errorf("pruned %+v", n)
	}
	if got := len(rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute})); got != 2 {
		t.Errorf("%d minute rows left, want 2", got)
	}
	if got := len(rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour})); got != 3 {
		t.Errorf("%d hour rows left, want 3", got)
	}
	if got := events(t, st, ws.ID); len(got) != 1 || !got[0].Time.Equal(t0.Add(25*24*time.Hour)) {
		t.Errorf("events left = %+v, want the newest", got)
	}
	// Negative retention keeps forever.
	r = New(Config{Store: st, Now: func() time.Time { return now.Add(1000 * 24 * time.Hour) },
		MinuteRetention: -1, HourRetention: -1, EventRetention: -1})
	if n, err := r.Prune(context.Background()); err != nil || n != (keyward.UsagePruned{}) {
		t.Errorf("prune with no retention = %+v, %v", n, err)
	}
}

// TestEventsNewestFirstWithinMillisecond: failures many to a millisecond
// (a brute force, say), recorded in another order than their times (from
// several goroutines), list newest first by their times, as
// GET /v1/usage/events promises, not in an order the ids' random bits make.
func TestEventsNewestFirstWithinMillisecond(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st})
	const n = 40
	for _, i := range rand.Perm(n) {
		q := req(ws.ID, "", 0, "/v1/verify", keyward.NotFound, 200)
		q.At += int64(i) * 1000 // i µs into the same millisecond
		r.Record(q)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := st.FindUsageEvents(context.Background(), keyward.UsageEventFilter{WorkspaceID: ws.ID, Limit: n + 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d events, want %d", len(got), n)
	}
	for i, e := range got {
		if want := t0.Add(time.Duration(n-1-i) * time.Microsecond); !e.Time.Equal(want) {
			t.Fatalf("event %d of the list is at %v, want %v (newest first)", i, e.Time.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
		}
	}
	// A cursor in the middle of the millisecond pages on from there.
	rest, err := st.FindUsageEvents(context.Background(), keyward.UsageEventFilter{WorkspaceID: ws.ID, Before: got[9].ID, Limit: n})
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != n-10 || rest[0].ID != got[10].ID {
		t.Errorf("page after the 10th event: %d events, want %d starting with the 11th", len(rest), n-10)
	}
}

// batchStore counts the rows each PruneUsage call deletes.
type batchStore struct {
	keyward.Store
	calls []keyward.UsagePruned
}

func (s *batchStore) PruneUsage(ctx context.Context, p keyward.UsagePrune) (keyward.UsagePruned, error) {
	n, err := s.Store.PruneUsage(ctx, p)
	s.calls = append(s.calls, n)
	return n, err
}

// TestRetentionInBatches: a backlog past retention is deleted whole, in
// transactions of at most PruneBatch rows of each kind, so that on SQLite
// the token writes waiting on its one writer are not held up for long.
func TestRetentionInBatches(t *testing.T) {
	db, ws := openStore(t)
	st := &batchStore{Store: db}
	now := t0.Add(30 * 24 * time.Hour)
	r := New(Config{Store: st, Now: func() time.Time { return now }, SampleEvery: -1, PruneBatch: 3})
	const a = "tok_0000000000000000000000000a"
	for i := range 10 { // ten minutes of failures 30 days ago (hours stay 400 days), and one now
		r.Record(req(ws.ID, a, i*60, "/v1/verify", keyward.Revoked, 200))
	}
	r.Record(req(ws.ID, a, 30*24*60*60, "/v1/verify", keyward.Revoked, 200))
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err := r.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := (keyward.UsagePruned{Minutes: 10, Events: 10}); n != want {
		t.Errorf("pruned %+v, want %+v", n, want)
	}
	if len(st.calls) != 4 {
		t.Errorf("%d prune transactions, want 4 of at most 3 rows: %+v", len(st.calls), st.calls)
	}
	for _, c := range st.calls {
		if c.Minutes > 3 || c.Hours > 3 || c.Events > 3 {
			t.Errorf("one prune transaction deleted %+v, more than 3 of a kind", c)
		}
	}
	if got := len(rows(t, db, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute})); got != 1 {
		t.Errorf("%d minute rows left, want 1", got)
	}
	if got := events(t, db, ws.ID); len(got) != 1 {
		t.Errorf("%d events left, want 1", len(got))
	}
	if got := r.Stats().Pruned; got != 20 {
		t.Errorf("Stats().Pruned = %d, want 20", got)
	}
}

// TestConcurrentRecord records from many goroutines while flushing: the
// totals come out exact.
func TestConcurrentRecord(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, SampleEvery: -1})
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				flushed <- nil
				return
			default:
				if err := r.Flush(context.Background()); err != nil {
					flushed <- err
					return
				}
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := fmt.Sprintf("tok_00000000000000000000000%03d", w)
			for i := range each {
				r.Record(req(ws.ID, tok, i%120, "/v1/verify", keyward.Valid, 200))
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	top, err := st.UsageTopTokens(context.Background(), keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, tt := range top {
		if tt.Total != each {
			t.Errorf("token %s: %d, want %d", tt.TokenID, tt.Total, each)
		}
		total += tt.Total
	}
	if len(top) != workers || total != workers*each {
		t.Errorf("%d tokens, %d in all; want %d and %d", len(top), total, workers, workers*each)
	}
}

func TestNilRecorder(t *testing.T) {
	var r *Recorder
	r.Record(req("ws", "tok", 0, "/v1/verify", keyward.Valid, 200))
	if s := r.Stats(); s != (Stats{}) {
		t.Errorf("stats of nil = %+v", s)
	}
}

// BenchmarkRecord is the cost recording adds to a verification of a
// cached token, in steady state (the token's bucket exists).
func BenchmarkRecord(b *testing.B) {
	r := New(Config{Store: nil})
	q := req("ws_x", "tok_0000000000000000000000000a", 0, "/v1/verify", keyward.Valid, 200)
	b.ReportAllocs()
	for b.Loop() {
		r.Record(q)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10 s", what)
}

// TestFlushWhenHalfFull: a flood of failures kept as events (fewer than
// FailureEvents of its row) is written as soon as half the buffer holds
// it, not dropped while the flush interval runs.
func TestFlushWhenHalfFull(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, MaxEvents: 10, FlushInterval: time.Hour})
	r.Start()
	defer r.Close(context.Background())
	const a = "tok_0000000000000000000000000a"
	for i := range 4 {
		r.Record(req(ws.ID, a, i, "/v1/verify", keyward.InsufficientScope, 200))
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(events(t, st, ws.ID)); n != 0 {
		t.Fatalf("%d events written before the buffer was half full", n)
	}
	r.Record(req(ws.ID, a, 4, "/v1/verify", keyward.InsufficientScope, 200))
	waitFor(t, "the half-full buffer written", func() bool { return len(events(t, st, ws.ID)) == 5 })
	// And again: each time the buffer fills to half.
	for i := range 5 {
		r.Record(req(ws.ID, a, 10+i, "/v1/verify", keyward.InsufficientScope, 200))
	}
	waitFor(t, "the buffer written a second time", func() bool { return len(events(t, st, ws.ID)) == 10 })
	if s := r.Stats(); s.Dropped != 0 {
		t.Errorf("stats = %+v, want none dropped", s)
	}
}

// TestPruneAtStart: retention runs when the recorder starts, not only
// after a first PruneInterval of uptime.
func TestPruneAtStart(t *testing.T) {
	st, ws := openStore(t)
	const a = "tok_0000000000000000000000000a"
	w := New(Config{Store: st})
	w.Record(req(ws.ID, a, 0, "/v1/verify", keyward.Revoked, 200))
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(30 * 24 * time.Hour)
	r := New(Config{Store: st, Now: func() time.Time { return now }, PruneInterval: time.Hour})
	r.Start()
	defer r.Close(context.Background())
	waitFor(t, "the old event pruned", func() bool { return len(events(t, st, ws.ID)) == 0 })
}

// TestDroppedLogged: dropped events are logged, once a flush, with how
// many.
func TestDroppedLogged(t *testing.T) {
	st, ws := openStore(t)
	var buf bytes.Buffer
	r := New(Config{Store: st, MaxEvents: 2, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	for i := range 5 {
		r.Record(req(ws.ID, "", i, "/v1/verify", keyward.NotFound, 200))
	}
	for range 2 {
		if err := r.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Count(buf.String(), "usage events dropped"); got != 1 || !strings.Contains(buf.String(), "dropped=3 buffer=2") {
		t.Errorf("log:\n%s\nwant one line with dropped=3 buffer=2", buf.String())
	}
}

// TestRetentionWholeBuckets: a rollup whose bucket holds the retention's
// cut is kept: some of its uses are within retention.
func TestRetentionWholeBuckets(t *testing.T) {
	st, ws := openStore(t)
	const a = "tok_0000000000000000000000000a"
	w := New(Config{Store: st})
	w.Record(req(ws.ID, a, 0, "/v1/verify", keyward.Revoked, 200))     // 10:00:00, in the 10:00 hour
	w.Record(req(ws.ID, a, 59*60, "/v1/verify", keyward.Revoked, 200)) // 10:59:00
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An hour's retention, at 11:30: the cut is 10:30, inside the 10:00
	// hour and after its 10:00 minute.
	now := t0.Add(90 * time.Minute)
	r := New(Config{Store: st, Now: func() time.Time { return now }, MinuteRetention: time.Hour, HourRetention: time.Hour, EventRetention: -1})
	n, err := r.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != (keyward.UsagePruned{Minutes: 1}) {
		t.Errorf("pruned %+v, want the 10:00 minute alone", n)
	}
	if got := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Hour}); len(got) != 1 {
		t.Errorf("hour rows = %q, want the 10:00 hour kept", got)
	}
}

// TestNoEarlyFlushWhileFailing: while the store refuses writes, a buffer
// filling up asks for no extra write (and no extra warning): the next tick
// tries again.
func TestNoEarlyFlushWhileFailing(t *testing.T) {
	st, ws := openStore(t)
	fs := &countingStore{failingStore: failingStore{Store: st, fail: true}}
	r := New(Config{Store: fs, MaxEvents: 10, FlushInterval: time.Hour})
	r.Start()
	const a = "tok_0000000000000000000000000a"
	for i := range 5 {
		r.Record(req(ws.ID, a, i, "/v1/verify", keyward.InsufficientScope, 200))
	}
	waitFor(t, "the first early write", func() bool { return fs.calls.Load() == 1 })
	for round := range 5 {
		for i := range 5 {
			r.Record(req(ws.ID, a, 10*round+i, "/v1/verify", keyward.InsufficientScope, 200))
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := fs.calls.Load(); n != 1 {
		t.Errorf("%d writes while the store fails, want the first one only", n)
	}
	fs.mu.Lock()
	fs.fail = false
	fs.mu.Unlock()
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// countingStore counts WriteUsage calls.
type countingStore struct {
	failingStore
	calls atomic.Int64
}

func (s *countingStore) WriteUsage(ctx context.Context, id keyward.FlushID, c []keyward.UsageCount, e []*keyward.UsageEvent) error {
	s.calls.Add(1)
	return s.failingStore.WriteUsage(ctx, id, c, e)
}

// slowStore's PruneUsage waits for its context.
type slowStore struct{ keyward.Store }

func (s slowStore) PruneUsage(ctx context.Context, p keyward.UsagePrune) (keyward.UsagePruned, error) {
	<-ctx.Done()
	return keyward.UsagePruned{}, ctx.Err()
}

// TestCloseCutsPrune: a retention run in progress (at start, say, over a
// large backlog) does not hold the stop up.
func TestCloseCutsPrune(t *testing.T) {
	st, _ := openStore(t)
	r := New(Config{Store: slowStore{st}})
	r.Start()
	time.Sleep(20 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- r.Close(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the retention run")
	}
}

// TestEventSecretsRedacted: a secret sent in the path or as the method
// (a gateway route takes any method) is not kept in the usage events.
func TestEventSecretsRedacted(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, SampleEvery: 1})
	const text = "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"
	q := req(ws.ID, "tok_0000000000000000000000000a", 1, "orders", keyward.Valid, 200)
	q.Method, q.Path = text, "/orders/"+text
	r.Record(q)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, err := st.FindUsageEvents(context.Background(), keyward.UsageEventFilter{WorkspaceID: ws.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Method != "kw_[redacted]" || evs[0].Path != "/orders/kw_[redacted]" {
		t.Fatalf("events %+v, want one with method and path redacted", evs)
	}
}

// TestEventPathEscaped: an event keeps the path escaped, as the request
// wrote it (a decoded %3F would read as a query string, which usage does
// not keep), and a secret behind an escape is still cut.
func TestEventPathEscaped(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, SampleEvery: 1})
	const body = "1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"
	for i, p := range []string{"/a%3Faccess_token=x", "/orders/kw%5F" + body} {
		q := req(ws.ID, fmt.Sprintf("tok_000000000000000000000000%02d", i), 1, "orders", keyward.Valid, 200)
		q.Path = p
		r.Record(q)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, err := st.FindUsageEvents(context.Background(), keyward.UsageEventFilter{WorkspaceID: ws.ID})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Path)
	}
	slices.Sort(got)
	if want := []string{"/a%3Faccess_token=x", "/orders/kw%5F[redacted]"}; !slices.Equal(got, want) {
		t.Fatalf("paths %q, want %q", got, want)
	}
}

// lockedBuffer is a bytes.Buffer that a logger and a test may use at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestFlushFailuresLogged: while the store refuses usage writes, the
// flush loop logs its failure once, then once a minute with how many
// tries failed, and once when a flush succeeds again, rather than a line
// at every try.
func TestFlushFailuresLogged(t *testing.T) {
	st, ws := openStore(t)
	fs := &failingStore{Store: st, fail: true}
	var now atomic.Int64
	now.Store(t0.UnixNano())
	var log lockedBuffer
	r := New(Config{Store: fs, FlushInterval: 5 * time.Millisecond, Now: func() time.Time { return time.Unix(0, now.Load()).UTC() },
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	r.Start()
	defer r.Close(context.Background())
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s; log:\n%s", what, log.String())
			}
		}
	}
	lines := func() int { return strings.Count(log.String(), "usage flush failed") }

	r.Record(req(ws.ID, "tok_0000000000000000000000000a", 0, "/v1/verify", keyward.Valid, 200))
	waitFor("5 failed flushes", func() bool { return r.Stats().FlushErrors >= 5 })
	if n := lines(); n != 1 {
		t.Fatalf("%d lines for 5 failed flushes, want 1:\n%s", n, log.String())
	}
	now.Add(int64(time.Minute))
	before := r.Stats().FlushErrors
	waitFor("2 more failed flushes", func() bool { return r.Stats().FlushErrors >= before+2 })
	if n := lines(); n != 2 || !strings.Contains(log.String(), "failures=") {
		t.Fatalf("%d lines after a minute of failures, want 2, the second with their count:\n%s", n, log.String())
	}
	fs.mu.Lock()
	fs.fail = false
	fs.mu.Unlock()
	waitFor("the recovery logged", func() bool { return strings.Contains(log.String(), "usage written again") })
}

// TestStartRetention: a node that counts no usage (--usage=false) still
// deletes, at its start, what other nodes or earlier runs stored past
// retention.
func TestStartRetention(t *testing.T) {
	db, ws := openStore(t)
	const a = "tok_0000000000000000000000000a"
	w := New(Config{Store: db, Now: func() time.Time { return t0 }, SampleEvery: -1})
	for i := range 3 {
		w.Record(req(ws.ID, a, i*60, "/v1/verify", keyward.Revoked, 200))
	}
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := events(t, db, ws.ID); len(got) != 3 {
		t.Fatalf("%d events stored, want 3", len(got))
	}
	if got := len(rows(t, db, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute})); got != 3 {
		t.Fatalf("%d minute rows stored, want 3", got)
	}
	r := New(Config{Store: db, Now: func() time.Time { return t0.Add(30 * 24 * time.Hour) }, SampleEvery: -1})
	r.StartRetention()
	for deadline := time.Now().Add(10 * time.Second); r.Stats().Pruned < 6; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("retention deleted %d rows within 10 s, want 6 (3 minute rollups, 3 events)", r.Stats().Pruned)
		}
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := events(t, db, ws.ID); len(got) != 0 {
		t.Errorf("%d events left, want 0", len(got))
	}
	if got := len(rows(t, db, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute})); got != 0 {
		t.Errorf("%d minute rows left, want 0", got)
	}
}

// slowPruneStore holds every PruneUsage until its context ends, as a
// large backlog does.
type slowPruneStore struct {
	keyward.Store
	started chan struct{}
	once    sync.Once
}

func (s *slowPruneStore) PruneUsage(ctx context.Context, p keyward.UsagePrune) (keyward.UsagePruned, error) {
	s.once.Do(func() { close(s.started) })
	<-ctx.Done()
	return keyward.UsagePruned{}, ctx.Err()
}

// TestCloseNoFailureLogged: a retention run that Close cuts short (a node
// stopping, or failing to start, while it prunes) is not logged as a
// failure.
func TestCloseNoFailureLogged(t *testing.T) {
	st, _ := openStore(t)
	slow := &slowPruneStore{Store: st, started: make(chan struct{})}
	var buf lockedBuffer
	r := New(Config{Store: slow, Log: slog.New(slog.NewTextHandler(&buf, nil)), PruneInterval: time.Hour})
	r.Start()
	<-slow.started
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "" {
		t.Errorf("Close logged %s", got)
	}
}

// countOutcomes returns how many of evs have each outcome and minute, as
// "10:00 REVOKED 100".
func countOutcomes(evs []*keyward.UsageEvent) []string {
	n := map[string]int{}
	for _, e := range evs {
		n[e.Time.Format("15:04")+" "+e.Outcome.String()]++
	}
	out := []string{}
	for k, c := range n {
		out = append(out, fmt.Sprintf("%s %d", k, c))
	}
	sort.Strings(out)
	return out
}

// TestFailureEventsBounded: of one rollup row's failures, the first
// FailureEvents of a minute are kept whole and the rest only counted,
// whatever flushes that minute sees; the next minute, and another row,
// keep as many again, and successes are sampled as before.
func TestFailureEventsBounded(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, FailureEvents: 100, SampleEvery: 10})
	const a = "tok_0000000000000000000000000a"
	for minute := range 2 {
		for i := range 250 {
			if i == 120 {
				// A flush mid-minute empties the counts, not the bound.
				if err := r.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			r.Record(req(ws.ID, a, minute*60+i%60, "/v1/verify", keyward.Revoked, 200))
		}
	}
	for i := range 30 {
		r.Record(req(ws.ID, a, 10+i, "/v1/verify", keyward.Valid, 200))
		r.Record(req(ws.ID, a, 10+i, "/v1/verify", keyward.RateLimited, 429))
	}
	// One that began in minute 0, recorded once minute 1 began: it
	// counts against minute 0, which has kept its 100.
	r.Record(req(ws.ID, a, 59, "/v1/verify", keyward.Revoked, 200))
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"10:00 RATE_LIMITED 30", "10:00 REVOKED 100", "10:00 VALID 3", "10:01 REVOKED 100"}
	if got := countOutcomes(events(t, st, ws.ID)); !reflect.DeepEqual(got, want) {
		t.Errorf("events = %q\nwant %q", got, want)
	}
	want = []string{
		"10:00 /v1/verify RATE_LIMITED 429 30",
		"10:00 /v1/verify REVOKED 200 251",
		"10:00 /v1/verify VALID 200 30",
		"10:01 /v1/verify REVOKED 200 250",
	}
	if got := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, TokenID: a, Granularity: keyward.Minute}); !reflect.DeepEqual(got, want) {
		t.Errorf("counts = %q\nwant %q", got, want)
	}
	if s := r.Stats(); s.Skipped != 301 || s.Dropped != 0 || s.Recorded != 561 {
		t.Errorf("stats = %+v, want 301 skipped, none dropped, 561 recorded", s)
	}
}

// TestFailureEventsUnbounded: a negative FailureEvents keeps every
// failure whole.
func TestFailureEventsUnbounded(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, FailureEvents: -1})
	const a = "tok_0000000000000000000000000a"
	for i := range 250 {
		r.Record(req(ws.ID, a, i%60, "/v1/verify", keyward.Revoked, 200))
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(events(t, st, ws.ID)); n != 250 {
		t.Errorf("%d events, want all 250", n)
	}
	if s := r.Stats(); s.Skipped != 0 {
		t.Errorf("stats = %+v, want none skipped", s)
	}
}

// TestFailureEventsWithoutToken: failures that name no token (a flood of
// made-up ones) are bounded as a whole, by FailureEvents on each shard.
func TestFailureEventsWithoutToken(t *testing.T) {
	st, ws := openStore(t)
	r := New(Config{Store: st, FailureEvents: 5})
	for i := range 1000 {
		r.Record(req(ws.ID, "", i%60, "/v1/verify", keyward.NotFound, 401))
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(events(t, st, ws.ID)); n != numShards*5 {
		t.Errorf("%d events, want %d", n, numShards*5)
	}
	if got, want := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute}), []string{"10:00 /v1/verify NOT_FOUND 401 1000"}; !reflect.DeepEqual(got, want) {
		t.Errorf("counts = %q, want %q", got, want)
	}
	if s := r.Stats(); s.Skipped != 1000-numShards*5 {
		t.Errorf("stats = %+v, want %d skipped", s, 1000-numShards*5)
	}
}

// TestRecordFailureAllocs: recording a failure whose row has kept its
// events costs no allocation, in its minute or, begun before the minute
// turned, in the one before.
func TestRecordFailureAllocs(t *testing.T) {
	r := New(Config{Store: nil, FailureEvents: 1})
	q := req("ws_x", "tok_0000000000000000000000000a", 0, "/v1/verify", keyward.Revoked, 200)
	q2 := req("ws_x", "tok_0000000000000000000000000a", 60, "/v1/verify", keyward.Revoked, 200)
	r.Record(q)
	r.Record(q2)
	// AllocsPerRun counts the whole process's allocations, other tests'
	// goroutines winding down included: the least of a few runs is
	// Record's own.
	n := testing.AllocsPerRun(100, func() { r.Record(q); r.Record(q2) })
	for range 4 {
		n = min(n, testing.AllocsPerRun(100, func() { r.Record(q); r.Record(q2) }))
	}
	if n != 0 {
		t.Errorf("%v allocations a record", n)
	}
	if s := r.Stats(); s.PendingEvents != 2 {
		t.Errorf("stats = %+v, want the first of each minute kept", s)
	}
}

// BenchmarkRecordFailure is the cost of recording a failure whose row has
// kept its events (a flood of one revoked token).
func BenchmarkRecordFailure(b *testing.B) {
	r := New(Config{Store: nil, FailureEvents: 1})
	q := req("ws_x", "tok_0000000000000000000000000a", 0, "/v1/verify", keyward.Revoked, 200)
	b.ReportAllocs()
	for b.Loop() {
		r.Record(q)
	}
}

// nopStore takes every usage write.
type nopStore struct{ keyward.Store }

func (nopStore) WriteUsage(context.Context, keyward.FlushID, []keyward.UsageCount, []*keyward.UsageEvent) error {
	return nil
}

// TestFailuresMemoryReleased: a minute's flood of failures of many tokens
// grows the maps that count failures by row; once the minute is past, a
// flush lets that memory go, on shards that see failures again and on
// those that see none.
func TestFailuresMemoryReleased(t *testing.T) {
	now := t0.Add(10 * time.Minute)
	r := New(Config{Store: nopStore{}, FailureEvents: 1, Now: func() time.Time { return now }})
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	// Ids whose last bytes take every shard.
	const last = "PABCDEFGHIJKLMNO"
	before := heap()
	for i := range 64_000 {
		r.Record(req("ws_x", fmt.Sprintf("tok_%025d%c", i, last[i%len(last)]), 0, "/v1/verify", keyward.Revoked, 200))
	}
	ctx := context.Background()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A success on each shard, then a flush: the counts map that the flood
	// grew is replaced by one its size; this replaces that one in turn.
	for i := range len(last) {
		r.Record(req("ws_x", fmt.Sprintf("tok_%025d%c", 0, last[i]), 600, "/v1/verify", keyward.Valid, 200))
	}
	// Half the shards see failures in the minutes after; the rest none.
	for m := 1; m <= 3; m++ {
		for i := range len(last) / 2 {
			r.Record(req("ws_x", fmt.Sprintf("tok_%025d%c", 0, last[i]), 60*m, "/v1/verify", keyward.Revoked, 200))
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	after := heap()
	runtime.KeepAlive(r)
	if after > before && after-before > 1<<20 {
		t.Errorf("the recorder holds %d KB more than before a flood over a minute past, want less than 1 MB", (after-before)>>10)
	}
	if s := r.Stats(); s.Skipped != 0 || s.PendingCounts != 0 || s.PendingEvents != 0 {
		t.Errorf("stats = %+v", s)
	}
}
