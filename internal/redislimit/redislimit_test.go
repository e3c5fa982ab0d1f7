package redislimit

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/verify"
	"github.com/redis/go-redis/v9"
)

// t0 is the synthetic start time of the tests, on the hour, so it starts
// a sub-window of every width the tests use.
var t0 = time.Unix(1_699_999_200, 0)

// testURL returns the Redis server of the tests, from KEYWARD_TEST_REDIS_URL.
func testURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("KEYWARD_TEST_REDIS_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("CI=true but KEYWARD_TEST_REDIS_URL is not set")
		}
		tb.Skip("set KEYWARD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 to run the Redis tests")
	}
	return u
}

// testPrefix returns a key prefix of its own for one test and deletes the
// keys under it when the test ends.
func testPrefix(tb testing.TB) string {
	tb.Helper()
	u := testURL(tb)
	var r [6]byte
	if _, err := crand.Read(r[:]); err != nil {
		tb.Fatal(err)
	}
	prefix := "keyward-test:" + hex.EncodeToString(r[:]) + ":"
	tb.Cleanup(func() {
		ro, err := redis.ParseURL(u)
		if err != nil {
			tb.Error(err)
			return
		}
		rdb := redis.NewClient(ro)
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			tb.Errorf("scan %s*: %v", prefix, err)
			return
		}
		if len(keys) > 0 {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				tb.Errorf("del: %v", err)
			}
		}
	})
	return prefix
}

// newTestLimiter returns a Limiter on the test server with key prefix
// prefix, closed when the test ends.
func newTestLimiter(tb testing.TB, prefix string) *Limiter {
	tb.Helper()
	l, err := New(context.Background(), testURL(tb), Options{KeyPrefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

func check(tb testing.TB, l *Limiter, req verify.LimitRequest) verify.LimitResponse {
	tb.Helper()
	res, err := l.Check(context.Background(), req)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// rateReq asks for a rate limit only, consuming.
func rateReq(token string, limit int64, window time.Duration, now time.Time) verify.LimitRequest {
	return verify.LimitRequest{TokenID: token, Now: now, Consume: true, RateLimit: limit, RateWindow: window}
}

// TestCheckNeverExceeds drives Check with random arrival times and checks,
// against an exact log, that no window of length W ever holds more than N
// admissions, and that a burst into an empty window is admitted. It is
// verify's TestLimiterNeverExceeds with fewer arrivals, each a round trip.
func TestCheckNeverExceeds(t *testing.T) {
	l := newTestLimiter(t, testPrefix(t))
	arrivals := 20_000
	if testing.Short() {
		arrivals = 2_000
	}
	for _, tc := range []struct {
		name   string
		limit  int64
		window time.Duration
	}{
		{"N1", 1, time.Second},
		{"N5", 5, time.Second},
		{"N50PerMinute", 50, time.Minute},
		{"N1000", 1000, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.limit)))
			now := t0
			for i := int64(0); i < tc.limit; i++ {
				if res := check(t, l, rateReq(tc.name, tc.limit, tc.window, now)); res.RateLimited || res.RateUsed != i+1 {
					t.Fatalf("burst: admission %d of %d = %+v", i+1, tc.limit, res)
				}
			}
			if res := check(t, l, rateReq(tc.name, tc.limit, tc.window, now)); !res.RateLimited || res.RateUsed != tc.limit {
				t.Fatalf("burst: admission %d = %+v, want rate-limited", tc.limit+1, res)
			}
			admitted := []int64{}
			for range arrivals {
				now = now.Add(time.Duration(rng.Int64N(int64(tc.window) / max(tc.limit, 1) * 2)))
				res := check(t, l, rateReq(tc.name, tc.limit, tc.window, now))
				if res.RateUsed > tc.limit {
					t.Fatalf("RateUsed %d > limit %d", res.RateUsed, tc.limit)
				}
				if !res.RateLimited {
					admitted = append(admitted, now.UnixNano())
				}
			}
			// Every window (t-W, t] ending at an admission holds at most N.
			j := 0
			for i, at := range admitted {
				for admitted[j] <= at-int64(tc.window) {
					j++
				}
				if n := int64(i - j + 1); n > tc.limit {
					t.Fatalf("window ending at admission %d holds %d > %d", i, n, tc.limit)
				}
			}
			if len(admitted) < arrivals/20 {
				t.Fatalf("only %d of %d admitted: the limiter denies far too early", len(admitted), arrivals)
			}
		})
	}
}

// refLimiter is verify's local limiter, copied: the rule Check must
// reproduce exactly.
type refLimiter struct {
	limit  int64
	window int64
	width  int64
	head   int64
	sum    int64
	counts [verify.Buckets + 1]int64
}

func newRefLimiter(limit int64, window time.Duration) *refLimiter {
	return &refLimiter{limit: limit, window: int64(window), width: max(int64(window)/verify.Buckets, 1)}
}

func (l *refLimiter) advance(now int64) int64 {
	b := now / l.width
	if b > l.head {
		n := min(b-l.head, int64(len(l.counts)))
		for i := int64(1); i <= n; i++ {
			j := (l.head + i) % int64(len(l.counts))
			l.sum -= l.counts[j]
			l.counts[j] = 0
		}
		l.head = b
	}
	return b
}

func (l *refLimiter) used(now int64) int64 { l.advance(now); return l.sum }

func (l *refLimiter) take(now int64) {
	b := l.advance(now)
	l.counts[b%int64(len(l.counts))]++
	l.sum++
}

func (l *refLimiter) reset(now int64) time.Duration {
	b := l.advance(now)
	if l.sum == 0 {
		return 0
	}
	for i := b - verify.Buckets; i <= b; i++ {
		if i >= 0 && l.counts[i%int64(len(l.counts))] > 0 {
			return time.Duration((i+1)*l.width + l.window - now)
		}
	}
	return 0
}

// TestCheckMatchesLocalRule feeds the same arrivals, consuming or not, to
// Check and to a copy of verify's local limiter: every answer (limited,
// used, reset) must be the same.
func TestCheckMatchesLocalRule(t *testing.T) {
	l := newTestLimiter(t, testPrefix(t))
	arrivals := 5_000
	if testing.Short() {
		arrivals = 500
	}
	for _, tc := range []struct {
		name   string
		limit  int64
		window time.Duration
	}{
		{"N1PerSecond", 1, time.Second},
		{"N3Per7s", 3, 7 * time.Second},
		{"N10Per1001ms", 10, 1001 * time.Millisecond},
		{"N50PerMinute", 50, time.Minute},
		{"N200PerHour", 200, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, uint64(tc.limit)))
			ref := newRefLimiter(tc.limit, tc.window)
			now := t0.Add(time.Duration(rng.Int64N(int64(tc.window))))
			for i := range arrivals {
				switch p := rng.IntN(100); {
				case p < 5: // idle for longer than a window
					now = now.Add(tc.window + time.Duration(rng.Int64N(int64(tc.window))))
				case p < 20: // at the same instant
				default:
					now = now.Add(time.Duration(rng.Int64N(int64(tc.window) / tc.limit * 2)))
				}
				req := rateReq(tc.name, tc.limit, tc.window, now)
				req.Consume = rng.IntN(4) != 0
				got := check(t, l, req)

				ns := now.UnixNano()
				var want verify.LimitResponse
				want.RateUsed = ref.used(ns)
				want.RateLimited = want.RateUsed >= tc.limit
				if !want.RateLimited && req.Consume {
					ref.take(ns)
					want.RateUsed++
				}
				want.RateReset = ref.reset(ns)
				if got != want {
					t.Fatalf("arrival %d at +%v, consume %v: got %+v, want %+v", i, now.Sub(t0), req.Consume, got, want)
				}
			}
		})
	}
}

// TestCheckReset checks RateReset: zero while nothing is counted, and the
// moment the first admission leaves the window.
func TestCheckReset(t *testing.T) {
	l := newTestLimiter(t, testPrefix(t))
	req := rateReq("tok", 2, time.Minute, t0)
	req.Consume = false
	if res := check(t, l, req); res.RateReset != 0 || res.RateUsed != 0 {
		t.Fatalf("empty: %+v", res)
	}
	check(t, l, rateReq("tok", 2, time.Minute, t0))
	check(t, l, rateReq("tok", 2, time.Minute, t0.Add(10*time.Second)))
	res := check(t, l, rateReq("tok", 2, time.Minute, t0.Add(20*time.Second)))
	// t0 is the start of a 3 s sub-window, which leaves the window at
	// t0+3s+1m.
	if want := 43 * time.Second; !res.RateLimited || res.RateUsed != 2 || res.RateReset != want {
		t.Fatalf("got %+v, want limited, 2 used, reset %v", res, want)
	}
	at := t0.Add(20 * time.Second).Add(res.RateReset)
	if res := check(t, l, rateReq("tok", 2, time.Minute, at.Add(-time.Nanosecond))); !res.RateLimited {
		t.Fatalf("just before the reset: %+v", res)
	}
	if res := check(t, l, rateReq("tok", 2, time.Minute, at)); res.RateLimited || res.RateUsed != 2 {
		t.Fatalf("at the reset: %+v, want admitted with 2 used", res)
	}
}

// TestCheckOddWindow: with a window that is no multiple of verify.Buckets
// ns, an admission at the very end of a sub-window is still counted just
// before the whole window after it has passed.
func TestCheckOddWindow(t *testing.T) {
	l := newTestLimiter(t, testPrefix(t))
	w := time.Second + verify.Buckets - 1
	narrow := int64(w) / verify.Buckets
	for i, off := range []int64{narrow - 1, 7*narrow - 1, verify.Width(w) - 1} {
		tok := fmt.Sprintf("tok%d", i)
		at := t0.Add(time.Duration(off))
		if res := check(t, l, rateReq(tok, 1, w, at)); res.RateLimited {
			t.Fatalf("first admission refused: %+v", res)
		}
		if res := check(t, l, rateReq(tok, 1, w, at.Add(w-1))); !res.RateLimited {
			t.Fatalf("an admission at +%d ns was forgotten before the window after it ended: %+v", off, res)
		}
	}
}

// TestCheckConcurrentNodes has three nodes, each with its own client, check
// one token at once: exactly the limit is admitted.
func TestCheckConcurrentNodes(t *testing.T) {
	prefix := testPrefix(t)
	nodes := []*Limiter{newTestLimiter(t, prefix), newTestLimiter(t, prefix), newTestLimiter(t, prefix)}
	for _, tc := range []struct {
		name                   string
		quota                  int64
		admitted, rate, quotas int64
	}{
		{name: "RateLimit", admitted: 50, rate: 250},
		{name: "Quota", quota: 40, admitted: 40, quotas: 260},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var admitted, rate, quotas atomic.Int64
			var wg sync.WaitGroup
			for i := range 300 {
				wg.Go(func() {
					req := rateReq(tc.name, 50, time.Minute, t0.Add(time.Duration(i)*time.Millisecond))
					if tc.quota > 0 {
						req.QuotaLimit, req.QuotaPeriod, req.QuotaInit = tc.quota, "total", 0
					}
					res, err := nodes[i%3].Check(context.Background(), req)
					switch {
					case err != nil:
						t.Error(err)
					case res.RateLimited:
						rate.Add(1)
					case res.QuotaExceeded:
						quotas.Add(1)
					default:
						admitted.Add(1)
					}
				})
			}
			wg.Wait()
			if admitted.Load() != tc.admitted || rate.Load() != tc.rate || quotas.Load() != tc.quotas {
				t.Fatalf("admitted %d, rate-limited %d, quota exceeded %d; want %d, %d, %d",
					admitted.Load(), rate.Load(), quotas.Load(), tc.admitted, tc.rate, tc.quotas)
			}
		})
	}
}

// TestCheckConsumesOnlyValid checks that only a passing check with Consume
// set takes a unit, and then of both limits.
func TestCheckConsumesOnlyValid(t *testing.T) {
	l := newTestLimiter(t, testPrefix(t))
	req := func(token string, rate, quota int64, consume bool) verify.LimitRequest {
		return verify.LimitRequest{
			TokenID: token, Now: t0, Consume: consume,
			RateLimit: rate, RateWindow: time.Minute,
			QuotaLimit: quota, QuotaPeriod: "2023-11", QuotaTTL: 40 * 24 * time.Hour, QuotaInit: 0,
		}
	}
	t.Run("NoConsume", func(t *testing.T) {
		for range 3 {
			if res := check(t, l, req("a", 5, 10, false)); res != (verify.LimitResponse{}) {
				t.Fatalf("got %+v, want nothing used", res)
			}
		}
	})
	t.Run("QuotaExceededTakesNoRate", func(t *testing.T) {
		check(t, l, req("b", 10, 2, true))
		check(t, l, req("b", 10, 2, true))
		if res := check(t, l, req("b", 10, 2, true)); !res.QuotaExceeded || res.RateLimited || res.RateUsed != 2 || res.QuotaUsed != 2 {
			t.Fatalf("got %+v, want quota exceeded, 2 and 2 used", res)
		}
		if res := check(t, l, req("b", 10, 0, false)); res.RateUsed != 2 {
			t.Fatalf("rate used %d after the denial, want 2", res.RateUsed)
		}
	})
	t.Run("RateLimitedTakesNoQuota", func(t *testing.T) {
		check(t, l, req("c", 2, 10, true))
		check(t, l, req("c", 2, 10, true))
		if res := check(t, l, req("c", 2, 10, true)); !res.RateLimited || res.QuotaExceeded || res.RateUsed != 2 || res.QuotaUsed != 2 {
			t.Fatalf("got %+v, want rate-limited, 2 and 2 used", res)
		}
		if res := check(t, l, req("c", 0, 10, false)); res.QuotaUsed != 2 {
			t.Fatalf("quota used %d after the denial, want 2", res.QuotaUsed)
		}
	})
	t.Run("NoLimits", func(t *testing.T) {
		if res := check(t, l, req("", 0, 0, true)); res != (verify.LimitResponse{}) {
			t.Fatalf("got %+v", res)
		}
	})
}

// TestCheckQuotaMissing checks that a missing quota count is reported
// without consuming, seeded from QuotaInit, and that losing Redis's data
// does not reset a count the store holds.
func TestCheckQuotaMissing(t *testing.T) {
	prefix := testPrefix(t)
	l := newTestLimiter(t, prefix)
	rateKey, quotaKey := prefix+"rl:{tok}", prefix+"q:{tok}:2023-11"
	req := func(init int64) verify.LimitRequest {
		return verify.LimitRequest{
			TokenID: "tok", Now: t0, Consume: true,
			RateLimit: 5, RateWindow: time.Minute,
			QuotaLimit: 100, QuotaPeriod: "2023-11", QuotaTTL: 40 * 24 * time.Hour, QuotaInit: init,
		}
	}
	assertUsed := func(t *testing.T, res verify.LimitResponse, rate, quota int64) {
		t.Helper()
		if res.RateLimited || res.QuotaMissing || res.QuotaExceeded || res.RateUsed != rate || res.QuotaUsed != quota {
			t.Fatalf("got %+v, want admitted with %d and %d used", res, rate, quota)
		}
	}
	assertMissing := func(t *testing.T) {
		t.Helper()
		if res := check(t, l, req(-1)); !res.QuotaMissing || res.RateLimited || res.QuotaExceeded {
			t.Fatalf("got %+v, want quota missing", res)
		}
		if n := l.rdb.Exists(context.Background(), quotaKey).Val(); n != 0 {
			t.Fatal("quota missing, yet a count was stored")
		}
	}

	assertMissing(t)
	if n := l.rdb.Exists(context.Background(), rateKey).Val(); n != 0 {
		t.Fatal("quota missing, yet the rate limit was consumed")
	}
	assertUsed(t, check(t, l, req(7)), 1, 8)
	assertUsed(t, check(t, l, req(-1)), 2, 9)

	// Redis restarts empty; the store had flushed 9.
	if err := l.rdb.Del(context.Background(), rateKey, quotaKey).Err(); err != nil {
		t.Fatal(err)
	}
	assertMissing(t)
	assertUsed(t, check(t, l, req(9)), 1, 10)
	// Once seeded, Redis's count wins over a staler init.
	assertUsed(t, check(t, l, req(3)), 2, 11)

	t.Run("InitAtLimit", func(t *testing.T) {
		r := req(100)
		r.QuotaPeriod = "2023-12"
		if res := check(t, l, r); !res.QuotaExceeded || res.QuotaUsed != 100 || res.RateUsed != 2 {
			t.Fatalf("got %+v, want quota exceeded, 100 used, rate untouched", res)
		}
	})
	t.Run("RateLimited", func(t *testing.T) {
		r := req(-1)
		r.RateLimit = 2
		r.QuotaPeriod = "2024-01"
		if res := check(t, l, r); !res.RateLimited || res.QuotaMissing {
			t.Fatalf("got %+v, want rate-limited, quota not checked", res)
		}
	})
}

// TestCheckConfigChange checks that a changed window re-buckets the counts
// without losing any still in the window, and a changed limit applies to
// the counts as they stand.
func TestCheckConfigChange(t *testing.T) {
	prefix := testPrefix(t)
	l := newTestLimiter(t, prefix)
	fill := func(t *testing.T, token string, n int64, window time.Duration, at time.Time) {
		t.Helper()
		for i := range n {
			if res := check(t, l, rateReq(token, n, window, at)); res.RateLimited {
				t.Fatalf("fill: admission %d denied", i+1)
			}
		}
	}
	t.Run("WindowShrinks", func(t *testing.T) {
		fill(t, "a", 3, time.Minute, t0)
		at := t0.Add(100 * time.Millisecond)
		if res := check(t, l, rateReq("a", 3, time.Second, at)); !res.RateLimited || res.RateUsed != 3 {
			t.Fatalf("1s window right after 3 admissions: %+v, want rate-limited", res)
		}
		h := l.rdb.HGetAll(context.Background(), prefix+"rl:{a}").Val()
		width := int64(time.Second) / verify.Buckets
		b := at.UnixNano() / width
		if h["w"] != fmt.Sprint(width) {
			t.Fatalf("width field %q, want %d", h["w"], width)
		}
		for f, c := range h {
			if f == "w" {
				continue
			}
			var n int64
			fmt.Sscan(f, &n)
			if n < b-verify.Buckets || n > b {
				t.Errorf("field %s=%s is not a sub-window of the new width (now %d)", f, c, b)
			}
		}
		if res := check(t, l, rateReq("a", 3, time.Second, at.Add(1100*time.Millisecond))); res.RateLimited || res.RateUsed != 1 {
			t.Fatalf("a 1s window later: %+v, want admitted alone", res)
		}
	})
	t.Run("WindowShrinksAfterIdle", func(t *testing.T) {
		fill(t, "b", 3, time.Minute, t0)
		if res := check(t, l, rateReq("b", 3, time.Second, t0.Add(10*time.Second))); res.RateLimited || res.RateUsed != 1 {
			t.Fatalf("1s window 10s after: %+v, want admitted alone", res)
		}
	})
	t.Run("WindowGrows", func(t *testing.T) {
		fill(t, "c", 3, time.Second, t0)
		if res := check(t, l, rateReq("c", 3, time.Hour, t0.Add(30*time.Minute))); !res.RateLimited || res.RateUsed != 3 {
			t.Fatalf("1h window 30 min after: %+v, want rate-limited", res)
		}
	})
	t.Run("LimitChanges", func(t *testing.T) {
		fill(t, "d", 3, time.Minute, t0)
		for i := range 2 {
			if res := check(t, l, rateReq("d", 5, time.Minute, t0)); res.RateLimited {
				t.Fatalf("raised limit: admission %d denied", 4+i)
			}
		}
		if res := check(t, l, rateReq("d", 2, time.Minute, t0)); !res.RateLimited || res.RateUsed != 5 {
			t.Fatalf("lowered limit: %+v, want rate-limited with 5 used", res)
		}
	})
	// Nodes see a new window at different moments; alternating between
	// the old and the new one must still admit no more than the limit.
	t.Run("NodesDisagree", func(t *testing.T) {
		admitted := 0
		for i := range 100 {
			window := time.Minute
			if i%2 == 1 {
				window = 2 * time.Minute
			}
			if res := check(t, l, rateReq("e", 10, window, t0.Add(time.Duration(i)*time.Millisecond))); !res.RateLimited {
				admitted++
			}
		}
		if admitted != 10 {
			t.Fatalf("admitted %d, want 10", admitted)
		}
	})
}

// TestCheckTTL checks that every key expires, except a total quota.
func TestCheckTTL(t *testing.T) {
	prefix := testPrefix(t)
	l := newTestLimiter(t, prefix)
	ctx := context.Background()
	req := verify.LimitRequest{
		TokenID: "tok", Now: t0, Consume: true,
		RateLimit: 10, RateWindow: time.Minute,
		QuotaLimit: 10, QuotaPeriod: "2023-11-14", QuotaTTL: 48 * time.Hour, QuotaInit: 0,
	}
	check(t, l, req)
	if ttl := l.rdb.PTTL(ctx, prefix+"rl:{tok}").Val(); ttl <= 0 || ttl > time.Minute+6*time.Second {
		t.Errorf("rate hash TTL %v, want (0, 1m6s]", ttl)
	}
	if ttl := l.rdb.PTTL(ctx, prefix+"q:{tok}:2023-11-14").Val(); ttl <= 0 || ttl > 48*time.Hour {
		t.Errorf("quota TTL %v, want (0, 48h]", ttl)
	}

	req.QuotaPeriod = "total"
	check(t, l, req)
	if ttl := l.rdb.PTTL(ctx, prefix+"q:{tok}:total").Val(); ttl != -1 {
		t.Errorf("total quota TTL %v, want none (-1)", ttl)
	}

	// A check that consumes nothing leaves no rate hash behind.
	req = rateReq("idle", 10, time.Minute, t0)
	req.Consume = false
	check(t, l, req)
	if n := l.rdb.Exists(ctx, prefix+"rl:{idle}").Val(); n != 0 {
		t.Error("a check without consumption created the rate hash")
	}
}

// TestUnreachable checks that a Limiter whose server is gone or silent
// answers an error within its own timeouts: each call uses a context
// without deadline, so only the timeouts can end it.
func TestUnreachable(t *testing.T) {
	prefix := testPrefix(t)
	// noHang fails the test if f does not return: a guard against a hang,
	// far above the timeouts, not a measurement.
	noHang := func(t *testing.T, f func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("hangs")
			return nil
		}
	}
	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}

	t.Run("ClosedPort", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		l, err := New(context.Background(), "redis://"+addr+"/0", Options{KeyPrefix: prefix})
		if err != nil {
			t.Fatalf("New must not need Redis up: %v", err)
		}
		defer l.Close()
		err = noHang(t, func() error {
			_, err := l.Check(context.Background(), rateReq("tok", 5, time.Minute, t0))
			return err
		})
		if err == nil {
			t.Fatal("Check succeeded on a closed port")
		}
	})
	t.Run("Silent", func(t *testing.T) {
		p := newProxy(t, "")
		l, err := New(context.Background(), "redis://"+p.addr+"/0", Options{KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		err = noHang(t, func() error { return l.Ping(context.Background()) })
		if !isTimeout(err) {
			t.Fatalf("Ping on a silent server: %v, want a timeout", err)
		}
	})
	t.Run("SilentOneWait", func(t *testing.T) {
		// A server that accepts and never answers costs a Check one read
		// timeout: the retry, on a new connection, is not made.
		p := newProxy(t, "")
		l, err := New(context.Background(), "redis://"+p.addr+"/0", Options{KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		err = noHang(t, func() error {
			_, err := l.Check(context.Background(), rateReq("tok", 5, time.Minute, t0))
			return err
		})
		if !isTimeout(err) {
			t.Fatalf("Check on a silent server: %v, want a timeout", err)
		}
		if n := p.accepted.Load(); n != 1 {
			t.Errorf("the Check connected %d times, want 1: it waited out a timeout per attempt", n)
		}
	})
	t.Run("FallsSilent", func(t *testing.T) {
		ro, err := redis.ParseURL(testURL(t))
		if err != nil {
			t.Fatal(err)
		}
		p := newProxy(t, ro.Addr)
		u := fmt.Sprintf("redis://%s/%d", p.addr, ro.DB)
		if ro.Password != "" {
			u = fmt.Sprintf("redis://%s:%s@%s/%d", ro.Username, ro.Password, p.addr, ro.DB)
		}
		l, err := New(context.Background(), u, Options{KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		check(t, l, rateReq("tok", 5, time.Minute, t0))
		p.silence()
		err = noHang(t, func() error {
			_, err := l.Check(context.Background(), rateReq("tok", 5, time.Minute, t0))
			return err
		})
		if !isTimeout(err) {
			t.Fatalf("Check on a silent server: %v, want a timeout", err)
		}
	})
}

// proxy is a TCP proxy to a Redis server that can fall silent: it then
// reads and drops what clients send and answers nothing.
type proxy struct {
	addr     string
	upstream string // "": silent from the start
	silent   atomic.Bool
	accepted atomic.Int32 // client connections
	mu       sync.Mutex
	ups      []net.Conn
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	p := &proxy{upstream: upstream}
	p.silent.Store(upstream == "")
	p.addr = serveLoopback(t, p.silence, func(c net.Conn, keep func(...net.Conn), _ *sync.WaitGroup) {
		p.accepted.Add(1)
		keep(c)
		p.serve(c)
	})
	return p
}

// serveLoopback listens on a loopback port for the test and returns its
// address. Each connection goes to handle, in a goroutine of wg; handle
// gives keep the connections to close when the test ends, and may start
// more goroutines in wg. At the end the listener closes, unblock runs (to
// wake handlers waiting on a proxy's state), the kept connections close,
// and every goroutine is waited for.
func serveLoopback(t *testing.T, unblock func(), handle func(c net.Conn, keep func(...net.Conn), wg *sync.WaitGroup)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	keep := func(cs ...net.Conn) {
		mu.Lock()
		conns = append(conns, cs...)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		unblock()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { handle(c, keep, &wg) })
		}
	})
	return ln.Addr().String()
}

func (p *proxy) serve(c net.Conn) {
	if !p.silent.Load() {
		up, err := net.Dial("tcp", p.upstream)
		if err == nil {
			p.mu.Lock()
			p.ups = append(p.ups, up)
			p.mu.Unlock()
			go io.Copy(c, up) // ends when up is closed; c stays open
			io.Copy(up, c)
		}
	}
	io.Copy(io.Discard, c)
}

// silence cuts every connection to the server, leaving the clients'
// connections open and unanswered.
func (p *proxy) silence() {
	p.silent.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, up := range p.ups {
		up.Close()
	}
}

// BenchmarkCheck measures one consuming rate-limit check of one token, a
// round trip to the test server.
func BenchmarkCheck(b *testing.B) {
	l := newTestLimiter(b, testPrefix(b))
	req := rateReq("tok", 1<<40, time.Minute, time.Now())
	ctx := context.Background()
	for b.Loop() {
		if _, err := l.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckParallel is BenchmarkCheck from GOMAXPROCS goroutines, one
// token each.
func BenchmarkCheckParallel(b *testing.B) {
	l := newTestLimiter(b, testPrefix(b))
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		req := rateReq(fmt.Sprint("tok", n.Add(1)), 1<<40, time.Minute, time.Now())
		ctx := context.Background()
		for pb.Next() {
			if _, err := l.Check(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// lockedBuf is a bytes.Buffer safe for the client's goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// TestClientLog: with Options.Log, go-redis's own messages (a dial that
// failed) go to that logger as structured warnings, not to standard error
// as plain lines. No Redis needed: the address refuses connections.
func TestClientLog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var buf lockedBuf
	l, err := New(context.Background(), "redis://"+addr+"/0", Options{Log: slog.New(slog.NewJSONHandler(&buf, nil)), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer redis.SetLogger(clientLog{slog.New(slog.DiscardHandler)})
	if err := l.Ping(context.Background()); err == nil {
		t.Fatal("Ping to a closed port succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), `"msg":"redis client"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no structured line from the client: %q", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(buf.String(), `"level":"WARN"`) || !strings.Contains(buf.String(), `"detail":"redis: `) || strings.Count(buf.String(), `"msg":`) != strings.Count(buf.String(), "\n") {
		t.Errorf("log = %q", buf.String())
	}
}

// holdProxy is a TCP proxy to a Redis server that can hold what clients
// send (a Redis that hangs) and pass it on later, when the clients have
// stopped waiting for it.
type holdProxy struct {
	addr     string
	upstream string
	mu       sync.Mutex
	open     chan struct{} // closed while commands pass
	replies  atomic.Int64  // reads of answers from the server
}

func newHoldProxy(t *testing.T, upstream string) *holdProxy {
	t.Helper()
	p := &holdProxy{upstream: upstream, open: make(chan struct{})}
	close(p.open)
	p.addr = serveLoopback(t, p.release, func(c net.Conn, keep func(...net.Conn), wg *sync.WaitGroup) {
		up, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			return
		}
		keep(c, up)
		wg.Go(func() {
			buf := make([]byte, 4096)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					p.replies.Add(1)
					c.Write(buf[:n]) // fails once the client gave up: the count stands
				}
				if err != nil {
					return
				}
			}
		})
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				p.mu.Lock()
				open := p.open
				p.mu.Unlock()
				<-open
				if _, err := up.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return // up stays open for the answer; closed at cleanup
			}
		}
	})
	return p
}

// hold makes the proxy keep what clients send from now on.
func (p *holdProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = make(chan struct{})
}

// release passes on what was held, and what comes after.
func (p *holdProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// limiterVia returns a Limiter that reaches the test server through addr.
func limiterVia(t *testing.T, addr, prefix string, opts Options) *Limiter {
	t.Helper()
	ro, err := redis.ParseURL(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u := fmt.Sprintf("redis://%s/%d", addr, ro.DB)
	if ro.Password != "" {
		u = fmt.Sprintf("redis://%s:%s@%s/%d", ro.Username, ro.Password, addr, ro.DB)
	}
	opts.KeyPrefix = prefix
	l, err := New(context.Background(), u, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// limitReq asks for a rate limit and a total quota, consuming.
func limitReq(token string) verify.LimitRequest {
	req := rateReq(token, 100, time.Minute, t0)
	req.QuotaLimit, req.QuotaPeriod, req.QuotaInit = 100, "total", 0
	return req
}

// counts returns what the test server holds for token, consuming nothing.
func counts(t *testing.T, prefix, token string) (rate, quota int64) {
	t.Helper()
	req := limitReq(token)
	req.Consume = false
	res := check(t, newTestLimiter(t, prefix), req)
	return res.RateUsed, res.QuotaUsed
}

// learnClock checks without consuming until l knows the offset between
// its clock and Redis's (an answer that comes quickly enough: the first
// one, with its dial, may not).
func learnClock(t *testing.T, l *Limiter, token string) {
	t.Helper()
	req := limitReq(token)
	req.Consume = false
	for deadline := time.Now().Add(10 * time.Second); l.clock.Load() == nil; {
		if time.Now().After(deadline) {
			t.Fatal("no answer came quickly enough to tell the clocks' offset")
		}
		check(t, l, req)
	}
}

// TestLateCheckConsumesNothing: a check this node stopped waiting for,
// because Redis hung, must not count when Redis runs it later: the node
// answered without it (PRODUCT §4: only VALID consumes). Nor is it sent
// twice.
func TestLateCheckConsumesNothing(t *testing.T) {
	prefix := testPrefix(t)
	ro, err := redis.ParseURL(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := newHoldProxy(t, ro.Addr)
	// The attempt gives up after the read timeout, 300 ms; its bound is
	// 60 ms (a fifth of the read timeout) before that.
	l := limiterVia(t, p.addr, prefix, Options{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	learnClock(t, l, "tok")
	check(t, l, limitReq("tok"))

	p.hold()
	if _, err := l.Check(context.Background(), limitReq("tok")); err == nil {
		t.Fatal("a check Redis never answered succeeded")
	}
	before := p.replies.Load()
	p.release()
	for deadline := time.Now().Add(10 * time.Second); p.replies.Load() == before; {
		if time.Now().After(deadline) {
			t.Fatal("Redis never ran the held check")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a second copy, had one been sent, would run by now
	if rate, quota := counts(t, prefix, "tok"); rate != 1 || quota != 1 {
		t.Errorf("after a check that timed out ran late: rate %d, quota %d used, want 1 and 1", rate, quota)
	}
}

// TestShortDeadline: a caller's deadline shorter than the margin still
// lets a quick Redis count the check.
func TestShortDeadline(t *testing.T) {
	prefix := testPrefix(t)
	l := newTestLimiter(t, prefix)
	learnClock(t, l, "tok")
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Millisecond)
		res, err := l.Check(ctx, limitReq("tok"))
		cancel()
		if err != nil {
			t.Fatalf("check %d with a 40 ms deadline: %v", i+1, err)
		}
		if res.RateUsed != int64(i+1) {
			t.Fatalf("check %d: %d used", i+1, res.RateUsed)
		}
	}
}

// TestClockOffset: the bound is on Redis's clock, so a node whose clock
// is far from Redis's still counts; a node whose clock steps back after
// the offset was taken reaches Redis "late" once, consuming nothing, and
// the attempt it makes again, with the offset taken afresh, counts once.
func TestClockOffset(t *testing.T) {
	for _, skew := range []time.Duration{-time.Hour, time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			prefix := testPrefix(t)
			l := newTestLimiter(t, prefix)
			l.now = func() time.Time { return time.Now().Add(skew) }
			for i := range 3 {
				if res := check(t, l, limitReq("tok")); res.RateUsed != int64(i+1) || res.QuotaUsed != int64(i+1) {
					t.Fatalf("check %d with the clock %v off: %+v", i+1, skew, res)
				}
			}
		})
	}
	t.Run("StepBack", func(t *testing.T) {
		prefix := testPrefix(t)
		l := newTestLimiter(t, prefix)
		learnClock(t, l, "tok")
		check(t, l, limitReq("tok"))
		l.now = func() time.Time { return time.Now().Add(-5 * time.Second) }
		if res := check(t, l, limitReq("tok")); res.RateUsed != 2 || res.QuotaUsed != 2 {
			t.Errorf("the check after the clock stepped back: %+v, want 2 used of each", res)
		}
	})
	t.Run("StepBackNoRetry", func(t *testing.T) {
		prefix := testPrefix(t)
		l, err := New(context.Background(), testURL(t), Options{KeyPrefix: prefix, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		learnClock(t, l, "tok")
		check(t, l, limitReq("tok"))
		l.now = func() time.Time { return time.Now().Add(-5 * time.Second) }
		_, err = l.Check(context.Background(), limitReq("tok"))
		if !errors.Is(err, ErrLate) {
			t.Fatalf("check after the clock stepped back: %v, want ErrLate", err)
		}
		if rate, quota := counts(t, prefix, "tok"); rate != 1 || quota != 1 {
			t.Errorf("a late check consumed: rate %d, quota %d used, want 1 and 1", rate, quota)
		}
		if res := check(t, l, limitReq("tok")); res.RateUsed != 2 || res.QuotaUsed != 2 {
			t.Errorf("the check after ErrLate: %+v, want 2 used of each", res)
		}
	})
}

// TestURLErrorQuotesNoPassword: a URL that does not parse is refused by
// CheckURL and New with an error that shows no part of its password, even
// one that url.Parse's error would quote escaped (a quote, a backslash, a
// control character), where a caller's scrubbing of the URL as given finds
// nothing to scrub.
func TestURLErrorQuotesNoPassword(t *testing.T) {
	const slashErr = "the URL does not parse: an @ follows a /, ? or # (write one of these in a user name or password as %2F, %3F or %23)"
	for _, tc := range []struct {
		name, url, want string
	}{
		{"Quote", `redis://:pa"ssWORD1@h:6379/0`, "the URL does not parse: net/url: invalid userinfo"},
		{"Backslash", `redis://:pa\ssWORD1@h:x/0`, `the URL does not parse: invalid port ":x" after host`},
		{"Control", "redis://:pa\tssWORD1@h:6379/0", "the URL does not parse: net/url: invalid control character in URL"},
		{"Escape", "redis://:p%zaWORD1@h:6379/0", "the URL does not parse: a % that is not followed by two hex digits (write a % in the password as %25)"},
		{"Database", "redis://:paWORD1@h:6379/zero", `redis: invalid database number: "zero"`},
		// A /, ? or # in the password ends the host part: what follows is
		// a port, a path or a query, which the errors would quote.
		{"SlashPort", "redis://:paWORD1/rest2@h:6379/0", slashErr},
		{"SlashUserPort", "redis://u:paWORD1/rest2@h:6379/0", slashErr},
		{"HashPort", "redis://u:paWORD1#rest2@h:6379/0", slashErr},
		{"SlashPath", "redis://:1234/paWORD1rest2@h:6379/0", slashErr},
		{"SlashDatabase", "redis://:1234/paWORD1rest2@h", slashErr},
		{"QueryOption", "redis://:1234?paWORD1rest2@h", slashErr},
		{"AtAndSlash", "redis://:pa@WORD1/rest2@h:6379/0", slashErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckURL(tc.url)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("CheckURL: %v, want %s", err, tc.want)
			}
			_, err = New(context.Background(), tc.url, Options{})
			if err == nil || err.Error() != "redislimit: "+tc.want {
				t.Fatalf("New: %v, want redislimit: %s", err, tc.want)
			}
		})
	}
	for _, good := range []string{"redis://:pa%25ss@h:6379/0?dial_timeout=1s", "redis://:pa%2Fss%3F%23@h:6379/0"} {
		if err := CheckURL(good); err != nil {
			t.Errorf("CheckURL(%s): %v", good, err)
		}
	}
}
