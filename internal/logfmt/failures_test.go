package logfmt

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestFailures(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	f := Failures{Level: slog.LevelError, Failed: "flush failed", Recovered: "flushed again"}
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	down := errors.New("store down")
	lines := func() []string { return strings.Split(strings.TrimSpace(buf.String()), "\n") }
	f.Report(log, t0, nil) // success before any failure: nothing
	if buf.Len() != 0 {
		t.Fatalf("a success logged %q", buf.String())
	}
	for i := range 5 {
		f.Report(log, t0.Add(time.Duration(i)*time.Second), down)
	}
	if l := lines(); len(l) != 1 || !strings.Contains(l[0], "level=ERROR") || !strings.Contains(l[0], `msg="flush failed" err="store down"`) {
		t.Fatalf("five failures in 5 s logged %q, want one ERROR line", l)
	}
	f.Report(log, t0.Add(time.Minute), down)
	if l := lines(); len(l) != 2 || !strings.Contains(l[1], "failures=6") || !strings.Contains(l[1], "since=2026-11-25T12:00:00.000Z") {
		t.Fatalf("a minute on: %q, want a second line with the count", l)
	}
	f.Report(log, t0.Add(time.Minute+time.Second), down)
	f.Report(log, t0.Add(90*time.Second), nil)
	l := lines()
	if len(l) != 3 || !strings.Contains(l[2], `level=INFO msg="flushed again" failures=7 after=1m30s`) {
		t.Fatalf("recovery: %q", l)
	}
	// A new run of failures starts over.
	f.Report(log, t0.Add(2*time.Minute), down)
	if l := lines(); len(l) != 4 || strings.Contains(l[3], "failures=") {
		t.Fatalf("a new failure after recovery: %q", l)
	}
}
