package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
)

// hookAccounts runs a function once, right before the next CreateSession
// (arm): between a sign-in's check of the credentials and its session,
// where a change of the credentials used to leave the session standing;
// or right before the next UpdateUser (armUpdate); or right before the
// next UpdateSession (armSession).
type hookAccounts struct {
	keyward.AccountStore
	mu                                  sync.Mutex
	beforeCreate, before, beforeSession func()
}

func (h *hookAccounts) arm(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beforeCreate = f
}

func (h *hookAccounts) armUpdate(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.before = f
}

func (h *hookAccounts) armSession(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beforeSession = f
}

// take returns the function *p holds, once.
func (h *hookAccounts) take(p *func()) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := *p
	*p = nil
	return f
}

func (h *hookAccounts) CreateSession(ctx context.Context, s *keyward.Session, events ...*keyward.AuditEvent) error {
	if f := h.take(&h.beforeCreate); f != nil {
		f()
	}
	return h.AccountStore.CreateSession(ctx, s, events...)
}

func (h *hookAccounts) UpdateUser(ctx context.Context, id string, fn func(u *keyward.User) ([]*keyward.AuditEvent, error)) (*keyward.User, error) {
	if f := h.take(&h.before); f != nil {
		f()
	}
	return h.AccountStore.UpdateUser(ctx, id, fn)
}

func (h *hookAccounts) UpdateSession(ctx context.Context, s *keyward.Session, events ...*keyward.AuditEvent) error {
	if f := h.take(&h.beforeSession); f != nil {
		f()
	}
	return h.AccountStore.UpdateSession(ctx, s, events...)
}

func newHookEnv(t *testing.T, publicURL string) (*env, *hookAccounts) {
	t.Helper()
	h := &hookAccounts{}
	e := newEnvWrapped(t, publicURL, nil, func(a keyward.AccountStore) keyward.AccountStore { h.AccountStore = a; return h })
	return e, h
}

// wantOnlySession checks that b's session is the user's only one.
func wantOnlySession(t *testing.T, e *env, u *keyward.User, b *browser) {
	t.Helper()
	ss, err := e.store.FindSessions(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 1 || !sameBytes(ss[0].Digest, e.dash.digest(sessionCookie(b))) {
		t.Errorf("the user has %d sessions, want only the changing browser's", len(ss))
	}
}

func sameBytes(a, b []byte) bool { return string(a) == string(b) }

// TestSignInRacingPasswordChange: a sign-in with the old password whose
// check passed before the change, and whose session would be made after
// it, is refused: the change ended the user's sessions in between.
func TestSignInRacingPasswordChange(t *testing.T) {
	e, h := newHookEnv(t, "")
	u := e.user("ann@example.com", keyward.RoleOwner)
	const newPassword = "a brand new passphrase for ann"
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/account/password")
	var status int
	var body string
	h.arm(func() {
		status, body = b.post("/account/password", url.Values{"current": {goodPassword}, "password": {newPassword}, "password2": {newPassword}})
	})
	c := e.browser()
	c.get("/signin")
	got, page := c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
	wantStatus(t, status, http.StatusOK, body)
	wantText(t, body, "Your password was changed.")
	wantStatus(t, got, http.StatusConflict, page)
	wantText(t, page, msgCredentialsChanged)
	if sessionCookie(c) != "" {
		t.Error("the refused sign-in set a session cookie")
	}
	if c.get("/tokens"); c.path() != "/signin" {
		t.Errorf("the old password's sign-in is signed in (at %s)", c.path())
	}
	if b.get("/tokens"); b.path() != "/tokens" {
		t.Errorf("the changing session ended (at %s)", b.path())
	}
	wantOnlySession(t, e, u, b)
	e.dash.Wait()
	evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "session.signin"})
	if len(evs) != 1 {
		t.Errorf("%d session.signin events, want 1 (the refused sign-in records none)", len(evs))
	}
	// The change's second ending ended nothing: no event says it did.
	wantEvents(t, e, "session.end_others")
}

// wantEvents checks the changes of the default workspace's events of the
// action, oldest first.
func wantEvents(t *testing.T, e *env, action string, changes ...string) {
	t.Helper()
	e.dash.Wait()
	evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: action})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(evs) - 1; i >= 0; i-- {
		got = append(got, string(evs[i].Changes))
	}
	if strings.Join(got, "\n") != strings.Join(changes, "\n") {
		t.Errorf("%s events: %q, want %q", action, got, changes)
	}
}

// TestSignInDuringPasswordWrite: a sign-in with the old password made
// whole after the password change ended the other sessions but before it
// wrote the new hash ends with the change.
func TestSignInDuringPasswordWrite(t *testing.T) {
	e, h := newHookEnv(t, "")
	u := e.user("ann@example.com", keyward.RoleOwner)
	const newPassword = "a brand new passphrase for ann"
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/account/password")
	c := e.browser()
	c.get("/signin")
	var got int
	h.armUpdate(func() {
		got, _ = c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
	})
	status, body := b.post("/account/password", url.Values{"current": {goodPassword}, "password": {newPassword}, "password2": {newPassword}})
	wantStatus(t, status, http.StatusOK, body)
	if got != http.StatusOK || c.path() != "/tokens" {
		t.Fatalf("the sign-in during the write: %d at %s, want it signed in", got, c.path())
	}
	if c.get("/tokens"); c.path() != "/signin" {
		t.Errorf("the old password's session outlived the change (at %s)", c.path())
	}
	wantOnlySession(t, e, u, b)
	// The trail says the second ending ended a session that the first,
	// counted in the change's event, did not.
	wantEvents(t, e, "user.password_change", `{"sessions_ended":0}`)
	wantEvents(t, e, "session.end_others", `{"after":"user.password_change"}`)
}

// TestSignInRacingTOTPEnrolment: a password-only sign-in that found no
// second factor, and whose session would be made after the authenticator
// app was turned on, is refused.
func TestSignInRacingTOTPEnrolment(t *testing.T) {
	e, h := newHookEnv(t, "")
	u := e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/account/mfa")
	_, enrol := b.post("/account/mfa/totp", nil)
	m := secretRE.FindStringSubmatch(enrol)
	if m == nil {
		t.Fatalf("enrolment page without secret:\n%s", enrol)
	}
	secret, err := account.ParseTOTPSecretText(m[1])
	if err != nil {
		t.Fatal(err)
	}
	pending := regexp.MustCompile(`name="pending" value="([^"]+)"`).FindStringSubmatch(enrol)[1]
	code := account.TOTPCode(secret, account.TOTPStep(e.clock.Now()))
	var status int
	var body string
	h.arm(func() {
		status, body = b.post("/account/mfa/totp/confirm", url.Values{"pending": {pending}, "code": {code}})
	})
	c := e.browser()
	c.get("/signin")
	got, page := c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
	wantStatus(t, status, http.StatusOK, body)
	if !mustUser(t, e, "ann@example.com").HasMFA() {
		t.Fatal("the app was not turned on")
	}
	wantStatus(t, got, http.StatusConflict, page)
	wantText(t, page, msgCredentialsChanged)
	if c.get("/tokens"); c.path() != "/signin" {
		t.Errorf("the password-only sign-in is signed in (at %s)", c.path())
	}
	wantOnlySession(t, e, u, b)
	// Signing in again now asks for the second step.
	c.get("/signin")
	c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
	if c.path() != "/signin/mfa" {
		t.Errorf("a new sign-in landed on %s, want /signin/mfa", c.path())
	}
}

// TestPasskeySignInRacingPasskeyRemoval: a passkey sign-in whose assertion
// was checked before the passkey was removed, and whose session would be
// made after, is refused.
func TestPasskeySignInRacingPasskeyRemoval(t *testing.T) {
	e, h := newHookEnv(t, "https://localhost") // passkeys on
	u := e.user("ann@example.com", keyward.RoleOwner)
	k := newSoftKey(t, e, u)
	keys, err := e.store.FindPasskeys(context.Background(), u.ID)
	if err != nil || len(keys) != 1 {
		t.Fatalf("FindPasskeys = %d, %v", len(keys), err)
	}
	b := e.browser()
	challenge, state := beginSignIn(t, b)
	if status, body := b.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 1)}}); status != http.StatusOK {
		t.Fatalf("passkey sign-in: %d\n%s", status, body)
	}
	b.get("/account/mfa")
	c := e.browser()
	challenge, state = beginSignIn(t, c)
	var status int
	var body string
	h.arm(func() { status, body = b.post("/account/passkeys/"+keys[0].ID+"/remove", nil) })
	got, page := c.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 2)}})
	wantStatus(t, status, http.StatusOK, body)
	if keys, _ := e.store.FindPasskeys(context.Background(), u.ID); len(keys) != 0 {
		t.Fatal("the passkey was not removed")
	}
	wantStatus(t, got, http.StatusConflict, page)
	wantText(t, page, `{"error":"`+msgCredentialsChanged+`"}`)
	if c.get("/tokens"); c.path() != "/signin" {
		t.Errorf("the removed passkey's sign-in is signed in (at %s)", c.path())
	}
	wantOnlySession(t, e, u, b)
}

// TestSecondStepAfterSessionsEnded: a pending sign-in whose session ends
// (here: sign out everywhere) while its second step is checked sends the
// browser back to sign in, with a message, not to a page that is not
// there; a new sign-in from that page works.
func TestSecondStepAfterSessionsEnded(t *testing.T) {
	e, h := newHookEnv(t, "https://localhost") // passkeys on
	u := e.user("ann@example.com", keyward.RoleOwner)
	k := newSoftKey(t, e, u)
	b := e.browser()
	b.signIn2("ann@example.com")
	challenge, state := begin(t, b, "/signin/mfa/passkey/begin")
	if status, body := b.post("/signin/mfa/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 1)}}); status != http.StatusOK {
		t.Fatalf("passkey step: %d\n%s", status, body)
	}
	secret, codes := enrolTOTP(t, b)
	count := uint32(1)
	// pending signs in with the password and arms the hook to end the
	// user's sessions, as sign out everywhere does, right before the
	// second step's upgrade.
	pending := func(t *testing.T) *browser {
		t.Helper()
		e.clock.Add(time.Minute) // a TOTP code of a new time step
		c := e.browser()
		c.signIn2("ann@example.com")
		if c.path() != "/signin/mfa" {
			t.Fatalf("at %s after the password, want the second step", c.path())
		}
		h.armSession(func() {
			if _, err := e.store.DeleteSessions(context.Background(), u.ID, "", ""); err != nil {
				t.Error(err)
			}
		})
		return c
	}
	// ended checks that c is signed out.
	ended := func(t *testing.T, c *browser) {
		t.Helper()
		if sessionCookie(c) != "" {
			t.Error("the ended sign-in kept its session cookie")
		}
		if c.get("/tokens"); c.path() != "/signin" {
			t.Errorf("the ended sign-in is signed in (at %s)", c.path())
		}
	}
	t.Run("TOTP", func(t *testing.T) {
		c := pending(t)
		status, body := c.post("/signin/mfa", url.Values{"code": {account.TOTPCode(secret, account.TOTPStep(e.clock.Now()))}})
		wantStatus(t, status, http.StatusConflict, body)
		wantText(t, body, msgSignInEnded, `action="/signin"`)
		// The page's form signs in again.
		status, body = c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
		if status != http.StatusOK || c.path() != "/signin/mfa" {
			t.Fatalf("signing in again from the page: %d at %s\n%s", status, c.path(), body)
		}
		c.post("/signout", nil)
		ended(t, c)
	})
	t.Run("RecoveryCode", func(t *testing.T) {
		c := pending(t)
		status, body := c.post("/signin/mfa", url.Values{"code": {codes[0]}})
		wantStatus(t, status, http.StatusConflict, body)
		wantText(t, body, msgSignInEnded)
		ended(t, c)
	})
	t.Run("Passkey", func(t *testing.T) {
		c := pending(t)
		count++
		challenge, state := begin(t, c, "/signin/mfa/passkey/begin")
		status, body := c.post("/signin/mfa/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, count)}})
		wantStatus(t, status, http.StatusConflict, body)
		wantText(t, body, `{"error":"`+msgSignInEnded+`"}`)
		if ct := c.last.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		ended(t, c)
	})
}

// TestSignedInSessionEndedMidRequest: a signed-in session that ends (here:
// sign out everywhere) while its password is confirmed, or while it
// switches workspace, sends the browser back to sign in with a message,
// not to a page that is not there.
func TestSignedInSessionEndedMidRequest(t *testing.T) {
	e, h := newHookEnv(t, "")
	u := e.user("ann@example.com", keyward.RoleOwner)
	acme := e.memberOf(t, "acme", u, keyward.RoleOwner)
	for _, tc := range []struct {
		name string
		path string
		form url.Values
	}{
		{"Reauth", "/reauth", url.Values{"password": {goodPassword}, "next": {"/account/mfa"}}},
		{"WorkspaceSwitch", "/workspace", url.Values{"workspace": {acme.ID}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := e.browser()
			b.signIn("ann@example.com")
			h.armSession(func() {
				if _, err := e.store.DeleteSessions(context.Background(), u.ID, "", ""); err != nil {
					t.Error(err)
				}
			})
			status, body := b.post(tc.path, tc.form)
			wantStatus(t, status, http.StatusConflict, body)
			wantText(t, body, msgSignInEnded, `action="/signin"`)
			if sessionCookie(b) != "" {
				t.Error("the ended session kept its cookie")
			}
			// The page's form signs in again.
			status, body = b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
			if status != http.StatusOK || b.path() != "/tokens" {
				t.Fatalf("signing in again from the page: %d at %s\n%s", status, b.path(), body)
			}
		})
	}
}
