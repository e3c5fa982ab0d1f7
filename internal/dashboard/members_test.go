package dashboard

import (
	"context"
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
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/sqlite"
)

var inviteLinkRE = regexp.MustCompile(`<code id="invite-link" class="secret">([^<]+)</code>`)

// invite makes an invitation as the signed-in owner and returns the path
// and query of its link.
func invite(t *testing.T, b *browser, email, role string) string {
	t.Helper()
	b.get("/members")
	status, body := b.post("/members/invite", url.Values{"email": {email}, "role": {role}})
	wantStatus(t, status, http.StatusOK, body) // the link's page, after the redirect
	m := inviteLinkRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no invitation link on the page:\n%s", body)
	}
	u, err := url.Parse(unescape(m[1]))
	if err != nil || u.Path != "/invite" || u.Query().Get("code") == "" {
		t.Fatalf("invitation link %q", m[1])
	}
	return u.RequestURI()
}

func TestInvites(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	o := e.browser()
	o.signIn("owner@example.com")

	t.Run("ErrForm", func(t *testing.T) {
		for _, tt := range []struct{ email, role, field, want string }{
			{"not-an-email", keyward.RoleMember, "email", "Enter an email address such as ann@example.com."},
			{"owner@example.com", keyward.RoleMember, "email", "This person is a member already."},
			{"new@example.com", "god", "role", "Choose a role."},
		} {
			o.get("/members")
			status, body := o.post("/members/invite", url.Values{"email": {tt.email}, "role": {tt.role}})
			wantStatus(t, status, http.StatusBadRequest, body)
			re := regexp.MustCompile(`<p class="field-error" id="` + tt.field + `-error">([^<]*)</p>`)
			if m := re.FindStringSubmatch(body); m == nil || unescape(m[1]) != tt.want {
				t.Errorf("no %q next to %s", tt.want, tt.field)
			}
		}
	})

	link := invite(t, o, "New@Example.com", keyward.RoleAdmin)
	invitedPage := o.path()
	code := strings.TrimPrefix(link, "/invite?code=")
	t.Run("LifetimeSaid", func(t *testing.T) {
		// The page says how long the link works: the setting, 72 h.
		if !strings.Contains(o.body, "It works once, for 3 days") {
			t.Errorf("the invitation page does not say its lifetime:\n%s", o.body)
		}
	})
	t.Run("ReloadMakesNoSecondInvitation", func(t *testing.T) {
		status, body := o.get(invitedPage)
		wantStatus(t, status, http.StatusGone, body)
		wantText(t, body, `id="invite-gone"`)
		if strings.Contains(body, code) {
			t.Error("the reloaded page shows the link")
		}
		invs, err := e.store.FindInvites(context.Background(), e.ws.ID)
		if err != nil || len(invs) != 1 {
			t.Errorf("%d invitations, want 1 (%v)", len(invs), err)
		}
	})
	t.Run("NewUser", func(t *testing.T) {
		n := e.browser()
		status, body := n.get(link)
		wantStatus(t, status, http.StatusOK, body)
		wantText(t, body, "as <strong>admin</strong>", "new@example.com", "Choose a password")
		for _, tt := range []struct {
			form  url.Values
			field string
			want  string
		}{
			{url.Values{"password": {"short"}, "password2": {"short"}}, "password", "Use at least 12 characters"},
			{url.Values{"password": {"password1234"}, "password2": {"password1234"}}, "password", "This password is on a list of common or breached passwords"},
			{url.Values{"password": {goodPassword}, "password2": {goodPassword + "x"}}, "password2", "The two passwords differ."},
		} {
			tt.form.Set("code", code)
			status, body := n.post("/invite", tt.form)
			wantStatus(t, status, http.StatusBadRequest, body)
			re := regexp.MustCompile(`<p class="field-error" id="` + tt.field + `-error">([^<]*)</p>`)
			if m := re.FindStringSubmatch(body); m == nil || !strings.Contains(unescape(m[1]), tt.want) {
				t.Errorf("no %q next to %s", tt.want, tt.field)
			}
		}
		n.post("/invite", url.Values{"code": {code}, "password": {goodPassword}, "password2": {goodPassword}})
		if n.path() != "/signin" || !strings.Contains(n.body, "You joined the workspace.") {
			t.Fatalf("after joining: at %s", n.path())
		}
		n.signIn("new@example.com")
		if !strings.Contains(n.body, "(admin)") {
			t.Errorf("the new member is not an admin")
		}
		// Once only.
		again := e.browser()
		status, body = again.get(link)
		wantStatus(t, status, http.StatusNotFound, body)
		wantText(t, body, msgBadInvite)
		again.get("/signin")
		status, _ = again.post("/invite", url.Values{"code": {code}, "password": {goodPassword}, "password2": {goodPassword}})
		wantStatus(t, status, http.StatusNotFound, "a used invitation accepted")
	})
	t.Run("ErrExpired", func(t *testing.T) {
		l := invite(t, o, "late@example.com", keyward.RoleMember)
		e.clock.Add(keyward.DefaultInviteTTL)
		o.get("/tokens") // keep the owner's session alive... it is idle-expired by now
		status, body := e.browser().get(l)
		wantStatus(t, status, http.StatusNotFound, body)
		o.signIn("owner@example.com")
	})
	t.Run("ExistingUserOfAnotherWorkspace", func(t *testing.T) {
		ws2, _, err := e.svc.CreateWorkspace(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Workspace{Name: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.PutMember(context.Background(), &keyward.Member{WorkspaceID: ws2.ID, UserID: mustUser(t, e, "owner@example.com").ID, Role: keyward.RoleOwner}); err != nil {
			t.Fatal(err)
		}
		// Vera has an account, in acme only; the owner invites her to
		// default, where the owner's session acts: she confirms with her
		// password instead of choosing one.
		e.user("vera@example.com", keyward.RoleViewer)
		if err := e.store.RemoveMember(context.Background(), e.ws.ID, mustUser(t, e, "vera@example.com").ID); err != nil {
			t.Fatal(err)
		}
		if err := e.store.PutMember(context.Background(), &keyward.Member{WorkspaceID: ws2.ID, UserID: mustUser(t, e, "vera@example.com").ID, Role: keyward.RoleViewer}); err != nil {
			t.Fatal(err)
		}
		l := invite(t, o, "vera@example.com", keyward.RoleMember)
		v := e.browser()
		_, body := v.get(l)
		wantText(t, body, "Your password")
		c := strings.TrimPrefix(l, "/invite?code=")
		status, body := v.post("/invite", url.Values{"code": {c}, "password": {"wrong password here"}})
		wantStatus(t, status, http.StatusUnauthorized, body)
		wantText(t, body, "The password is incorrect.")
		v.post("/invite", url.Values{"code": {c}, "password": {goodPassword}})
		if v.path() != "/signin" {
			t.Fatalf("after joining: at %s\n%s", v.path(), v.body)
		}
		if m, err := e.store.FindMember(context.Background(), e.ws.ID, mustUser(t, e, "vera@example.com").ID); err != nil || m.Role != keyward.RoleMember {
			t.Errorf("vera's membership = %+v, %v", m, err)
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		l := invite(t, o, "gone@example.com", keyward.RoleMember)
		_, body := o.get("/members")
		id := regexp.MustCompile(`action="/members/invites/(inv_[0-9a-z]+)/cancel"`).FindStringSubmatch(body)[1]
		o.post("/members/invites/"+id+"/cancel", nil)
		status, _ := e.browser().get(l)
		wantStatus(t, status, http.StatusNotFound, "a cancelled invitation")
	})
	t.Run("CodeNeverLogged", func(t *testing.T) {
		if strings.Contains(e.log.String(), code) {
			t.Error("the log holds an invitation code")
		}
		evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID})
		seen := map[string]bool{}
		for _, ev := range evs {
			seen[ev.Action] = true
			if strings.Contains(string(ev.Changes), code) {
				t.Errorf("event %s holds the code", ev.Action)
			}
		}
		for _, a := range []string{"member.invite", "member.join", "user.create", "member.invite_cancel"} {
			if !seen[a] {
				t.Errorf("no %s event", a)
			}
		}
	})
}

func TestMemberRoles(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	e.user("owner2@example.com", keyward.RoleOwner)
	e.user("adam@example.com", keyward.RoleAdmin)
	mia := e.user("mia@example.com", keyward.RoleMember)
	o2 := mustUser(t, e, "owner2@example.com")
	admin := e.browser()
	admin.signIn("adam@example.com")
	_, page := admin.get("/members")
	// An admin is offered no control over an owner, nor the owner role.
	if strings.Contains(page, `id="role-`+o2.ID+`"`) || strings.Contains(page, `/members/`+o2.ID+`/remove`) || strings.Contains(page, `<option value="owner"`) {
		t.Error("an admin's members page offers to change or remove an owner, or to make one")
	}
	if !strings.Contains(page, `id="role-`+mia.ID+`"`) {
		t.Error("an admin's members page offers no control over a member")
	}
	// Each row's buttons say whom they act on, to a screen reader too.
	wantText(t, page, `Change<span class="sr"> the role of mia@example.com</span></button>`, `Remove<span class="sr"> mia@example.com</span></button>`)
	tests := []struct {
		name, user, role string
		status           int
		want             string
	}{
		{"ErrSelf", mustUser(t, e, "adam@example.com").ID, keyward.RoleMember, 403, "You cannot change your own role."},
		{"ErrAdminMakesOwner", mia.ID, keyward.RoleOwner, 403, "Only owners make or change owners."},
		{"ErrAdminDemotesOwner", o2.ID, keyward.RoleMember, 403, "Only owners make or change owners."},
		{"ErrBadRole", mia.ID, "god", 400, "Choose a role."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := admin.post("/members/"+tt.user+"/role", url.Values{"role": {tt.role}})
			wantStatus(t, status, tt.status, body)
			wantText(t, body, tt.want)
		})
	}
	status, _ := admin.post("/members/usr_nope/role", url.Values{"role": {"viewer"}})
	wantStatus(t, status, http.StatusNotFound, "an unknown member")
	status, _ = admin.post("/members/invite", url.Values{"email": {"x@example.com"}, "role": {"member"}})
	wantStatus(t, status, http.StatusForbidden, "an admin inviting")

	m := e.browser()
	m.signIn("mia@example.com")
	admin.get("/members")
	admin.post("/members/"+mia.ID+"/role", url.Values{"role": {keyward.RoleViewer}})
	if m.get("/tokens/new"); m.path() != "/signin" {
		t.Errorf("a role change did not end mia's session (at %s, %d)", m.path(), m.last.StatusCode)
	}
	m.signIn("mia@example.com")
	if m.get("/tokens/new"); m.last.StatusCode != http.StatusForbidden {
		t.Errorf("mia (now viewer) got %d on the new token form", m.last.StatusCode)
	}
	admin.get("/members")
	status, body := admin.post("/members/"+o2.ID+"/remove", url.Values{"confirm": {"yes"}})
	wantStatus(t, status, http.StatusForbidden, body)
	admin.post("/members/"+mia.ID+"/remove", url.Values{"confirm": {"yes"}})
	if m.get("/tokens"); m.path() != "/signin" {
		t.Errorf("a removed member is still signed in (at %s)", m.path())
	}
	evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Target: mia.ID})
	var actions []string
	for _, ev := range evs {
		actions = append(actions, ev.Action)
	}
	slices.Sort(actions) // one clock instant: ids do not order them
	if strings.Join(actions, " ") != "member.remove member.role_change user.create" {
		t.Errorf("mia's events = %v", actions)
	}
	// A member and a viewer do not reach the page.
	v := e.browser()
	e.user("vic@example.com", keyward.RoleViewer)
	v.signIn("vic@example.com")
	status, _ = v.get("/members")
	wantStatus(t, status, http.StatusForbidden, "a viewer on /members")
}

// TestDemotedMakersTokens: the management tokens a member made, and those
// made through them, are revoked when the member's role no longer grants
// their keyward: scopes, or the member leaves; tokens without keyward:
// scopes keep working.
func TestDemotedMakersTokens(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	adam := e.user("adam@example.com", keyward.RoleAdmin)
	ctx := context.Background()
	asAdam := manage.MemberCaller(adam.ID, e.ws.ID)
	asAdam.Scopes = []string{keyward.ScopeAdmin}
	mgmt, _, err := e.svc.CreateToken(ctx, asAdam, &keyward.Token{Name: "adam-mgmt", Scopes: []string{keyward.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	integ, _, err := e.svc.CreateToken(ctx, asAdam, &keyward.Token{Name: "crm-sync", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	// Made through the API with adam's management token.
	minted, _, err := e.svc.CreateToken(ctx, manage.TokenCaller(mgmt), &keyward.Token{Name: "persist", Scopes: []string{"keyward:tokens:write"}})
	if err != nil {
		t.Fatal(err)
	}
	state := func(id string) string {
		tok, err := e.store.FindToken(ctx, e.ws.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		return tok.State(e.clock.Now())
	}

	owner := e.browser()
	owner.signIn("owner@example.com")
	owner.get("/members")
	status, body := owner.post("/members/"+adam.ID+"/role", url.Values{"role": {keyward.RoleOwner}})
	wantStatus(t, status, http.StatusOK, body) // followed to /members
	if state(mgmt.ID) != keyward.StateActive || state(minted.ID) != keyward.StateActive {
		t.Fatal("a promotion revoked tokens")
	}
	owner.get("/members")
	owner.post("/members/"+adam.ID+"/role", url.Values{"role": {keyward.RoleViewer}})
	for _, id := range []string{mgmt.ID, minted.ID} {
		if got := state(id); got != keyward.StateRevoked {
			t.Errorf("%s after the demotion: %s, want revoked", id, got)
		}
	}
	if got := state(integ.ID); got != keyward.StateActive {
		t.Errorf("the integration token after the demotion: %s, want active", got)
	}
	tok, _ := e.store.FindToken(ctx, e.ws.ID, mgmt.ID)
	if tok.RevokeReason != "the maker's role changed from owner to viewer" {
		t.Errorf("revoke reason %q", tok.RevokeReason)
	}
	// One made meanwhile (on another node, say), or left by a revocation
	// that failed: asking for the same role again revokes it.
	late, _, err := e.svc.CreateToken(ctx, manage.TokenCaller(mgmt), &keyward.Token{Name: "late", Scopes: []string{"keyward:tokens:read"}})
	if err != nil {
		t.Fatal(err)
	}
	owner.get("/members")
	owner.post("/members/"+adam.ID+"/role", url.Values{"role": {keyward.RoleViewer}})
	if got := state(late.ID); got != keyward.StateRevoked {
		t.Errorf("a token made after the demotion, the role asked again: %s, want revoked", got)
	}

	// Removal: the same for a member's management token made since.
	owner.get("/members")
	owner.post("/members/"+adam.ID+"/role", url.Values{"role": {keyward.RoleAdmin}})
	again, _, err := e.svc.CreateToken(ctx, asAdam, &keyward.Token{Name: "adam-mgmt-2", Scopes: []string{"keyward:audit:read"}})
	if err != nil {
		t.Fatal(err)
	}
	owner.get("/members")
	// Unconfirmed, nothing happens.
	status, body = owner.post("/members/"+adam.ID+"/remove", nil)
	wantStatus(t, status, http.StatusBadRequest, body)
	wantText(t, body, "Tick the box to confirm: the removal ends their sessions here")
	if got := state(again.ID); got != keyward.StateActive {
		t.Errorf("an unconfirmed removal revoked the member's token: %s", got)
	}
	if _, err := e.store.FindMember(ctx, e.ws.ID, adam.ID); err != nil {
		t.Errorf("an unconfirmed removal removed the member: %v", err)
	}
	owner.post("/members/"+adam.ID+"/remove", url.Values{"confirm": {"yes"}})
	if got := state(again.ID); got != keyward.StateRevoked {
		t.Errorf("a removed member's management token: %s, want revoked", got)
	}
	if got := state(integ.ID); got != keyward.StateActive {
		t.Errorf("the integration token after the removal: %s, want active", got)
	}
}

func TestWorkspaceSwitch(t *testing.T) {
	e := newEnv(t)
	u := e.user("ann@example.com", keyward.RoleMember)
	acme, _, err := e.svc.CreateWorkspace(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Workspace{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := e.svc.CreateWorkspace(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Workspace{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutMember(context.Background(), &keyward.Member{WorkspaceID: acme.ID, UserID: u.ID, Role: keyward.RoleAdmin, CreatedAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	acmeTok, _, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(acme.ID), &keyward.Token{Name: "acme token"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("ann@example.com") // lands in acme, where ann has the most power
	wantText(t, b.body, "acme token", "acme (admin)", "default (member)")
	b.post("/workspace", url.Values{"workspace": {e.ws.ID}})
	if b.path() != "/tokens" || strings.Contains(b.body, "acme token") {
		t.Fatalf("after switching to default: at %s, acme's token shown: %v", b.path(), strings.Contains(b.body, "acme token"))
	}
	status, _ := b.get("/tokens/" + acmeTok.ID)
	wantStatus(t, status, http.StatusNotFound, "acme's token from default")
	b.get("/tokens")
	status, _ = b.post("/workspace", url.Values{"workspace": {other.ID}})
	wantStatus(t, status, http.StatusNotFound, "switching to a workspace ann is not in")
}

// TestInvitesOfFormerOwner: an invitation speaks for its inviter. Removing
// an owner, or making them an admin, cancels their pending invitations
// (audited); and an invitation whose inviter is no longer an owner by any
// other way (here: removed in the store directly) is refused when used.
func TestInvitesOfFormerOwner(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	o := e.browser()
	o.signIn("owner@example.com")
	for _, end := range []string{"remove", "demote", "store"} {
		email := "owner-" + end + "@example.com"
		u := e.user(email, keyward.RoleOwner)
		o2 := e.browser()
		o2.signIn(email)
		link := invite(t, o2, "planted-"+end+"@example.com", keyward.RoleOwner)
		o.get("/members")
		switch end {
		case "remove":
			o.post("/members/"+u.ID+"/remove", url.Values{"confirm": {"yes"}})
		case "demote":
			o.post("/members/"+u.ID+"/role", url.Values{"role": {keyward.RoleAdmin}})
		case "store":
			if err := e.store.RemoveMember(context.Background(), e.ws.ID, u.ID); err != nil {
				t.Fatal(err)
			}
		}
		n := e.browser()
		status, body := n.get(link)
		wantStatus(t, status, http.StatusNotFound, end+": the invitation page of a former owner")
		wantText(t, body, msgBadInvite)
		n.get("/signin")
		code := strings.TrimPrefix(link, "/invite?code=")
		status, _ = n.post("/invite", url.Values{"code": {code}, "password": {goodPassword}, "password2": {goodPassword}})
		wantStatus(t, status, http.StatusNotFound, end+": an invitation of a former owner accepted")
		invs, err := e.store.FindInvites(context.Background(), e.ws.ID)
		if err != nil {
			t.Fatal(err)
		}
		pending := 0
		for _, inv := range invs {
			if inv.CreatedBy == u.ID {
				pending++
			}
		}
		if want := map[bool]int{true: 1, false: 0}[end == "store"]; pending != want {
			t.Errorf("%s: %d pending invitations of the former owner, want %d", end, pending, want)
		}
		if end != "store" {
			inviteID := ""
			evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "member.invite"})
			for _, ev := range evs {
				if ev.Actor.ID == u.ID {
					inviteID = ev.Target
				}
			}
			evs, _ = e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Target: inviteID})
			var actions []string
			for _, ev := range evs {
				actions = append(actions, ev.Action)
			}
			if inviteID == "" || !slices.Contains(actions, "member.invite_cancel") {
				t.Errorf("%s: audit events of invitation %q: %v, want a member.invite_cancel", end, inviteID, actions)
			}
		}
	}
}

// TestRemovedMembersAdoptedTokens: a member who took over a token made by
// someone else (given it keyward: scopes, then rotated it: whoever rotates
// is handed the new secret) loses it on removal, as one they made; so does
// a token the member rotated in the dashboard. A token they rotated that
// holds no keyward: scope keeps working, like an integration's they made.
func TestRemovedMembersAdoptedTokens(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	mallory := e.user("mallory@example.com", keyward.RoleAdmin)
	ctx := context.Background()
	sys := manage.SystemCaller(e.ws.ID)
	asMallory := manage.MemberCaller(mallory.ID, e.ws.ID)
	asMallory.Scopes = []string{keyward.ScopeAdmin}
	mgmt, _, err := e.svc.CreateToken(ctx, asMallory, &keyward.Token{Name: "mallory-api", Scopes: []string{keyward.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	made := func(name string, scopes ...string) *keyward.Token {
		tok, _, err := e.svc.CreateToken(ctx, sys, &keyward.Token{Name: name, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	orders, deploy, crm := made("a-orders", "orders:read"), made("deploy", keyward.ScopeAdmin), made("crm", "orders:read")
	// Through mallory's token: admin scopes onto a-orders, then a rotation
	// with a long grace, so that its holder notices nothing.
	if _, err := e.svc.UpdateToken(ctx, manage.TokenCaller(mgmt), orders.ID, func(t *keyward.Token) {
		t.Scopes = []string{"orders:read", keyward.ScopeAdmin}
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.RotateToken(ctx, manage.TokenCaller(mgmt), orders.ID, 720*time.Hour); err != nil {
		t.Fatal(err)
	}
	// Through her token again, without a rotation: admin scopes onto a
	// token whose secret she knew (not made by her), and only a new name
	// onto the owner's own admin token, which hands her nothing.
	upgraded, ownersAdmin := made("b-orders", "orders:read"), made("owners-admin", keyward.ScopeAdmin)
	if _, err := e.svc.UpdateToken(ctx, manage.TokenCaller(mgmt), upgraded.ID, func(t *keyward.Token) {
		t.Scopes = []string{"orders:read", keyward.ScopeAdmin}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.UpdateToken(ctx, manage.TokenCaller(mgmt), ownersAdmin.ID, func(t *keyward.Token) {
		t.Name = "owners-admin (ci)"
	}); err != nil {
		t.Fatal(err)
	}
	// Through her token: power given back or widened on admin tokens the
	// owner made (resumed; expiry lifted; allowlist lifted), and one
	// narrowed (an earlier expiry), which hands her nothing.
	in1h, in2h := e.clock.Now().Add(time.Hour), e.clock.Now().Add(2*time.Hour)
	bound := func(name string, expires *time.Time, cidrs ...string) *keyward.Token {
		tok, _, err := e.svc.CreateToken(ctx, sys, &keyward.Token{Name: name, Scopes: []string{keyward.ScopeAdmin}, ExpiresAt: expires, AllowedCIDRs: cidrs})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	suspended, expiring, cidrBound, narrowed := bound("suspended-admin", nil), bound("expiring-admin", &in1h), bound("cidr-admin", nil, "10.0.0.0/8"), bound("narrowed-admin", &in2h)
	if _, err := e.svc.SuspendToken(ctx, sys, suspended.ID, "on hold"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ResumeToken(ctx, manage.TokenCaller(mgmt), suspended.ID, ""); err != nil {
		t.Fatal(err)
	}
	for id, patch := range map[string]func(t *keyward.Token){
		expiring.ID:  func(t *keyward.Token) { t.ExpiresAt = nil },
		cidrBound.ID: func(t *keyward.Token) { t.AllowedCIDRs = []string{"10.0.0.0/8", "0.0.0.0/1"} },
		narrowed.ID:  func(t *keyward.Token) { t.ExpiresAt = &in1h },
	} {
		if _, err := e.svc.UpdateToken(ctx, manage.TokenCaller(mgmt), id, patch); err != nil {
			t.Fatal(err)
		}
	}
	// In the dashboard, as herself: the deploy token, and crm.
	for _, id := range []string{deploy.ID, crm.ID} {
		if _, _, err := e.svc.RotateToken(ctx, asMallory, id, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	owner := e.browser()
	owner.signIn("owner@example.com")
	owner.get("/members")
	owner.post("/members/"+mallory.ID+"/remove", url.Values{"confirm": {"yes"}})
	for id, want := range map[string]string{mgmt.ID: keyward.StateRevoked, orders.ID: keyward.StateRevoked, deploy.ID: keyward.StateRevoked, crm.ID: keyward.StateActive,
		upgraded.ID: keyward.StateRevoked, ownersAdmin.ID: keyward.StateActive,
		suspended.ID: keyward.StateRevoked, expiring.ID: keyward.StateRevoked, cidrBound.ID: keyward.StateRevoked, narrowed.ID: keyward.StateActive} {
		tok, err := e.store.FindToken(ctx, e.ws.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.State(e.clock.Now()); got != want {
			t.Errorf("%s (%s) after mallory's removal: %s, want %s", tok.Name, id, got, want)
		}
	}
}

// TestInviteTwoTabs: two invitations sent before either's redirect is
// followed (two tabs) each show their own link.
func TestInviteTwoTabs(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/members")
	restore := noFollow(b)
	b.post("/members/invite", url.Values{"email": {"alice@example.com"}, "role": {keyward.RoleMember}})
	locA := b.last.Header.Get("Location")
	b.post("/members/invite", url.Values{"email": {"bob@example.com"}, "role": {keyward.RoleMember}})
	locB := b.last.Header.Get("Location")
	restore()
	for loc, who := range map[string]string{locA: "alice@example.com", locB: "bob@example.com"} {
		status, body := b.get(loc)
		if status != http.StatusOK || !strings.Contains(body, `id="invite-link"`) || !strings.Contains(body, "Send this link to "+who) {
			t.Errorf("%s: %d, no link for %s shown", loc, status, who)
		}
	}
}

// acceptAfter is an account store that runs before ahead of the first
// AcceptInvite.
type acceptAfter struct {
	*sqlite.DB
	once   sync.Once
	before func()
}

func (a *acceptAfter) AcceptInvite(ctx context.Context, digest []byte, now time.Time, newUser *keyward.User, userID string, events ...*keyward.AuditEvent) error {
	if a.before != nil {
		a.once.Do(a.before)
	}
	return a.DB.AcceptInvite(ctx, digest, now, newUser, userID, events...)
}

// TestInviteAccountCreatedSince: the invited email gets an account after
// the invitation page asked to choose a password (another invitation
// accepted, the CLI). The password chosen is not that account's: the
// answer says what happened and asks for the account's password, rather
// than calling the new password incorrect or the person a member already;
// with it, the invitation joins that account.
func TestInviteAccountCreatedSince(t *testing.T) {
	want := "An account with the email new@example.com was created after this page was opened, so there is no password to choose: enter that account's password to join with it. If you did not create it, do not join, and tell whoever invited you."
	for _, tt := range []struct {
		name string
		when string // when the account is made: before the form is posted, or while it is handled
	}{{"BeforePost", "before"}, {"DuringPost", "during"}} {
		t.Run(tt.name, func(t *testing.T) {
			var a *acceptAfter
			e := newEnvAccounts(t, "", nil, func(db *sqlite.DB) keyward.AccountStore { a = &acceptAfter{DB: db}; return a })
			e.user("owner@example.com", keyward.RoleOwner)
			o := e.browser()
			o.signIn("owner@example.com")
			link := invite(t, o, "new@example.com", keyward.RoleMember)
			code := strings.TrimPrefix(link, "/invite?code=")
			n := e.browser()
			_, body := n.get(link)
			wantText(t, body, "Choose a password")
			// The account, made elsewhere in another workspace, with
			// goodPassword.
			mk := func() {
				other, _, err := e.svc.CreateWorkspace(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Workspace{Name: "other"})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := account.CreateUser(context.Background(), e.store, account.NewUser{Email: "new@example.com", Password: goodPassword, WorkspaceID: other.ID, Role: keyward.RoleOwner},
					account.TestParams, keyward.Actor{Type: keyward.ActorSystem}, e.clock.Now()); err != nil {
					t.Error(err)
				}
			}
			if tt.when == "before" {
				mk()
			} else {
				a.before = mk
			}
			chosen := "a brand new password of mine"
			status, body := n.post("/invite", url.Values{"code": {code}, "account": {"new"}, "password": {chosen}, "password2": {chosen}})
			wantStatus(t, status, http.StatusConflict, body)
			re := regexp.MustCompile(`<p class="field-error" id="password-error">([^<]*)</p>`)
			if m := re.FindStringSubmatch(body); m == nil || unescape(m[1]) != want {
				t.Errorf("no %q next to the password:\n%s", want, body)
			}
			wantText(t, body, "Your password", `name="account" value="existing"`)
			n.post("/invite", url.Values{"code": {code}, "account": {"existing"}, "password": {goodPassword}})
			if n.path() != "/signin" || !strings.Contains(n.body, "You joined the workspace.") {
				t.Fatalf("after joining with the account's password: at %s\n%s", n.path(), n.body)
			}
			if m, err := e.store.FindMember(context.Background(), e.ws.ID, mustUser(t, e, "new@example.com").ID); err != nil || m.Role != keyward.RoleMember {
				t.Errorf("membership = %+v, %v", m, err)
			}
		})
	}
}

// TestInvitedPageOtherIDs: the page an invitation's link is shown on
// answers 410 ("shown once") only for an open invitation of the workspace
// acted in; another workspace's invitation, or an id that is none, is no
// page there (404), as every foreign object is.
func TestInvitedPageOtherIDs(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	acme, _, err := e.svc.CreateWorkspace(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Workspace{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	eve := e.user("eve@example.com", keyward.RoleMember)
	if err := e.store.PutMember(context.Background(), &keyward.Member{WorkspaceID: acme.ID, UserID: eve.ID, Role: keyward.RoleOwner, CreatedAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	o := e.browser()
	o.signIn("owner@example.com")
	invite(t, o, "new@example.com", keyward.RoleMember)
	invitedPage := o.path()

	status, body := o.get(invitedPage)
	wantStatus(t, status, http.StatusGone, body)
	status, body = o.get("/members/invited/inv_01kkns5tm0z5mqaxme48v3envb")
	wantStatus(t, status, http.StatusNotFound, body)

	ev := e.browser()
	ev.signIn("eve@example.com") // lands in acme, where eve is an owner
	if !strings.Contains(ev.body, "acme (owner)") {
		t.Fatalf("eve is not acting in acme as its owner:\n%s", ev.body)
	}
	status, body = ev.get(invitedPage)
	wantStatus(t, status, http.StatusNotFound, body)
	if strings.Contains(body, "invite-gone") {
		t.Error("another workspace's invitation is said to be shown already")
	}
}
