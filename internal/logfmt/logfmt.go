// Package logfmt writes log lines exactly as log/slog's TextHandler and
// JSONHandler do, at a fraction of their cost for the records a server
// logs on every request: a message and flat attributes whose strings are
// plain ASCII, with string, integer, boolean and duration values. Every
// other record (groups, other kinds, strings that need quoting rules
// beyond wrapping, derived handlers) goes to the standard handler, so that
// the output never differs from it.
package logfmt

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Handler is a slog.Handler; see the package comment.
type Handler struct {
	std   slog.Handler
	w     *lockedWriter // nil: no fast path
	json  bool
	level slog.Leveler
	// clock holds the date, time and zone of the last second a line was
	// written in: formatting them anew for every line costs more than
	// the rest of the line.
	clock atomic.Pointer[second]
}

// second is a formatted second of time, in a location.
type second struct {
	unix int64
	loc  *time.Location
	date []byte // 2006-01-02T15:04:05
	zone []byte // Z or -07:00
}

// appendTime appends t as RFC 3339 with a fraction of exactly three
// digits (text), or with nanoseconds without trailing zeros (JSON, as
// time.RFC3339Nano).
func (h *Handler) appendTime(b []byte, t time.Time) []byte {
	s := h.clock.Load()
	if s == nil || s.unix != t.Unix() || s.loc != t.Location() {
		f := t.Truncate(time.Second).AppendFormat(nil, time.RFC3339)
		const n = len("2006-01-02T15:04:05")
		s = &second{unix: t.Unix(), loc: t.Location(), date: f[:n], zone: f[n:]}
		h.clock.Store(s)
	}
	b = append(b, s.date...)
	ns := t.Nanosecond()
	if !h.json {
		ms := ns / 1e6
		b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	} else if ns != 0 {
		var d [10]byte
		d[0] = '.'
		for i := 9; i > 0; i-- {
			d[i] = byte('0' + ns%10)
			ns /= 10
		}
		end := 10
		for d[end-1] == '0' {
			end--
		}
		b = append(b, d[:end]...)
	}
	return append(b, s.zone...)
}

// lockedWriter serializes the writes of both paths, so that lines never
// interleave whatever the writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// NewText returns a handler whose lines are those of
// slog.NewTextHandler(w, opts).
func NewText(w io.Writer, opts *slog.HandlerOptions) *Handler {
	lw := &lockedWriter{w: w}
	return newHandler(lw, false, opts, slog.NewTextHandler(lw, opts))
}

// NewJSON returns a handler whose lines are those of
// slog.NewJSONHandler(w, opts).
func NewJSON(w io.Writer, opts *slog.HandlerOptions) *Handler {
	lw := &lockedWriter{w: w}
	return newHandler(lw, true, opts, slog.NewJSONHandler(lw, opts))
}

func newHandler(w *lockedWriter, json bool, opts *slog.HandlerOptions, std slog.Handler) *Handler {
	h := &Handler{std: std, w: w, json: json, level: slog.LevelInfo}
	if opts != nil {
		if opts.Level != nil {
			h.level = opts.Level
		}
		if opts.AddSource || opts.ReplaceAttr != nil {
			h.w = nil // no fast path: every record goes to std
		}
	}
	return h
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs implements slog.Handler; the derived handler is the standard
// one.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler { return h.std.WithAttrs(as) }

// WithGroup implements slog.Handler; the derived handler is the standard
// one.
func (h *Handler) WithGroup(name string) slog.Handler { return h.std.WithGroup(name) }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if h.w != nil && plain(r.Message, true) {
		bp := bufPool.Get().(*[]byte)
		b, ok := h.appendRecord((*bp)[:0], r)
		if err := h.write(bp, b, ok); ok {
			return err
		}
	}
	return h.std.Handle(ctx, r)
}

// HandleAttrs has h handle slog.NewRecord(t, level, msg, 0) with attrs
// added; a Handler of this package writes the line without building the
// record (nor its storage for attributes) when its fast path takes it.
// It is for a caller that logs a line per request and has checked
// Enabled; attrs is not retained.
func HandleAttrs(ctx context.Context, h slog.Handler, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) error {
	if lh, ok := h.(*Handler); ok {
		if lh.w != nil && plain(msg, true) {
			bp := bufPool.Get().(*[]byte)
			b, ok := lh.appendHead((*bp)[:0], t, level, msg)
			for i := 0; ok && i < len(attrs); i++ {
				b, ok = lh.appendAttr(b, attrs[i])
			}
			if err := lh.write(bp, lh.appendTail(b), ok); ok {
				return err
			}
		}
		h = lh.std
	}
	r := slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(attrs...)
	return h.Handle(ctx, r)
}

// write writes the line b when ok (the fast path took it), and gives the
// buffer bp back to the pool.
func (h *Handler) write(bp *[]byte, b []byte, ok bool) error {
	var err error
	if ok {
		_, err = h.w.Write(b)
	}
	if cap(b) <= 64<<10 {
		*bp = b
		bufPool.Put(bp)
	}
	return err
}

// appendRecord appends r's line to b; ok is false when r has something
// the fast path leaves to the standard handler.
func (h *Handler) appendRecord(b []byte, r slog.Record) (_ []byte, ok bool) {
	if b, ok = h.appendHead(b, r.Time, r.Level, r.Message); !ok {
		return b, false
	}
	r.Attrs(func(a slog.Attr) bool {
		b, ok = h.appendAttr(b, a)
		return ok
	})
	if !ok {
		return b, false
	}
	return h.appendTail(b), true
}

// appendHead appends a line's time, level and message (msg is plain).
func (h *Handler) appendHead(b []byte, t time.Time, level slog.Level, msg string) (_ []byte, ok bool) {
	if y := t.Year(); !t.IsZero() && (y < 0 || y >= 10000) {
		return b, false // the standard handlers' own ways with such years
	}
	if h.json {
		b = append(b, '{')
		if !t.IsZero() {
			b = append(b, `"time":"`...)
			b = h.appendTime(b, t)
			b = append(b, `",`...)
		}
		b = append(b, `"level":"`...)
		b = append(b, level.String()...)
		b = append(b, `","msg":"`...)
		b = append(b, msg...)
		b = append(b, '"')
	} else {
		if !t.IsZero() {
			b = append(b, "time="...)
			b = h.appendTime(b, t)
			b = append(b, ' ')
		}
		b = append(b, "level="...)
		b = append(b, level.String()...)
		b = append(b, " msg="...)
		b = appendText(b, msg)
	}
	return b, true
}

// appendTail ends a line.
func (h *Handler) appendTail(b []byte) []byte {
	if h.json {
		b = append(b, '}')
	}
	return append(b, '\n')
}

func (h *Handler) appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if !plain(a.Key, false) {
		return b, false
	}
	if h.json {
		b = append(b, `,"`...)
		b = append(b, a.Key...)
		b = append(b, `":`...)
	} else {
		b = append(b, ' ')
		b = append(b, a.Key...)
		b = append(b, '=')
	}
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		s := v.String()
		if !plain(s, true) {
			return b, false
		}
		if h.json {
			b = append(b, '"')
			b = append(b, s...)
			b = append(b, '"')
		} else {
			b = appendText(b, s)
		}
	case slog.KindInt64:
		b = strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		b = strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindBool:
		b = strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		if h.json {
			b = strconv.AppendInt(b, int64(v.Duration()), 10)
		} else {
			b = append(b, v.Duration().String()...)
		}
	default:
		return b, false
	}
	return b, true
}

// plain reports whether s is printable ASCII without a double quote or a
// backslash: a JSON string without escapes, and a text value that at most
// needs wrapping in quotes. Keys (spaceOK false) must need no quotes at
// all, nor be empty.
func plain(s string, spaceOK bool) bool {
	if s == "" {
		return spaceOK
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '"' || c == '\\' || !spaceOK && (c == ' ' || c == '=') {
			return false
		}
	}
	return true
}

// appendText appends a plain string as the text handler does: as is, or
// quoted when empty or holding a space or an equals sign.
func appendText(b []byte, s string) []byte {
	quote := s == ""
	for i := 0; i < len(s) && !quote; i++ {
		quote = s[i] == ' ' || s[i] == '='
	}
	if !quote {
		return append(b, s...)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
