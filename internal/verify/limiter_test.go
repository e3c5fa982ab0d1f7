package verify

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// TestLimiterNeverExceeds drives the limiter with random arrival times and
// checks, against an exact log, that no window of length W ever holds more
// than N admissions, and that a burst into an empty window is admitted.
func TestLimiterNeverExceeds(t *testing.T) {
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
			l := newLimiter(tc.limit, tc.window)
			now := int64(1_700_000_000) * int64(time.Second)
			// A burst of N into an empty window is admitted in full.
			for i := int64(0); i < tc.limit; i++ {
				if l.used(now) >= tc.limit {
					t.Fatalf("burst: denied admission %d of %d", i+1, tc.limit)
				}
				l.take(now)
			}
			if l.used(now) < tc.limit {
				t.Fatal("burst: admitted more than the limit")
			}
			admitted := []int64{}
			for i := 0; i < 200_000; i++ {
				now += rng.Int64N(int64(tc.window) / max(tc.limit, 1) * 2)
				if l.used(now) < tc.limit {
					l.take(now)
					admitted = append(admitted, now)
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
			if len(admitted) < 1000 {
				t.Fatalf("only %d admissions: the limiter denies far too early", len(admitted))
			}
		})
	}
}

// TestLimiterOddWindow: a window that is no multiple of buckets ns still
// counts each admission until the whole window after it has passed (its
// sub-windows, rounded down, would cover up to buckets-1 ns less), and a
// limiter stored by a version that rounded down is restored without
// forgetting what it counted.
func TestLimiterOddWindow(t *testing.T) {
	w := time.Second + buckets - 1
	base := int64(1_700_000_000) * int64(time.Second)
	// The last nanoseconds of a sub-window are the worst case, whichever
	// width is taken.
	narrow := int64(w) / buckets
	for _, off := range []int64{0, 1, narrow - 1, 2*narrow - 1, 17*narrow - 3, Width(w) - 1, 5*Width(w) - 1} {
		l := newLimiter(1, w)
		at := base + off
		l.take(at)
		if n := l.used(at + int64(w) - 1); n != 1 {
			t.Fatalf("an admission at +%d ns was forgotten before the window after it ended", off)
		}
	}

	// A state stored with the narrower width of earlier versions.
	old := &limiter{limit: 1, window: int64(w), width: int64(w) / buckets}
	at := base + 17*old.width - 1 // the end of a sub-window: the worst case
	old.take(at)
	st := old.state("tok_1")
	l := restoreLimiter(*st, 1, w, at+1)
	if l == nil {
		t.Fatal("a state of the narrower width was not restored")
	}
	if l.width != Width(w) {
		t.Errorf("restored width %d, want %d", l.width, Width(w))
	}
	if n := l.used(at + int64(w) - 1); n != 1 {
		t.Errorf("the restored limiter forgot an admission within its window")
	}
}

func TestLimiterReset(t *testing.T) {
	l := newLimiter(2, time.Minute)
	now := int64(time.Hour)
	if r := l.reset(now); r != 0 {
		t.Fatalf("reset of an empty limiter = %v", r)
	}
	l.take(now)
	l.take(now)
	r := l.reset(now)
	if r <= 0 || r > time.Minute+time.Minute/buckets {
		t.Fatalf("reset = %v, want about a minute", r)
	}
	later := now + int64(r)
	if l.used(later) != 0 {
		t.Fatalf("after reset the window still counts %d", l.used(later))
	}
}

func TestClock(t *testing.T) {
	c := newClock()
	for i := 0; i < 1000; i++ {
		got, want := c.Now(), time.Now()
		if d := want.Sub(got); d < 0 || d > 50*time.Millisecond {
			t.Fatalf("clock is %v behind time.Now", d)
		}
	}
	c.reanchor()
	if d := time.Since(c.Now()); d < 0 || d > 50*time.Millisecond {
		t.Fatalf("after reanchor the clock is off by %v", d)
	}
}

// TestLimiterEmptyWindow: once a whole window has passed since the latest
// admission, the window is empty and a burst of the limit is admitted in
// full, whatever sub-window the earlier burst fell in; not a nanosecond
// before. A limiter restored from the store, which keeps no latest
// admission, counts by its sub-windows until it admits again.
func TestLimiterEmptyWindow(t *testing.T) {
	const n = 3
	w := time.Second
	base := int64(1_700_000_000)*int64(time.Second) + int64(w)/buckets - 1 // a sub-window's last ns: the worst case
	for _, spread := range []int64{0, int64(time.Millisecond), int64(w) / 2} {
		l := newLimiter(n, w)
		last := base
		for i := int64(0); i < n; i++ {
			last = base + i*spread/n
			l.take(last)
		}
		// A ns before the window after the latest ends, that one at least
		// is counted (earlier ones may have left).
		if got := l.used(last + int64(w) - 1); got < 1 || got > n {
			t.Fatalf("spread %v: a ns before the window ends, %d counted, want 1 to %d", time.Duration(spread), got, n)
		}
		if r := l.reset(last + int64(w) - 1); r <= 0 || r > 1 {
			t.Errorf("spread %v: reset a ns before = %v, want 1ns", time.Duration(spread), r)
		}
		at := last + int64(w)
		for i := 0; i < n; i++ {
			if l.used(at) >= n {
				t.Fatalf("spread %v: burst after a whole window: admission %d of %d denied", time.Duration(spread), i+1, n)
			}
			l.take(at)
		}
		if l.used(at) != n {
			t.Fatalf("spread %v: the new burst is not counted", time.Duration(spread))
		}
	}

	l := newLimiter(n, w)
	for i := 0; i < n; i++ {
		l.take(base)
	}
	st := *l.state("tok_1")
	if !st.Last.Equal(time.Unix(0, base)) || !st.Until.Equal(time.Unix(0, base+int64(w))) {
		t.Fatalf("state: last %v until %v, want the admission's time and a window after", st.Last, st.Until)
	}
	r := restoreLimiter(st, n, w, base)
	if r == nil {
		t.Fatal("not restored")
	}
	if got := r.used(base + int64(w) - 1); got != n {
		t.Errorf("restored: %d counted a ns before the window ends, want %d", got, n)
	}
	if r := r.reset(base + int64(w) - 1); r != 1 {
		t.Errorf("restored: reset a ns before = %v, want 1ns", r)
	}
	if got := r.used(base + int64(w)); got != 0 {
		t.Errorf("restored: %d counted a window later, want 0 (the window is empty)", got)
	}
	// PostgreSQL keeps until to the microsecond: the state still knows
	// its latest admission.
	st.Until = st.Until.Truncate(time.Microsecond)
	if r := restoreLimiter(st, n, w, base); r == nil || r.used(base+int64(w)) != 0 {
		t.Errorf("restored with until to the microsecond: the window is not empty a window later")
	}
}

// TestLimiterRestoreWithoutLast: a state that does not know its latest
// admission (stored by an earlier version, or one whose until a node of
// an earlier version rewrote, leaving Last as it was) is taken to end
// with the newest sub-window it counts: denied until that sub-window's
// window has passed, never admitted early, and its reset is exact and at
// most the window.
func TestLimiterRestoreWithoutLast(t *testing.T) {
	const n = 2
	w := 40 * time.Second
	width := int64(w) / buckets
	at := int64(1_700_000_000)*int64(time.Second) + width/4 // early in a sub-window
	end := (at/width+1)*width - 1                           // its last ns
	l := newLimiter(n, w)
	l.take(at)
	l.take(at)
	old := *l.state("tok_1")
	old.Last, old.Until = time.Time{}, time.Unix(0, (old.Head+1)*old.Width+int64(w)) // as an earlier version stored it
	stale := *l.state("tok_1")
	stale.Until = old.Until // rewritten by an earlier version: Last does not match
	for name, st := range map[string]keyward.RateWindow{"old": old, "stale": stale} {
		for _, now := range []int64{at + 1, at + int64(w)/2} {
			r := restoreLimiter(st, n, w, now)
			if r == nil {
				t.Fatalf("%s: not restored", name)
			}
			if got := r.reset(now); got > w || now+int64(got) != min(end, now)+int64(w) {
				t.Errorf("%s at +%v: reset %v, want %v (at most the window)", name, time.Duration(now-at), got, time.Duration(min(end, now)+int64(w)-now))
			}
			free := min(end, now) + int64(w)
			if got := r.used(free - 1); got != n {
				t.Errorf("%s at +%v: %d counted a ns before the reset, want %d", name, time.Duration(now-at), got, n)
			}
			if got := r.used(free); got != 0 {
				t.Errorf("%s at +%v: %d counted at the reset, want 0", name, time.Duration(now-at), got)
			}
		}
	}
}

// TestLimiterOutOfOrder: times that reach the limiter out of order (a
// verification that read the clock, then waited its turn behind a later
// one; a clock that steps back) are taken as the latest time it was given,
// at which they are admitted; by those times, no window holds more than
// the limit, even when an emptied window is forgotten in between.
func TestLimiterOutOfOrder(t *testing.T) {
	const n = 3
	w := time.Second
	T := int64(1_700_000_000) * int64(time.Second)
	l := newLimiter(n, w)
	for range n {
		l.take(T)
	}
	if l.used(T+int64(w)) != 0 {
		t.Fatal("a window after the burst is not empty")
	}
	l.take(T + int64(w))
	// Read the clock a ns earlier, came second: as if at T+W, where the
	// burst at T is out of the window.
	if got := l.used(T + int64(w) - 1); got != 1 {
		t.Errorf("late arrival: %d counted, want 1 (the admission at T+W)", got)
	}

	for _, tc := range []struct {
		limit  int64
		window time.Duration
		jitter int64
	}{{2, 5, 2}, {3, time.Second, int64(time.Millisecond)}, {5, time.Minute, int64(time.Second)}, {1, 100 * time.Millisecond, int64(50 * time.Millisecond)}} {
		rng := rand.New(rand.NewPCG(7, uint64(tc.limit)))
		l := newLimiter(tc.limit, tc.window)
		clock, seen := T, int64(0)
		var admitted []int64 // by the time the limiter took: the latest given
		for i := 0; i < 100_000; i++ {
			clock += rng.Int64N(int64(tc.window) / tc.limit * 2)
			now := clock - rng.Int64N(tc.jitter+1) // read a little earlier
			seen = max(seen, now)
			if l.used(now) < tc.limit {
				l.take(now)
				admitted = append(admitted, seen)
			}
			if rng.IntN(5000) == 0 {
				// Restored from the store, as after a restart.
				if r := restoreLimiter(*l.state("tok_1"), tc.limit, tc.window, seen); r != nil {
					l = r
				}
			}
		}
		j := 0
		for i, at := range admitted {
			for admitted[j] <= at-int64(tc.window) {
				j++
			}
			if c := int64(i - j + 1); c > tc.limit {
				t.Fatalf("limit %d window %v jitter %d: %d admissions in the window ending at admission %d", tc.limit, tc.window, tc.jitter, c, i)
			}
		}
		if len(admitted) < 1000 {
			t.Fatalf("limit %d window %v: only %d admissions", tc.limit, tc.window, len(admitted))
		}
	}
}
