package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
)

// hangStore is a store whose FindWorkspace hangs until its caller gives
// up, as a PostgreSQL behind a dead connection does, and then fails with
// err (nil: the context's error; SQLite's driver says "interrupted").
type hangStore struct {
	keyward.Store
	err error
}

func (h hangStore) FindWorkspace(ctx context.Context, id string) (*keyward.Workspace, error) {
	<-ctx.Done()
	if h.err != nil {
		return nil, h.err
	}
	return nil, ctx.Err()
}

// TestRequestEndsFirst: when a request's context ends before the store
// answers (serve gives each request a deadline below the server's write
// timeout; or the client left), the answer is 503 unavailable with
// Retry-After, logged as a warning, not an internal error.
func TestRequestEndsFirst(t *testing.T) {
	s := newStack(t)
	id, _ := s.newToken("target")
	keys, err := secret.NewKeyring(serverSecret)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	deadline := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 50*time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		err  error
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"deadline", nil, deadline},
		{"client gone", nil, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}},
		{"deadline, the store's own error", errors.New("sqlite: find workspace: interrupted (9)"), deadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := hangStore{s.db, tc.err}
			svc := &manage.Service{Store: hs, Keys: keys, Engine: s.engine, Now: s.clock.Now}
			h := api.New(api.Config{Service: svc, Engine: s.engine, Store: hs, Now: s.clock.Now, Version: "test",
				Log: slog.New(slog.NewTextHandler(&logs, nil))}).Handler()
			logs.Reset()
			ctx, cancel := tc.ctx()
			defer cancel()
			req := httptest.NewRequest("POST", "/v1/tokens/"+id+"/rotate", strings.NewReader("{}")).WithContext(ctx)
			req.Header.Set("Authorization", "Bearer "+s.root)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			done := make(chan struct{})
			go func() { h.ServeHTTP(rec, req); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("no answer after the request's context ended")
			}
			var p struct{ Code string }
			json.Unmarshal(rec.Body.Bytes(), &p)
			if rec.Code != http.StatusServiceUnavailable || p.Code != keyward.EUNAVAILABLE || rec.Header().Get("Retry-After") == "" {
				t.Errorf("status %d, code %q, Retry-After %q; want 503 unavailable with Retry-After\n%s", rec.Code, p.Code, rec.Header().Get("Retry-After"), rec.Body)
			}
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("logged as an error:\n%s", logs.String())
			}
		})
	}
}

// slowTokens is a store whose token listing takes its time.
type slowTokens struct {
	keyward.Store
	delay time.Duration
}

func (s slowTokens) FindTokens(ctx context.Context, f keyward.TokenFilter) ([]*keyward.Token, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.FindTokens(ctx, f)
}

// TestInventoryOutlivesRequestDeadline: the CSV inventory holds every
// token, however long the pages take in all; the request's deadline
// bounds each page, not the whole.
func TestInventoryOutlivesRequestDeadline(t *testing.T) {
	s := newStack(t)
	const n = 1100 // three pages of 500
	for i := range n {
		if _, _, err := s.svc.CreateToken(context.Background(), manage.SystemCaller(s.ws.ID), &keyward.Token{Name: fmt.Sprintf("t%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := secret.NewKeyring(serverSecret)
	if err != nil {
		t.Fatal(err)
	}
	st := slowTokens{s.db, 80 * time.Millisecond}
	svc := &manage.Service{Store: st, Keys: keys, Engine: s.engine, Now: s.clock.Now}
	h := api.New(api.Config{Service: svc, Engine: s.engine, Store: st, Now: s.clock.Now, Version: "test"}).Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// serve's deadline, shortened: less than the three pages take.
		ctx, cancel := context.WithTimeout(r.Context(), 150*time.Millisecond)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/v1/reports/tokens?format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+s.root)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rows, err := csv.NewReader(res.Body).ReadAll()
	if err != nil {
		t.Fatalf("the inventory was cut: %v (after %d rows)", err, len(rows))
	}
	if want := n + 2; len(rows) != want { // the header, the root token, n more
		t.Errorf("%d rows, want %d", len(rows), want)
	}
}
