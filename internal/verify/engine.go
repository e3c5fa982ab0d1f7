// Package verify is the verification engine: an in-memory cache of token
// records keyed by digest, the checks of PRODUCT §4 in their order, rate
// limits, quotas, the lookup budget for unknown tokens, batched usage
// writes, and cache coherence through the store's change feed.
package verify

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/fsutil"
	"github.com/keyward/keyward/internal/logfmt"
	"github.com/keyward/keyward/internal/secret"
)

// Config configures an Engine. Zero values take the defaults.
type Config struct {
	Store keyward.Store
	Keys  *secret.Keyring
	Log   *slog.Logger
	Now   func() time.Time

	// LookupBudget bounds store lookups per second for tokens the node does
	// not know (default 200). Beyond it, such tokens answer NOT_FOUND.
	LookupBudget int
	// FlushInterval is how often usage (quota, last use) is written
	// (default 1s): a crash loses at most this much.
	FlushInterval time.Duration
	// PollInterval is how often the change feed is read (default 250ms).
	PollInterval time.Duration
	// MaxEntries bounds the number of cached tokens (default 1,000,000).
	MaxEntries int

	// Global, when set, enforces rate limits and quotas across all nodes.
	Global GlobalLimits
	// GlobalFallback says what happens while Global fails: FallbackClosed
	// (default) refuses every verification of a limited token as
	// RATE_LIMITED; FallbackLocal enforces each limit on this node alone,
	// divided by Nodes. Meanwhile one verification asks Global again each
	// GlobalRetry; the others fall back without asking.
	GlobalFallback string
	// Nodes is the number of nodes FallbackLocal divides limits by
	// (default 1).
	Nodes int

	// LookupTimeout bounds a store lookup of a token the cache does not
	// hold (default 2s), waiting for a pooled connection included: while
	// the store hangs, such verifications fail (Result.Err) after it
	// rather than queue behind one another for the store's own timeout;
	// after LookupTrip such failures in a row, at once (see LookupRetry).
	LookupTimeout time.Duration

	// ChangeRetention is how long the store keeps the change feed
	// (default 7 days): the engine deletes older changes every
	// min(ChangeRetention/2, 1h). A node that has not read the feed for
	// half of it forgets every cached token when it reads it again, since
	// changes it missed may be gone.
	ChangeRetention time.Duration

	// StaleGrace bounds how long cached tokens keep verifying while the
	// change feed cannot be read (the store is down): past it, every
	// verification fails closed with Result.Err set. Zero means no bound.
	StaleGrace time.Duration

	// SpoolDir, when set, is where usage that could not be flushed is
	// kept in a file, so that a restart while the store is unreachable
	// does not forget it (see spool); "" keeps it in memory only.
	// SpoolStore names the store, so that the spools of nodes of several
	// stores may share a directory.
	SpoolDir   string
	SpoolStore string
}

// ErrStale is Result.Err when the cache is older than Config.StaleGrace.
var ErrStale = errors.New("the token cache is stale: the store has been unreachable for longer than the stale grace")

// Fallbacks of Config.GlobalFallback.
const (
	FallbackClosed = "closed"
	FallbackLocal  = "local"
)

// Request is one verification.
type Request struct {
	Token       string
	WorkspaceID string   // only tokens of this workspace are found; "" for any
	Scopes      []string // all required
	IP          netip.Addr
	// Unbudgeted looks a token the cache does not hold up in the store
	// even when the lookup budget is spent, for a caller already
	// authenticated whose answer must be right: a revocation by secret
	// must not answer done without having looked.
	Unbudgeted bool
}

// Result is the outcome of a verification.
type Result struct {
	Outcome keyward.Outcome
	// Token is the verified token when Outcome.Identified(); it is shared
	// with the cache and must not be modified.
	Token *keyward.Token
	// MissingScope is the first required scope not granted.
	MissingScope string
	// SecretEnded reports that the secret was replaced by a rotation and
	// its grace period is over. Outcome is then Expired, unless the token
	// is revoked or suspended (checked first).
	SecretEnded bool
	// secretEnds is when the presented secret's grace period ends, after a
	// rotation replaced it (unix ns; 0: it is the current secret); see
	// Expiry.
	secretEnds int64
	// secretIssued is when the presented secret was made (unix ns; 0: not
	// known); see Issued.
	secretIssued int64
	// Limits of the token, after this verification.
	Rate  Limit
	Quota Limit
	// Err is set when the store failed and the token could not be found;
	// Outcome is then NotFound (fail closed).
	Err error
	// Unlooked reports that the token, not in the cache, was not looked
	// up because the lookup budget was spent (Outcome is then NotFound,
	// as PRODUCT §3 asks of verification). A caller authenticating
	// someone may answer "try again" instead of "unknown".
	Unlooked bool
}

// Active reports whether the token is active in the sense of RFC 7662:
// identified, and not revoked, suspended or expired. Its IP allowlist,
// scopes and limits do not matter to that.
func (r *Result) Active() bool {
	switch r.Outcome {
	case keyward.Valid, keyward.IPNotAllowed, keyward.InsufficientScope, keyward.RateLimited, keyward.QuotaExceeded:
		return true
	}
	return false
}

// Expiry reports when the presented secret stops verifying, once the
// token is identified: the token's expiry or, for a secret a rotation
// replaced, the end of its grace period, whichever comes first. ok is
// false when neither is set. A client that caches a result (RFC 7662's
// exp) must not outlive the secret.
func (r *Result) Expiry() (t time.Time, ok bool) {
	if r.Token != nil && r.Token.ExpiresAt != nil {
		t, ok = *r.Token.ExpiresAt, true
	}
	if r.secretEnds != 0 {
		if end := time.Unix(0, r.secretEnds).UTC(); !ok || end.Before(t) {
			t, ok = end, true
		}
	}
	return t, ok
}

// Issued reports when the presented secret was made, once the token is
// identified: at the token's creation, or at the rotation that issued it
// (RFC 7662's iat).
func (r *Result) Issued() time.Time {
	if r.secretIssued != 0 {
		return time.Unix(0, r.secretIssued).UTC()
	}
	if r.Token != nil {
		return r.Token.CreatedAt
	}
	return time.Time{}
}

// Limit describes a rate limit or quota after a verification.
type Limit struct {
	Set       bool
	Limit     int64
	Remaining int64
	Reset     time.Duration // until a slot frees (rate) or the period ends (quota)
	Window    time.Duration // the rate window, or the quota period's length
}

// TotalQuotaRetry is the Retry-After of a quota counted in total, which
// never frees a slot by itself (only a raised limit does): long, so that a
// client that obeys it does not retry in a loop, yet given, as every 429
// of PRODUCT §5 has one.
const TotalQuotaRetry = 24 * time.Hour

// RetryAfter is the Retry-After of a RATE_LIMITED or QUOTA_EXCEEDED
// answer, in whole seconds, at least 1: until the limit that refused it
// frees a slot, or TotalQuotaRetry for a quota counted in total. A token
// refused by its rate limit whose quota is used up too waits for the later
// of the two: a retry when only the rate window has freed is refused again.
func (r *Result) RetryAfter() int64 {
	var d time.Duration
	if r.Rate.Set && r.Outcome != keyward.QuotaExceeded {
		d = r.Rate.wait()
	}
	if r.Quota.Set && (r.Outcome == keyward.QuotaExceeded || r.Quota.Remaining <= 0 || !r.Rate.Set) {
		d = max(d, r.Quota.wait())
	}
	return max(1, Seconds(d))
}

// wait is how long until l admits again once it has nothing remaining:
// its reset, or TotalQuotaRetry for a quota counted in total.
func (l Limit) wait() time.Duration {
	if l.Reset <= 0 && l.Window <= 0 {
		return TotalQuotaRetry
	}
	return l.Reset
}

// Tighter returns the limit of r that the RateLimit fields show: the one
// with fewer requests remaining, and of two with as many, the one that
// waits longer to free a slot; ok is false when the token has neither.
func (r *Result) Tighter() (l Limit, ok bool) {
	l = r.Rate
	if q := r.Quota; q.Set && (!l.Set || q.Remaining < l.Remaining || q.Remaining == l.Remaining && q.wait() > l.wait()) {
		l = q
	}
	return l, l.Set
}

// Seconds is d in whole seconds, rounded up, as the RateLimit fields, the
// verify API's "reset" and Retry-After give it: a client that waits that
// long finds the slot free. Zero or less is 0.
func Seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Engine verifies tokens. It is safe for concurrent use.
type Engine struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu       sync.RWMutex
	bySecret map[secret.Digest]*secretEntry
	byToken  map[string]*tokenEntry

	// A token's refreshes run one at a time, store read and install
	// together, so that a refresh that read before a write cannot install
	// its older state after the refresh that follows the write. refreshes
	// counts installs made by refreshes; a lookup that sees it move while
	// it read refreshes instead of installing what it read.
	refreshMu   [64]sync.Mutex
	refreshSeed maphash.Seed
	refreshes   atomic.Uint64

	budgetMu     sync.Mutex
	budgetTokens float64
	budgetAt     time.Time
	known        knownDigests

	// restored holds rate-limit windows not in the cache: read from the
	// store at Start, or kept when a token left the cache; a token's
	// limiter starts from its window here (see limits).
	restoredMu    sync.Mutex
	restored      map[string]keyward.RateWindow
	restoredSwept int64 // unix ns of the last sweep of spent windows

	flushMu sync.Mutex // one Flush at a time; guards writer and seq
	spool   *spool     // nil without Config.SpoolDir
	writer  string     // this engine's keyward.FlushID writer
	seq     int64      // the Seq of its latest batch
	dirtyMu sync.Mutex
	dirty   []*tokenEntry
	// carry is usage not yet written: of ended quota periods, and what
	// was gathered while sent could not be written.
	carry []keyward.UsageFlush
	// sent, when not nil, is a batch whose write failed, and which the
	// store may still have applied (the answer to its COMMIT lost): it
	// is written again, as it is and with its id, before anything else,
	// never merged with later usage. Set with flushMu and dirtyMu held.
	sent *flushBatch

	syncMu   sync.Mutex     // one Sync at a time; guards last
	last     keyward.Change // the latest change read (Seq 0: none); TokenID "" when not known
	syncedAt atomic.Int64   // unix ns of the last full read of the feed
	counts   [keyward.NumOutcomes]atomic.Uint64
	misses   atomic.Uint64 // hits are all verifications but these

	stop chan struct{}
	wake chan struct{}
	done sync.WaitGroup

	healthMu sync.Mutex
	health   Health
	// globalProbe is, while the global limiter fails, the unix ns time
	// at which a verification may next ask it (see globalDown); 0 while
	// it answers.
	globalProbe atomic.Int64
	globalFails atomic.Int32 // global limit checks failed in a row
	clock       *clock       // nil when Config.Now was given
	closeMu     sync.Once

	evictions   atomic.Uint64
	flushErrors atomic.Uint64
	storeErrors atomic.Uint64 // failed lookups and feed reads
	// lookupsSkipped counts lookups answered without asking the store
	// while it kept failing (see lookupSkipped).
	lookupsSkipped atomic.Uint64

	// lookupLog logs failed lookups as a run (see noteLookup);
	// lookupFailing, set while a run goes on, spares each successful
	// lookup the lock. lookupFails counts the run; from LookupTrip on,
	// lookups are skipped (see lookupSkipped) and answer lookupDown.
	lookupMu      sync.Mutex
	lookupLog     logfmt.Failures
	lookupFailing atomic.Bool
	lookupFails   int
	lookupDown    error
	// lookupProbe is, while lookups are skipped, the unix ns time at
	// which one may next ask the store; 0 while they are not.
	lookupProbe atomic.Int64
	// lookupOK counts the successes that ended a run of failures; a
	// lookup that began before the last of them tells nothing newer of
	// the store when it fails (see noteLookup).
	lookupOK atomic.Uint64
}

type secretEntry struct {
	tok       *tokenEntry
	expiresAt int64 // unix ns; 0 = no end
	issued    int64 // unix ns: when the secret was made (0: not known)
}

// tokenEntry is one cached token. snap is replaced whole on every change;
// the counters under mu survive changes.
type tokenEntry struct {
	id      string
	snap    atomic.Pointer[snapshot]
	digests []secret.Digest // cached digests of this token; under Engine.mu

	mu        sync.Mutex
	rate      *limiter
	quotaNum  int64 // period number the counts belong to
	quotaUsed int64 // stored + pending, or the global count when higher
	quotaPend int64 // not yet flushed
	// quotaSync is the period's count of all nodes together as last
	// known: the store's at install, the global limiter's after each
	// answer. The fallback shares out what remained of the quota then.
	quotaSync int64
	lastAt    int64 // unix ns of the last VALID use; 0 = none since flush
	lastIP    netip.Addr
	isDirty   bool
}

type snapshot struct {
	token *keyward.Token
	cidrs []netip.Prefix
	exp   int64 // token expiry, unix ns; 0 = none
}

// New returns an engine. Call Start to run its background work and Close to
// flush pending usage.
func New(cfg Config) *Engine {
	var clk *clock
	if cfg.Now == nil {
		clk = newClock()
		cfg.Now = clk.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.LookupBudget <= 0 {
		cfg.LookupBudget = 200
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 1_000_000
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	if cfg.ChangeRetention <= 0 {
		cfg.ChangeRetention = 7 * 24 * time.Hour
	}
	if cfg.GlobalFallback == "" {
		cfg.GlobalFallback = FallbackClosed
	}
	if cfg.Nodes <= 0 {
		cfg.Nodes = 1
	}
	var sp *spool
	if cfg.SpoolDir != "" && fsutil.Locks {
		sp = &spool{dir: cfg.SpoolDir, store: cfg.SpoolStore, log: cfg.Log}
	}
	return &Engine{
		spool:        sp,
		writer:       keyward.NewFlushWriter(cfg.Now()),
		refreshSeed:  maphash.MakeSeed(),
		cfg:          cfg,
		log:          cfg.Log,
		now:          cfg.Now,
		clock:        clk,
		bySecret:     make(map[secret.Digest]*secretEntry),
		byToken:      make(map[string]*tokenEntry),
		restored:     make(map[string]keyward.RateWindow),
		budgetTokens: float64(cfg.LookupBudget),
		stop:         make(chan struct{}),
		wake:         make(chan struct{}, 1),
		lookupLog: logfmt.Failures{Level: slog.LevelError, Recovered: "token lookups succeed again",
			Failed: "token lookup failed; tokens not in the cache fail closed until the store answers"},
	}
}

// Start reads the change feed position and the stored secret digests (see
// knownDigests), and starts the background loops:
// the change poller and the usage flusher. It returns an error when the
// store cannot be read.
func (e *Engine) Start(ctx context.Context) error {
	if e.cfg.SpoolDir != "" && e.spool == nil {
		e.log.Info("no usage spool on this system: usage the store cannot take is kept in memory only")
	}
	if e.spool != nil {
		// Usage a stopped node could not write goes in before the rate
		// windows are read, which it may hold newer ones of.
		if err := e.spool.replay(ctx, e.cfg.Store.FlushUsage); err != nil {
			return err
		}
	}
	head, err := e.feedHead(ctx)
	if err != nil {
		return err
	}
	e.last = head
	windows, err := e.cfg.Store.RateWindows(ctx, e.now())
	if err != nil {
		return err
	}
	e.restoredMu.Lock()
	for _, w := range windows {
		e.restored[w.TokenID] = w
	}
	e.restoredMu.Unlock()
	if err := e.loadKnown(ctx); err != nil {
		return err
	}
	e.health.LastSync = e.now()
	e.syncedAt.Store(e.health.LastSync.UnixNano())
	e.done.Add(3)
	go e.pollLoop()
	go e.loop(min(e.cfg.ChangeRetention/2, time.Hour), e.pruneChanges)
	flushLog := logfmt.Failures{Level: slog.LevelError, Failed: "usage flush failed; will retry", Recovered: "usage flushed again"}
	go e.loop(e.cfg.FlushInterval, func(ctx context.Context) {
		if e.clock != nil {
			e.clock.reanchor()
		}
		err := e.Flush(ctx)
		if err != nil {
			e.flushErrors.Add(1)
		}
		flushLog.Report(e.log, e.now(), err)
	})
	return nil
}

// pollLoop reads the change feed every PollInterval, and at once when
// Notify says a change was committed.
func (e *Engine) pollLoop() {
	defer e.done.Done()
	t := time.NewTicker(e.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		case <-e.wake:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		e.poll(ctx)
		cancel()
	}
}

// Notify tells the engine that the store recorded a change, so that it
// reads the change feed now rather than at the next poll. It never blocks.
func (e *Engine) Notify() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Health describes the engine's view of the store.
type Health struct {
	// LastSync is when the change feed was last read in full.
	LastSync time.Time
	// SyncErr is the error of the last failed read of the feed, or nil.
	SyncErr error
	// PushErr is why the store's change notifications are not arriving, or
	// nil (also when the store pushes none).
	PushErr error
	// GlobalErr is the error of the last failed global limit check, or nil
	// once one succeeds again; GlobalFallback applies meanwhile.
	GlobalErr error
	// FlushErr is the error of the last usage flush (quota use, last use)
	// that failed, or nil once one succeeds again: the store answers
	// reads, perhaps, but refuses writes (its disk is full, say). Only
	// flushes with something to write set or clear it.
	FlushErr error
}

// SetPush records the state of the store's change notifications: nil when
// they arrive, else why not. While they do not, the poll alone keeps the
// cache current and Health reports the node degraded.
func (e *Engine) SetPush(err error) {
	e.healthMu.Lock()
	was := e.health.PushErr
	e.health.PushErr = err
	e.healthMu.Unlock()
	switch {
	case err != nil && was == nil:
		e.log.Warn("change notifications lost; reconnecting, polling meanwhile", "err", err)
	case err == nil && was != nil:
		e.log.Info("change notifications restored")
	}
}

// Health reports whether the cache is known to be current.
func (e *Engine) Health() Health {
	e.healthMu.Lock()
	defer e.healthMu.Unlock()
	return e.health
}

func (e *Engine) loop(every time.Duration, fn func(context.Context)) {
	defer e.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			fn(ctx)
			cancel()
		}
	}
}

// Close stops the background loops and flushes pending usage. It returns
// the flush error, if any.
func (e *Engine) Close(ctx context.Context) error {
	e.closeMu.Do(func() { close(e.stop) })
	e.done.Wait()
	spooled, err := e.flush(ctx)
	if e.spool != nil {
		e.spool.close() // what the flush could not write stays spooled
	}
	if err != nil && spooled {
		// Nothing is lost: the next start, of this node or another on
		// the same spool directory, writes it back.
		e.log.Warn("usage the store could not take is kept in the spool until the next start", "dir", e.cfg.SpoolDir, "err", err)
		return nil
	}
	return err
}

// Counts returns the number of verifications by outcome since start.
func (e *Engine) Counts() [keyward.NumOutcomes]uint64 {
	var c [keyward.NumOutcomes]uint64
	for i := range c {
		c[i] = e.counts[i].Load()
	}
	return c
}

// CacheStats returns cache hits, misses and the number of cached tokens.
func (e *Engine) CacheStats() (hits, misses uint64, size int) {
	e.mu.RLock()
	size = len(e.byToken)
	e.mu.RUnlock()
	var total uint64
	for i := range e.counts {
		total += e.counts[i].Load()
	}
	misses = e.misses.Load()
	return total - min(misses, total), misses, size
}

// Stats are counters of the engine's work, for metrics.
type Stats struct {
	Evictions   uint64 // tokens dropped from a full cache
	FlushErrors uint64 // usage flushes that failed (their usage is kept and retried)
	StoreErrors uint64 // token lookups and change-feed reads that failed
	// LookupsSkipped are lookups that failed without asking the store,
	// paused after LookupTrip failures in a row (see LookupRetry); not
	// in StoreErrors.
	LookupsSkipped uint64
	UsagePending   int // tokens and periods with usage not yet flushed
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.dirtyMu.Lock()
	pending := len(e.dirty) + len(e.carry)
	if e.sent != nil {
		pending += len(e.sent.usage)
	}
	e.dirtyMu.Unlock()
	return Stats{Evictions: e.evictions.Load(), FlushErrors: e.flushErrors.Load(), StoreErrors: e.storeErrors.Load(), LookupsSkipped: e.lookupsSkipped.Load(), UsagePending: pending}
}

// LastUse returns the newest VALID use of a token seen by this node since
// its last flush, and reports whether there is one.
func (e *Engine) LastUse(tokenID string) (time.Time, string, bool) {
	e.mu.RLock()
	te := e.byToken[tokenID]
	e.mu.RUnlock()
	if te == nil {
		return time.Time{}, "", false
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	if te.lastAt == 0 {
		return time.Time{}, "", false
	}
	ip := ""
	if te.lastIP.IsValid() {
		ip = te.lastIP.String()
	}
	return time.Unix(0, te.lastAt).UTC(), ip, true
}

// Now returns the engine's idea of the current time, from its cheap clock
// (or Config.Now), for callers that time-stamp verifications.
func (e *Engine) Now() time.Time { return e.now() }

// Verify runs the checks of PRODUCT §4 in order. A VALID outcome consumes
// one unit of the token's rate limit and quota; no other outcome does. For
// a token in the cache it does not allocate.
func (e *Engine) Verify(ctx context.Context, req Request) (res Result) {
	e.verify(ctx, &req, true, &res)
	e.counts[res.Outcome].Add(1)
	return res
}

// Inspect runs the checks of Verify up to the scope check; it evaluates no
// rate limit or quota, consumes nothing and records no use.
func (e *Engine) Inspect(ctx context.Context, req Request) (res Result) {
	e.verify(ctx, &req, false, &res)
	return res
}

// Introspect is Inspect for OAuth introspection (RFC 7662), where a
// resource server checks a token it was handed: that is a use of the token,
// so an active one (Result.Active) has its last use set (the caller gives
// no client address: the last address known stays). It consumes nothing.
func (e *Engine) Introspect(ctx context.Context, req Request) (res Result) {
	e.verify(ctx, &req, false, &res)
	if !res.Active() {
		return res
	}
	e.mu.RLock()
	te := e.byToken[res.Token.ID]
	e.mu.RUnlock()
	if te != nil {
		te.mu.Lock()
		e.recordUse(te, e.now().UnixNano(), netip.Addr{}, false)
		te.mu.Unlock()
	}
	return res
}

// verify fills res, which the caller gives zeroed; working in place spares
// copying the Result on the hot path.
func (e *Engine) verify(ctx context.Context, req *Request, consume bool, res *Result) {
	// A secret in the cache is well formed: its digest is of a text that
	// parsed when it was made, and no other text has that digest. So the
	// parse (its checksum is a CRC of the whole text) waits for a miss,
	// and still comes before any store lookup; only the length is checked
	// first, so that no text longer than a token is hashed.
	if len(req.Token) > secret.MaxTokenLen {
		res.Outcome = keyward.Malformed
		return
	}
	d := e.cfg.Keys.Current.Digest(req.Token)
	e.mu.RLock()
	se := e.bySecret[d]
	e.mu.RUnlock()
	if se == nil {
		if _, err := secret.Parse(req.Token); err != nil {
			res.Outcome = keyward.Malformed
			return
		}
		e.misses.Add(1)
		var err error
		if se, err = e.lookup(ctx, req.Token, d, !req.Unbudgeted); se == nil {
			res.Outcome, res.Err = keyward.NotFound, err
			if err == errBudgetSpent {
				res.Err, res.Unlooked = nil, true
			}
			return
		}
	}
	now := e.now()
	nowNS := now.UnixNano()
	if g := e.cfg.StaleGrace; g > 0 && nowNS-e.syncedAt.Load() > int64(g) {
		res.Outcome, res.Err = keyward.NotFound, ErrStale
		return
	}
	s := se.tok.snap.Load()
	t := s.token
	if req.WorkspaceID != "" && t.WorkspaceID != req.WorkspaceID {
		res.Outcome = keyward.NotFound
		return
	}
	res.Token, res.secretEnds, res.secretIssued = t, se.expiresAt, se.issued
	res.SecretEnded = se.expiresAt != 0 && nowNS >= se.expiresAt
	switch {
	case t.Revoked:
		res.Outcome = keyward.Revoked
	case t.Suspended:
		res.Outcome = keyward.Suspended
	case res.SecretEnded:
		res.Outcome = keyward.Expired
	case s.exp != 0 && nowNS >= s.exp:
		res.Outcome = keyward.Expired
	case len(s.cidrs) > 0 && !allowed(s.cidrs, req.IP):
		res.Outcome = keyward.IPNotAllowed
	default:
		if m := keyward.MissingScope(t.Scopes, req.Scopes); m != "" {
			res.Outcome = keyward.InsufficientScope
			res.MissingScope = m
		}
	}
	if !consume {
		return // inspection: limits are not evaluated
	}
	if e.cfg.Global != nil && (t.RateLimit != nil || t.Quota != nil) {
		// The global limiter counts; this node's own counters record
		// nothing while it answers. A VALID verification is checked and
		// consumed there. One that failed an earlier check consumes
		// nothing, but its answer still describes the limits, which only
		// the limiter knows; a token that can no longer verify at all
		// (revoked, suspended, expired) is not worth a round trip each
		// time it is tried, and its limits are described as unknown.
		valid := res.Outcome == keyward.Valid
		switch res.Outcome {
		case keyward.Revoked, keyward.Suspended, keyward.Expired, keyward.PendingApproval:
			e.unknownLimits(t, now, res)
			return
		}
		if e.globalLimits(ctx, se.tok, t, now, res, req.IP, valid) {
			return
		}
		// The global limiter failed: fall back.
		if e.cfg.GlobalFallback != FallbackLocal {
			// Refused, and asked to come back when the limiter may
			// answer again: none of the token's limits is known to have
			// a slot left.
			if valid {
				res.Outcome = keyward.RateLimited
			}
			e.unknownLimits(t, now, res)
			return
		}
		e.limits(se.tok, t, now, res, req.IP, consume, e.cfg.Nodes)
		return
	}
	e.limits(se.tok, t, now, res, req.IP, consume, 1)
}

// unknownLimits describes t's limits while the global limiter cannot be
// asked: none is known to have a slot left, and the caller may ask again
// after GlobalRetry.
func (e *Engine) unknownLimits(t *keyward.Token, now time.Time, res *Result) {
	if rl := t.RateLimit; rl != nil {
		res.Rate = Limit{Set: true, Limit: rl.Limit, Reset: GlobalRetry, Window: time.Duration(rl.Window)}
	}
	if q := t.Quota; q != nil {
		res.Quota = Limit{Set: true, Limit: q.Limit, Reset: GlobalRetry}
		if !q.PeriodEnd(now).IsZero() {
			res.Quota.Window = periodLength(q.Period, now)
		}
	}
}

func allowed(cidrs []netip.Prefix, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false // no IP given: fail closed
	}
	ip = ip.Unmap()
	for _, p := range cidrs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// limits checks rate limit then quota on this node when every earlier
// check passed, consumes both on VALID, and fills res's limit descriptions
// either way. Each limit is divided by div (at least 1 remains), for the
// fallback when global limits fail.
func (e *Engine) limits(te *tokenEntry, t *keyward.Token, now time.Time, res *Result, ip netip.Addr, consume bool, div int) {
	if t.RateLimit == nil && t.Quota == nil && (!consume || res.Outcome != keyward.Valid) {
		return
	}
	nowNS := now.UnixNano()
	te.mu.Lock()
	var rateUsed, rateLimit, quotaLimit int64
	if rl := t.RateLimit; rl != nil {
		rateLimit = max(rl.Limit/int64(div), 1)
		switch {
		case te.rate == nil:
			if w, ok := e.restoredRate(te.id); ok {
				te.rate = restoreLimiter(w, rateLimit, time.Duration(rl.Window), nowNS)
			}
			if te.rate == nil {
				te.rate = newLimiter(rateLimit, time.Duration(rl.Window))
			}
		case te.rate.window != int64(rl.Window):
			te.rate = te.rate.rewindow(nowNS, time.Duration(rl.Window), rateLimit)
		default:
			// A new limit (or the fallback's share of it) counts what
			// was admitted already.
			te.rate.limit = rateLimit
		}
		rateUsed = te.rate.used(nowNS)
		if res.Outcome == keyward.Valid && rateUsed >= rateLimit {
			res.Outcome = keyward.RateLimited
		}
	}
	var qnum int64
	if q := t.Quota; q != nil {
		qnum = periodNum(q.Period, now)
		if qnum != te.quotaNum {
			e.rollQuota(te, q, qnum)
		}
		// The count this node may reach: what remained when all nodes'
		// count was last known, or its share of that in the fallback
		// (at least 1 while any remained).
		left := q.Limit - te.quotaSync
		if div > 1 && left > 0 {
			left = max(left/int64(div), 1)
		}
		quotaLimit = te.quotaSync + max(left, 0)
		if res.Outcome == keyward.Valid && te.quotaUsed >= quotaLimit {
			res.Outcome = keyward.QuotaExceeded
		}
	}
	if res.Outcome == keyward.Valid && consume {
		if te.rate != nil && t.RateLimit != nil {
			te.rate.take(nowNS)
			rateUsed++
		}
		if t.Quota != nil {
			te.quotaUsed++
		}
		e.recordUse(te, nowNS, ip, t.Quota != nil)
	}
	if rl := t.RateLimit; rl != nil {
		res.Rate = Limit{Set: true, Limit: rateLimit, Remaining: max(rateLimit-rateUsed, 0), Reset: te.rate.reset(nowNS), Window: time.Duration(rl.Window)}
	}
	if q := t.Quota; q != nil {
		res.Quota = Limit{Set: true, Limit: q.Limit, Remaining: max(quotaLimit-te.quotaUsed, 0)}
		if end := q.PeriodEnd(now); !end.IsZero() {
			res.Quota.Reset = end.Sub(now)
			res.Quota.Window = periodLength(q.Period, now)
		}
	}
	te.mu.Unlock()
}

// recordUse notes a VALID use for the next flush: last use, and one unit
// of quota when the token has one. Called with te.mu held.
func (e *Engine) recordUse(te *tokenEntry, nowNS int64, ip netip.Addr, quota bool) {
	if quota {
		te.quotaPend++
	}
	te.lastAt = nowNS - nowNS%int64(time.Microsecond) // as PostgreSQL keeps it, so every node shows one time
	if ip.IsValid() {
		// A use with no address (an introspection, a verify call that
		// gave none) keeps the last one known.
		te.lastIP = ip
	}
	if !te.isDirty {
		te.isDirty = true
		e.dirtyMu.Lock()
		e.dirty = append(e.dirty, te)
		e.dirtyMu.Unlock()
	}
}

// GlobalRetry is how often, while the global limiter fails, one
// verification asks it again; the others fall back at once instead of
// each waiting out its timeout (half a second for Redis by default, which
// a limiter that hangs rather than refuses would cost every request).
// It fails when GlobalTrip checks in a row have failed (not counting those
// whose caller gave up): one failure alone falls back for its own
// verification only.
const (
	GlobalRetry = time.Second
	GlobalTrip  = 3
)

// globalDown reports whether the global limiter is to be skipped at now:
// it failed, and it is not yet time to ask again, or another verification
// is asking. The one that gets to ask holds the next turn GlobalRetry away.
func (e *Engine) globalDown(now time.Time) bool {
	at := e.globalProbe.Load()
	if at == 0 {
		return false
	}
	return now.UnixNano() < at || !e.globalProbe.CompareAndSwap(at, now.Add(GlobalRetry).UnixNano())
}

// globalLimits runs the rate-limit and quota checks through the global
// limiter, consuming on VALID when consume is set, and describes the
// token's limits in res. When res already holds a failure, only the
// description changes. It reports false when the limiter failed or is
// skipped while it fails (see globalDown), leaving res as it was.
func (e *Engine) globalLimits(ctx context.Context, te *tokenEntry, t *keyward.Token, now time.Time, res *Result, ip netip.Addr, consume bool) bool {
	if e.globalDown(now) {
		return false
	}
	req := LimitRequest{TokenID: t.ID, Now: now, Consume: consume, QuotaInit: -1}
	var qnum int64
	if rl := t.RateLimit; rl != nil {
		req.RateLimit, req.RateWindow = rl.Limit, time.Duration(rl.Window)
	}
	if q := t.Quota; q != nil {
		qnum = periodNum(q.Period, now)
		req.QuotaLimit, req.QuotaPeriod = q.Limit, periodKey(q.Period, qnum)
		if end := q.PeriodEnd(now); !end.IsZero() {
			req.QuotaTTL = end.Sub(now) + 24*time.Hour
		}
	}
	resp, err := e.globalCheck(ctx, req)
	if err == nil && resp.QuotaMissing {
		// A new period, or the limiter lost its data: seed it with the
		// durable count, and what this node has not flushed yet.
		var stored int64
		if stored, err = e.cfg.Store.QuotaUsed(ctx, t.ID, req.QuotaPeriod); err == nil {
			te.mu.Lock()
			if te.quotaNum == qnum {
				stored += te.quotaPend
			}
			te.mu.Unlock()
			req.QuotaInit = stored
			resp, err = e.globalCheck(ctx, req)
		}
	}
	if err != nil && ctx.Err() != nil {
		return false // the caller gave up: the limiter's health is not known
	}
	e.healthMu.Lock()
	was := e.health.GlobalErr
	e.health.GlobalErr = err
	e.healthMu.Unlock()
	if err != nil {
		if was == nil {
			e.log.Warn("global limits unavailable; falling back", "fallback", e.cfg.GlobalFallback, "err", err)
		}
		return false
	}
	if was != nil {
		e.log.Info("global limits available again")
	}
	switch {
	case res.Outcome != keyward.Valid:
		// An earlier check failed: the limiter only describes the limits.
	case resp.RateLimited:
		res.Outcome = keyward.RateLimited
	case resp.QuotaExceeded:
		res.Outcome = keyward.QuotaExceeded
	}
	admitted := res.Outcome == keyward.Valid && consume
	if admitted || t.Quota != nil {
		te.mu.Lock()
		if t.Quota != nil && te.quotaNum != qnum {
			e.rollQuota(te, t.Quota, qnum)
		}
		if admitted {
			e.recordUse(te, now.UnixNano(), ip, t.Quota != nil)
			if t.Quota != nil {
				te.quotaUsed++
			}
		}
		if t.Quota != nil {
			// All nodes' count, should the limiter fail next. When the
			// rate limit denied, the answer's count is that too, or, for
			// a period the limiter holds no count of, 0 or the seed: at
			// most the count, so the larger of the two is still known
			// to be used. A node whose verifications the rate limit
			// refuses keeps up with the others' use this way.
			te.quotaUsed = max(te.quotaUsed, resp.QuotaUsed)
			te.quotaSync = max(te.quotaSync, resp.QuotaUsed)
		}
		te.mu.Unlock()
	}
	if rl := t.RateLimit; rl != nil {
		res.Rate = Limit{Set: true, Limit: rl.Limit, Remaining: max(rl.Limit-resp.RateUsed, 0), Reset: resp.RateReset, Window: time.Duration(rl.Window)}
	}
	if q := t.Quota; q != nil {
		res.Quota = Limit{Set: true, Limit: q.Limit, Remaining: max(q.Limit-resp.QuotaUsed, 0)}
		if end := q.PeriodEnd(now); !end.IsZero() {
			res.Quota.Reset = end.Sub(now)
			res.Quota.Window = periodLength(q.Period, now)
		}
	}
	return true
}

// globalCheck asks the global limiter, and notes when to ask next if it
// fails.
func (e *Engine) globalCheck(ctx context.Context, req LimitRequest) (LimitResponse, error) {
	resp, err := e.cfg.Global.Check(ctx, req)
	switch {
	case err == nil:
		e.globalFails.Store(0)
		e.globalProbe.Store(0)
	case ctx.Err() != nil:
		// The caller gave up (a client went away): that says nothing
		// of the limiter.
	case e.globalFails.Add(1) >= GlobalTrip:
		e.globalProbe.Store(e.now().Add(GlobalRetry).UnixNano())
	}
	return resp, err
}

// rollQuota moves a token's quota counts to period qnum; the unflushed use
// of the old period is kept for the next flush. Called with te.mu held.
func (e *Engine) rollQuota(te *tokenEntry, q *keyward.Quota, qnum int64) {
	if te.quotaPend > 0 {
		e.dirtyMu.Lock()
		e.carry = append(e.carry, keyward.UsageFlush{TokenID: te.id, Period: periodKey(q.Period, te.quotaNum), QuotaDelta: te.quotaPend})
		e.dirtyMu.Unlock()
	}
	te.quotaNum, te.quotaUsed, te.quotaPend, te.quotaSync = qnum, 0, 0, 0
}

// periodNum numbers calendar periods in UTC without allocating: days since
// the epoch, or months since year 0; 0 for PeriodNone.
func periodNum(period string, t time.Time) int64 {
	t = t.UTC()
	switch period {
	case keyward.PeriodDay:
		return t.Unix()/86400 + 1
	case keyward.PeriodMonth:
		return int64(t.Year())*12 + int64(t.Month())
	}
	return 0
}

func periodKey(period string, num int64) string {
	switch period {
	case keyward.PeriodDay:
		return time.Unix((num-1)*86400, 0).UTC().Format("2006-01-02")
	case keyward.PeriodMonth:
		m := num - 1
		return time.Date(int(m/12), time.Month(m%12+1), 1, 0, 0, 0, 0, time.UTC).Format("2006-01")
	}
	return "total"
}

func periodLength(period string, now time.Time) time.Duration {
	if period == keyward.PeriodDay {
		return 24 * time.Hour
	}
	now = now.UTC()
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start.AddDate(0, 1, 0).Sub(start)
}

// lookup finds a token the cache does not hold, within the lookup budget
// when budgeted, under the current key and then each previous key. A token
// found under a previous key is re-digested under the current one. A
// secret the node knows is stored is looked up without the budget (see
// knownDigests); any other spends one unit of it for each store lookup it
// makes, which is more than one while previous keys are given, so that
// the budget bounds the store's load from made-up tokens during a
// rotation too.
func (e *Engine) lookup(ctx context.Context, text string, d secret.Digest, budgeted bool) (*secretEntry, error) {
	budgeted = budgeted && !e.knownSecret(text, d)
	if budgeted && !e.spendBudget() {
		return nil, errBudgetSpent
	}
	if err := e.lookupSkipped(ctx); err != nil {
		return nil, err
	}
	return e.lookupOnce(ctx, text, d, false, budgeted)
}

// LookupRetry and LookupTrip pace the lookups of tokens the cache does not
// hold while the store fails. Once LookupTrip lookups in a row have failed
// (not counting those whose caller gave up, and a token not found is an
// answer, not a failure), a lookup fails at once, as the last one failed,
// and one lookup each LookupRetry asks the store again; the first that
// succeeds, or a read of the change feed (Sync) that does, lets every
// lookup through again. A store that hangs (its host
// unreachable, packets dropped) would otherwise hold every such
// verification for the whole LookupTimeout, and pile them up under load.
// LookupRetry is short, so that a token created once the store is back
// verifies on every node within a second (PRODUCT §3).
const (
	LookupRetry = 500 * time.Millisecond
	LookupTrip  = 3
)

// lookupSkipped returns the error a lookup answers without asking the
// store, or nil when it may ask: lookups are not being skipped, or it is
// the turn of this one, which holds the next turn LookupRetry away. A
// single load while the store answers. A skipped lookup is logged as one
// more failure of the run (see noteLookup), unless its caller gave up.
//
// The turn is a wall-clock time (Config.Now), which can step back: a turn
// more than LookupRetry ahead was set before such a step, and is taken at
// once rather than pause lookups for as long as the clock stepped back.
func (e *Engine) lookupSkipped(ctx context.Context) error {
	at := e.lookupProbe.Load()
	if at == 0 {
		return nil
	}
	now := e.now()
	if ns := now.UnixNano(); (ns >= at || at-ns > int64(LookupRetry)) && e.lookupProbe.CompareAndSwap(at, ns+int64(LookupRetry)) {
		return nil
	}
	e.lookupMu.Lock()
	defer e.lookupMu.Unlock()
	if e.lookupDown != nil && ctx.Err() == nil {
		e.lookupsSkipped.Add(1)
		e.lookupLog.Report(e.log, now, e.lookupDown)
	}
	return e.lookupDown
}

// noteLookup records the outcome of a store lookup. While the store is
// down every cache miss fails, hundreds a second under load, and each
// failed request is in the access log and its caller's own line already:
// the failures are logged as a run (its start, then once a minute with
// their count, and its end), not one line each. From LookupTrip failures
// in a row on, lookups are skipped until one succeeds (see LookupRetry).
//
// began is e.lookupOK as the lookup began. A failure of a lookup that
// began before the store was last seen answering again is not noted: it
// hung on the store as it was (lookups held on connections to a host that
// went away fail only after their timeout, well after the host is back),
// and those, LookupTrip of them in a row, would pause lookups again just
// after a success let them through.
func (e *Engine) noteLookup(err error, began uint64) {
	if err == nil && !e.lookupFailing.Load() {
		return
	}
	e.lookupMu.Lock()
	if err != nil && began != e.lookupOK.Load() {
		e.lookupMu.Unlock()
		return
	}
	now := e.now()
	e.lookupLog.Report(e.log, now, err)
	e.lookupFailing.Store(err != nil)
	if err == nil {
		if e.lookupFails > 0 {
			e.lookupOK.Add(1)
		}
		e.lookupFails, e.lookupDown = 0, nil
		e.lookupProbe.Store(0)
	} else if e.lookupFails++; e.lookupFails >= LookupTrip {
		e.lookupDown = fmt.Errorf("token lookups paused after %d failures in a row: %w", e.lookupFails, err)
		// Only the first: lookups that began before and fail later (all
		// of them, LookupTimeout on, while the store hangs) must not put
		// the next turn off, which each turn taken sets.
		e.lookupProbe.CompareAndSwap(0, now.Add(LookupRetry).UnixNano())
	}
	e.lookupMu.Unlock()
}

// lookupOnce is lookup after its first unit of budget; when budgeted, each
// further store lookup spends one more, and errBudgetSpent answers when
// none is left.
func (e *Engine) lookupOnce(ctx context.Context, text string, d secret.Digest, again, budgeted bool) (*secretEntry, error) {
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, e.cfg.LookupTimeout)
	defer cancel()
	began := e.lookupOK.Load()
	gen := e.refreshes.Load()
	sec, tok, err := e.cfg.Store.LookupSecret(ctx, d[:])
	if keyward.ErrorCode(err) == keyward.ENOTFOUND {
		err = nil
		for _, k := range e.cfg.Keys.Previous {
			if budgeted && !e.spendBudget() {
				// The store answered the lookup before: it works, which
				// ends a pause of lookups (see LookupRetry).
				e.noteLookup(nil, began)
				return nil, errBudgetSpent
			}
			old := k.Digest(text)
			sec, tok, err = e.cfg.Store.LookupSecret(ctx, old[:])
			if keyward.ErrorCode(err) == keyward.ENOTFOUND {
				err = nil
				continue
			}
			if err == nil {
				moved := *sec
				moved.Digest, moved.KeyID = d[:], e.cfg.Keys.Current.ID
				// Not found: a concurrent verification of this secret moved
				// it first, as intended.
				if err := e.cfg.Store.Redigest(ctx, old[:], &moved); err != nil && keyward.ErrorCode(err) != keyward.ENOTFOUND {
					e.log.Error("re-digest under the current server key failed", "token_id", tok.ID, "err", err)
				}
			}
			break
		}
		if tok == nil && err == nil && len(e.cfg.Keys.Previous) > 0 {
			// Under no key: a concurrent verification may have moved the
			// secret from a previous key to the current one between the
			// two lookups. Where it now is, it must be found.
			if budgeted && !e.spendBudget() {
				e.noteLookup(nil, began) // as above
				return nil, errBudgetSpent
			}
			sec, tok, err = e.cfg.Store.LookupSecret(ctx, d[:])
			if keyward.ErrorCode(err) == keyward.ENOTFOUND {
				err = nil
			}
		}
	}
	if err != nil {
		// A caller that gave up (its client gone) tells nothing of the
		// store: neither logged nor counted in keyward_store_errors_total,
		// which would otherwise rise with clients that hang up.
		if caller.Err() == nil {
			e.storeErrors.Add(1)
			e.noteLookup(err, began)
		}
		return nil, err
	}
	e.noteLookup(nil, began)
	if tok == nil {
		return nil, nil
	}
	// The lookup brought the token and this secret: that is all the cache
	// needs (its other secrets come with their own lookups or changes).
	found := *sec
	found.Digest, found.KeyID = d[:], e.cfg.Keys.Current.ID
	mu := e.refreshLock(tok.ID)
	mu.Lock()
	if e.refreshes.Load() == gen {
		err = e.install(ctx, tok, []*keyward.Secret{&found}, false)
	} else {
		// A refresh ran while this lookup read, perhaps of this token after
		// a write this read missed: read again rather than install stale.
		err = e.refreshLocked(ctx, tok.ID)
	}
	mu.Unlock()
	if err != nil {
		return nil, err
	}
	e.mu.RLock()
	se := e.bySecret[d]
	e.mu.RUnlock()
	if se == nil && !again {
		// Dropped between install and here (a sync forgot the cache):
		// look it up once more rather than answer NOT_FOUND.
		return e.lookupOnce(ctx, text, d, true, false)
	}
	return se, nil
}

// errBudgetSpent is lookup's answer when the budget allowed no lookup;
// verify reports it as Result.Unlooked.
var errBudgetSpent = errors.New("verify: the lookup budget is spent")

func (e *Engine) spendBudget() bool {
	e.budgetMu.Lock()
	defer e.budgetMu.Unlock()
	now := e.now()
	rate := float64(e.cfg.LookupBudget)
	// The clock (Config.Now, the wall clock) may step back: that time
	// adds nothing, rather than take away as much budget as it would
	// have given, which would refuse lookups for as long as the step.
	if d := now.Sub(e.budgetAt); !e.budgetAt.IsZero() && d > 0 {
		e.budgetTokens = min(rate, e.budgetTokens+d.Seconds()*rate)
	}
	e.budgetAt = now
	if e.budgetTokens < 1 {
		return false
	}
	e.budgetTokens--
	return true
}

// Refresh reloads one token and its secrets from the store into the cache,
// keeping its counters, or drops it when the store no longer has it. Call
// it after every write that affects verification; the change poller calls
// it for writes made by other nodes and processes.
func (e *Engine) Refresh(ctx context.Context, tokenID string) error {
	mu := e.refreshLock(tokenID)
	mu.Lock()
	defer mu.Unlock()
	return e.refreshLocked(ctx, tokenID)
}

// refreshLocked is Refresh with the token's refresh lock held.
func (e *Engine) refreshLocked(ctx context.Context, tokenID string) error {
	defer e.refreshes.Add(1)
	tok, err := e.cfg.Store.TokenByID(ctx, tokenID)
	if keyward.ErrorCode(err) == keyward.ENOTFOUND {
		e.drop(tokenID)
		return nil
	}
	if err != nil {
		return err
	}
	secs, err := e.cfg.Store.TokenSecrets(ctx, tokenID)
	if err != nil {
		return err
	}
	return e.install(ctx, tok, secs, true)
}

// refreshLock returns the lock that orders the refreshes of tokenID.
func (e *Engine) refreshLock(tokenID string) *sync.Mutex {
	return &e.refreshMu[maphash.String(e.refreshSeed, tokenID)%uint64(len(e.refreshMu))]
}

// install puts a token and secrets of it into the cache. When complete,
// secs are all of the token's secrets and cached digests not among them are
// dropped; otherwise secs are added to those cached (a lookup found one).
func (e *Engine) install(ctx context.Context, tok *keyward.Token, secs []*keyward.Secret, complete bool) error {
	snap := &snapshot{token: tok}
	if tok.ExpiresAt != nil {
		snap.exp = tok.ExpiresAt.UnixNano()
	}
	for _, c := range tok.AllowedCIDRs {
		if p, err := keyward.ParseCIDR(c); err == nil {
			snap.cidrs = append(snap.cidrs, p)
		}
	}

	// A token new to the cache starts with its stored quota use, read
	// before it becomes visible so that no verification sees a zero count.
	e.mu.RLock()
	te := e.byToken[tok.ID]
	e.mu.RUnlock()
	var fresh *tokenEntry
	if te == nil {
		fresh = &tokenEntry{id: tok.ID}
		if q := tok.Quota; q != nil {
			num := periodNum(q.Period, e.now())
			used, err := e.cfg.Store.QuotaUsed(ctx, tok.ID, periodKey(q.Period, num))
			if err != nil {
				return err
			}
			fresh.quotaNum, fresh.quotaUsed, fresh.quotaSync = num, used, used
		}
	}

	e.mu.Lock()
	if e.byToken[tok.ID] == nil && fresh == nil {
		// Dropped since it was seen (evicted, or forgotten by a sync
		// after a long gap): start over as new to the cache.
		e.mu.Unlock()
		return e.install(ctx, tok, secs, complete)
	}
	defer e.mu.Unlock()
	if te = e.byToken[tok.ID]; te == nil {
		if len(e.byToken) >= e.cfg.MaxEntries {
			e.evictLocked()
		}
		te = fresh
		e.byToken[tok.ID] = te
	}
	te.snap.Store(snap)
	if complete {
		for _, d := range te.digests {
			delete(e.bySecret, d)
		}
		te.digests = te.digests[:0]
	}
	for _, s := range secs {
		e.known.add(s.Digest)
		var d secret.Digest
		if len(s.Digest) != len(d) || s.KeyID != e.cfg.Keys.Current.ID {
			continue // made by a previous key: found by lookup, then moved
		}
		copy(d[:], s.Digest)
		var exp int64
		if s.ExpiresAt != nil {
			exp = s.ExpiresAt.UnixNano()
		}
		if _, cached := e.bySecret[d]; !cached {
			te.digests = append(te.digests, d)
		}
		var issued int64
		if !s.CreatedAt.IsZero() {
			issued = s.CreatedAt.UnixNano()
		}
		e.bySecret[d] = &secretEntry{tok: te, expiresAt: exp, issued: issued}
	}
	return nil
}

// evictLocked drops one cached token that has no unflushed usage. Called
// with e.mu held.
func (e *Engine) evictLocked() {
	for id, te := range e.byToken {
		te.mu.Lock()
		busy := te.isDirty
		te.mu.Unlock()
		if !busy {
			e.dropLocked(id)
			e.evictions.Add(1)
			return
		}
	}
}

func (e *Engine) drop(tokenID string) {
	e.mu.Lock()
	e.dropLocked(tokenID)
	e.mu.Unlock()
}

func (e *Engine) dropLocked(tokenID string) {
	te := e.byToken[tokenID]
	if te == nil {
		return
	}
	delete(e.byToken, tokenID)
	for _, d := range te.digests {
		delete(e.bySecret, d)
	}
	te.mu.Lock()
	if l := te.rate; l != nil && l.sum > 0 {
		// Its admissions still count if the token comes back. As many
		// windows are kept as the cache holds tokens at most: beyond,
		// a token that comes back starts anew (a cache that small is
		// churning anyway).
		w := l.state(tokenID)
		e.restoredMu.Lock()
		if len(e.restored) < e.cfg.MaxEntries {
			e.restored[tokenID] = *w
		}
		e.restoredMu.Unlock()
	}
	te.mu.Unlock()
}

// sweepRestored forgets, once a minute at most, the kept rate-limit
// windows that count nothing any more (of tokens not seen again).
func (e *Engine) sweepRestored() {
	now := e.now()
	e.restoredMu.Lock()
	defer e.restoredMu.Unlock()
	if len(e.restored) == 0 || now.UnixNano()-e.restoredSwept < int64(time.Minute) {
		return
	}
	e.restoredSwept = now.UnixNano()
	for id, w := range e.restored {
		if !w.Until.After(now) {
			delete(e.restored, id)
		}
	}
}

// restoredRate takes the kept rate-limit window of a token, if any that
// still counts.
func (e *Engine) restoredRate(tokenID string) (keyward.RateWindow, bool) {
	e.restoredMu.Lock()
	defer e.restoredMu.Unlock()
	w, ok := e.restored[tokenID]
	if ok {
		delete(e.restored, tokenID)
	}
	return w, ok && w.Until.After(e.now())
}

// pruneChanges deletes the changes older than ChangeRetention: the feed
// would otherwise grow with every token write for ever. Every node prunes;
// a delete that finds nothing costs little.
func (e *Engine) pruneChanges(ctx context.Context) {
	if err := e.cfg.Store.PruneChanges(ctx, e.now().Add(-e.cfg.ChangeRetention)); err != nil {
		e.log.Warn("pruning the change feed failed; will retry", "err", err)
	}
}

// forgetAll drops every cached token; each is read from the store again
// when next verified. Usage not yet flushed is kept (the flush holds the
// entries).
func (e *Engine) forgetAll() {
	e.mu.Lock()
	for id := range e.byToken {
		e.dropLocked(id)
	}
	e.mu.Unlock()
}

// poll applies the store's change feed to the cache.
func (e *Engine) poll(ctx context.Context) {
	err := e.Sync(ctx)
	if err != nil {
		e.storeErrors.Add(1)
	}
	e.healthMu.Lock()
	failing := e.health.SyncErr != nil
	e.health.SyncErr = err
	if err == nil {
		e.health.LastSync = e.now()
		e.syncedAt.Store(e.health.LastSync.UnixNano())
	}
	e.healthMu.Unlock()
	switch {
	case err != nil && !failing:
		e.log.Warn("change feed read failed; will retry", "err", err)
	case err == nil && failing:
		e.log.Info("change feed read again")
	}
}

// Sync applies every change recorded since the last sync. A token that
// cannot be refreshed stops the sync there, so it is retried.
func (e *Engine) Sync(ctx context.Context) error {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	// Not read for half the retention (the store was down, the process
	// stopped): changes missed may have been pruned, so no cached token
	// is trusted. The usage not yet written goes first: a token read
	// again starts from the stored quota count, which must hold it.
	if e.now().UnixNano()-e.syncedAt.Load() > int64(e.cfg.ChangeRetention/2) {
		if err := e.Flush(ctx); err != nil {
			return err
		}
		e.forgetAll()
		e.log.Warn("the change feed was not read for half its retention; cached tokens are read again", "retention", e.cfg.ChangeRetention)
	}
	err := e.sync(ctx)
	if err == nil {
		e.syncedAt.Store(e.now().UnixNano())
		if e.lookupProbe.Load() != 0 {
			// The store answered a read: lookups need not wait for
			// their next turn, nor for traffic to take it, to find so.
			e.noteLookup(nil, 0)
		}
	}
	return err
}

func (e *Engine) sync(ctx context.Context) error {
	for {
		after := e.last.Seq
		// The change last read is read again, to see that the feed still
		// holds it. A store restored from a backup, or a replica promoted
		// without its primary's latest commits, has lost changes this node
		// read, and numbers its next ones from before them: read from
		// after alone, those (a revocation) would never be seen here, and
		// tokens it no longer holds would keep verifying from the cache.
		// A change under the same number is the same only if it is of the
		// same token and write time: the restored store's next writes
		// may be of the token last read (a feed that one token's writes
		// fill), numbered after others this node would never read.
		changes, err := e.cfg.Store.Changes(ctx, max(after-1, 0), 501)
		if err != nil {
			return err
		}
		if after > 0 {
			if len(changes) == 0 || changes[0].Seq != after || (e.last.TokenID != "" &&
				(changes[0].TokenID != e.last.TokenID || !changes[0].At.Equal(e.last.At))) {
				return e.feedRewound(ctx, after)
			}
			changes = changes[1:]
		}
		seen := make(map[string]bool, len(changes))
		for _, c := range changes {
			if !seen[c.TokenID] {
				seen[c.TokenID] = true
				if err := e.Refresh(ctx, c.TokenID); err != nil {
					return err
				}
			}
			e.last = c
		}
		if len(changes) < 500 {
			return nil
		}
	}
}

// feedRewound starts the cache afresh from the feed's newest change, when
// the change numbered after, which this node read, is gone or another.
// The usage not yet written goes first, as when the feed was not read for
// long (see Sync). A change pruned for its age (no token written for the
// whole retention) looks the same, and costs the same: every cached token
// read again once.
func (e *Engine) feedRewound(ctx context.Context, after int64) error {
	head, err := e.feedHead(ctx)
	if err != nil {
		return err
	}
	// A feed that holds no change numbered up to after lost the one read
	// for its age, most likely: tokens that are not written for the whole
	// retention are no restore, and are not told as one.
	oldest, err := e.cfg.Store.Changes(ctx, 0, 1)
	if err != nil {
		return err
	}
	if err := e.Flush(ctx); err != nil {
		return err
	}
	e.forgetAll()
	e.last = head
	if len(oldest) == 0 || oldest[0].Seq > after {
		e.log.Info("the change feed no longer holds the last change read, nor any before it: no token was written for its retention (or the store was restored from a backup older than that); cached tokens are read again",
			"read", after, "newest", head.Seq, "retention", e.cfg.ChangeRetention)
		return nil
	}
	e.log.Warn("the change feed no longer holds the last change read (the store was restored, or failed over to a replica without the latest writes); cached tokens are read again",
		"read", after, "newest", head.Seq)
	return nil
}

// feedHead returns the newest change in the feed: Seq 0 when the feed is
// empty, TokenID "" when it could not be read (pruned meanwhile).
func (e *Engine) feedHead(ctx context.Context) (keyward.Change, error) {
	seq, err := e.cfg.Store.LastChange(ctx)
	if err != nil || seq == 0 {
		return keyward.Change{}, err
	}
	cs, err := e.cfg.Store.Changes(ctx, seq-1, 1)
	if err != nil {
		return keyward.Change{}, err
	}
	if len(cs) == 1 && cs[0].Seq == seq {
		return cs[0], nil
	}
	return keyward.Change{Seq: seq}, nil
}

// Flush writes the usage gathered since the last flush. On failure the
// usage is kept for the next flush, so nothing is lost while the process
// lives.
func (e *Engine) Flush(ctx context.Context) error {
	_, err := e.flush(ctx)
	return err
}

// flushBatch is usage written, or to be written, as one batch.
type flushBatch struct {
	id    keyward.FlushID
	usage []keyward.UsageFlush
}

// flush is Flush; spooled reports that what a failed flush could not
// write is in the spool.
//
// A batch whose write failed may have been applied all the same (the
// connection cut after COMMIT): it becomes e.sent, written again with its
// id, which the store applies once, until that succeeds. What is gathered
// meanwhile waits in e.carry, to go in the next batch, with the next id:
// merged into the failed batch, it would be lost if that one had been
// applied; the failed batch merged into it, counted twice.
func (e *Engine) flush(ctx context.Context) (spooled bool, err error) {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	e.sweepRestored()
	e.dirtyMu.Lock()
	dirty, fresh := e.dirty, e.carry
	e.dirty, e.carry = nil, nil
	sent := e.sent
	e.dirtyMu.Unlock()
	if sent == nil && len(dirty) == 0 && len(fresh) == 0 {
		return false, nil
	}
	for _, te := range dirty {
		te.mu.Lock()
		f := keyward.UsageFlush{TokenID: te.id}
		if te.lastAt != 0 {
			f.LastUsedAt = time.Unix(0, te.lastAt).UTC()
			if te.lastIP.IsValid() {
				f.LastUsedIP = te.lastIP.String()
			}
		}
		if q := te.snap.Load().token.Quota; q != nil && te.quotaPend > 0 {
			f.Period = periodKey(q.Period, te.quotaNum)
			f.QuotaDelta = te.quotaPend
			te.quotaPend = 0
		}
		if te.rate != nil {
			f.Rate = te.rate.state(te.id)
		}
		te.isDirty = false
		te.mu.Unlock()
		fresh = append(fresh, f)
	}
	if sent != nil {
		if err := e.write(ctx, sent); err != nil {
			e.dirtyMu.Lock()
			// fresh is older than what was carried since it was taken.
			e.carry = coalesce(append(fresh, e.carry...))
			e.dirtyMu.Unlock()
			return e.spoolPending(err)
		}
		e.dirtyMu.Lock()
		e.sent = nil
		e.dirtyMu.Unlock()
	}
	if len(fresh) > 0 {
		e.seq++
		b := &flushBatch{id: keyward.FlushID{Writer: e.writer, Seq: e.seq, At: e.now()}, usage: fresh}
		if err := e.write(ctx, b); err != nil {
			e.dirtyMu.Lock()
			e.sent = b
			e.dirtyMu.Unlock()
			return e.spoolPending(err)
		}
	}
	if e.spool != nil {
		if err := e.spool.clear(); err != nil {
			e.log.Warn("a usage spool written to the store could not be removed; a restart writes it again", "err", err)
		}
	}
	return false, nil
}

// write writes b to the store, and notes the outcome for Health.
func (e *Engine) write(ctx context.Context, b *flushBatch) error {
	err := e.cfg.Store.FlushUsage(ctx, b.id, b.usage)
	e.healthMu.Lock()
	e.health.FlushErr = err
	e.healthMu.Unlock()
	return err
}

// spoolPending writes e.sent and e.carry to the spool after a flush
// failed with err, and returns flush's results. The carry is spooled
// under the id its batch is to have (the next Seq): this engine writes
// it so, and a start after this engine stops writes it back so, after
// e.sent. Called with flushMu held.
func (e *Engine) spoolPending(err error) (spooled bool, _ error) {
	if e.spool == nil {
		return false, err
	}
	e.dirtyMu.Lock()
	var pending []flushBatch
	if e.sent != nil {
		pending = append(pending, *e.sent)
	}
	if len(e.carry) > 0 {
		pending = append(pending, flushBatch{id: keyward.FlushID{Writer: e.writer, Seq: e.seq + 1, At: e.now()}, usage: e.carry})
	}
	e.dirtyMu.Unlock()
	if serr := e.spool.write(pending, e.now()); serr != nil {
		e.log.Error("usage could not be spooled: a restart before the store returns loses it", "dir", e.cfg.SpoolDir, "err", serr)
		return false, err
	}
	return true, err
}
