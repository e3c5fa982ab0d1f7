package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
)

// TestTokenExpiry changes a token's expiry from its page: to a preset, a
// date, or none where the policy allows it, with the API's checks and its
// token.update event; bad input is answered next to the field with what
// was typed; viewers get no form, another member's or workspace's token
// is not found.
func TestTokenExpiry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ann := e.user("ann@example.com", keyward.RoleOwner)
	mia := e.user("mia@example.com", keyward.RoleMember)
	e.user("vic@example.com", keyward.RoleViewer)
	now := e.clock.Now().UTC()
	in30 := now.Add(30 * day)
	create := func(by *keyward.User, wsID, name string) *keyward.Token {
		t.Helper()
		c := manage.SystemCaller(wsID)
		if by != nil {
			c = manage.MemberCaller(by.ID, wsID)
		}
		tok, _, err := e.svc.CreateToken(ctx, c, &keyward.Token{Name: name, Scopes: []string{"orders:read"}, ExpiresAt: &in30})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	stored := func(id string) *time.Time {
		t.Helper()
		tok, err := e.store.FindToken(ctx, e.ws.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		return tok.ExpiresAt
	}
	updates := func(id string) []*keyward.AuditEvent {
		t.Helper()
		evs, err := e.store.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: e.ws.ID, Target: id, Action: "token.update"})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	setPolicy := func(max time.Duration, required bool) {
		t.Helper()
		if err := e.store.PutWorkspaceSettings(ctx, &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID, MaxTokenLifetime: max, ExpiryRequired: required}); err != nil {
			t.Fatal(err)
		}
	}
	fieldError := func(t *testing.T, body string) string {
		t.Helper()
		m := regexp.MustCompile(`<p class="field-error" id="expiry-error">([^<]*)</p>`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no message next to the expiry; page:\n%s", body)
		}
		return unescape(m[1])
	}
	const form = `action="/tokens/`

	b := e.browser()
	b.signIn("ann@example.com")
	tok := create(ann, e.ws.ID, "ci")
	path := "/tokens/" + tok.ID + "/expiry"

	t.Run("OKPreset", func(t *testing.T) {
		_, page := b.get("/tokens/" + tok.ID)
		wantText(t, page, form+tok.ID+`/expiry"`, `value="90" id="expiry-90">`, `value="never" id="expiry-never">`)
		// Nothing is chosen for the user: a careless click must not
		// re-date the token.
		if strings.Contains(page, `checked`) {
			t.Errorf("the expiry form has a choice made:\n%s", page)
		}
		status, body := b.post(path, url.Values{})
		wantStatus(t, status, http.StatusBadRequest, body)
		if got := fieldError(t, body); got != "Choose when the token expires." {
			t.Errorf("no choice: %q", got)
		}
		if got := stored(tok.ID); got == nil || !got.Equal(tok.ExpiresAt.UTC()) {
			t.Fatalf("expires_at %v after a post without a choice, want %v", got, tok.ExpiresAt)
		}
		status, body = b.post(path, url.Values{"expiry": {"7"}})
		wantStatus(t, status, http.StatusOK, body)
		if b.path() != "/tokens/"+tok.ID {
			t.Fatalf("after the change: at %s", b.path())
		}
		want := now.Add(7 * day)
		if got := stored(tok.ID); got == nil || !got.Equal(want) {
			t.Fatalf("expires_at %v, want %v", got, want)
		}
		evs := updates(tok.ID)
		if len(evs) != 1 || evs[0].Actor.Type != keyward.ActorMember || evs[0].Actor.ID != ann.ID ||
			string(evs[0].Changes) != `{"expires_at":{"from":"2026-04-13T09:00:00Z","to":"2026-03-21T09:00:00Z"}}` {
			t.Fatalf("token.update events %+v", evs)
		}
	})
	t.Run("OKDate", func(t *testing.T) {
		b.get("/tokens/" + tok.ID)
		status, body := b.post(path, url.Values{"expiry": {"custom"}, "expires_on": {"2026-05-01"}})
		wantStatus(t, status, http.StatusOK, body)
		want := time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC) // valid through May 1st
		if got := stored(tok.ID); got == nil || !got.Equal(want) {
			t.Fatalf("expires_at %v, want %v", got, want)
		}
	})
	t.Run("OKNever", func(t *testing.T) {
		b.get("/tokens/" + tok.ID)
		status, body := b.post(path, url.Values{"expiry": {"never"}})
		wantStatus(t, status, http.StatusOK, body)
		if got := stored(tok.ID); got != nil {
			t.Fatalf("expires_at %v, want none", got)
		}
		evs := updates(tok.ID)
		if len(evs) != 3 || string(evs[0].Changes) != `{"expires_at":{"from":"2026-05-02T00:00:00Z","to":null}}` {
			t.Fatalf("token.update events %+v, the newest %s", evs, evs[0].Changes)
		}
	})
	t.Run("ErrInput", func(t *testing.T) {
		setPolicy(30*day, false)
		defer setPolicy(0, false)
		tests := []struct {
			name string
			form url.Values
			want string
		}{
			{"ErrNoChoice", url.Values{}, "Choose when the token expires."},
			{"ErrBadDate", url.Values{"expiry": {"custom"}, "expires_on": {"01/05/2026"}}, "Enter the date as YYYY-MM-DD, such as 2026-04-13."},
			{"ErrPastDate", url.Values{"expiry": {"custom"}, "expires_on": {"2026-03-13"}}, "The expiry date must be today or later (UTC)."},
			{"ErrPolicyNever", url.Values{"expiry": {"never"}}, "the workspace policy requires an expiry"},
			{"ErrPolicyPreset", url.Values{"expiry": {"90"}}, "the workspace policy allows at most 30 days"},
			{"ErrPolicyDate", url.Values{"expiry": {"custom"}, "expires_on": {"2026-04-13"}}, "The workspace policy allows at most 30 days: the latest date it allows is 2026-04-12."},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				b.get("/tokens/" + tok.ID)
				status, body := b.post(path, tt.form)
				wantStatus(t, status, http.StatusBadRequest, body)
				if got := fieldError(t, body); got != tt.want {
					t.Errorf("message %q, want %q", got, tt.want)
				}
				// What was typed stays.
				if d := tt.form.Get("expires_on"); d != "" {
					wantText(t, body, `value="custom" id="expiry-custom" checked`, `name="expires_on" type="date" value="`+d+`"`)
				}
			})
		}
		if got := stored(tok.ID); got != nil {
			t.Errorf("a refused change stored %v", got)
		}
		if n := len(updates(tok.ID)); n != 3 {
			t.Errorf("%d token.update events, want 3", n)
		}
		// The policy as the form shows it: no never, presets within 30 days.
		_, page := b.get("/tokens/" + tok.ID)
		if strings.Contains(page, `id="expiry-never"`) || strings.Contains(page, `id="expiry-90"`) {
			t.Error("the form offers never or 90 days under a 30-day policy")
		}
		wantText(t, page, "The workspace policy requires an expiry within 30 days.", `max="2026-04-12"`)
		setPolicy(0, false)
		// Past what the service stores at all: its own message, no change.
		b.get("/tokens/" + tok.ID)
		status, body := b.post(path, url.Values{"expiry": {"custom"}, "expires_on": {"9999-12-31"}})
		wantStatus(t, status, http.StatusBadRequest, body)
		if got := fieldError(t, body); !strings.HasPrefix(got, "expires_at must be before ") {
			t.Errorf("message %q", got)
		}
	})
	t.Run("ErrNoCSRF", func(t *testing.T) {
		status, body := b.post(path, url.Values{"expiry": {"7"}, "csrf": {""}})
		wantStatus(t, status, http.StatusForbidden, body)
		if got := stored(tok.ID); got != nil {
			t.Errorf("a form without CSRF token stored %v", got)
		}
	})
	t.Run("ErrRevoked", func(t *testing.T) {
		gone := create(ann, e.ws.ID, "gone")
		if _, err := e.svc.RevokeToken(ctx, manage.SystemCaller(e.ws.ID), gone.ID, "done"); err != nil {
			t.Fatal(err)
		}
		_, page := b.get("/tokens/" + gone.ID)
		if strings.Contains(page, form+gone.ID+`/expiry"`) {
			t.Error("a revoked token's page offers a new expiry")
		}
		status, body := b.post("/tokens/"+gone.ID+"/expiry", url.Values{"expiry": {"7"}})
		wantStatus(t, status, http.StatusConflict, body)
		wantText(t, body, `<p id="error-message">The token is revoked; revocation is final.</p>`)
	})
	t.Run("ErrOtherWorkspace", func(t *testing.T) {
		other := e.memberOf(t, "other", ann, keyward.RoleOwner)
		foreign := create(nil, other.ID, "theirs")
		b.get("/tokens/" + tok.ID)
		status, body := b.post("/tokens/"+foreign.ID+"/expiry", url.Values{"expiry": {"7"}})
		wantStatus(t, status, http.StatusNotFound, body)
		got, err := e.store.FindToken(ctx, other.ID, foreign.ID)
		if err != nil || got.ExpiresAt == nil || !got.ExpiresAt.Equal(in30) {
			t.Errorf("the other workspace's token: %+v, %v", got, err)
		}
	})
	t.Run("ErrViewer", func(t *testing.T) {
		v := e.browser()
		v.signIn("vic@example.com")
		_, page := v.get("/tokens/" + tok.ID)
		if strings.Contains(page, form+tok.ID+`/expiry"`) {
			t.Error("a viewer is offered the expiry form")
		}
		status, body := v.post(path, url.Values{"expiry": {"7"}})
		wantStatus(t, status, http.StatusForbidden, body)
		wantText(t, body, "Viewers cannot change tokens.")
		if got := stored(tok.ID); got != nil {
			t.Errorf("a viewer's change stored %v", got)
		}
	})
	t.Run("Member", func(t *testing.T) {
		m := e.browser()
		m.signIn("mia@example.com")
		m.get("/tokens")
		status, body := m.post(path, url.Values{"expiry": {"7"}})
		wantStatus(t, status, http.StatusNotFound, body) // ann's token
		own := create(mia, e.ws.ID, "mine")
		m.get("/tokens/" + own.ID)
		status, body = m.post("/tokens/"+own.ID+"/expiry", url.Values{"expiry": {"365"}})
		wantStatus(t, status, http.StatusOK, body)
		if got := stored(own.ID); got == nil || !got.Equal(now.Add(365*day)) {
			t.Errorf("expires_at %v, want %v", got, now.Add(365*day))
		}
	})
}
