package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
	"github.com/keyward/keyward/internal/sqlite"
)

// postAtOnce submits the forms of paths (each with the current CSRF
// token) at the same moment and returns the final status of each, in the
// order of paths. It does not touch b.last.
func (b *browser) postAtOnce(paths ...string) []int {
	b.e.t.Helper()
	body := url.Values{"csrf": {b.csrf}}.Encode()
	out := make([]int, len(paths))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range paths {
		req, _ := http.NewRequest("POST", b.e.srv.URL+p, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		wg.Go(func() {
			<-start
			res, err := b.c.Do(req)
			if err != nil {
				out[i] = -1
				return
			}
			res.Body.Close()
			out[i] = res.StatusCode
		})
	}
	close(start)
	wg.Wait()
	return out
}

// TestLastFactorRace turns the authenticator app off and removes the only
// passkey at the same moment, again and again, in a workspace that
// requires two-step verification. Each request alone is allowed (the
// other factor stays), both together are not: one is refused each time,
// and the account keeps a factor.
func TestLastFactorRace(t *testing.T) {
	ctx := context.Background()
	e := newEnvAt(t, "https://localhost") // passkeys on
	u := e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	enrolTOTP(t, b)
	sealed := mustUser(t, e, "ann@example.com").TOTPSecret
	set, err := e.store.FindWorkspaceSettings(ctx, e.ws.ID)
	if err != nil {
		t.Fatal(err)
	}
	set.MFARequired = true
	if err := e.store.PutWorkspaceSettings(ctx, set); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		// Both factors again: the app as enrolled, and one passkey.
		if _, err := e.store.UpdateUser(ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
			u.TOTPSecret = sealed
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now()
		pk := &keyward.Passkey{ID: keyward.NewID(keyward.PrefixPasskey, now), UserID: u.ID, CredentialID: []byte(fmt.Sprintf("cred-%d", i)),
			Credential: []byte("{}"), Name: "key", CreatedAt: now}
		if err := e.store.AddPasskey(ctx, pk); err != nil {
			t.Fatal(err)
		}
		b.get("/account/mfa")
		got := b.postAtOnce("/account/mfa/totp/disable", "/account/passkeys/"+pk.ID+"/remove")
		after := mustUser(t, e, "ann@example.com")
		keys, err := e.store.FindPasskeys(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !after.HasMFA() && len(keys) == 0 {
			t.Fatalf("round %d: both factors gone (answers %v)", i, got)
		}
		// One went through (its redirect followed to /account/mfa), the
		// other was refused; which one is the race's.
		if !(got[0] == http.StatusOK && got[1] == http.StatusConflict) && !(got[0] == http.StatusConflict && got[1] == http.StatusOK) {
			t.Fatalf("round %d: answers %v, want one 200 and one 409", i, got)
		}
		if after.HasMFA() == (got[0] == http.StatusOK) || (len(keys) == 0) == (got[1] != http.StatusOK) {
			t.Fatalf("round %d: answers %v, app on %v, %d passkeys", i, got, after.HasMFA(), len(keys))
		}
		if len(keys) == 1 {
			if err := e.store.DeletePasskey(ctx, u.ID, keys[0].ID, false); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestLastFactorOtherWorkspace: the last second factor cannot go while
// the session acts in a workspace that does not require one, when another
// of the user's workspaces does: the factors are the account's, and the
// account would then sign in there with its password alone. With no
// workspace of the user's requiring one, it may go.
func TestLastFactorOtherWorkspace(t *testing.T) {
	ctx := context.Background()
	e := newEnvAt(t, "https://localhost") // passkeys on
	u := e.user("ann@example.com", keyward.RoleOwner)
	acme := e.memberOf(t, "acme", u, keyward.RoleMember)
	if err := e.store.PutWorkspaceSettings(ctx, &keyward.WorkspaceSettings{WorkspaceID: acme.ID, MFARequired: true}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("ann@example.com")
	enrolTOTP(t, b)
	b.post("/workspace", url.Values{"workspace": {e.ws.ID}}) // acting in default, which requires nothing

	// The page offers no way to turn the app off.
	if _, page := b.get("/account/mfa"); strings.Contains(page, `action="/account/mfa/totp/disable"`) {
		t.Error("the page offers to turn the app off, the last factor")
	}
	status, body := b.post("/account/mfa/totp/disable", nil)
	wantStatus(t, status, http.StatusConflict, body)
	wantText(t, body, "A workspace you belong to requires two-step verification: add a passkey before turning the authenticator app off.")
	if !mustUser(t, e, "ann@example.com").HasMFA() {
		t.Fatal("the app was turned off")
	}

	// The app off by other means, one passkey left: it stays too.
	if _, _, err := e.store.DisableTOTP(ctx, u.ID, false, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	pk := &keyward.Passkey{ID: keyward.NewID(keyward.PrefixPasskey, now), UserID: u.ID, CredentialID: []byte("cred"), Credential: []byte("{}"), Name: "key", CreatedAt: now}
	if err := e.store.AddPasskey(ctx, pk); err != nil {
		t.Fatal(err)
	}
	b.get("/account/mfa")
	status, body = b.post("/account/passkeys/"+pk.ID+"/remove", nil)
	wantStatus(t, status, http.StatusConflict, body)
	wantText(t, body, "A workspace you belong to requires two-step verification: add another factor before removing your last one.")

	// acme no longer requires it: the passkey may go.
	if err := e.store.PutWorkspaceSettings(ctx, &keyward.WorkspaceSettings{WorkspaceID: acme.ID}); err != nil {
		t.Fatal(err)
	}
	b.get("/account/mfa")
	status, body = b.post("/account/passkeys/"+pk.ID+"/remove", nil)
	wantStatus(t, status, http.StatusOK, body)
	if keys, err := e.store.FindPasskeys(ctx, u.ID); err != nil || len(keys) != 0 {
		t.Fatalf("passkeys left: %d, %v", len(keys), err)
	}
}

// TestAppOffOfferedBesidePasskey: under required two-step verification,
// in the workspace acted in or another of the user's, the page offers to
// turn the app off when a passkey stays, as the server then allows; only
// the last factor is kept from going.
func TestAppOffOfferedBesidePasskey(t *testing.T) {
	ctx := context.Background()
	e := newEnvAt(t, "https://localhost") // passkeys on
	u := e.user("bea@example.com", keyward.RoleOwner)
	acme := e.memberOf(t, "acme", u, keyward.RoleMember)
	if err := e.store.PutWorkspaceSettings(ctx, &keyward.WorkspaceSettings{WorkspaceID: acme.ID, MFARequired: true}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("bea@example.com")
	enrolTOTP(t, b)
	const offForm = `action="/account/mfa/totp/disable"`
	for _, ws := range []*keyward.Workspace{acme, e.ws} {
		b.post("/workspace", url.Values{"workspace": {ws.ID}})
		if _, page := b.get("/account/mfa"); strings.Contains(page, offForm) {
			t.Errorf("acting in %s, the app the last factor: the page offers to turn it off", ws.Name)
		}
	}
	newSoftKey(t, e, u)
	for _, ws := range []*keyward.Workspace{acme, e.ws} {
		b.post("/workspace", url.Values{"workspace": {ws.ID}})
		if _, page := b.get("/account/mfa"); !strings.Contains(page, offForm) {
			t.Errorf("acting in %s, a passkey beside the app: the page does not offer to turn the app off", ws.Name)
		}
	}
	b.post("/account/mfa/totp/disable", nil)
	if got := mustUser(t, e, "bea@example.com"); got.HasMFA() || b.path() != "/account/mfa" {
		t.Errorf("turning the app off beside a passkey: at %s, app on %v", b.path(), got.HasMFA())
	}
	// The page that shows the recovery codes of an app set up beside the
	// passkey offers it too.
	enrolTOTP(t, b)
	if !strings.Contains(b.body, offForm) {
		t.Error("after enrolment beside a passkey: the page does not offer to turn the app off")
	}
}

// codesFail is an account store whose write of recovery codes alone
// fails, as a database may between two writes.
type codesFail struct{ *sqlite.DB }

func (codesFail) SetRecoveryCodes(context.Context, string, [][]byte, ...*keyward.AuditEvent) error {
	return errors.New("injected failure")
}

// TestTOTPEnableWithCodes: the authenticator app is never on without its
// recovery codes. The secret and the codes are one write, so a store that
// fails the codes' own write cannot leave the app on without them.
func TestTOTPEnableWithCodes(t *testing.T) {
	e := newEnvAccounts(t, "", nil, func(db *sqlite.DB) keyward.AccountStore { return codesFail{db} })
	u := e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/account/mfa")
	_, body := b.post("/account/mfa/totp", nil)
	secret, err := account.ParseTOTPSecretText(secretRE.FindStringSubmatch(body)[1])
	if err != nil {
		t.Fatal(err)
	}
	pending := regexp.MustCompile(`name="pending" value="([^"]+)"`).FindStringSubmatch(body)[1]
	status, body := b.post("/account/mfa/totp/confirm", url.Values{"pending": {pending}, "code": {account.TOTPCode(secret, account.TOTPStep(e.clock.Now()))}})
	on := mustUser(t, e, "ann@example.com").HasMFA()
	left, err := e.store.RecoveryCodesLeft(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if on != (left > 0) {
		t.Fatalf("answer %d: app on %v with %d recovery codes", status, on, left)
	}
	wantStatus(t, status, http.StatusOK, body)
	if !on || left != account.RecoveryCodes || len(recoveryRE.FindAllString(body, -1)) != account.RecoveryCodes {
		t.Errorf("app on %v, %d recovery codes stored, %d shown; want on, %d", on, left, len(recoveryRE.FindAllString(body, -1)), account.RecoveryCodes)
	}
	evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		if strings.HasPrefix(ev.Action, "mfa.") {
			got = append(got, ev.Action)
		}
	}
	if !slices.Equal(got, []string{"mfa.recovery_codes_create", "mfa.totp_enable"}) {
		t.Errorf("mfa events, newest first = %v", got)
	}
}

// TestEnrolPageListsPasskeys: the page that shows the recovery codes of an
// app just set up lists the account's passkeys, as the security page does.
func TestEnrolPageListsPasskeys(t *testing.T) {
	e := newEnvAt(t, "https://localhost") // passkeys on
	u := e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	newSoftKey(t, e, u)
	_, page := b.get("/account/mfa")
	list := regexp.MustCompile(`(?s)<table id="passkey-list">.*?</table>`)
	want := list.FindString(page)
	if want == "" || !strings.Contains(want, "<td>soft</td>") {
		t.Fatalf("the security page lists no passkey:\n%s", page)
	}
	enrolTOTP(t, b)
	if got := list.FindString(b.body); got != want {
		t.Errorf("after enrolment, the passkeys listed:\n%s\nwant, as the security page:\n%s", got, want)
	}
	wantText(t, b.body, `id="passkey-add"`, "Recovery codes left: 10.")
}

// failLater is an account store whose next DeleteSessions, or next
// RecoveryCodesLeft, fails once armed (by arm, or by the next EnableTOTP
// after armEnable), as a database may between two writes.
type failLater struct {
	keyward.AccountStore
	mu                sync.Mutex
	failEnd, failRead bool
	onEnable          func()
}

func (f *failLater) arm(end, read bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failEnd, f.failRead = end, read
}

func (f *failLater) armEnable(end, read bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onEnable = func() { f.arm(end, read) }
}

func (f *failLater) EnableTOTP(ctx context.Context, userID string, secret []byte, step int64, digests [][]byte, at time.Time, events ...*keyward.AuditEvent) (*keyward.User, error) {
	u, err := f.AccountStore.EnableTOTP(ctx, userID, secret, step, digests, at, events...)
	f.mu.Lock()
	g := f.onEnable
	f.onEnable = nil
	f.mu.Unlock()
	if g != nil && err == nil {
		g()
	}
	return u, err
}

func (f *failLater) take(p *bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := *p
	*p = false
	return v
}

func (f *failLater) DeleteSessions(ctx context.Context, userID, id, exceptID string, events ...*keyward.AuditEvent) (int, error) {
	if f.take(&f.failEnd) {
		return 0, errors.New("injected failure")
	}
	return f.AccountStore.DeleteSessions(ctx, userID, id, exceptID, events...)
}

func (f *failLater) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	if f.take(&f.failRead) {
		return 0, errors.New("injected failure")
	}
	return f.AccountStore.RecoveryCodesLeft(ctx, userID)
}

// TestTOTPEnableShowsCodesAfterFailure: the app and its recovery codes
// are stored in one write; when ending the other sessions, or reading the
// rest of the page, fails after it, the codes (never shown again) are
// shown all the same, with what failed.
func TestTOTPEnableShowsCodesAfterFailure(t *testing.T) {
	for _, tc := range []struct {
		name      string
		end, read bool
		warning   string
		ended     bool
	}{
		{"EndFails", true, false, msgSessionsKept, false},
		{"ReadFails", false, true, msgPagePartial, true},
		{"BothFail", true, true, msgSessionsKept, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &failLater{}
			e := newEnvWrapped(t, "", nil, func(a keyward.AccountStore) keyward.AccountStore { f.AccountStore = a; return f })
			u := e.user("ann@example.com", keyward.RoleOwner)
			elsewhere, b := e.browser(), e.browser()
			elsewhere.signIn("ann@example.com")
			b.signIn("ann@example.com")
			f.armEnable(tc.end, tc.read)
			_, codes := enrolTOTP(t, b) // 200 with every code shown
			wantText(t, b.body, `<p class="error" role="alert" id="mfa-warning">`+tc.warning+`</p>`)
			if got := strings.Contains(b.body, `id="mfa-status"`); got != !tc.read {
				t.Errorf("the rest of the page shown: %v, want %v", got, !tc.read)
			}
			if left, err := e.store.RecoveryCodesLeft(context.Background(), u.ID); err != nil || left != len(codes) {
				t.Errorf("RecoveryCodesLeft = %d, %v; want %d", left, err, len(codes))
			}
			if !strings.Contains(e.log.String(), "injected failure") {
				t.Error("the failure was not logged")
			}
			if elsewhere.get("/tokens"); (elsewhere.path() == "/signin") != tc.ended {
				t.Errorf("the other session at %s, want it ended %v", elsewhere.path(), tc.ended)
			}
			// A shown code signs in.
			c := e.browser()
			c.signIn2("ann@example.com")
			status, body := c.post("/signin/mfa", url.Values{"code": {codes[0]}})
			if status != http.StatusOK || c.path() != "/tokens" {
				t.Errorf("a shown recovery code: %d at %s\n%s", status, c.path(), body)
			}
		})
	}
}

// TestFactorOffSaysSessionsKept: turning the app off, or removing a
// passkey, is stored before the other sessions end; when ending them
// fails, the answer says that the change was made and what failed
// (logged), not a bare error; should the page not be read either, the
// error page says it.
func TestFactorOffSaysSessionsKept(t *testing.T) {
	for _, tc := range []struct {
		name     string
		passkey  bool
		read     bool // reading the page fails too
		status   int
		warning  string
		loggedAs string
	}{
		{"AppOff", false, false, http.StatusOK, msgOffSessionsKept, "after turning the app off"},
		{"AppOffPageUnread", false, true, http.StatusInternalServerError, msgOffSessionsKept, "after turning the app off"},
		{"PasskeyRemoved", true, false, http.StatusOK, msgPasskeyRemovedSessionsKept, "after removing a passkey"},
		{"PasskeyRemovedPageUnread", true, true, http.StatusInternalServerError, msgPasskeyRemovedSessionsKept, "after removing a passkey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := &failLater{}
			e := newEnvWrapped(t, "https://localhost", nil, func(a keyward.AccountStore) keyward.AccountStore { f.AccountStore = a; return f }) // passkeys on
			u := e.user("ann@example.com", keyward.RoleOwner)
			elsewhere, b := e.browser(), e.browser()
			b.signIn("ann@example.com")
			path := "/account/mfa/totp/disable"
			if tc.passkey {
				elsewhere.signIn("ann@example.com") // before the passkey, added to the store directly
				newSoftKey(t, e, u)
				keys, err := e.store.FindPasskeys(ctx, u.ID)
				if err != nil || len(keys) != 1 {
					t.Fatalf("FindPasskeys = %d, %v", len(keys), err)
				}
				path = "/account/passkeys/" + keys[0].ID + "/remove"
			} else {
				_, codes := enrolTOTP(t, b)
				elsewhere.signIn2("ann@example.com")
				if status, body := elsewhere.post("/signin/mfa", url.Values{"code": {codes[0]}}); status != http.StatusOK || elsewhere.path() != "/tokens" {
					t.Fatalf("signing in elsewhere: %d at %s\n%s", status, elsewhere.path(), body)
				}
			}
			b.get("/account/mfa")
			f.arm(true, tc.read)
			status, body := b.post(path, nil)
			wantStatus(t, status, tc.status, body)
			if tc.read {
				wantText(t, body, tc.warning)
			} else {
				wantText(t, body, `<p class="error" role="alert" id="mfa-warning">`+tc.warning+`</p>`, "No authenticator app is set up.")
				if strings.Contains(body, `id="passkey-list"`) {
					t.Error("the page lists the removed passkey")
				}
			}
			if mustUser(t, e, "ann@example.com").HasMFA() {
				t.Error("the app is still on")
			}
			if keys, err := e.store.FindPasskeys(ctx, u.ID); err != nil || len(keys) != 0 {
				t.Errorf("passkeys left: %d, %v", len(keys), err)
			}
			if l := e.log.String(); !strings.Contains(l, "injected failure") || !strings.Contains(l, tc.loggedAs) {
				t.Errorf("the failure was not logged:\n%s", l)
			}
			if elsewhere.get("/tokens"); elsewhere.path() != "/tokens" {
				t.Errorf("the other session at %s, want it kept (ending it failed)", elsewhere.path())
			}
		})
	}
}

// TestRecoveryCodesAnew: an app's user makes new recovery codes, shown
// once on a page of their own; the old codes stop working, the new ones
// sign in, and the page shown again says they were shown.
func TestRecoveryCodesAnew(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	e.user("bob@example.com", keyward.RoleMember)
	b := e.browser()
	b.signIn("ann@example.com")
	_, old := enrolTOTP(t, b)
	u := mustUser(t, e, "ann@example.com")

	_, page := b.get("/account/mfa")
	wantText(t, page, `action="/account/mfa/recovery"`, `id="recovery-new"`)
	status, body := b.post("/account/mfa/recovery", nil)
	wantStatus(t, status, http.StatusOK, body)
	if b.path() != "/account/mfa/recovery" {
		t.Fatalf("after making codes: at %s", b.path())
	}
	var codes []string
	for _, m := range recoveryRE.FindAllStringSubmatch(body, -1) {
		codes = append(codes, m[1])
	}
	if len(codes) != account.RecoveryCodes || slices.Contains(codes, old[0]) {
		t.Fatalf("codes shown %v, want %d new ones", codes, account.RecoveryCodes)
	}
	wantText(t, body, `id="recovery-codes" data-once=`)
	// Shown once: again, the page says so.
	status, body = b.get("/account/mfa/recovery")
	wantStatus(t, status, http.StatusGone, body)
	if n := len(recoveryRE.FindAllString(body, -1)); n != 0 {
		t.Fatalf("the page shown again lists %d codes", n)
	}
	wantText(t, body, "The new recovery codes were shown once")
	if n, _ := e.store.RecoveryCodesLeft(context.Background(), u.ID); n != account.RecoveryCodes {
		t.Errorf("%d recovery codes stored, want %d", n, account.RecoveryCodes)
	}
	evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "mfa.recovery_codes_create"})
	if err != nil || len(evs) != 2 {
		t.Fatalf("mfa.recovery_codes_create events: %d, %v; want 2 (enrolment, anew)", len(evs), err)
	}

	signIn := func(code string) (int, string) {
		c := e.browser()
		c.get("/signin")
		c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
		status, body := c.post("/signin/mfa", url.Values{"code": {code}})
		return status, c.path() + "\n" + body
	}
	if status, body := signIn(old[1]); status != http.StatusUnauthorized {
		t.Errorf("an old recovery code: %d\n%s", status, body)
	}
	if status, body := signIn(codes[0]); status != http.StatusOK || !strings.HasPrefix(body, "/tokens\n") {
		t.Errorf("a new recovery code: %d\n%s", status, body)
	}

	// Without a recent password, first the password; without an app, no
	// codes.
	e.clock.Add(reauthFor)
	status, body = b.post("/account/mfa/recovery", nil)
	if !strings.HasPrefix(b.path(), "/reauth") {
		t.Errorf("without a recent password: %d at %s\n%s", status, b.path(), body)
	}
	c := e.browser()
	c.signIn("bob@example.com")
	status, body = c.post("/account/mfa/recovery", nil)
	wantStatus(t, status, http.StatusConflict, body)
	if n, _ := e.store.RecoveryCodesLeft(context.Background(), mustUser(t, e, "bob@example.com").ID); n != 0 {
		t.Errorf("a user without an app got %d recovery codes", n)
	}
}

// offFirst is an account store on which the app is turned off (in another
// tab) just before recovery codes are written.
type offFirst struct{ *sqlite.DB }

func (a offFirst) SetRecoveryCodes(ctx context.Context, userID string, digests [][]byte, events ...*keyward.AuditEvent) error {
	if _, _, err := a.DB.DisableTOTP(ctx, userID, false, time.Now()); err != nil {
		return err
	}
	return a.DB.SetRecoveryCodes(ctx, userID, digests, events...)
}

// TestRecoveryCodesAppOffMeanwhile: new recovery codes made as the app is
// turned off are not stored: without the app they would be a second
// factor of their own, which the security page does not list and turning
// the app off did not remove.
func TestRecoveryCodesAppOffMeanwhile(t *testing.T) {
	e := newEnvAccounts(t, "", nil, func(db *sqlite.DB) keyward.AccountStore { return offFirst{db} })
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	enrolTOTP(t, b)
	u := mustUser(t, e, "ann@example.com")

	b.get("/account/mfa")
	status, body := b.post("/account/mfa/recovery", nil)
	wantStatus(t, status, http.StatusConflict, body)
	if n := len(recoveryRE.FindAllString(body, -1)); n != 0 {
		t.Errorf("the answer lists %d codes", n)
	}
	if u := mustUser(t, e, "ann@example.com"); u.HasMFA() {
		t.Fatal("the app is still on")
	}
	if n, err := e.store.RecoveryCodesLeft(context.Background(), u.ID); err != nil || n != 0 {
		t.Errorf("%d recovery codes stored without the app (%v), want 0", n, err)
	}
	evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "mfa.recovery_codes_create"})
	if err != nil || len(evs) != 1 {
		t.Errorf("mfa.recovery_codes_create events: %d, %v; want 1 (enrolment)", len(evs), err)
	}
}
