package logfmt

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// pieces that strings are made of: plain ASCII, and everything the
// standard handlers quote or escape.
var pieces = []string{"a", "Z", "9", "-", "/", ":", ".", "_", "<", ">", "&", "'", "~", "{", " ", "=", `"`, `\`, "\n", "\t", "\x00", "\x7f", "µ", "é", "\u2028", "\u00a0", "\xff", "日本"}

func randString(rng *rand.Rand) string {
	n := rng.IntN(6)
	if rng.IntN(3) > 0 {
		// Mostly plain, as real lines are.
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(11)])
		}
		return b.String()
	}
	var b strings.Builder
	for range n {
		b.WriteString(pieces[rng.IntN(len(pieces))])
	}
	return b.String()
}

func randKey(rng *rand.Rand) string {
	keys := []string{"request_id", "path", "status", "a b", "k=v", "", "ü", "client_ip"}
	return keys[rng.IntN(len(keys))]
}

func randAttr(rng *rand.Rand) slog.Attr {
	k := randKey(rng)
	switch rng.IntN(10) {
	case 0:
		return slog.Int(k, rng.IntN(1000)-500)
	case 1:
		return slog.Uint64(k, rng.Uint64())
	case 2:
		return slog.Bool(k, rng.IntN(2) == 0)
	case 3:
		return slog.Duration(k, time.Duration(rng.Int64N(int64(time.Hour))))
	case 4:
		return slog.Float64(k, rng.Float64())
	case 5:
		return slog.Any(k, errors.New(randString(rng)))
	case 6:
		return slog.Group(k, slog.String("x", "y"))
	case 7:
		return slog.Time(k, time.Unix(rng.Int64N(2e9), rng.Int64N(1e9)))
	default:
		return slog.String(k, randString(rng))
	}
}

// base is near the times of the records that follow one another, so that
// many fall in the second the handler formatted last.
var base = time.Unix(1_795_000_000, 0)

func randTime(rng *rand.Rand) time.Time {
	switch rng.IntN(9) {
	case 6, 7:
		return base.Add(time.Duration(rng.Int64N(int64(3 * time.Second)))).UTC()
	case 8:
		return base.Add(time.Duration(rng.Int64N(int64(3*time.Second))) / 1000 * 1000).In(time.FixedZone("Y", -7*3600))
	case 0:
		return time.Time{}
	case 1:
		return time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC)
	case 2:
		return time.Unix(rng.Int64N(2e9), rng.Int64N(1e9)).In(time.FixedZone("X", 3600+1800))
	case 3:
		return time.Unix(rng.Int64N(2e9), 0).UTC() // whole seconds
	default:
		return time.Unix(rng.Int64N(2e9), rng.Int64N(1e9)).UTC()
	}
}

// TestSameAsStandard logs random records through both handlers, in both
// formats, and wants the same bytes.
func TestSameAsStandard(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2, slog.LevelError + 4}
	for _, json := range []bool{false, true} {
		var got, want bytes.Buffer
		opts := &slog.HandlerOptions{Level: slog.LevelDebug}
		var fast, std slog.Handler
		if json {
			fast, std = NewJSON(&got, opts), slog.NewJSONHandler(&want, opts)
		} else {
			fast, std = NewText(&got, opts), slog.NewTextHandler(&want, opts)
		}
		fastN := 0
		for i := range 20000 {
			msg := randString(rng)
			if i%2 == 0 {
				msg = "gateway request"
			}
			r := slog.NewRecord(randTime(rng), levels[rng.IntN(len(levels))], msg, 0)
			for range rng.IntN(10) {
				r.AddAttrs(randAttr(rng))
			}
			if _, ok := fast.(*Handler).appendRecord(nil, r); ok {
				fastN++
			}
			got.Reset()
			want.Reset()
			errF := fast.Handle(context.Background(), r.Clone())
			errS := std.Handle(context.Background(), r.Clone())
			if got.String() != want.String() || (errF == nil) != (errS == nil) {
				t.Fatalf("json=%v record %d:\n got %q (%v)\nwant %q (%v)", json, i, got.String(), errF, want.String(), errS)
			}
			// HandleAttrs writes the same line from the record's parts.
			var attrs []slog.Attr
			r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
			got.Reset()
			errF = HandleAttrs(context.Background(), fast, r.Time, r.Level, r.Message, attrs...)
			if got.String() != want.String() || (errF == nil) != (errS == nil) {
				t.Fatalf("HandleAttrs, json=%v record %d:\n got %q (%v)\nwant %q (%v)", json, i, got.String(), errF, want.String(), errS)
			}
		}
		// The comparison is worth something only if the fast path wrote
		// many of the lines.
		if fastN < 2000 {
			t.Errorf("json=%v: the fast path wrote %d lines of 20000", json, fastN)
		}
		t.Logf("json=%v: %d of 20000 lines by the fast path", json, fastN)
	}
}

// TestFastPathTaken checks that an access-log line is written by the fast
// path (no allocation beyond the standard handler's would show it; the
// pooled buffer makes it allocation-free).
func TestFastPathTaken(t *testing.T) {
	var buf bytes.Buffer
	h := NewText(&buf, nil)
	r := slog.NewRecord(time.Date(2026, 11, 23, 16, 31, 59, 352918000, time.UTC), slog.LevelInfo, "gateway request", 0)
	r.AddAttrs(slog.String("request_id", "req_1"), slog.String("path", "/orders/1"), slog.Int("status", 200),
		slog.Duration("duration", 283381*time.Nanosecond), slog.String("route", ""))
	allocs := testing.AllocsPerRun(100, func() {
		buf.Reset()
		h.Handle(context.Background(), r)
	})
	const want = `time=2026-11-23T16:31:59.352Z level=INFO msg="gateway request" request_id=req_1 path=/orders/1 status=200 duration=283.381µs route=""` + "\n"
	if buf.String() != want {
		t.Fatalf("got  %q\nwant %q", buf.String(), want)
	}
	if allocs > 0 {
		t.Errorf("%v allocations per line, want 0", allocs)
	}
}

func TestLevelAndDerived(t *testing.T) {
	var buf bytes.Buffer
	h := NewJSON(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelWarn) {
		t.Fatal("Enabled does not follow the level")
	}
	l := slog.New(h).With("node", "a").WithGroup("g")
	l.Warn("hi", "k", "v")
	if got := buf.String(); !strings.Contains(got, `"node":"a","g":{"k":"v"}`) {
		t.Fatalf("derived logger wrote %q", got)
	}
}

// TestConcurrentLines writes from many goroutines through both paths
// (plain lines and lines the standard handler takes) and wants whole
// lines only.
func TestConcurrentLines(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(NewText(&buf, nil))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if i%2 == 0 {
					l.Info("plain", "g", g, "i", i)
				} else {
					l.Info("needs\nescaping", "g", g, "i", i)
				}
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "time=") || !strings.Contains(line, " i=") {
			t.Fatalf("broken line %q", line)
		}
	}
}
