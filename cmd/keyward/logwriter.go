package main

import (
	"io"
	"sync"
	"time"
)

// logWriter buffers log lines and writes them out every interval, and soon
// after the buffer passes logChunk. One write(2) per request would cost the
// verify path more than the verification itself; a crash loses at most one
// interval of log.
//
// Writes only append to the buffer: a goroutine of its own writes it out,
// so that no request waits for a write(2) of a whole buffer, nor for the
// lock while another does (no change in the gateway's p99 was measurable
// beyond this machine's noise, but nothing waits that need not). When
// the output cannot keep up and logMax is pending, the writer that finds it
// so writes it out itself: the log slows the server down rather than grow
// without bound or lose lines.
type logWriter struct {
	w io.Writer

	mu      sync.Mutex
	pending []byte // lines not yet taken for writing

	out   sync.Mutex // held while taking and writing out, so lines stay in order
	spare []byte     // guarded by out: an emptied buffer for the next lines
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

const (
	logChunk = 64 << 10 // past this much pending, the writing goroutine is woken
	logMax   = 1 << 20  // past this much pending, the writer writes out itself
)

func newLogWriter(w io.Writer, interval time.Duration) *logWriter {
	l := &logWriter{w: w, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-l.kick:
			case <-l.stop:
				l.Flush()
				return
			}
			l.Flush()
		}
	}()
	return l
}

// Write implements io.Writer: it appends p to what is pending.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.pending = append(l.pending, p...)
	n := len(l.pending)
	l.mu.Unlock()
	switch {
	case n >= logMax:
		if err := l.Flush(); err != nil {
			return 0, err
		}
	case n >= logChunk:
		select {
		case l.kick <- struct{}{}:
		default: // woken already
		}
	}
	return len(p), nil
}

// Flush writes out what is pending, after what an earlier Flush took.
func (l *logWriter) Flush() error {
	l.out.Lock()
	defer l.out.Unlock()
	l.mu.Lock()
	b := l.pending
	l.pending = l.spare[:0]
	l.mu.Unlock()
	var err error
	if len(b) > 0 {
		_, err = l.w.Write(b)
	}
	l.spare = nil
	if cap(b) <= 2*logMax {
		l.spare = b[:0] // for the next swap; one grown past that is let go
	}
	return err
}

// Close stops the flushing loop after a last flush. Writes after Close are
// buffered and lost unless Flush is called.
func (l *logWriter) Close() error {
	close(l.stop)
	<-l.done
	return nil
}
