package verify_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/verify"
)

// fakeGlobal is a GlobalLimits with plain counters, to test how the engine
// uses one: what it asks, how it seeds quotas, how it falls back.
type fakeGlobal struct {
	mu     sync.Mutex
	fail   error
	rate   map[string]int64
	quota  map[string]int64 // by token id + period
	calls  []verify.LimitRequest
	seeded []int64
	// block, when set, holds each Check until it is closed (a limiter that
	// hangs); asked is signalled as a held Check starts.
	block chan struct{}
	asked chan struct{}
}

func newFakeGlobal() *fakeGlobal {
	return &fakeGlobal{rate: map[string]int64{}, quota: map[string]int64{}}
}

func (f *fakeGlobal) Check(ctx context.Context, req verify.LimitRequest) (verify.LimitResponse, error) {
	if err := ctx.Err(); err != nil {
		return verify.LimitResponse{}, err
	}
	f.mu.Lock()
	block, asked := f.block, f.asked
	f.mu.Unlock()
	if block != nil {
		asked <- struct{}{}
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	if f.fail != nil {
		return verify.LimitResponse{}, f.fail
	}
	var resp verify.LimitResponse
	qk := req.TokenID + "/" + req.QuotaPeriod
	if req.QuotaLimit > 0 {
		if _, ok := f.quota[qk]; !ok {
			if req.QuotaInit < 0 {
				return verify.LimitResponse{QuotaMissing: true}, nil
			}
			f.quota[qk] = req.QuotaInit
			f.seeded = append(f.seeded, req.QuotaInit)
		}
	}
	resp.RateUsed, resp.QuotaUsed = f.rate[req.TokenID], f.quota[qk]
	resp.RateLimited = req.RateLimit > 0 && resp.RateUsed >= req.RateLimit
	resp.QuotaExceeded = !resp.RateLimited && req.QuotaLimit > 0 && resp.QuotaUsed >= req.QuotaLimit
	if !resp.RateLimited && !resp.QuotaExceeded && req.Consume {
		f.rate[req.TokenID]++
		f.quota[qk]++
		resp.RateUsed++
		resp.QuotaUsed++
	}
	return resp, nil
}

func TestGlobalLimits(t *testing.T) {
	g := newFakeGlobal()
	e := newEnv(t, verify.Config{Global: g})
	tok, text := e.create(&keyward.Token{
		RateLimit: &keyward.RateLimit{Limit: 3, Window: keyward.Duration(time.Minute)},
		Quota:     &keyward.Quota{Limit: 5, Period: keyward.PeriodMonth},
	})
	// The store already counts 2 uses this month (another node flushed
	// them): the global count is seeded from it.
	if err := e.store.FlushUsage(context.Background(), keyward.FlushID{}, []keyward.UsageFlush{{TokenID: tok.ID, Period: "2026-11", QuotaDelta: 2}}); err != nil {
		t.Fatal(err)
	}
	r := e.verify(text, "")
	expect(t, r, keyward.Valid)
	if len(g.seeded) != 1 || g.seeded[0] != 2 {
		t.Fatalf("seeded with %v, want [2]", g.seeded)
	}
	if r.Quota.Remaining != 2 || r.Rate.Remaining != 2 {
		t.Fatalf("quota %+v rate %+v", r.Quota, r.Rate)
	}
	// A failure asks the limiter for its figures only (this node's own
	// counters know nothing of the global count), and inspection does not
	// ask it.
	n := len(g.calls)
	r = e.verify(text, "", "other:scope")
	expect(t, r, keyward.InsufficientScope)
	if len(g.calls) != n+1 || g.calls[n].Consume {
		t.Fatalf("a failed verification made %d calls, the last %+v; want one that consumes nothing", len(g.calls)-n, g.calls[len(g.calls)-1])
	}
	if r.Quota.Remaining != 2 || r.Rate.Remaining != 2 {
		t.Fatalf("after a failure: quota %+v rate %+v, want 2 remaining of each", r.Quota, r.Rate)
	}
	e.engine.Inspect(context.Background(), verify.Request{Token: text})
	if len(g.calls) != n+1 {
		t.Fatalf("an inspection called the limiter")
	}
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(text, ""), keyward.RateLimited)
	if last := g.calls[len(g.calls)-1]; last.QuotaPeriod != "2026-11" || last.QuotaTTL <= 0 || last.RateWindow != time.Minute || !last.Consume {
		t.Fatalf("request %+v", last)
	}
	// A failure once the window is full says so, and keeps its own code.
	r = e.verify(text, "", "other:scope")
	expect(t, r, keyward.InsufficientScope)
	if r.Rate.Remaining != 0 || r.Quota.Remaining != 0 {
		t.Fatalf("after a failure with the window full: quota %+v rate %+v, want none remaining", r.Quota, r.Rate)
	}
	// A token that can no longer verify costs no round trip: its limits
	// are described as unknown.
	if _, err := e.svc.RevokeToken(context.Background(), e.caller, tok.ID, ""); err != nil {
		t.Fatal(err)
	}
	n = len(g.calls)
	r = e.verify(text, "")
	expect(t, r, keyward.Revoked)
	if len(g.calls) != n {
		t.Errorf("a revoked token's verification asked the limiter")
	}
	if r.Rate.Remaining != 0 || r.Rate.Reset != verify.GlobalRetry || !r.Quota.Set {
		t.Errorf("a revoked token: quota %+v rate %+v, want its limits with none known to remain", r.Quota, r.Rate)
	}
	// Uses admitted globally are flushed to the store for durability.
	if err := e.engine.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if used, _ := e.store.QuotaUsed(context.Background(), tok.ID, "2026-11"); used != 5 {
		t.Fatalf("store counts %d, want 5 (2 before + 3 here)", used)
	}
}

func TestGlobalFallback(t *testing.T) {
	down := errors.New("connection refused")
	t.Run("Closed", func(t *testing.T) {
		g := newFakeGlobal()
		g.fail = down
		e := newEnv(t, verify.Config{Global: g})
		_, limited := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 100, Window: keyward.Duration(time.Minute)}})
		_, free := e.create(&keyward.Token{})
		expect(t, e.verify(limited, ""), keyward.RateLimited)
		expect(t, e.verify(free, ""), keyward.Valid) // no limits: no limiter needed
		if h := e.engine.Health(); h.GlobalErr == nil {
			t.Fatal("Health does not report the failing limiter")
		}
		g.mu.Lock()
		g.fail = nil
		g.mu.Unlock()
		e.clock.Add(verify.GlobalRetry) // the next turn to ask the limiter
		expect(t, e.verify(limited, ""), keyward.Valid)
		if h := e.engine.Health(); h.GlobalErr != nil {
			t.Fatal("Health still reports the limiter failing")
		}
	})
	t.Run("LocalDividedByNodes", func(t *testing.T) {
		g := newFakeGlobal()
		g.fail = down
		e := newEnv(t, verify.Config{Global: g, GlobalFallback: verify.FallbackLocal, Nodes: 3})
		_, text := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 7, Window: keyward.Duration(time.Minute)}})
		for i := 0; i < 2; i++ { // 7/3 = 2 on this node
			expect(t, e.verify(text, ""), keyward.Valid)
		}
		expect(t, e.verify(text, ""), keyward.RateLimited)
	})
}

// TestGlobalRetry: while the limiter fails, one verification a
// GlobalRetry asks it; the others fall back without waiting on it, also
// while that one hangs.
func TestGlobalRetry(t *testing.T) {
	g := newFakeGlobal()
	g.fail = errors.New("i/o timeout")
	e := newEnv(t, verify.Config{Global: g})
	_, text := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 100, Window: keyward.Duration(time.Minute)}})
	calls := func() int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.calls) }

	const trip = verify.GlobalTrip
	for i := 0; i < trip+5; i++ {
		expect(t, e.verify(text, ""), keyward.RateLimited)
	}
	if n := calls(); n != trip {
		t.Fatalf("the failing limiter was asked %d times, want %d: until it failed %d times in a row", n, trip, trip)
	}
	e.clock.Add(verify.GlobalRetry - time.Millisecond)
	expect(t, e.verify(text, ""), keyward.RateLimited)
	if n := calls(); n != trip {
		t.Fatalf("asked %d times before the next turn, want %d", n, trip)
	}
	e.clock.Add(time.Millisecond)
	expect(t, e.verify(text, ""), keyward.RateLimited)
	expect(t, e.verify(text, ""), keyward.RateLimited)
	if n := calls(); n != trip+1 {
		t.Fatalf("asked %d times after the next turn came, want %d", n, trip+1)
	}

	// The limiter hangs: the verification whose turn it is waits on it,
	// the others fall back meanwhile.
	e.clock.Add(verify.GlobalRetry)
	g.mu.Lock()
	g.block, g.asked = make(chan struct{}), make(chan struct{}, 1)
	g.fail = nil
	block, asked := g.block, g.asked
	g.mu.Unlock()
	probe := make(chan verify.Result)
	go func() { probe <- e.verify(text, "") }()
	<-asked
	expect(t, e.verify(text, ""), keyward.RateLimited)
	close(block)
	expect(t, <-probe, keyward.Valid)
	if n := calls(); n != trip+2 {
		t.Fatalf("asked %d times, want %d: the others did not wait on the hanging limiter", n, trip+2)
	}
	// It answered: every verification asks it again.
	g.mu.Lock()
	g.block = nil
	g.mu.Unlock()
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(text, ""), keyward.Valid)
	if n := calls(); n != trip+4 {
		t.Fatalf("asked %d times, want %d", n, trip+4)
	}
}

// TestGlobalCallerGone: verifications whose callers gave up (their
// context ended) tell nothing of the limiter: they neither make the others
// fall back nor mark it unavailable.
func TestGlobalCallerGone(t *testing.T) {
	g := newFakeGlobal()
	e := newEnv(t, verify.Config{Global: g})
	_, text := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 100, Window: keyward.Duration(time.Minute)}})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < verify.GlobalTrip+2; i++ {
		e.engine.Verify(gone, verify.Request{Token: text})
	}
	expect(t, e.verify(text, ""), keyward.Valid)
	if h := e.engine.Health(); h.GlobalErr != nil {
		t.Fatalf("Health reports the limiter failing: %v", h.GlobalErr)
	}
}

// TestGlobalOneFailure: one failed check falls back for its own
// verification only.
func TestGlobalOneFailure(t *testing.T) {
	g := newFakeGlobal()
	e := newEnv(t, verify.Config{Global: g})
	_, text := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 100, Window: keyward.Duration(time.Minute)}})
	g.mu.Lock()
	g.fail = errors.New("i/o timeout")
	g.mu.Unlock()
	expect(t, e.verify(text, ""), keyward.RateLimited)
	g.mu.Lock()
	g.fail = nil
	g.mu.Unlock()
	expect(t, e.verify(text, ""), keyward.Valid)
}

// TestGlobalFallbackQuota: the local fallback shares out what remained of
// a quota when all nodes' count was last known, not the whole quota again.
func TestGlobalFallbackQuota(t *testing.T) {
	for _, tc := range []struct {
		name       string
		used, more int // used through the limiter; admitted after it fails
	}{
		{"Spent", 30, 0},
		{"PartSpent", 12, 6}, // (30-12)/3
		{"Unused", 0, 10},    // 30/3
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGlobal()
			e := newEnv(t, verify.Config{Global: g, GlobalFallback: verify.FallbackLocal, Nodes: 3})
			_, text := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 30, Period: keyward.PeriodNone}})
			for i := 0; i < tc.used; i++ {
				expect(t, e.verify(text, ""), keyward.Valid)
			}
			g.mu.Lock()
			g.fail = errors.New("connection refused")
			g.mu.Unlock()
			for i := 0; i < tc.more; i++ {
				r := e.verify(text, "")
				expect(t, r, keyward.Valid)
				if r.Quota.Limit != 30 || r.Quota.Remaining != int64(tc.more-i-1) {
					t.Fatalf("quota %+v after %d admitted in the fallback, want limit 30 remaining %d", r.Quota, i+1, tc.more-i-1)
				}
			}
			expect(t, e.verify(text, ""), keyward.QuotaExceeded)
		})
	}
}

// TestGlobalFallbackQuotaRateLimited: an answer that refused for the rate
// limit still carries all nodes' quota count, and the local fallback
// shares out what remained then, not what remained when this node last
// had a verification admitted.
func TestGlobalFallbackQuotaRateLimited(t *testing.T) {
	g := newFakeGlobal()
	e := newEnv(t, verify.Config{Global: g, GlobalFallback: verify.FallbackLocal, Nodes: 3})
	tok, text := e.create(&keyward.Token{
		RateLimit: &keyward.RateLimit{Limit: 100, Window: keyward.Duration(time.Minute)},
		Quota:     &keyward.Quota{Limit: 30, Period: keyward.PeriodNone},
	})
	expect(t, e.verify(text, ""), keyward.Valid)
	// The other nodes use 20 more and fill the window.
	g.mu.Lock()
	g.quota[tok.ID+"/total"] += 20
	g.rate[tok.ID] = 100
	g.mu.Unlock()
	r := e.verify(text, "")
	expect(t, r, keyward.RateLimited)
	if r.Quota.Remaining != 9 {
		t.Fatalf("quota %+v, want 9 remaining", r.Quota)
	}
	g.mu.Lock()
	g.fail = errors.New("connection refused")
	g.mu.Unlock()
	e.clock.Add(time.Minute) // this node's own window is empty again
	for i := range 3 {       // (30-21)/3
		r := e.verify(text, "")
		expect(t, r, keyward.Valid)
		if r.Quota.Remaining != int64(2-i) {
			t.Fatalf("quota %+v after %d admitted in the fallback, want %d remaining", r.Quota, i+1, 2-i)
		}
	}
	expect(t, e.verify(text, ""), keyward.QuotaExceeded)
}

// TestGlobalFallbackClosedLimits: the closed fallback describes the
// token's own limits, with nothing remaining, and asks to come back when
// the limiter is asked again.
func TestGlobalFallbackClosedLimits(t *testing.T) {
	g := newFakeGlobal()
	g.fail = errors.New("connection refused")
	e := newEnv(t, verify.Config{Global: g})
	_, rated := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 100, Window: keyward.Duration(time.Minute)}})
	r := e.verify(rated, "")
	expect(t, r, keyward.RateLimited)
	if want := (verify.Limit{Set: true, Limit: 100, Remaining: 0, Reset: verify.GlobalRetry, Window: time.Minute}); r.Rate != want {
		t.Errorf("rate %+v, want %+v", r.Rate, want)
	}
	if d := r.RetryAfter(); d != 1 {
		t.Errorf("RetryAfter = %v, want 1 (s): when the limiter is asked again", d)
	}
	// A failure keeps its code; its figures are those of a limiter that
	// cannot be asked.
	r = e.verify(rated, "", "other:scope")
	expect(t, r, keyward.InsufficientScope)
	if want := (verify.Limit{Set: true, Limit: 100, Remaining: 0, Reset: verify.GlobalRetry, Window: time.Minute}); r.Rate != want {
		t.Errorf("after a failure: rate %+v, want %+v", r.Rate, want)
	}
	_, total := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 5, Period: keyward.PeriodNone}})
	r = e.verify(total, "")
	expect(t, r, keyward.RateLimited)
	if r.Rate.Set || r.Quota != (verify.Limit{Set: true, Limit: 5, Reset: verify.GlobalRetry}) {
		t.Errorf("rate %+v quota %+v, want no rate and the quota of 5", r.Rate, r.Quota)
	}
	if d := r.RetryAfter(); d != 1 {
		t.Errorf("RetryAfter = %v, want 1 (s): when the limiter is asked again", d)
	}
}
