package postgres

import (
	"context"
	"fmt"
	"time"
)

// Listen LISTENs on NotifyChannel on a connection of its own and calls
// notify for every change committed by any node, until ctx ends. When the
// connection fails it calls state(err), reconnects with growing delays (up
// to maxDelay), and once listening again calls state(nil) and notify, so
// that the caller reads whatever the lost connection did not tell. It
// returns ctx's error.
func (db *DB) Listen(ctx context.Context, notify func(), state func(error)) error {
	const minDelay, maxDelay = 100 * time.Millisecond, 5 * time.Second
	delay := minDelay
	for {
		err := db.listenOnce(ctx, notify, func() {
			delay = minDelay
			state(nil)
			notify() // whatever was committed while no one listened
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		state(err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, maxDelay)
	}
}

// listenOnce holds one connection in LISTEN until it fails or ctx ends.
func (db *DB) listenOnce(ctx context.Context, notify, listening func()) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	// A checked connection: the listener reconnects at once when the
	// server ended its session, as a restart does, and so every pooled
	// session too; a dead one would fail the LISTEN and cost a longer
	// wait each time.
	pc, err := db.pool.Acquire(checked(cctx))
	cancel()
	if err != nil {
		return fmt.Errorf("postgres: listen: %w", err)
	}
	// The connection leaves the pool for good: it stays in LISTEN, and is
	// closed when it fails rather than handed to another caller.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return fmt.Errorf("postgres: listen: %w", err)
	}
	listening()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("postgres: listen: %w", err)
		}
		notify()
	}
}
