package verify

import (
	"time"

	"github.com/keyward/keyward"
)

// buckets is the number of sub-windows a rate-limit window is split into.
// The limiter may deny up to one sub-window (window/buckets) early; it never
// admits more than the limit in any window.
const buckets = 20

// limiter is a conservative sliding-window counter. Admissions are counted
// in sub-windows of width window/buckets; a new admission at time now is
// allowed when the admissions in every sub-window that overlaps
// (now-window, now] add up to less than the limit. Since the oldest such
// sub-window is counted whole, the sum bounds the admissions of any window
// of length window that ends at now, so no window ever holds more than
// limit admissions, while a burst of limit into an empty window is admitted
// in full. GCRA and fixed windows admit up to 2·limit−1 and do not meet this.
//
// The sub-windows alone would count an admission for up to a sub-window
// after the window that holds it has passed: a burst, then a wait of
// exactly the window, would find the next burst denied until that
// sub-window ends. So the limiter also keeps the time of its latest
// admission: once a whole window has passed since it, the window is empty
// (every counted admission is at least as old) and nothing is counted.
//
// Times reach the limiter a little out of order (two verifications of one
// token read the clock, then take turns on it; the clock itself may step
// back), and a count forgotten because the window was empty must not
// come back for a time before that: the limiter takes each time as at
// least the latest it was given (seen). A verification that read the
// clock, then waited its turn behind a later one, is admitted after it
// anyway.
//
// The zero limiter is unusable; the caller serialises access.
type limiter struct {
	limit  int64
	window int64 // ns
	width  int64 // ns, window/buckets rounded up
	head   int64 // sub-window number of the newest slot in use
	sum    int64 // of counts
	counts [buckets + 1]int64
	// last is the time (ns) of the latest admission counted, at least;
	// 0 when nothing is counted. The store keeps it with the window; a
	// state stored without it is restored with the latest time its
	// newest counted sub-window could hold (or the time of the restore,
	// if earlier), which may deny up to a sub-window early, as the
	// sub-windows alone do, but never late.
	last int64
	// seen is the latest time the limiter was given (ns).
	seen int64
}

// clock returns now, or the latest time l was given if that is later, and
// records it: l's times never go back.
func (l *limiter) clock(now int64) int64 {
	l.seen = max(l.seen, now)
	return l.seen
}

func newLimiter(limit int64, window time.Duration) *limiter {
	w := int64(window)
	return &limiter{limit: limit, window: w, width: Width(window)}
}

// Width is the width in ns of the sub-windows of a rate-limit window:
// window/buckets rounded up, so that the buckets+1 sub-windows counted
// cover at least the window (rounded down, a window that is no multiple
// of buckets ns could forget an admission up to buckets-1 ns early); at
// least 1.
func Width(window time.Duration) int64 {
	return max((int64(window)+buckets-1)/buckets, 1)
}

// advance moves the ring to the sub-window of now, clearing slots that fell
// out of every window that ends at now or later.
func (l *limiter) advance(now int64) int64 {
	b := now / l.width
	if b > l.head {
		n := b - l.head
		if n > int64(len(l.counts)) {
			n = int64(len(l.counts))
		}
		for i := int64(1); i <= n; i++ {
			j := (l.head + i) % int64(len(l.counts))
			l.sum -= l.counts[j]
			l.counts[j] = 0
		}
		l.head = b
	}
	return b
}

// used returns the admissions counted against a new one at now.
func (l *limiter) used(now int64) int64 {
	now = l.clock(now)
	l.advance(now)
	if l.sum > 0 && now-l.last >= l.window {
		// No admission in (now-window, now]: the window is empty.
		clear(l.counts[:])
		l.sum = 0
	}
	return l.sum
}

// rewindow returns a limiter of the new window and limit that counts the
// admissions l still counts at now as made at now: each stays for a whole
// new window, which may deny early but does not forget them (an update of
// a token's window must not hand out a fresh allowance). Admissions l had
// already let go are not known; a longer window cannot count them.
func (l *limiter) rewindow(now int64, window time.Duration, limit int64) *limiter {
	n := newLimiter(limit, window)
	used := l.used(now)
	at := l.seen // now, or later: l's times never go back
	n.seen = at
	if used > 0 {
		b := n.advance(at)
		n.counts[b%int64(len(n.counts))] = used
		n.sum = used
		n.last = at // as counted
	}
	return n
}

// state returns l as the store keeps it for tokenID: with the time of its
// latest admission, when it counts any, and then Until = Last + window,
// which restoreLimiter checks (a node of an earlier version that rewrites
// the state writes its own Until and leaves Last as it was).
func (l *limiter) state(tokenID string) *keyward.RateWindow {
	w := &keyward.RateWindow{
		TokenID: tokenID,
		Window:  time.Duration(l.window),
		Width:   l.width,
		Head:    l.head,
		Counts:  append([]int64(nil), l.counts[:]...),
		Until:   time.Unix(0, (l.head+1)*l.width+l.window).UTC(),
	}
	if l.sum > 0 && l.last != 0 {
		w.Last = time.Unix(0, l.last).UTC()
		w.Until = time.Unix(0, l.last+l.window).UTC()
	}
	return w
}

// lastOf returns the time (ns) of the latest admission w counts, at least,
// as restoreLimiter takes it: w.Last when w's Until is the one this
// version writes with it (to the microsecond a store may round it to);
// else the last ns of w's newest sub-window that counts any, or now if
// earlier (the state was stored before now). 0 when w counts nothing.
func lastOf(w keyward.RateWindow, now int64) int64 {
	if !w.Last.IsZero() {
		last := w.Last.UnixNano()
		if d := w.Until.UnixNano() - (last + int64(w.Window)); d > -int64(time.Microsecond) && d < int64(time.Microsecond) {
			return last
		}
	}
	n := int64(len(w.Counts))
	for i := w.Head; i > w.Head-n && i >= 0; i-- {
		if w.Counts[i%n] > 0 {
			return min((i+1)*w.Width-1, now)
		}
	}
	return 0
}

// restoreLimiter returns the limiter w describes, with the limit and
// window given (a window other than w's carries what w counts at now, as
// rewindow does), or nil when w is not a state this version reads.
func restoreLimiter(w keyward.RateWindow, limit int64, window time.Duration, now int64) *limiter {
	l := newLimiter(limit, w.Window)
	if w.Window <= 0 || len(w.Counts) != len(l.counts) {
		return nil
	}
	l.seen = now
	// A state of an earlier version, whose sub-windows could be 1 to
	// buckets-1 ns narrower, is read with its own width and then carried
	// over as a change of window is.
	carry := w.Width != l.width
	if carry && (w.Width <= 0 || w.Width > l.width) {
		return nil
	}
	l.width = w.Width
	l.head = w.Head
	for i, c := range w.Counts {
		if c < 0 {
			return nil
		}
		l.counts[i] = c
		l.sum += c
	}
	if l.sum > 0 {
		l.last = lastOf(w, now)
	}
	if carry || w.Window != window {
		return l.rewindow(now, window, limit)
	}
	return l
}

// take records one admission at now. The caller has checked used.
func (l *limiter) take(now int64) {
	now = l.clock(now)
	b := l.advance(now)
	l.counts[b%int64(len(l.counts))]++
	l.sum++
	l.last = now // at least last: l's times never go back
}

// reset returns how long until the oldest counted admission leaves the
// window, which frees a slot; zero when nothing is counted.
func (l *limiter) reset(now int64) time.Duration {
	if l.used(now) == 0 {
		return 0
	}
	now = l.seen
	b := now / l.width // as advance, which used called, has it
	for i := b - buckets; i <= b; i++ {
		if i >= 0 && l.counts[i%int64(len(l.counts))] > 0 {
			// The whole window frees at last+window at the latest.
			d := min((i+1)*l.width+l.window, l.last+l.window) - now
			return time.Duration(d)
		}
	}
	return 0
}
