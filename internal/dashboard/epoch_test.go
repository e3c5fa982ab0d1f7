package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
)

// hookAccounts runs a function once, right before the next CreateSession
// (arm): between a sign-in's check of the credentials and its session,
// where a change of the credentials used to leave the session standing;
// or right before the next UpdateUser (armUpdate).
type hookAccounts struct {
	keyward.AccountStore
	mu                   sync.Mutex
	beforeCreate, before func()
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
