package dashboard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// panickyAccounts is a real account store whose HasOwner panics, as a bug
// in a page or a store would.
type panickyAccounts struct{ keyward.AccountStore }

func (panickyAccounts) HasOwner(context.Context) (bool, error) { panic("boom") }

// TestPanicLogged checks that a page that panics answers 500 and is logged
// as any other request: its error line, with the panic's stack, and its
// access-log line, both under the request id it answered with.
func TestPanicLogged(t *testing.T) {
	e := newEnvWrapped(t, "", nil, func(a keyward.AccountStore) keyward.AccountStore { return panickyAccounts{a} })
	b := e.browser()
	b.hdr.Set("X-Request-Id", "panic-1")
	status, body := b.get("/signin")
	wantStatus(t, status, http.StatusInternalServerError, body)
	if got := b.last.Header.Get("X-Request-Id"); got != "panic-1" {
		t.Errorf("X-Request-Id = %q, want panic-1", got)
	}
	logged := e.log.String()
	for _, want := range []string{
		`msg="dashboard handler panicked" request_id=panic-1 path=/signin panic=boom stack=`,
		"panickyAccounts.HasOwner", // the stack names where it panicked
		`msg="dashboard request" request_id=panic-1 method=GET path=/signin status=500`,
	} {
		if !strings.Contains(logged, want) {
			t.Errorf("the log has no line with %q:\n%s", want, logged)
		}
	}
}

// statusObserver records the statuses the dashboard reports for metrics.
type statusObserver struct {
	mu       sync.Mutex
	statuses []int
}

func (o *statusObserver) ObserveDashboard(_ string, status int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.statuses = append(o.statuses, status)
}

// TestPanicAfterHeader checks that a page that panics after its answer
// began, or cuts it short with http.ErrAbortHandler, gets its connection
// cut instead of an error text appended to the started body (which a
// client could take for the whole page), and is recorded as the 500 it is
// in the access log and the metrics alike, not as the 200 its header said
// nor left out.
func TestPanicAfterHeader(t *testing.T) {
	for _, tt := range []struct {
		name   string
		v      any
		header bool // the header went out before the panic
		logged bool // the panic has its error line
	}{
		{"Panic", "boom", true, true},
		{"Abort", http.ErrAbortHandler, true, false},
		{"AbortFirst", http.ErrAbortHandler, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			obs := &statusObserver{}
			e.dash.obs = obs
			// More than net/http buffers: the header and a first part
			// go out before the panic.
			part := "<p>" + strings.Repeat("the first part of a page. ", 1000)
			page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header {
					io.WriteString(w, part)
					http.NewResponseController(w).Flush()
				}
				panic(tt.v)
			})
			srv := httptest.NewServer(e.dash.requestID(e.dash.accessLog(e.dash.recoverPanics(page))))
			t.Cleanup(srv.Close)
			req, _ := http.NewRequest("GET", srv.URL+"/cut", nil)
			req.Header.Set("X-Request-Id", "cut-1")
			resp, err := http.DefaultClient.Do(req)
			if !tt.header {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("status %d, want the connection cut", resp.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || err == nil {
					t.Fatalf("status %d, body read error %v: want the 200 the header said and a cut body", resp.StatusCode, err)
				}
				if string(body) != part {
					t.Errorf("body ends %q: want what the page wrote, nothing appended", body[max(0, len(body)-100):])
				}
			}
			// The access-log line comes before net/http cuts the
			// connection: it is there once the client saw the cut.
			logged := e.log.String()
			if want := `msg="dashboard request" request_id=cut-1 method=GET path=/cut status=500 `; !strings.Contains(logged, want) {
				t.Errorf("the log has no line with %q:\n%s", want, logged)
			}
			if got := strings.Contains(logged, `msg="dashboard handler panicked" request_id=cut-1`); got != tt.logged {
				t.Errorf("panic's error line logged: %v, want %v:\n%s", got, tt.logged, logged)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if !slices.Equal(obs.statuses, []int{http.StatusInternalServerError}) {
				t.Errorf("observed %v, want [500]", obs.statuses)
			}
		})
	}
}
