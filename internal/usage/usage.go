// Package usage counts verifications for analytics (PRODUCT §6): every
// verification is added, in memory, to a count per token, minute, route,
// outcome and answered status; failures, up to a bound a minute, and a
// sample of successes are also kept whole, as raw events. A background
// loop writes both to the store, where the counts become minute and hour
// rollups, and another deletes what is past its retention.
//
// Recording never waits for the store. Counts are never dropped: a flush
// that fails is retried with the next one, with the id it was first
// written with (keyward.FlushID), so that a flush the store applied
// although its answer was lost is not counted twice. Raw events are bounded in
// memory; those beyond the bound are dropped and counted (Stats.Dropped),
// never silently.
//
// Raw events are bounded by requests' kinds, not their number: of the
// failures counted in one rollup row (a token, route, outcome and status
// in one minute), a node keeps the first Config.FailureEvents whole and
// only counts the rest (Stats.Skipped), so that a flood of revoked,
// rate-limited or made-up tokens grows storage with the tokens and the
// minutes it lasts, not with its requests (PRODUCT §6).
package usage

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/logfmt"
	"github.com/keyward/keyward/internal/secret"
)

// Defaults of Config.
const (
	DefaultFlushInterval   = 5 * time.Second
	DefaultSampleEvery     = 100
	DefaultFailureEvents   = 100
	DefaultMaxEvents       = 100_000
	DefaultMinuteRetention = 14 * 24 * time.Hour
	DefaultHourRetention   = 400 * 24 * time.Hour
	DefaultEventRetention  = 7 * 24 * time.Hour
	DefaultPruneInterval   = 10 * time.Minute
	DefaultPruneBatch      = 10_000
)

// Config configures a Recorder. Zero values take the defaults.
type Config struct {
	Store keyward.Store
	Log   *slog.Logger
	Now   func() time.Time // for retention and event ids

	// FlushInterval is how often counts and events are written: a crash
	// loses at most this much.
	FlushInterval time.Duration
	// SampleEvery keeps one successful verification in SampleEvery as a
	// raw event (1 keeps all). Negative keeps no success.
	SampleEvery int
	// FailureEvents is how many failures of one rollup row (workspace,
	// token, route, minute, outcome and status) this recorder keeps as
	// raw events; the rest are counted, in the rollups and in
	// Stats.Skipped, but not kept whole. Failures without a token
	// (MALFORMED, NOT_FOUND) are spread over numShards locks, each with
	// its own count: for them the bound is numShards times this. Negative
	// keeps every failure.
	FailureEvents int
	// MaxEvents bounds the raw events held in memory between flushes.
	MaxEvents int

	// Retention of minute rollups, hour rollups and raw events; negative
	// keeps them forever.
	MinuteRetention time.Duration
	HourRetention   time.Duration
	EventRetention  time.Duration
	// PruneInterval is how often the retention job runs.
	PruneInterval time.Duration
	// PruneBatch is the most rows of each kind that one retention
	// transaction deletes; a run takes as many as it needs.
	PruneBatch int
}

// Request is one verification, as its caller answered it.
type Request struct {
	WorkspaceID string
	TokenID     string // "" when the credential identified no token
	At          int64  // unix nanoseconds
	IP          netip.Addr
	Method      string
	Route       string // "/v1/verify", "/oauth2/introspect", or a gateway route's name
	Path        string // escaped as the request had it (url.URL.EscapedPath), without the query
	Outcome     keyward.Outcome
	Status      int
	Latency     time.Duration
}

// Stats describes a Recorder's work so far.
type Stats struct {
	Recorded      uint64 // verifications recorded
	PendingCounts int    // rollup rows not yet written
	PendingEvents int    // raw events not yet written
	Dropped       uint64 // raw events dropped because the buffer was full
	Skipped       uint64 // failures not kept as raw events: their row had kept Config.FailureEvents
	FlushErrors   uint64
	Pruned        uint64 // rollup rows and events deleted by retention
}

// numShards spreads recording over locks; a power of two.
const numShards = 16

type key struct {
	ws, token, route string
	minute           int64 // unix minutes
	outcome          keyward.Outcome
	status           int
}

type shard struct {
	mu        sync.Mutex
	counts    map[key]int64
	events    []Request
	successes int // successes seen, for sampling
	failures  failures
	_         [64]byte
}

// failures counts the failures a shard saw of each rollup row, for
// Config.FailureEvents. It is apart from shard.counts, which each flush
// empties: a row's failures are counted for all of its minute, however
// many flushes that minute sees. It holds the newest minute a failure
// came in and the one before (a verification that began before the
// minute turned may be recorded after one that began after), and reuses
// their maps: it does not allocate once a row's entry exists.
type failures struct {
	minute    int64 // of cur; prev holds the minute before
	cur, prev map[key]int64
}

// keptRows is how many rows a failures map may have held and still be
// emptied for reuse. A Go map never gives back the room it grew to, and
// clear takes time in proportion to it: one that a flood of many tokens'
// failures grew is replaced instead, so that the flood's memory goes
// with its minute.
const keptRows = 1024

// empty returns m emptied, or a new map in its place when m grew large.
func empty(m map[key]int64) map[key]int64 {
	if len(m) > keptRows {
		return make(map[key]int64)
	}
	clear(m)
	return m
}

// add counts a failure of row k and returns how many its row has had.
func (f *failures) add(k key) int64 {
	switch k.minute {
	case f.minute:
	case f.minute - 1:
		f.prev[k]++
		return f.prev[k]
	case f.minute + 1:
		f.cur, f.prev = empty(f.prev), f.cur
		f.minute = k.minute
	default:
		// The first failure, one after a quiet minute, or the clock
		// set back: start afresh.
		f.cur, f.prev = empty(f.cur), empty(f.prev)
		f.minute = k.minute
	}
	f.cur[k]++
	return f.cur[k]
}

// release lets the maps of a shard whose last failure is over a minute
// before now go when they grew large: a shard that sees no failure after
// a flood would otherwise hold the flood's rows for good.
func (f *failures) release(now int64) {
	if f.minute < now-1 && len(f.cur)+len(f.prev) > keptRows {
		f.cur, f.prev = empty(f.cur), empty(f.prev)
	}
}

// Recorder gathers usage and writes it. It is safe for concurrent use; a
// nil *Recorder records nothing.
type Recorder struct {
	cfg       Config
	log       *slog.Logger
	shards    [numShards]shard
	buffered  atomic.Int64  // raw events in the shards, at most cfg.MaxEvents
	spread    atomic.Uint64 // turns through the shards for records without a token
	recorded  atomic.Uint64
	dropped   atomic.Uint64
	skipped   atomic.Uint64
	flushErrs atomic.Uint64
	pruned    atomic.Uint64

	flushMu  sync.Mutex // one flush at a time; guards writer, seq, sent and reported
	writer   string     // this recorder's keyward.FlushID writer
	seq      int64      // the Seq of its latest batch
	sent     *batch     // a batch whose write failed; see Flush
	reported uint64     // dropped events already logged

	// kick asks for a flush before its time: the event buffer is half
	// full, so that a flood of failures (of many tokens, or with
	// FailureEvents off) is written, not dropped, as long as the store
	// keeps up.
	kick chan struct{}
	// failing: the last flush failed. No early flush is asked for then:
	// the store is down, and the next tick tries again.
	failing atomic.Bool

	// ctx ends with Close: the loops stop, and a retention run or flush
	// in progress does not hold the stop up.
	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New returns a Recorder. Call Start to run its background loops and Close
// to write what is left.
func New(cfg Config) *Recorder {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.SampleEvery == 0 {
		cfg.SampleEvery = DefaultSampleEvery
	}
	if cfg.FailureEvents == 0 {
		cfg.FailureEvents = DefaultFailureEvents
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.MinuteRetention == 0 {
		cfg.MinuteRetention = DefaultMinuteRetention
	}
	if cfg.HourRetention == 0 {
		cfg.HourRetention = DefaultHourRetention
	}
	if cfg.EventRetention == 0 {
		cfg.EventRetention = DefaultEventRetention
	}
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = DefaultPruneInterval
	}
	if cfg.PruneBatch <= 0 {
		cfg.PruneBatch = DefaultPruneBatch
	}
	r := &Recorder{
		cfg:    cfg,
		log:    cfg.Log,
		writer: keyward.NewFlushWriter(cfg.Now()),
		kick:   make(chan struct{}, 1),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for i := range r.shards {
		sh := &r.shards[i]
		sh.counts = make(map[key]int64)
		sh.failures = failures{cur: make(map[key]int64), prev: make(map[key]int64)}
	}
	return r
}

// Record adds one verification. It takes a lock shared with a sixteenth
// of the tokens and does not allocate once the token's bucket exists.
// A failure beyond cfg.FailureEvents of its row this minute is counted,
// not kept whole (Stats.Skipped). Raw events beyond cfg.MaxEvents held are
// dropped and counted; once half of that is held, the flush loop is asked
// to write them at once.
func (r *Recorder) Record(q *Request) {
	if r == nil {
		return
	}
	k := key{ws: q.WorkspaceID, token: q.TokenID, route: q.Route, minute: q.At / int64(time.Minute),
		outcome: q.Outcome, status: q.Status}
	var sh *shard
	if n := len(q.TokenID); n > 0 {
		// Ids end in random characters: their last byte spreads tokens.
		sh = &r.shards[q.TokenID[n-1]&(numShards-1)]
	} else {
		// No token (MALFORMED, NOT_FOUND): in turn, so that a flood of
		// made-up tokens does not queue on one lock (Flush adds the
		// shards' counts of one bucket up).
		sh = &r.shards[r.spread.Add(1)&(numShards-1)]
	}
	sh.mu.Lock()
	sh.counts[k]++
	var keep bool
	switch {
	case q.Outcome != keyward.Valid:
		// All of a token's records take one shard: the bound is per
		// token. Those without one take any: a flood of made-up tokens
		// keeps at most numShards times it, as a whole.
		keep = r.cfg.FailureEvents < 0 || sh.failures.add(k) <= int64(r.cfg.FailureEvents)
		if !keep {
			r.skipped.Add(1)
		}
	case r.cfg.SampleEvery > 0:
		sh.successes++
		keep = sh.successes%r.cfg.SampleEvery == 0
	}
	if keep {
		// The bound is on all shards together: the events of one token,
		// or of none (a flood of made-up tokens), may use all of it.
		if n := r.buffered.Add(1); n <= int64(r.cfg.MaxEvents) {
			sh.events = append(sh.events, *q)
			if n == int64(max(1, r.cfg.MaxEvents/2)) && !r.failing.Load() {
				select {
				case r.kick <- struct{}{}:
				default:
				}
			}
		} else {
			r.buffered.Add(-1)
			r.dropped.Add(1)
		}
	}
	sh.mu.Unlock()
	r.recorded.Add(1)
}

// Start runs the flush and retention loops until Close. Flushes come every
// FlushInterval, and sooner when the event buffer is half full; retention
// runs at once, then every PruneInterval, so that a node that never stays
// up that long still deletes what is past it.
func (r *Recorder) Start() {
	r.done.Add(2)
	flushLog := logfmt.Failures{Level: slog.LevelWarn, Failed: "usage flush failed; it is retried with the next one", Recovered: "usage written again"}
	go r.loop(r.cfg.FlushInterval, r.kick, false, func(ctx context.Context) {
		err := r.Flush(ctx)
		if err != nil && r.ctx.Err() != nil {
			// Cut short by Close, which writes it: no failure.
			return
		}
		flushLog.Report(r.log, r.cfg.Now(), err)
	})
	r.startRetention()
}

// StartRetention runs the retention loop alone, until Close: for a node
// that counts no usage (--usage=false), so that what was stored before,
// or by other nodes, is still deleted when its retention says.
func (r *Recorder) StartRetention() {
	r.done.Add(1)
	r.startRetention()
}

func (r *Recorder) startRetention() {
	go r.loop(r.cfg.PruneInterval, nil, true, func(ctx context.Context) {
		// One cut short by Close is no failure: the next start prunes
		// again (a start that fails, its gateway's port taken, would
		// otherwise warn of retention too).
		if _, err := r.Prune(ctx); err != nil && r.ctx.Err() == nil {
			r.log.Warn("usage retention failed", "err", err)
		}
	})
}

// loop runs fn every period, and whenever kick has a value (a nil kick
// never has), and at once when first is set, until Close.
func (r *Recorder) loop(every time.Duration, kick <-chan struct{}, first bool, fn func(context.Context)) {
	defer r.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	run := func() {
		ctx, cancel := context.WithTimeout(r.ctx, max(every, 10*time.Second))
		fn(ctx)
		cancel()
	}
	if first {
		run()
	}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			run()
		case <-kick:
			run()
			t.Reset(every)
		}
	}
}

// Close stops the loops, cutting short what they are doing (a flush cut
// short is kept and written here), and writes what is left.
func (r *Recorder) Close(ctx context.Context) error {
	r.cancel()
	r.done.Wait()
	return r.Flush(ctx)
}

// Flush writes the counts and events gathered so far. When the store
// fails, they are kept and written with a later flush; events beyond
// MaxEvents are then dropped and counted.
//
// A batch whose write failed may have been applied all the same (the
// connection cut after COMMIT): it is written again, as it is and with
// its id, which the store applies once, before anything gathered since,
// which waits in the shards meanwhile. Merged into the failed batch, that
// would be lost if the failed one had been applied; the failed batch
// merged into it, counted twice.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	if d := r.dropped.Load(); d > r.reported {
		// The metric counts them; the log says so once a flush.
		r.log.Warn("usage events dropped: more failures (or sampled successes) than --usage-event-buffer holds between flushes, or the store is down",
			"dropped", d-r.reported, "buffer", r.cfg.MaxEvents)
		r.reported = d
	}
	if r.sent != nil {
		if err := r.write(ctx, r.sent); err != nil {
			return err
		}
		r.sent = nil
	}
	counts := make(map[key]int64)
	var events []Request
	now := r.cfg.Now().Unix() / 60
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		var c map[key]int64 // stays nil when the shard has nothing: the map is still Record's
		if len(sh.counts) > 0 {
			c, sh.counts = sh.counts, make(map[key]int64, len(sh.counts))
		}
		e := sh.events
		sh.events = nil
		r.buffered.Add(-int64(len(e)))
		sh.failures.release(now)
		sh.mu.Unlock()
		for k, n := range c {
			counts[k] += n
		}
		events = append(events, e...)
	}
	if len(counts) == 0 && len(events) == 0 {
		return nil
	}
	rows := make([]keyward.UsageCount, 0, len(counts))
	for k, n := range counts {
		rows = append(rows, keyward.UsageCount{
			WorkspaceID: k.ws, TokenID: k.token, Bucket: time.Unix(k.minute*60, 0).UTC(),
			Route: k.route, Outcome: k.outcome, Status: k.status, Count: n,
		})
	}
	evs := make([]*keyward.UsageEvent, len(events))
	for i := range events {
		evs[i] = event(&events[i])
	}
	r.seq++
	b := &batch{id: keyward.FlushID{Writer: r.writer, Seq: r.seq, At: r.cfg.Now()}, counts: rows, events: evs}
	if err := r.write(ctx, b); err != nil {
		r.sent = b
		return err
	}
	return nil
}

// batch is usage written, or to be written, as one batch.
type batch struct {
	id     keyward.FlushID
	counts []keyward.UsageCount
	events []*keyward.UsageEvent
}

// write writes b to the store, and notes the outcome.
func (r *Recorder) write(ctx context.Context, b *batch) error {
	if err := r.cfg.Store.WriteUsage(ctx, b.id, b.counts, b.events); err != nil {
		r.failing.Store(true)
		r.flushErrs.Add(1)
		return err
	}
	r.failing.Store(false)
	return nil
}

// event makes the stored form of a sampled verification.
func event(q *Request) *keyward.UsageEvent {
	at := time.Unix(0, q.At).UTC()
	e := &keyward.UsageEvent{
		ID:          keyward.NewTimeID(keyward.PrefixUsageEvent, at), // listed newest first, many to a millisecond
		WorkspaceID: q.WorkspaceID,
		TokenID:     q.TokenID,
		Time:        at,
		Method:      secret.Redact(q.Method), // nor one sent as the method
		Route:       q.Route,
		Path:        secret.RedactEscapedPath(q.Path), // a secret pasted into a URL is not kept
		Outcome:     q.Outcome,
		Status:      q.Status,
		Latency:     q.Latency,
	}
	if q.IP.IsValid() {
		e.IP = q.IP.Unmap().String()
	}
	return e
}

// Prune deletes the rollups and events past their retention.
func (r *Recorder) Prune(ctx context.Context) (keyward.UsagePruned, error) {
	now := r.cfg.Now()
	var p keyward.UsagePrune
	// A rollup goes once all of its bucket is past retention: the bucket
	// that holds the cut still holds uses within it.
	if d := r.cfg.MinuteRetention; d > 0 {
		p.MinutesBefore = now.Add(-d).Truncate(time.Minute)
	}
	if d := r.cfg.HourRetention; d > 0 {
		p.HoursBefore = now.Add(-d).Truncate(time.Hour)
	}
	if d := r.cfg.EventRetention; d > 0 {
		p.EventsBefore = now.Add(-d)
	}
	if p == (keyward.UsagePrune{}) {
		return keyward.UsagePruned{}, nil
	}
	// In batches, each its own transaction: on SQLite, whose one writer
	// every token write, revocation and flush waits for, deleting a
	// million rows at once held them all up for seconds.
	p.Limit = r.cfg.PruneBatch
	var n keyward.UsagePruned
	var err error
	for {
		var b keyward.UsagePruned
		b, err = r.cfg.Store.PruneUsage(ctx, p)
		n.Minutes, n.Hours, n.Events = n.Minutes+b.Minutes, n.Hours+b.Hours, n.Events+b.Events
		if total := b.Minutes + b.Hours + b.Events; total > 0 {
			r.pruned.Add(uint64(total))
		}
		if err != nil || max(b.Minutes, b.Hours, b.Events) < int64(p.Limit) {
			break
		}
		if err = ctx.Err(); err != nil {
			break
		}
	}
	if n.Minutes+n.Hours+n.Events > 0 {
		r.log.Info("usage retention", "minute_rollups", n.Minutes, "hour_rollups", n.Hours, "events", n.Events)
	}
	return n, err
}

// Stats returns what the recorder did so far.
func (r *Recorder) Stats() Stats {
	if r == nil {
		return Stats{}
	}
	s := Stats{
		Recorded:    r.recorded.Load(),
		Dropped:     r.dropped.Load(),
		Skipped:     r.skipped.Load(),
		FlushErrors: r.flushErrs.Load(),
		Pruned:      r.pruned.Load(),
	}
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		s.PendingCounts += len(sh.counts)
		s.PendingEvents += len(sh.events)
		sh.mu.Unlock()
	}
	if r.flushMu.TryLock() {
		if r.sent != nil {
			s.PendingCounts += len(r.sent.counts)
			s.PendingEvents += len(r.sent.events)
		}
		r.flushMu.Unlock()
	}
	return s
}
