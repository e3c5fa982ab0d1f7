package logfmt

import (
	"context"
	"log/slog"
	"time"
)

// Failures logs a task that fails again and again (a flush every second
// while the store is down) without a line at each try: the first failure,
// then one line a minute while it goes on, with how many tries failed, and
// one line when it succeeds again. It is not safe for concurrent use: one
// loop reports to it.
type Failures struct {
	Level     slog.Level // of the failure lines; the recovery is Info
	Failed    string     // the failure lines' message
	Recovered string     // the recovery line's message

	since, logged time.Time // first failure and last line; zero while the task succeeds
	count         int
}

// Report records the outcome of one try at now.
func (f *Failures) Report(log *slog.Logger, now time.Time, err error) {
	switch {
	case err != nil && f.since.IsZero():
		f.since, f.logged, f.count = now, now, 1
		log.Log(context.Background(), f.Level, f.Failed, "err", err)
	case err != nil:
		f.count++
		if now.Sub(f.logged) >= time.Minute {
			f.logged = now
			log.Log(context.Background(), f.Level, f.Failed, "err", err, "failures", f.count, "since", f.since)
		}
	case !f.since.IsZero():
		log.Info(f.Recovered, "failures", f.count, "after", now.Sub(f.since).Round(time.Millisecond))
		f.since, f.logged, f.count = time.Time{}, time.Time{}, 0
	}
}
