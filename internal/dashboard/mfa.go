package dashboard

import (
	"context"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
)

type mfaSettingsData struct {
	Passkeys      []*keyward.Passkey
	Enabled       bool
	CodesLeft     int
	AppRequired   bool // the app may not go: a workspace of the user's requires a factor, and no passkey would stay
	Missing       bool // the workspace acted in requires a factor, and the user has none yet
	RecentAuth    bool
	RecoveryCodes []string // shown once, right after enrolment
	// Warning says what failed after the app and its codes were stored,
	// on the page that shows the codes all the same; with Partial, the
	// rest of the page could not be read and only the codes are shown.
	Warning string
	Partial bool
}

const (
	msgSessionsKept    = "The authenticator app is on, but your other sessions could not be ended: end them on the Sessions page."
	msgPagePartial     = "The authenticator app is on, but the rest of this page could not be loaded: store these codes, then reload it."
	msgOffSessionsKept = "The authenticator app is off, but your other sessions could not be ended: end them on the Sessions page."
	msgNoApp           = "Recovery codes stand in for the authenticator app: set one up first."
)

func (s *Server) handleMFASettings(w http.ResponseWriter, r *http.Request) {
	d, err := s.mfaSettings(r, stateOf(r).user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "mfa_settings", "Two-step verification", d)
}

// mfaSettings returns the data of the security page of u, the request's
// user as stored last, for the page itself and for the one that shows the
// recovery codes of an app just set up: both list the same factors.
func (s *Server) mfaSettings(r *http.Request, u *keyward.User) (mfaSettingsData, error) {
	st := stateOf(r)
	left, err := s.accounts.RecoveryCodesLeft(r.Context(), u.ID)
	if err != nil {
		return mfaSettingsData{}, err
	}
	keys, err := s.accounts.FindPasskeys(r.Context(), u.ID)
	if err != nil {
		return mfaSettingsData{}, err
	}
	// Required by any of the user's workspaces: the factors are the
	// account's (see factorRequired), and the last may not go; beside a
	// passkey, the app may (as handleTOTPDisable allows).
	required, err := s.factorRequired(r.Context(), st)
	if err != nil {
		return mfaSettingsData{}, err
	}
	return mfaSettingsData{
		Passkeys: keys, Enabled: u.HasMFA(), CodesLeft: left, AppRequired: required && len(keys) == 0,
		Missing: st.settings.MFARequired && !u.HasMFA() && len(keys) == 0, RecentAuth: s.recentAuth(r),
	}, nil
}

type enrolData struct {
	QR      template.HTML
	Secret  string // as text, to type into an app
	Pending string // the secret sealed to this user and session, carried by the form
	Errors  map[string]string
}

// pendingAD binds a sealed secret being enrolled to the user and session.
func pendingAD(st *state) string { return "totp-pending\x00" + st.user.ID + "\x00" + st.session.ID }

// handleTOTPEnrol starts enrolment: a new secret, shown as a QR code and
// as text. Nothing is stored until a code from it is confirmed.
func (s *Server) handleTOTPEnrol(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !s.recentAuth(r) {
		http.Redirect(w, r, "/reauth?next=/account/mfa", http.StatusSeeOther)
		return
	}
	if st.user.HasMFA() {
		s.renderError(w, r, http.StatusConflict, "An authenticator app is already set up. Turn it off first to set up another.")
		return
	}
	secret, err := account.NewTOTPSecret()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.renderEnrol(w, r, http.StatusOK, secret, nil)
}

func (s *Server) renderEnrol(w http.ResponseWriter, r *http.Request, status int, secret []byte, errs map[string]string) {
	st := stateOf(r)
	sealed, err := s.sealer.Seal(secret, pendingAD(st))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	qr, err := qrSVG(account.TOTPURI(secret, "keyward", st.user.Email))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, status, "enrol", "Set up an authenticator app", enrolData{
		QR: qr, Secret: account.TOTPSecretText(secret), Pending: base64.RawURLEncoding.EncodeToString(sealed), Errors: errs,
	})
}

func (s *Server) handleTOTPConfirm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := stateOf(r)
	now := s.now().UTC()
	if !s.recentAuth(r) {
		http.Redirect(w, r, "/reauth?next=/account/mfa", http.StatusSeeOther)
		return
	}
	sealed, err := base64.RawURLEncoding.DecodeString(r.PostForm.Get("pending"))
	if err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The set-up form was damaged. Start again.")
		return
	}
	secret, err := s.sealer.Open(sealed, pendingAD(st))
	if err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The set-up form was damaged. Start again.")
		return
	}
	code := strings.ReplaceAll(strings.TrimSpace(r.PostForm.Get("code")), " ", "")
	step, ok := account.CheckTOTP(secret, code, now, 0)
	if !ok {
		msg := "That code is not right. Enter the 6-digit code your app shows now; if it keeps failing, check your phone's clock."
		if code == "" {
			msg = "Enter the 6-digit code your app shows."
		}
		s.renderEnrol(w, r, http.StatusBadRequest, secret, map[string]string{"code": msg})
		return
	}
	stored, err := s.sealer.Seal(secret, st.user.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	codes, digests, err := s.sealer.NewRecoveryCodes(st.user.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.accountEvents(r, st.user.ID, "mfa.totp_enable", st.user.ID, nil, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	more, err := s.accountEvents(r, st.user.ID, "mfa.recovery_codes_create", st.user.ID, nil, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The app and its recovery codes in one write: a failure cannot leave
	// the app on without codes.
	u, err := s.accounts.EnableTOTP(ctx, st.user.ID, stored, step, digests, now, append(evs, more...)...)
	if keyward.ErrorCode(err) == keyward.ECONFLICT {
		s.renderError(w, r, http.StatusConflict, "An authenticator app is already set up.")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A session taken before the second factor existed must not outlive
	// it: the user's other sessions end, those that began while it was
	// being set up included. This browser's device cookie is made anew,
	// since the old one was bound to the credentials before. The codes
	// are stored and never shown again: whatever fails from here, the
	// page shows them, and says what failed (logged).
	var warn string
	if err := s.endOtherSessions(r, st, u, "mfa.totp_enable", now); err != nil {
		s.logError(r, "dashboard: other sessions not ended after turning the app on", err)
		warn = msgSessionsKept
	}
	s.setDevice(w, u, now)
	d, err := s.mfaSettings(r, u)
	if err != nil {
		s.logError(r, "dashboard: security page not read after turning the app on", err)
		d = mfaSettingsData{Partial: true}
		if warn == "" {
			warn = msgPagePartial
		}
	}
	d.RecoveryCodes, d.Warning = codes, warn
	s.render(w, r, http.StatusOK, "mfa_settings", "Two-step verification", d)
}

func (s *Server) handleTOTPDisable(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := stateOf(r)
	now := s.now().UTC()
	if !s.recentAuth(r) {
		http.Redirect(w, r, "/reauth?next=/account/mfa", http.StatusSeeOther)
		return
	}
	evs, err := s.accountEvents(r, st.user.ID, "mfa.totp_disable", st.user.ID, nil, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A passkey is a second factor too: with one, the app may go. The
	// store checks that in the step that turns the app off, so that a
	// passkey removed at the same time cannot leave the account with none.
	keep, err := s.factorRequired(ctx, st)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, changed, err := s.accounts.DisableTOTP(ctx, st.user.ID, keep, now, evs...)
	if keyward.ErrorCode(err) == keyward.ECONFLICT {
		s.renderError(w, r, http.StatusConflict, "A workspace you belong to requires two-step verification: add a passkey before turning the authenticator app off.")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if changed {
		// The other sessions end too: if this one was taken, its owner
		// is signed out everywhere else and sees that something changed.
		// The app is off whatever fails here: the answer says so.
		err := s.endOtherSessions(r, st, u, "mfa.totp_disable", now)
		s.setDevice(w, u, now)
		if err != nil {
			s.logError(r, "dashboard: other sessions not ended after turning the app off", err)
			s.renderSessionsKept(w, r, u, msgOffSessionsKept)
			return
		}
	}
	http.Redirect(w, r, "/account/mfa", http.StatusSeeOther)
}

// recoveryPage is the page that shows recovery codes made anew, once.
const recoveryPage = "/account/mfa/recovery"

// handleRecoveryCodes makes new recovery codes for the app, in place of
// those left (the user has used some, or fears they were seen), and shows
// them once on recoveryPage.
func (s *Server) handleRecoveryCodes(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	now := s.now().UTC()
	if !s.recentAuth(r) {
		http.Redirect(w, r, "/reauth?next=/account/mfa", http.StatusSeeOther)
		return
	}
	if !st.user.HasMFA() {
		s.renderError(w, r, http.StatusConflict, msgNoApp)
		return
	}
	codes, digests, err := s.sealer.NewRecoveryCodes(st.user.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.accountEvents(r, st.user.ID, "mfa.recovery_codes_create", st.user.ID, nil, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The store checks the app again as it writes: turned off meanwhile
	// (another tab), it took its codes with it, and none are made anew.
	err = s.accounts.SetRecoveryCodes(r.Context(), st.user.ID, digests, evs...)
	if keyward.ErrorCode(err) == keyward.ECONFLICT {
		s.renderError(w, r, http.StatusConflict, msgNoApp)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.showOnce(w, r, recoveryPage, strings.Join(codes, "\n"))
}

// handleRecoveryPage shows the recovery codes handleRecoveryCodes made,
// once: reloaded, or come back to, it says they were shown.
func (s *Server) handleRecoveryPage(w http.ResponseWriter, r *http.Request) {
	codes, ok := s.takeOnce(w, r, recoveryPage)
	d, err := s.mfaSettings(r, stateOf(r).user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if ok {
		d.RecoveryCodes = strings.Split(codes, "\n")
	} else {
		status, d.Warning = http.StatusGone, "The new recovery codes were shown once, when they were made, and are not shown again. If you did not store them, make new ones."
	}
	s.render(w, r, status, "mfa_settings", "Two-step verification", d)
}

// renderSessionsKept answers a change of u's factors, stored, after which
// ending the other sessions failed (logged): the security page, as it is
// now, says so (warn); should it not be read, warn alone is shown.
func (s *Server) renderSessionsKept(w http.ResponseWriter, r *http.Request, u *keyward.User, warn string) {
	d, err := s.mfaSettings(r, u)
	if err != nil {
		s.logError(r, "dashboard: security page not read after a factor changed", err)
		s.renderError(w, r, http.StatusInternalServerError, warn)
		return
	}
	d.Warning = warn
	s.render(w, r, http.StatusOK, "mfa_settings", "Two-step verification", d)
}

// factorRequired reports whether a workspace of the user's requires two-step
// verification, the one the session acts in or any other: the factors are
// the account's, so one removed while acting in a workspace that does not
// require them would leave the account signing in to one that does with
// its password alone, until someone (whoever holds the password) enrols.
func (s *Server) factorRequired(ctx context.Context, st *state) (bool, error) {
	if st.settings.MFARequired {
		return true, nil
	}
	members, err := s.accounts.FindMembers(ctx, "", st.user.ID)
	if err != nil {
		return false, err
	}
	for _, m := range members {
		if m.WorkspaceID == st.settings.WorkspaceID {
			continue
		}
		set, err := s.accounts.FindWorkspaceSettings(ctx, m.WorkspaceID)
		if err != nil {
			return false, err
		}
		if set.MFARequired {
			return true, nil
		}
	}
	return false, nil
}

// endOtherSessions ends the user's sessions but the request's own, after
// the change of a factor (after: the change's action), with a
// session.end_others event.
func (s *Server) endOtherSessions(r *http.Request, st *state, u *keyward.User, after string, now time.Time) error {
	evs, err := s.accountEvents(r, u.ID, "session.end_others", u.ID, map[string]any{"after": after}, now)
	if err != nil {
		return err
	}
	_, err = s.accounts.DeleteSessions(r.Context(), u.ID, "", st.session.ID, evs...)
	return err
}
