package dashboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
)

// inviteDigest returns the stored form of an invitation code.
func (s *Server) inviteDigest(code string) []byte {
	m := hmac.New(sha256.New, s.inviteKey)
	m.Write([]byte(code))
	return m.Sum(nil)
}

// mayManage reports whether a member with role actor may change or remove
// a member with role target (to role to, "" for a removal): owners and
// admins may, but only owners touch owners.
func mayManage(actor, target, to string) bool {
	if !isAdmin(actor) {
		return false
	}
	if target == keyward.RoleOwner || to == keyward.RoleOwner {
		return actor == keyward.RoleOwner
	}
	return true
}

type membersData struct {
	Members    []*keyward.Member
	Invites    []*keyward.Invite
	Roles      []string
	Self       string
	Owner      bool
	InviteLink string // shown once, right after the invitation is made
	Gone       bool   // the link was shown already
	InviteTTL  time.Duration
	Email      string
	Role       string
	Errors     map[string]string
}

func (s *Server) membersPage(w http.ResponseWriter, r *http.Request, status int, d membersData) {
	st := stateOf(r)
	ms, err := s.accounts.FindMembers(r.Context(), st.member.WorkspaceID, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	invs, err := s.accounts.FindInvites(r.Context(), st.member.WorkspaceID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d.Members, d.Invites, d.Roles, d.Self, d.Owner = ms, invs, keyward.Roles, st.user.ID, st.member.Role == keyward.RoleOwner
	d.InviteTTL = s.inviteTTL
	if d.Role == "" {
		d.Role = keyward.RoleMember
	}
	s.render(w, r, status, "members", "Members", d)
}

func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	if !isAdmin(stateOf(r).member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Only owners and admins manage members.")
		return
	}
	s.membersPage(w, r, http.StatusOK, membersData{})
}

func (s *Server) handleInviteCreate(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if st.member.Role != keyward.RoleOwner {
		s.renderError(w, r, http.StatusForbidden, "Only owners invite members.")
		return
	}
	d := membersData{Email: r.PostForm.Get("email"), Role: r.PostForm.Get("role"), Errors: map[string]string{}}
	email, err := keyward.NormalizeEmail(d.Email)
	if err != nil {
		d.Errors["email"] = "Enter an email address such as ann@example.com."
	}
	if !keyward.ValidRole(d.Role) {
		d.Errors["role"] = "Choose a role."
	}
	if email != "" {
		if u, err := s.accounts.FindUserByEmail(r.Context(), email); err == nil {
			if _, err := s.accounts.FindMember(r.Context(), st.member.WorkspaceID, u.ID); err == nil {
				d.Errors["email"] = "This person is a member already."
			}
		}
	}
	if len(d.Errors) > 0 {
		s.membersPage(w, r, http.StatusBadRequest, d)
		return
	}
	now := s.now().UTC()
	code := newSessionID()
	inv := &keyward.Invite{
		ID: keyward.NewID(keyward.PrefixInvite, now), Digest: s.inviteDigest(code), WorkspaceID: st.member.WorkspaceID,
		Email: email, Role: d.Role, CreatedBy: st.user.ID, CreatedAt: now, ExpiresAt: now.Add(s.inviteTTL),
	}
	ev := s.event(r, inv.WorkspaceID, st.user.ID, "member.invite", inv.ID, now)
	ev.Changes, _ = json.Marshal(map[string]any{"email": map[string]any{"to": email}, "role": map[string]any{"to": d.Role}})
	if err := s.accounts.CreateInvite(r.Context(), inv, ev); err != nil {
		s.fail(w, r, err)
		return
	}
	link := s.public.Scheme + "://" + s.public.Host + "/invite?code=" + url.QueryEscape(code)
	s.showOnce(w, r, "/members/invited/"+inv.ID, email+"\x00"+link)
}

// handleInvited shows the link of the invitation the form just made (see
// showOnce), or, after that once, the members page.
func (s *Server) handleInvited(w http.ResponseWriter, r *http.Request) {
	if stateOf(r).member.Role != keyward.RoleOwner {
		s.renderError(w, r, http.StatusForbidden, "Only owners invite members.")
		return
	}
	id := r.PathValue("id")
	v, ok := s.takeOnce(w, r, "/members/invited/"+id)
	email, link, _ := strings.Cut(v, "\x00")
	if !ok || link == "" {
		// "Shown once" speaks of an open invitation of this workspace:
		// any other id, another workspace's included, is no page here.
		invs, err := s.accounts.FindInvites(r.Context(), stateOf(r).member.WorkspaceID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !slices.ContainsFunc(invs, func(inv *keyward.Invite) bool { return inv.ID == id }) {
			s.renderError(w, r, http.StatusNotFound, "There is no such page.")
			return
		}
		s.membersPage(w, r, http.StatusGone, membersData{Gone: true})
		return
	}
	s.membersPage(w, r, http.StatusOK, membersData{InviteLink: link, Email: email})
}

func (s *Server) handleInviteCancel(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if st.member.Role != keyward.RoleOwner {
		s.renderError(w, r, http.StatusForbidden, "Only owners manage invitations.")
		return
	}
	id := r.PathValue("id")
	now := s.now().UTC()
	if err := s.accounts.DeleteInvite(r.Context(), st.member.WorkspaceID, id,
		s.event(r, st.member.WorkspaceID, st.user.ID, "member.invite_cancel", id, now)); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/members", http.StatusSeeOther)
}

// target returns the member of the URL in the caller's workspace.
func (s *Server) target(r *http.Request) (*keyward.Member, error) {
	return s.accounts.FindMember(r.Context(), stateOf(r).member.WorkspaceID, r.PathValue("user"))
}

func (s *Server) handleMemberRole(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !isAdmin(st.member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Only owners and admins manage members.")
		return
	}
	m, err := s.target(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	role := r.PostForm.Get("role")
	switch {
	case !keyward.ValidRole(role):
		s.membersPage(w, r, http.StatusBadRequest, membersData{Errors: map[string]string{"member-" + m.UserID: "Choose a role."}})
		return
	case m.UserID == st.user.ID:
		s.membersPage(w, r, http.StatusForbidden, membersData{Errors: map[string]string{"member-" + m.UserID: "You cannot change your own role."}})
		return
	case !mayManage(st.member.Role, m.Role, role):
		s.membersPage(w, r, http.StatusForbidden, membersData{Errors: map[string]string{"member-" + m.UserID: "Only owners make or change owners."}})
		return
	case role == m.Role:
		// Unchanged, but what the role does not grant is revoked: a
		// revocation that failed after the change is done by asking again.
		if err := s.revokeBeyondRole(r, m.UserID, role, "the maker's role is "+role); err != nil {
			s.fail(w, r, err)
			return
		}
		http.Redirect(w, r, "/members", http.StatusSeeOther)
		return
	}
	now := s.now().UTC()
	ev := s.event(r, m.WorkspaceID, st.user.ID, "member.role_change", m.UserID, now)
	ev.Changes, _ = json.Marshal(map[string]any{"role": map[string]any{"from": m.Role, "to": role}})
	// The member's sessions in this workspace end in the same transaction:
	// a role taken away stops working at once.
	if err := s.accounts.ChangeRole(r.Context(), m.WorkspaceID, m.UserID, m.Role, role, ev); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.revokeBeyondRole(r, m.UserID, role, "the maker's role changed from "+m.Role+" to "+role); err != nil {
		s.fail(w, r, err)
		return
	}
	if m.Role == keyward.RoleOwner && role != keyward.RoleOwner {
		// Only owners invite: an owner no more leaves invitations to cancel.
		if err := s.cancelInvites(r, m.WorkspaceID, m.UserID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	http.Redirect(w, r, "/members", http.StatusSeeOther)
}

// cancelInvites cancels the pending (unused) invitations that userID made
// in the workspace, once no longer an owner: they would not be accepted
// any more (see invite), and should not stay listed as pending. Each
// cancellation is audited.
func (s *Server) cancelInvites(r *http.Request, workspaceID, userID string) error {
	invs, err := s.accounts.FindInvites(r.Context(), workspaceID)
	if err != nil {
		return err
	}
	actor := stateOf(r).user.ID
	for _, inv := range invs {
		if inv.CreatedBy != userID {
			continue // FindInvites lists only unused ones
		}
		ev := s.event(r, workspaceID, actor, "member.invite_cancel", inv.ID, s.now().UTC())
		if err := s.accounts.DeleteInvite(r.Context(), workspaceID, inv.ID, ev); err != nil && keyward.ErrorCode(err) != keyward.ENOTFOUND {
			return err
		}
	}
	return nil
}

// roleScopes are the keyward: scopes a role acts with in the dashboard,
// and may give the tokens it makes.
func roleScopes(role string) []string {
	if role == keyward.RoleOwner || role == keyward.RoleAdmin {
		return []string{keyward.ScopeAdmin}
	}
	return nil
}

// revokeBeyondRole revokes the management tokens that the member userID
// made or rotated in the caller's workspace and that hold keyward: scopes
// its new role ("" once removed) does not grant, and those such tokens
// made or rotated in turn through the API: through them, a member demoted
// or removed would keep the power taken away. Whoever rotates a token is
// handed its new secret, so a token rotated counts as one made: else a
// member could take over another's admin token (add scopes, rotate it,
// keep the new secret) and keep it after leaving. So does a token whose
// power such a maker restored or widened (resumed, given keyward: scopes
// it lacked, a later expiry or none, a wider allowlist or none): its
// holder may be the member, who knew its secret without having made it.
// Tokens without keyward: scopes (an integration's) keep working. Each
// revocation is audited, with reason. Each maker's acts are read in one
// pass over its audit events (indexed by actor).
func (s *Server) revokeBeyondRole(r *http.Request, userID, role, reason string) error {
	granted := roleScopes(role)
	c := s.caller(r)
	seen := map[string]bool{userID: true}
	makers := []string{userID}
	// consider revokes t when its keyward: scopes exceed the role, and
	// follows what it made or rotated in turn.
	consider := func(t *keyward.Token) error {
		if seen[t.ID] || keyward.MissingManagementScope(granted, t.Scopes) == "" {
			return nil
		}
		seen[t.ID] = true
		// Revoked already or not, what it made is looked at too.
		makers = append(makers, t.ID)
		if t.Revoked {
			return nil
		}
		_, err := s.svc.RevokeToken(r.Context(), c, t.ID, reason)
		return err
	}
	for ; len(makers) > 0; makers = makers[1:] {
		f := keyward.TokenFilter{CreatedBy: makers[0], Limit: 500}
		for {
			toks, err := s.svc.Tokens(r.Context(), c, f)
			if err != nil {
				return err
			}
			for _, t := range toks {
				if err := consider(t); err != nil {
					return err
				}
			}
			if len(toks) < f.Limit {
				break
			}
			f.After = toks[len(toks)-1].ID
		}
		af := keyward.AuditFilter{WorkspaceID: c.WorkspaceID, Actor: makers[0], Limit: 500}
		for {
			evs, err := s.store.FindAuditEvents(r.Context(), af)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				switch {
				case ev.Action == "token.rotate", ev.Action == "token.resume":
				case ev.Action == "token.update" && loosened(ev.Changes):
				default:
					continue // a rename, say: it handed no power
				}
				t, err := s.svc.Token(r.Context(), c, ev.Target)
				if keyward.ErrorCode(err) == keyward.ENOTFOUND {
					continue // deleted since
				} else if err != nil {
					return err
				}
				if err := consider(t); err != nil {
					return err
				}
			}
			if len(evs) < af.Limit {
				break
			}
			af.Before = evs[len(evs)-1].ID
		}
	}
	return nil
}

// loosened reports whether a token.update event's changes widened what
// the token can do: keyward: scopes it did not hold, a later expiry or
// none, an allowlist wider than before or none.
func loosened(changes json.RawMessage) bool {
	var c struct {
		Scopes       *struct{ From, To []string }   `json:"scopes"`
		ExpiresAt    *struct{ From, To *time.Time } `json:"expires_at"`
		AllowedCIDRs *struct{ From, To []string }   `json:"allowed_cidrs"`
	}
	if json.Unmarshal(changes, &c) != nil {
		return false
	}
	switch {
	case c.Scopes != nil && keyward.MissingManagementScope(c.Scopes.From, c.Scopes.To) != "":
		return true
	case c.ExpiresAt != nil && c.ExpiresAt.From != nil && (c.ExpiresAt.To == nil || c.ExpiresAt.To.After(*c.ExpiresAt.From)):
		return true
	case c.AllowedCIDRs != nil && len(c.AllowedCIDRs.From) > 0 &&
		(len(c.AllowedCIDRs.To) == 0 || !keyward.CIDRsWithin(c.AllowedCIDRs.To, c.AllowedCIDRs.From)):
		return true
	}
	return false
}

func (s *Server) handleMemberRemove(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !isAdmin(st.member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Only owners and admins manage members.")
		return
	}
	m, err := s.target(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case m.UserID == st.user.ID:
		s.membersPage(w, r, http.StatusForbidden, membersData{Errors: map[string]string{"member-" + m.UserID: "You cannot remove yourself."}})
		return
	case !mayManage(st.member.Role, m.Role, ""):
		s.membersPage(w, r, http.StatusForbidden, membersData{Errors: map[string]string{"member-" + m.UserID: "Only owners remove owners."}})
		return
	case r.PostForm.Get("confirm") != "yes":
		// As a revocation: it cannot be undone.
		s.membersPage(w, r, http.StatusBadRequest, membersData{Errors: map[string]string{"member-" + m.UserID: "Tick the box to confirm: the removal ends their sessions here and revokes their management tokens."}})
		return
	}
	now := s.now().UTC()
	ev := s.event(r, m.WorkspaceID, st.user.ID, "member.remove", m.UserID, now)
	ev.Changes, _ = json.Marshal(map[string]any{"role": map[string]any{"from": m.Role, "to": nil}})
	// The member's management tokens are revoked first, so that a failure
	// leaves the member to be removed again, and again after, for any made
	// meanwhile. The member's sessions in this workspace end in the same
	// transaction as the removal.
	const reason = "the maker left the workspace"
	if err := s.revokeBeyondRole(r, m.UserID, "", reason); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.accounts.RemoveMember(r.Context(), m.WorkspaceID, m.UserID, ev); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.revokeBeyondRole(r, m.UserID, "", reason); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cancelInvites(r, m.WorkspaceID, m.UserID); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/members", http.StatusSeeOther)
}

type inviteData struct {
	Code      string
	Email     string
	Role      string
	Workspace string
	Existing  bool // the email has an account: confirm with its password
	Errors    map[string]string
}

const msgBadInvite = "This invitation link is not valid: it was used, it expired, or it was cancelled. Ask for a new one."

// msgAccountSince is the answer to a password chosen on the invitation
// page while an account with the invited email was being created
// elsewhere: the invitation now joins that account, with its password.
const msgAccountSince = "An account with the email %s was created after this page was opened, so there is no password to choose: enter that account's password to join with it. If you did not create it, do not join, and tell whoever invited you."

// accountSince shows the invitation page again as for an existing
// account, saying why (see msgAccountSince).
func (s *Server) accountSince(w http.ResponseWriter, r *http.Request, d *inviteData) {
	d.Existing, d.Errors = true, map[string]string{"password": fmt.Sprintf(msgAccountSince, d.Email)}
	s.render(w, r, http.StatusConflict, "invite", "Join "+d.Workspace, d)
}

// invite returns the usable invitation with the code, and the page's data.
func (s *Server) invite(r *http.Request, code string) (*keyward.Invite, *inviteData, error) {
	inv, err := s.accounts.FindInvite(r.Context(), s.inviteDigest(code))
	if err != nil {
		return nil, nil, err
	}
	if inv.UsedAt != nil || !s.now().Before(inv.ExpiresAt) {
		return nil, nil, keyward.Errorf(keyward.ENOTFOUND, "invitation used or expired")
	}
	// An invitation speaks for its inviter: once they are no longer an
	// owner of the workspace (removed or demoted), it is void, so that
	// nobody can plant an owner who joins after they lost the power to.
	switch m, err := s.accounts.FindMember(r.Context(), inv.WorkspaceID, inv.CreatedBy); {
	case keyward.ErrorCode(err) == keyward.ENOTFOUND || err == nil && m.Role != keyward.RoleOwner:
		return nil, nil, keyward.Errorf(keyward.ENOTFOUND, "the inviter is no longer an owner")
	case err != nil:
		return nil, nil, err
	}
	ws, err := s.store.FindWorkspace(r.Context(), inv.WorkspaceID)
	if err != nil {
		return nil, nil, err
	}
	_, err = s.accounts.FindUserByEmail(r.Context(), inv.Email)
	if err != nil && keyward.ErrorCode(err) != keyward.ENOTFOUND {
		return nil, nil, err
	}
	return inv, &inviteData{Code: code, Email: inv.Email, Role: inv.Role, Workspace: ws.Name, Existing: err == nil}, nil
}

func (s *Server) handleInvitePage(w http.ResponseWriter, r *http.Request) {
	_, d, err := s.invite(r, r.URL.Query().Get("code"))
	if keyward.ErrorCode(err) == keyward.ENOTFOUND {
		s.renderError(w, r, http.StatusNotFound, msgBadInvite)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "invite", "Join "+d.Workspace, d)
}

func (s *Server) handleInviteAccept(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := s.now().UTC()
	inv, d, err := s.invite(r, r.PostForm.Get("code"))
	if keyward.ErrorCode(err) == keyward.ENOTFOUND {
		s.renderError(w, r, http.StatusNotFound, msgBadInvite)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pw := r.PostForm.Get("password")
	d.Errors = map[string]string{}
	join := func(userID string) *keyward.AuditEvent {
		ev := s.event(r, inv.WorkspaceID, userID, "member.join", userID, now)
		ev.Changes, _ = json.Marshal(map[string]any{"role": map[string]any{"to": inv.Role}, "invite": inv.ID})
		return ev
	}
	if d.Existing {
		u, err := s.accounts.FindUserByEmail(ctx, inv.Email)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		key := "account:" + u.Email
		if wait := s.throttle.take(now, guard{key, freeAccount}); wait > 0 {
			retryAfter(w, wait)
			d.Errors["password"] = "Too many failed attempts. Try again in " + waitText(wait) + "."
			s.render(w, r, http.StatusTooManyRequests, "invite", "Join "+d.Workspace, d)
			return
		}
		if ok, err := s.verifyPassword(ctx, pw, u.PasswordHash); err != nil || !ok {
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if r.PostForm.Get("account") == "new" {
				// The page asked for a new password: the account was
				// created since, and its password is another.
				s.accountSince(w, r, d)
				return
			}
			d.Errors["password"] = "The password is incorrect."
			s.render(w, r, http.StatusUnauthorized, "invite", "Join "+d.Workspace, d)
			return
		}
		s.throttle.reset(key)
		err = s.accounts.AcceptInvite(ctx, s.inviteDigest(d.Code), now, nil, u.ID, join(u.ID))
		s.afterAccept(w, r, err)
		return
	}
	if err := account.CheckPassword(pw, inv.Email); err != nil {
		d.Errors["password"] = capitalize(keyward.ErrorMessage(err)) + "."
	} else if pw != r.PostForm.Get("password2") {
		d.Errors["password2"] = "The two passwords differ."
	}
	if len(d.Errors) > 0 {
		s.render(w, r, http.StatusBadRequest, "invite", "Join "+d.Workspace, d)
		return
	}
	hash, err := s.hashPassword(ctx, pw)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u := &keyward.User{ID: keyward.NewID(keyward.PrefixUser, now), Email: inv.Email, PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	created := s.event(r, inv.WorkspaceID, u.ID, "user.create", u.ID, now)
	created.Changes, _ = json.Marshal(map[string]any{"email": map[string]any{"to": u.Email}, "role": map[string]any{"to": inv.Role}})
	err = s.accounts.AcceptInvite(ctx, s.inviteDigest(d.Code), now, u, "", created, join(u.ID))
	if keyward.ErrorCode(err) == keyward.ECONFLICT {
		// The new user is no member of anything yet: the conflict is its
		// email, taken by an account created since the check above.
		s.accountSince(w, r, d)
		return
	}
	s.afterAccept(w, r, err)
}

func (s *Server) afterAccept(w http.ResponseWriter, r *http.Request, err error) {
	switch keyward.ErrorCode(err) {
	case "":
		http.Redirect(w, r, "/signin?joined=1", http.StatusSeeOther)
	case keyward.ENOTFOUND:
		s.renderError(w, r, http.StatusNotFound, msgBadInvite)
	case keyward.ECONFLICT:
		s.renderError(w, r, http.StatusConflict, "You are a member of this workspace already. Sign in.")
	default:
		s.fail(w, r, err)
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
