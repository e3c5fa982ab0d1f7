package verify

import (
	"sync/atomic"
	"time"
)

// clock reads the time with one monotonic clock read instead of time.Now's
// two (wall and monotonic): on some virtual machines a clock read costs as
// much as a fifth of a verification. It adds the monotonic time elapsed
// since an anchor to the anchor's wall time, and is re-anchored every
// second, so a stepped wall clock is followed within a second.
type clock struct {
	anchor atomic.Pointer[time.Time]
}

func newClock() *clock {
	c := &clock{}
	c.reanchor()
	return c
}

// reanchor takes a fresh wall-clock reading.
func (c *clock) reanchor() {
	t := time.Now()
	c.anchor.Store(&t)
}

// Now returns the current time.
func (c *clock) Now() time.Time {
	a := c.anchor.Load()
	return a.Add(time.Since(*a))
}
