package dashboard

import (
	"context"
	"net/http"
	"strings"
	"testing"

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
