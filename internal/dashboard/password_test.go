package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/sqlite"
)

func TestPasswordChange(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	const newPassword = "a brand new passphrase for ann"
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/sessions")
	wantText(t, b.body, `href="/account/password"`)
	status, body := b.get("/account/password")
	wantStatus(t, status, http.StatusOK, body)

	tests := []struct {
		name             string
		current, pw, pw2 string
		status           int
		field, want      string
	}{
		{"ErrNoCurrent", "", newPassword, newPassword, 400, "current", "Enter your current password."},
		{"ErrShort", goodPassword, "short one", "short one", 400, "password", "Use at least 12 characters; a few unrelated words make a long password that is easy to remember."},
		{"ErrTooLong", goodPassword, strings.Repeat("x y", 90), strings.Repeat("x y", 90), 400, "password", "Use at most 256 bytes."},
		{"ErrCommon", goodPassword, "!!administrator", "!!administrator", 400, "password", "This password is on a list of common or breached passwords; choose another."},
		{"ErrEmail", goodPassword, "ann@example.com", "ann@example.com", 400, "password", "Do not use your email address as the password."},
		{"ErrRepeated", goodPassword, "zzzzzzzzzzzzzz", "zzzzzzzzzzzzzz", 400, "password", "This password is one character repeated; choose another."},
		{"ErrSame", goodPassword, goodPassword, goodPassword, 400, "password", "Choose a password different from your current one."},
		{"ErrMismatch", goodPassword, newPassword, newPassword + "!", 400, "password2", "The two passwords differ."},
		{"ErrWrongCurrent", "not my password at all", newPassword, newPassword, 401, "current", "The current password is incorrect."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := b.post("/account/password", url.Values{"current": {tt.current}, "password": {tt.pw}, "password2": {tt.pw2}})
			wantStatus(t, status, tt.status, body)
			wantText(t, body, `<p class="field-error" id="`+tt.field+`-error">`+tt.want+`</p>`)
		})
	}
	t.Run("OK", func(t *testing.T) {
		other := e.browser()
		other.signIn("ann@example.com")
		status, body := b.post("/account/password", url.Values{"current": {goodPassword}, "password": {newPassword}, "password2": {newPassword}})
		wantStatus(t, status, http.StatusOK, body)
		wantText(t, body, "Your password was changed.")
		if other.get("/tokens"); other.path() != "/signin" {
			t.Errorf("the other session still works (at %s)", other.path())
		}
		if b.get("/tokens"); b.path() != "/tokens" {
			t.Errorf("the changing session ended (at %s)", b.path())
		}
		c := e.browser()
		c.get("/signin")
		if status, _ := c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}}); status != http.StatusUnauthorized {
			t.Errorf("the old password signs in: %d", status)
		}
		c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {newPassword}})
		if c.path() != "/tokens" {
			t.Errorf("the new password does not sign in (at %s)", c.path())
		}
		u := mustUser(t, e, "ann@example.com")
		if !strings.HasPrefix(u.PasswordHash, "$argon2id$") {
			t.Errorf("stored hash %q is not argon2id", u.PasswordHash)
		}
		e.dash.Wait()
		evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID})
		var found bool
		for _, ev := range evs {
			if ev.Action == "user.password_change" {
				found = true
				if strings.Contains(string(ev.Changes), newPassword) || strings.Contains(string(ev.Changes), goodPassword) || strings.Contains(string(ev.Changes), "argon2") {
					t.Errorf("the event holds a secret: %s", ev.Changes)
				}
			}
		}
		if !found {
			t.Error("no user.password_change event")
		}
	})
	t.Run("ErrThrottled", func(t *testing.T) {
		wrong := url.Values{"current": {"not my password at all"}, "password": {"yet another long passphrase"}, "password2": {"yet another long passphrase"}}
		for i := range freeAccount {
			if status, body := b.post("/account/password", wrong); status != http.StatusUnauthorized {
				t.Fatalf("failure %d: status %d\n%s", i+1, status, body)
			}
		}
		status, body := b.post("/account/password", wrong)
		wantStatus(t, status, http.StatusTooManyRequests, body)
		wantText(t, body, "Too many failed attempts.")
	})
}

// leaveOnWrite is an account store that, at the first UpdateUser, first
// runs leave: the user leaves a workspace while its request is under way.
type leaveOnWrite struct {
	*sqlite.DB
	once  sync.Once
	leave func()
}

func (l *leaveOnWrite) UpdateUser(ctx context.Context, id string, fn func(*keyward.User) ([]*keyward.AuditEvent, error)) (*keyward.User, error) {
	l.once.Do(l.leave)
	return l.DB.UpdateUser(ctx, id, fn)
}

// TestAccountEventsLeftWorkspace: an account event goes to the workspaces
// the user is a member of when it is written. A workspace the user left
// while the request was under way gets none: its trail ends with the
// removal, and shows nothing of the account after.
func TestAccountEventsLeftWorkspace(t *testing.T) {
	ctx := context.Background()
	var l *leaveOnWrite
	e := newEnvAccounts(t, "", nil, func(db *sqlite.DB) keyward.AccountStore { l = &leaveOnWrite{DB: db}; return l })
	owner := e.user("owner@example.com", keyward.RoleOwner)
	u := e.user("ann@example.com", keyward.RoleMember)
	acme := e.memberOf(t, "acme", u, keyward.RoleMember)
	beta := e.memberOf(t, "beta", u, keyward.RoleMember)
	if err := e.store.PutMember(ctx, &keyward.Member{WorkspaceID: acme.ID, UserID: owner.ID, Role: keyward.RoleOwner}); err != nil {
		t.Fatal(err)
	}
	l.leave = func() {
		if err := e.store.RemoveMember(ctx, acme.ID, u.ID, &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, e.clock.Now()),
			WorkspaceID: acme.ID, Time: e.clock.Now(), Action: "member.remove", Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: u.ID}); err != nil {
			t.Error(err)
		}
	}
	b := e.browser()
	b.signIn("ann@example.com")
	b.post("/workspace", url.Values{"workspace": {e.ws.ID}}) // acting in default, which the user stays in
	b.get("/account/password")
	status, body := b.post("/account/password", url.Values{"current": {goodPassword}, "password": {goodPassword + " 2"}, "password2": {goodPassword + " 2"}})
	wantStatus(t, status, http.StatusOK, body)
	for _, tt := range []struct {
		ws   *keyward.Workspace
		want string // the newest event's action
	}{{e.ws, "user.password_change"}, {beta, "user.password_change"}, {acme, "member.remove"}} {
		evs, err := e.store.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: tt.ws.ID})
		if err != nil || len(evs) == 0 {
			t.Fatalf("FindAuditEvents(%s) = %d, %v", tt.ws.Name, len(evs), err)
		}
		if evs[0].Action != tt.want {
			t.Errorf("newest event of %s = %s, want %s", tt.ws.Name, evs[0].Action, tt.want)
		}
		if tt.want == "user.password_change" && (evs[0].Actor.ID != u.ID || string(evs[0].Changes) != `{"sessions_ended":0}`) {
			t.Errorf("event of %s = %+v", tt.ws.Name, evs[0])
		}
	}
}

// leaveOnAppend is a store that, at the first AppendAudit, first runs
// leave: the user leaves a workspace while a failed sign-in's record is
// under way.
type leaveOnAppend struct {
	keyward.Store
	once  sync.Once
	leave func()
}

func (l *leaveOnAppend) AppendAudit(ctx context.Context, events ...*keyward.AuditEvent) error {
	l.once.Do(l.leave)
	return l.Store.AppendAudit(ctx, events...)
}

// TestSignInFailureLeftWorkspace: a failed sign-in is recorded in the
// workspaces the user is a member of when it is written, as the account's
// other events are: one the user left meanwhile gets none after its
// member.remove.
func TestSignInFailureLeftWorkspace(t *testing.T) {
	ctx := context.Background()
	l := &leaveOnAppend{}
	e := newEnvWith(t, "", func(s keyward.Store) keyward.Store { l.Store = s; return l })
	owner := e.user("owner@example.com", keyward.RoleOwner)
	u := e.user("ann@example.com", keyward.RoleMember)
	acme := e.memberOf(t, "acme", u, keyward.RoleMember)
	if err := e.store.PutMember(ctx, &keyward.Member{WorkspaceID: acme.ID, UserID: owner.ID, Role: keyward.RoleOwner}); err != nil {
		t.Fatal(err)
	}
	l.leave = func() {
		if err := e.store.RemoveMember(ctx, acme.ID, u.ID, &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, e.clock.Now()),
			WorkspaceID: acme.ID, Time: e.clock.Now(), Action: "member.remove", Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: u.ID}); err != nil {
			t.Error(err)
		}
	}
	b := e.browser()
	b.get("/signin")
	status, body := b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}})
	wantStatus(t, status, http.StatusUnauthorized, body)
	e.dash.Wait()
	for _, tt := range []struct {
		ws   *keyward.Workspace
		want string // the newest event's action
	}{{e.ws, "session.signin_failed"}, {acme, "member.remove"}} {
		evs, err := e.store.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: tt.ws.ID})
		if err != nil || len(evs) == 0 {
			t.Fatalf("FindAuditEvents(%s) = %d, %v", tt.ws.Name, len(evs), err)
		}
		if evs[0].Action != tt.want {
			t.Errorf("newest event of %s = %s, want %s", tt.ws.Name, evs[0].Action, tt.want)
		}
		if tt.want == "session.signin_failed" && (evs[0].Actor.ID != u.ID || string(evs[0].Changes) != `{"factor":"password"}`) {
			t.Errorf("event of %s = %+v", tt.ws.Name, evs[0])
		}
	}
}

// TestPasswordChangeSessionsKept: the new password is stored before the
// second ending of the other sessions; when that ending fails, the answer
// says the password was changed and what failed (logged), not a bare
// error, and the rest of the change (this session kept) goes on.
func TestPasswordChangeSessionsKept(t *testing.T) {
	const newPassword = "a brand new passphrase for ann"
	f, h := &failLater{}, &hookAccounts{}
	e := newEnvWrapped(t, "", nil, func(a keyward.AccountStore) keyward.AccountStore {
		f.AccountStore = a
		h.AccountStore = f
		return h
	})
	e.user("ann@example.com", keyward.RoleOwner)
	b, elsewhere := e.browser(), e.browser()
	b.signIn("ann@example.com")
	// A sign-in racing the change, after its first ending; then the
	// second ending, the one after the new hash, fails.
	h.armUpdate(func() {
		elsewhere.signIn("ann@example.com")
		f.arm(true, false)
	})
	status, body := b.post("/account/password", url.Values{"current": {goodPassword}, "password": {newPassword}, "password2": {newPassword}})
	wantStatus(t, status, http.StatusOK, body)
	wantText(t, body, `<p class="error" role="alert" id="password-warning">`+msgPasswordSessionsKept+`</p>`)
	if strings.Contains(body, "Your other sessions were ended") {
		t.Error("the page says the other sessions were ended")
	}
	if l := e.log.String(); !strings.Contains(l, "injected failure") || !strings.Contains(l, "after a password change") {
		t.Errorf("the failure was not logged:\n%s", l)
	}
	if elsewhere.get("/tokens"); elsewhere.path() != "/tokens" {
		t.Errorf("the other session at %s, want it kept (ending it failed)", elsewhere.path())
	}
	if b.get("/tokens"); b.path() != "/tokens" {
		t.Errorf("the changing session at %s, want it kept", b.path())
	}
	c := e.browser()
	c.get("/signin")
	if status, body := c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {newPassword}}); status != http.StatusOK || c.path() != "/tokens" {
		t.Errorf("the new password: %d at %s\n%s", status, c.path(), body)
	}
}

// TestPasswordChangeSessionEnded: a session ended while it changes the
// password (here: sign out everywhere, right before its own update) is
// sent back to sign in with the new password, not told that there is no
// such page.
func TestPasswordChangeSessionEnded(t *testing.T) {
	const newPassword = "a brand new passphrase for ann"
	e, h := newHookEnv(t, "")
	u := e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	h.armSession(func() {
		if _, err := e.store.DeleteSessions(context.Background(), u.ID, "", ""); err != nil {
			t.Error(err)
		}
	})
	status, body := b.post("/account/password", url.Values{"current": {goodPassword}, "password": {newPassword}, "password2": {newPassword}})
	wantStatus(t, status, http.StatusConflict, body)
	wantText(t, body, msgSignInPasswordChanged, `action="/signin"`)
	if sessionCookie(b) != "" {
		t.Error("the ended session kept its cookie")
	}
	// The page's form signs in again, with the new password only.
	if status, _ := b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}}); status != http.StatusUnauthorized {
		t.Errorf("the old password: %d, want %d", status, http.StatusUnauthorized)
	}
	status, body = b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {newPassword}})
	if status != http.StatusOK || b.path() != "/tokens" {
		t.Fatalf("signing in again from the page: %d at %s\n%s", status, b.path(), body)
	}
}

// TestPasswordFormsName: the forms that ask for the password of the
// signed-in user name the account too, as a password manager needs to
// fill the right password and to update it on a change (browsers warn of
// a password form without one).
func TestPasswordFormsName(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	want := regexp.MustCompile(`<form method="post" action="(/account/password|/reauth)"[^>]*>(?:\s*<input type="hidden"[^>]*>)*\s*<input type="email" name="username" value="ann@example.com" autocomplete="username" hidden readonly>`)
	for _, path := range []string{"/account/password", "/reauth"} {
		status, body := b.get(path)
		wantStatus(t, status, http.StatusOK, body)
		if m := want.FindStringSubmatch(body); m == nil || m[1] != path {
			t.Errorf("%s: the form names no account (autocomplete=username):\n%s", path, body)
		}
	}
}
