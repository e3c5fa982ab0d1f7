package dashboard

import (
	"net/http"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
)

type passwordData struct {
	Done bool
	// Warning says what failed after the new password was stored (and
	// replaces the notice that the other sessions were ended).
	Warning string
	Errors  map[string]string
}

const (
	// msgPasswordSessionsKept: a password changed whose user's other
	// sessions could not be ended after (logged).
	msgPasswordSessionsKept = "Your password was changed, but your other sessions could not be ended: end them on the Sessions page."
	// msgSignInPasswordChanged: a password changed whose request's own
	// session was ended meanwhile.
	msgSignInPasswordChanged = "Your password was changed, but this sign-in was ended meanwhile. Sign in with the new password."
)

func (s *Server) handlePasswordPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "password", "Change your password", passwordData{})
}

// handlePasswordChange changes the signed-in user's password: it needs the
// current one (throttled like a re-authentication), checks the new one as
// at sign-up, stores its argon2id hash and ends the user's other sessions.
func (s *Server) handlePasswordChange(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := stateOf(r)
	now := s.now().UTC()
	current, pw := r.PostForm.Get("current"), r.PostForm.Get("password")
	errs := map[string]string{}
	page := func(status int) {
		s.render(w, r, status, "password", "Change your password", passwordData{Errors: errs})
	}
	if current == "" {
		errs["current"] = "Enter your current password."
	}
	switch err := account.CheckPassword(pw, st.user.Email); {
	case err != nil:
		errs["password"] = capitalize(keyward.ErrorMessage(err)) + "."
	case pw == current:
		errs["password"] = "Choose a password different from your current one."
	case pw != r.PostForm.Get("password2"):
		errs["password2"] = "The two passwords differ."
	}
	if len(errs) > 0 {
		page(http.StatusBadRequest)
		return
	}
	key := "reauth:" + st.user.ID
	if d := s.throttle.take(now, guard{key, freeAccount}); d > 0 {
		retryAfter(w, d)
		errs["current"] = "Too many failed attempts. Try again in " + waitText(d) + "."
		page(http.StatusTooManyRequests)
		return
	}
	ok, err := s.verifyPassword(ctx, current, st.user.PasswordHash)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		errs["current"] = "The current password is incorrect."
		page(http.StatusUnauthorized)
		return
	}
	s.throttle.reset(key)
	hash, err := s.hashPassword(ctx, pw)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Whoever else holds a session may hold it because they knew the old
	// password: the other sessions end first, so that a failure after
	// leaves the safe side.
	n, err := s.accounts.DeleteSessions(ctx, st.user.ID, "", st.session.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.accountEvents(r, st.user.ID, "user.password_change", st.user.ID, map[string]any{"sessions_ended": n}, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.accounts.UpdateUser(ctx, st.user.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
		u.PasswordHash, u.UpdatedAt = hash, now
		return evs, nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// And again after: a sign-in that checked the old password while the
	// new one was being written may have made its session since the
	// first ending. This one bumps the credential epoch after the new
	// hash, so that such a session ends here or, not made yet, is refused
	// (keyward.User.CredentialEpoch). The sessions it ends, if any, are
	// not in user.password_change's count: its session.end_others says
	// so (the store records it only when it ended any). The password is
	// changed whatever fails from here: the answer says so.
	var warn string
	if err := s.endOtherSessions(r, st, u, "user.password_change", now); err != nil {
		s.logError(r, "dashboard: other sessions not ended after a password change", err)
		warn = msgPasswordSessionsKept
	}
	// Device cookies are bound to the password: every one issued before
	// is void now, and this browser gets a new one.
	s.setDevice(w, u, now)
	ses := *st.session
	ses.ReauthAt, ses.LastSeenAt = now, now
	if err := s.accounts.UpdateSession(ctx, &ses); err != nil {
		if keyward.ErrorCode(err) == keyward.ENOTFOUND {
			// Ended meanwhile (a sign-out everywhere, another change of
			// the credentials): back to sign in, with the new password.
			s.forgetSession(w, r)
			s.signInPage(w, r, http.StatusConflict, msgSignInPasswordChanged, nil)
			return
		}
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "password", "Change your password", passwordData{Done: true, Warning: warn})
}
