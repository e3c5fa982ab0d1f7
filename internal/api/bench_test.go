package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
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
// authentication, decoding, verification, encoding), without the network;
// the log goes to a discarding text handler.
func BenchmarkVerifyHandler(b *testing.B) {
	t := &testing.T{}
	st := newIsoStack(t)
	ctx := context.Background()
	st.srv = New(Config{Service: st.svc, Engine: st.engine, Store: st.svc.Store, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
}
