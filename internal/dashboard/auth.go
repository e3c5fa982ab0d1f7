package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
	"github.com/keyward/keyward/internal/secret"
)

// Messages that never tell whether an account exists.
const (
	msgBadCredentials = "The email or password is incorrect."
	msgBadCode        = "That code is not valid. Enter the current code from your app, or a recovery code."
	// A sign-in whose credentials changed between their check and its
	// session (see keyward.User.CredentialEpoch).
	msgCredentialsChanged = "Your password or two-step verification changed while you were signing in. Sign in again."
	// A second step whose pending session ended while it was checked.
	msgSignInEnded = "Your sign-in was ended (your password or two-step verification changed, or you signed out everywhere). Sign in again."
)

func (s *Server) handleHome(w http.ResponseWriter, r *http.Request) {
	if st := stateOf(r); st.session != nil && st.session.Verified {
		http.Redirect(w, r, "/tokens", http.StatusSeeOther)
		return
	}
	s.signInPage(w, r, http.StatusOK, "", nil)
}

func (s *Server) handleSignInPage(w http.ResponseWriter, r *http.Request) {
	if st := stateOf(r); st.session != nil && st.session.Verified {
		http.Redirect(w, r, localPath(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.signInPage(w, r, http.StatusOK, "", nil)
}

type signInData struct {
	NoOwner bool
	Joined  bool
	Email   string
	Next    string
	Message string
	Errors  map[string]string
}

func (s *Server) signInPage(w http.ResponseWriter, r *http.Request, status int, msg string, errs map[string]string) {
	hasOwner, err := s.accounts.HasOwner(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	next := r.FormValue("next")
	s.render(w, r, status, "signin", "Sign in", signInData{
		NoOwner: !hasOwner, Joined: r.URL.Query().Get("joined") == "1", Email: r.PostFormValue("email"), Next: next, Message: msg, Errors: errs,
	})
}

// retryAfter sets Retry-After to the wait d, in whole seconds up.
func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", fmt.Sprint(int((d+time.Second-1)/time.Second)))
}

// waitText says how long to wait, in words.
func waitText(d time.Duration) string {
	n, unit := int((d+time.Second-1)/time.Second), "second"
	if d > 2*time.Minute { // 64 seconds is not "2 minutes"
		n, unit = int((d+time.Minute-1)/time.Minute), "minute"
	}
	if n != 1 {
		unit += "s"
	}
	return fmt.Sprintf("%d %s", n, unit)
}

func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := s.now().UTC()
	email := strings.ToLower(strings.TrimSpace(r.PostForm.Get("email")))
	pw := r.PostForm.Get("password")
	errs := map[string]string{}
	switch {
	case email == "":
		errs["email"] = "Enter your email address."
	case len(email) > keyward.MaxEmailLen:
		// No account has one (see keyward.NormalizeEmail), so this tells
		// nothing about accounts; and the throttle, which would otherwise
		// count it, keeps its key in memory for an hour: a form's worth
		// (64 KiB) a key, from addresses an attacker can rotate.
		errs["email"] = fmt.Sprintf("An email address has at most %d characters.", keyward.MaxEmailLen)
	}
	if pw == "" {
		errs["password"] = "Enter your password."
	}
	if len(errs) > 0 {
		s.signInPage(w, r, http.StatusBadRequest, "", errs)
		return
	}
	addr := addrKey(r)
	// The user first (known or not, the same read), for the browser's
	// device cookie, which is bound to the user's credentials.
	u, err := s.accounts.FindUserByEmail(ctx, email)
	if err != nil && keyward.ErrorCode(err) != keyward.ENOTFOUND {
		s.fail(w, r, err)
		return
	}
	acct := s.signInGuard(r, email, u, now)
	if d := s.throttle.take(now, acct, guard{addr, freeIP}); d > 0 {
		retryAfter(w, d)
		s.signInPage(w, r, http.StatusTooManyRequests, "Too many failed attempts. Try again in "+waitText(d)+".", nil)
		return
	}
	// An unknown email costs a hash too, so that timing does not tell.
	hash := account.DummyHash(s.params)
	if u != nil {
		hash = u.PasswordHash
	}
	ok, err := s.verifyPassword(ctx, pw, hash)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var members []*keyward.Member
	if u != nil && ok {
		if members, err = s.accounts.FindMembers(ctx, "", u.ID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if u == nil || !ok || len(members) == 0 {
		if u != nil {
			s.auditFailure(r, u, "password", now)
		}
		s.signInPage(w, r, http.StatusUnauthorized, msgBadCredentials, nil)
		return
	}
	s.throttle.reset(acct.key)
	s.throttle.refund(addr, now)
	factor, err := s.hasFactor(ctx, u)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A new session, with a new id, whatever the request held before.
	if old := stateOf(r).session; old != nil {
		if _, err := s.accounts.DeleteSessions(ctx, old.UserID, old.ID, ""); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	// The session carries the credential epoch read with the password
	// hash (and before the passkeys): if the user's sessions were ended
	// since, as every change of credentials does after it, the store
	// refuses it, so that it cannot outlive the change.
	id := newSessionID()
	ses := &keyward.Session{
		ID: keyward.NewID(keyward.PrefixSession, now), Digest: s.digest(id), UserID: u.ID,
		WorkspaceID: pickWorkspace(members), Verified: !factor, Epoch: u.CredentialEpoch,
		CreatedAt: now, LastSeenAt: now, IP: clientIP(r), UserAgent: secret.UserAgent(r.UserAgent()),
	}
	var events []*keyward.AuditEvent
	if ses.Verified {
		ses.ReauthAt = now
		events = append(events, s.event(r, ses.WorkspaceID, u.ID, "session.signin", ses.ID, now))
	} else {
		// The password was right; the second factor is still owed. Not a
		// sign-in yet, but a trace of the password's use: one that never
		// completes is a password someone else may hold.
		events = append(events, s.event(r, ses.WorkspaceID, u.ID, "session.signin_pending", ses.ID, now))
	}
	if err := s.accounts.CreateSession(ctx, ses, events...); err != nil {
		if keyward.ErrorCode(err) == keyward.ECONFLICT {
			s.signInPage(w, r, http.StatusConflict, msgCredentialsChanged, nil)
			return
		}
		s.fail(w, r, err)
		return
	}
	s.sweepSessions(r, u.ID, now)
	s.setSession(w, id, u, ses.Verified, now)
	s.rotatePre(w)
	next := localPath(r.PostForm.Get("next"))
	if !ses.Verified {
		http.Redirect(w, r, "/signin/mfa?next="+url.QueryEscape(next), http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// pickWorkspace returns the workspace a new session acts in: the first
// where the user has the most power.
func pickWorkspace(ms []*keyward.Member) string {
	best := ms[0]
	rank := func(role string) int {
		for i, r := range keyward.Roles {
			if r == role {
				return i
			}
		}
		return len(keyward.Roles)
	}
	for _, m := range ms[1:] {
		if rank(m.Role) < rank(best.Role) {
			best = m
		}
	}
	return best.WorkspaceID
}

// auditTimeout bounds the recording of a failed sign-in step.
const auditTimeout = 10 * time.Second

// auditFailure records a failed sign-in step of a known user in each of
// its workspaces' logs, after the handler answered: an unknown email has
// no log to write to, and the write must not make a known email's answer
// slower than an unknown one's. The event names no workspace: the store
// writes a copy in each of the user's workspaces as the write finds them,
// as for the account's other events (see accountEvents), so that one the
// user has left meanwhile gets none after its member.remove. A failure to
// record is logged, not shown. Wait waits for the records.
func (s *Server) auditFailure(r *http.Request, u *keyward.User, factor string, now time.Time) {
	ev := s.event(r, "", u.ID, "session.signin_failed", u.ID, now)
	ev.Changes = []byte(`{"factor":"` + factor + `"}`)
	ctx := context.WithoutCancel(r.Context())
	s.background.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, auditTimeout)
		defer cancel()
		if err := s.store.AppendAudit(ctx, ev); err != nil {
			s.log.Error("audit sign-in failure", "err", err)
		}
	})
}

type mfaData struct {
	TOTP    bool
	Passkey bool
	Next    string
	Message string
	Errors  map[string]string
}

func (s *Server) handleMFAPage(w http.ResponseWriter, r *http.Request) {
	if stateOf(r).session.Verified {
		http.Redirect(w, r, "/tokens", http.StatusSeeOther)
		return
	}
	s.renderMFA(w, r, http.StatusOK, mfaData{Next: r.URL.Query().Get("next")})
}

// renderMFA shows the second step with the factors the user has.
func (s *Server) renderMFA(w http.ResponseWriter, r *http.Request, status int, d mfaData) {
	st := stateOf(r)
	keys, err := s.accounts.FindPasskeys(r.Context(), st.user.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d.TOTP, d.Passkey = st.user.HasMFA(), len(keys) > 0
	s.render(w, r, status, "mfa", "Two-step verification", d)
}

func (s *Server) handleMFA(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := stateOf(r)
	if st.session.Verified {
		http.Redirect(w, r, "/tokens", http.StatusSeeOther)
		return
	}
	now := s.now().UTC()
	addr := addrKey(r)
	next := r.PostForm.Get("next")
	code := strings.TrimSpace(r.PostForm.Get("code"))
	if code == "" {
		s.renderMFA(w, r, http.StatusBadRequest, mfaData{Next: next, Errors: map[string]string{"code": "Enter the code from your authenticator app, or a recovery code."}})
		return
	}
	if d := s.throttle.take(now, guard{"mfa:" + st.user.ID, freeAccount}, guard{addr, freeIP}); d > 0 {
		retryAfter(w, d)
		s.renderMFA(w, r, http.StatusTooManyRequests, mfaData{Next: next, Message: "Too many wrong codes. Try again in " + waitText(d) + "."})
		return
	}
	ok, err := s.checkSecondFactor(r, st.user, code, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		s.auditFailure(r, st.user, "second", now)
		s.renderMFA(w, r, http.StatusUnauthorized, mfaData{Next: next, Errors: map[string]string{"code": msgBadCode}})
		return
	}
	s.throttle.reset("mfa:" + st.user.ID)
	s.throttle.refund(addr, now)
	// Every factor presented: the session gets a new id again.
	id := newSessionID()
	ses := *st.session
	ses.Digest, ses.Verified, ses.ReauthAt, ses.LastSeenAt = s.digest(id), true, now, now
	if err := s.accounts.UpdateSession(ctx, &ses, s.event(r, ses.WorkspaceID, st.user.ID, "session.signin", ses.ID, now)); err != nil {
		s.failSession(w, r, err)
		return
	}
	s.setSession(w, id, st.user, true, now)
	http.Redirect(w, r, localPath(next), http.StatusSeeOther)
}

// forgetSession drops the request's session, which ended while the
// request ran (its user's sessions were ended between the second step's
// check and its upgrade): the browser loses its cookie and gets a new
// pre-session one, which the rest of the answer's forms are bound to.
func (s *Server) forgetSession(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	st.session, st.user, st.member, st.settings, st.factor = nil, nil, nil, nil, false
	st.pre = newSessionID()
	s.setCookie(w, s.sessionCookie(), "", -1)
	s.setCookie(w, s.preCookie(), st.pre, 0)
}

// failSession answers err, the failure of the update of the request's
// session: one not found ended while the request ran (a sign-out
// everywhere, a change of the credentials), and the browser is sent back
// to sign in rather than told that there is no such page.
func (s *Server) failSession(w http.ResponseWriter, r *http.Request, err error) {
	if keyward.ErrorCode(err) == keyward.ENOTFOUND {
		s.forgetSession(w, r)
		s.signInPage(w, r, http.StatusConflict, msgSignInEnded, nil)
		return
	}
	s.fail(w, r, err)
}

// checkSecondFactor reports whether code is a valid TOTP code of the user
// (never one accepted before) or one of its recovery codes, which it uses
// up.
func (s *Server) checkSecondFactor(r *http.Request, u *keyward.User, code string, now time.Time) (bool, error) {
	ctx := r.Context()
	digits := strings.ReplaceAll(code, " ", "")
	if len(digits) == account.TOTPDigits && strings.Trim(digits, "0123456789") == "" {
		if !u.HasMFA() {
			return false, nil
		}
		secret, err := s.sealer.Open(u.TOTPSecret, u.ID)
		if err != nil {
			return false, err
		}
		_, err = s.accounts.UpdateUser(ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
			step, ok := account.CheckTOTP(secret, digits, now, u.TOTPLastStep)
			if !ok {
				return nil, keyward.Errorf(keyward.EINVALID, "bad code")
			}
			u.TOTPLastStep = step
			return nil, nil
		})
		if keyward.ErrorCode(err) == keyward.EINVALID {
			return false, nil
		}
		return err == nil, err
	}
	evs, err := s.accountEvents(r, u.ID, "mfa.recovery_code_use", u.ID, nil, now)
	if err != nil {
		return false, err
	}
	for _, d := range s.sealer.RecoveryDigests(u.ID, code) {
		err := s.accounts.UseRecoveryCode(ctx, u.ID, d, evs...)
		if keyward.ErrorCode(err) != keyward.ENOTFOUND {
			return err == nil, err
		}
	}
	return false, nil
}

func (s *Server) handleSignOut(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	now := s.now().UTC()
	if _, err := s.accounts.DeleteSessions(r.Context(), st.user.ID, st.session.ID, "",
		s.event(r, st.session.WorkspaceID, st.user.ID, "session.signout", st.session.ID, now)); err != nil {
		s.fail(w, r, err)
		return
	}
	s.setCookie(w, s.sessionCookie(), "", -1)
	s.rotatePre(w)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

func (s *Server) handleSignOutEverywhere(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	now := s.now().UTC()
	evs, err := s.accountEvents(r, st.user.ID, "session.signout_all", st.user.ID, nil, now)
	if err == nil {
		_, err = s.accounts.DeleteSessions(r.Context(), st.user.ID, "", "", evs...)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.setCookie(w, s.sessionCookie(), "", -1)
	s.rotatePre(w)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

type sessionsData struct {
	Sessions []*keyward.Session
	Current  string
	Idle     time.Duration
	Absolute time.Duration
}

func (s *Server) handleSessions(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	ss, err := s.accounts.FindSessions(r.Context(), st.user.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Only sessions the user would recognise as signed in: a session that
	// still owes its second factor is not one yet.
	now := s.now().UTC()
	live := ss[:0]
	for _, x := range ss {
		if x.Verified && s.live(x, now) {
			live = append(live, x)
		}
	}
	s.render(w, r, http.StatusOK, "sessions", "Your sessions", sessionsData{Sessions: live, Current: st.session.ID, Idle: s.idle, Absolute: s.absolute})
}

func (s *Server) handleSessionEnd(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	id := r.PathValue("id")
	now := s.now().UTC()
	n, err := s.accounts.DeleteSessions(r.Context(), st.user.ID, id, "",
		s.event(r, st.session.WorkspaceID, st.user.ID, "session.end", id, now))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if n == 0 {
		s.handleNotFound(w, r)
		return
	}
	if id == st.session.ID {
		s.setCookie(w, s.sessionCookie(), "", -1)
		s.rotatePre(w)
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/sessions", http.StatusSeeOther)
}

// recentAuth reports whether the session proved a factor recently enough
// to change factors.
func (s *Server) recentAuth(r *http.Request) bool {
	return s.now().Sub(stateOf(r).session.ReauthAt) < reauthFor
}

type reauthData struct {
	Next   string
	Errors map[string]string
}

func (s *Server) handleReauthPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "reauth", "Confirm it is you", reauthData{Next: r.URL.Query().Get("next")})
}

func (s *Server) handleReauth(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	now := s.now().UTC()
	next := r.PostForm.Get("next")
	key := "reauth:" + st.user.ID
	if d := s.throttle.take(now, guard{key, freeAccount}); d > 0 {
		retryAfter(w, d)
		s.render(w, r, http.StatusTooManyRequests, "reauth", "Confirm it is you", reauthData{Next: next, Errors: map[string]string{"password": "Too many failed attempts. Try again in " + waitText(d) + "."}})
		return
	}
	ok, err := s.verifyPassword(r.Context(), r.PostForm.Get("password"), st.user.PasswordHash)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		s.render(w, r, http.StatusUnauthorized, "reauth", "Confirm it is you", reauthData{Next: next, Errors: map[string]string{"password": "The password is incorrect."}})
		return
	}
	s.throttle.reset(key)
	ses := *st.session
	ses.ReauthAt, ses.LastSeenAt = now, now
	if err := s.accounts.UpdateSession(r.Context(), &ses); err != nil {
		s.failSession(w, r, err)
		return
	}
	http.Redirect(w, r, localPath(next), http.StatusSeeOther)
}

// handleWorkspaceSwitch makes the session act in another workspace of
// the user's.
func (s *Server) handleWorkspaceSwitch(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	m, err := s.accounts.FindMember(r.Context(), r.PostForm.Get("workspace"), st.user.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ses := *st.session
	ses.WorkspaceID = m.WorkspaceID
	if err := s.accounts.UpdateSession(r.Context(), &ses); err != nil {
		s.failSession(w, r, err)
		return
	}
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}
