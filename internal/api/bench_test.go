package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/usage"
)

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}
func (w *discardWriter) WriteHeader(code int) { w.status = code }

// BenchmarkVerifyHandler measures POST /v1/verify through the whole handler
// chain with the shipped defaults (request id, access log, metrics,
// authentication, decoding, verification, usage counting, encoding),
// without the network; the log goes to a discarding text handler. The
// usage=off case is the same chain with usage counting turned off
// (--usage=false), for the cost of counting; both report the raw usage
// events dropped, which must be 0.
func BenchmarkVerifyHandler(b *testing.B) {
	for _, on := range []bool{true, false} {
		name := "usage=on"
		if !on {
			name = "usage=off"
		}
		b.Run(name, func(b *testing.B) { benchmarkVerifyHandler(b, on) })
	}
}

func benchmarkVerifyHandler(b *testing.B, withUsage bool) {
	t := &testing.T{}
	st := newIsoStack(t)
	ctx := context.Background()
	var rec *usage.Recorder
	if withUsage {
		rec = usage.New(usage.Config{Store: st.svc.Store})
		rec.Start()
		defer rec.Close(ctx)
	}
	st.srv = New(Config{Service: st.svc, Engine: st.engine, Store: st.svc.Store, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Usage: rec})
	h := st.srv.Handler()
	_, verifier, err := st.svc.CreateToken(ctx, manage.SystemCaller(st.tokB.WorkspaceID), &keyward.Token{Name: "v", Scopes: []string{keyward.ScopeVerify}})
	if err != nil {
		b.Fatal(err)
	}
	body := `{"token":"` + st.textB + `","scopes":["orders:read"]}`
	req, _ := http.NewRequest("POST", "http://keyward/v1/verify", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("Authorization", "Bearer "+verifier)
	req.Header.Set("Content-Type", "application/json")
	rd := strings.NewReader(body)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatal(w.status)
		}
	}
	b.StopTimer()
	if rec != nil {
		if err := rec.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		stats := rec.Stats()
		if stats.Recorded < uint64(b.N) {
			b.Fatalf("recorded %d of %d verifications", stats.Recorded, b.N)
		}
		b.ReportMetric(float64(stats.Dropped), "dropped")
	}
}

// BenchmarkVerifyUsageCost is the cost of usage counting as a ratio,
// measured so that a busy machine weighs on both sides alike: the same
// verify request goes alternately, in chunks of 1,000, through a handler
// chain that counts usage and one that does not (same engine, same
// store). It reports each side's ns/verify and on/off, the figure PRODUCT
// §8 bounds at 1.05.
func BenchmarkVerifyUsageCost(b *testing.B) {
	t := &testing.T{}
	st := newIsoStack(t)
	ctx := context.Background()
	rec := usage.New(usage.Config{Store: st.svc.Store})
	rec.Start()
	defer rec.Close(ctx)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	on := New(Config{Service: st.svc, Engine: st.engine, Store: st.svc.Store, Log: logger, Usage: rec}).Handler()
	off := New(Config{Service: st.svc, Engine: st.engine, Store: st.svc.Store, Log: logger}).Handler()
	_, verifier, err := st.svc.CreateToken(ctx, manage.SystemCaller(st.tokB.WorkspaceID), &keyward.Token{Name: "v", Scopes: []string{keyward.ScopeVerify}})
	if err != nil {
		b.Fatal(err)
	}
	body := `{"token":"` + st.textB + `","scopes":["orders:read"]}`
	req, _ := http.NewRequest("POST", "http://keyward/v1/verify", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("Authorization", "Bearer "+verifier)
	req.Header.Set("Content-Type", "application/json")
	rd := strings.NewReader(body)
	run := func(h http.Handler, n int) time.Duration {
		start := time.Now()
		for range n {
			rd.Reset(body)
			req.Body = io.NopCloser(rd)
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Fatal(w.status)
			}
		}
		return time.Since(start)
	}
	const chunk = 1000
	var tOn, tOff time.Duration
	var n int
	for b.Loop() {
		tOn += run(on, chunk)
		tOff += run(off, chunk)
		n += chunk
	}
	b.StopTimer()
	if err := rec.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(tOn.Nanoseconds())/float64(n), "ns/verify-usage-on")
	b.ReportMetric(float64(tOff.Nanoseconds())/float64(n), "ns/verify-usage-off")
	b.ReportMetric(float64(tOn)/float64(tOff), "on/off")
	b.ReportMetric(float64(rec.Stats().Dropped), "dropped")
}
