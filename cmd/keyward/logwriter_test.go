package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is an io.Writer safe for the flushing goroutine and the test.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogWriter: lines from many goroutines all come out, each whole and
// in the order each goroutine wrote them, in few writes; Close writes out
// the rest.
func TestLogWriter(t *testing.T) {
	var out lockedBuffer
	l := newLogWriter(&out, time.Hour) // only size and Close make it write
	const writers, lines = 8, 5000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(l, "writer=%d line=%06d %s\n", w, i, strings.Repeat("x", 100))
			}
		}()
	}
	wg.Wait()
	l.Close()
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines, want %d", len(got), writers*lines)
	}
	next := make([]int, writers)
	for _, line := range got {
		var w, i int
		if _, err := fmt.Sscanf(line, "writer=%d line=%d", &w, &i); err != nil || len(line) != len("writer=0 line=000000 ")+100 {
			t.Fatalf("line %q is not whole", line)
		}
		if i != next[w] {
			t.Fatalf("writer %d: line %d after %d", w, i, next[w]-1)
		}
		next[w]++
	}
	// About 1 MB in 64 KB chunks: tens of writes, not one per line.
	if out.writes > writers*lines/20 {
		t.Errorf("%d writes for %d lines", out.writes, writers*lines)
	}
}

// TestLogWriterInterval: a line is written out within the interval without
// Close.
func TestLogWriterInterval(t *testing.T) {
	var out lockedBuffer
	l := newLogWriter(&out, 10*time.Millisecond)
	defer l.Close()
	l.Write([]byte("hello\n"))
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "hello\n" {
		if time.Now().After(deadline) {
			t.Fatalf("not written out: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stuckWriter blocks every write until released.
type stuckWriter struct {
	release chan struct{}
	lockedBuffer
}

func (s *stuckWriter) Write(p []byte) (int, error) {
	<-s.release
	return s.lockedBuffer.Write(p)
}

// TestLogWriterBackpressure: while the output is stuck, writers go on until
// logMax is pending, then wait for it rather than grow the buffer or drop
// lines.
func TestLogWriterBackpressure(t *testing.T) {
	out := &stuckWriter{release: make(chan struct{})}
	l := newLogWriter(out, time.Hour)
	line := []byte(strings.Repeat("y", 1023) + "\n")
	wrote := make(chan int)
	go func() {
		n := 0
		for range 3 * logMax / len(line) {
			l.Write(line)
			n++
		}
		wrote <- n
	}()
	select {
	case n := <-wrote:
		t.Fatalf("%d lines written while the output was stuck", n)
	case <-time.After(200 * time.Millisecond):
	}
	l.mu.Lock()
	pending := len(l.pending)
	l.mu.Unlock()
	if pending > logMax+len(line) {
		t.Errorf("%d bytes pending while stuck, more than %d", pending, logMax)
	}
	close(out.release)
	n := <-wrote
	l.Close()
	if got := len(out.String()); got != n*len(line) {
		t.Errorf("%d bytes out, want %d", got, n*len(line))
	}
}
