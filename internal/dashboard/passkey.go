package dashboard

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

// waUser is a keyward user as the WebAuthn library sees it. The user
// handle is the user id: opaque, and no secret.
type waUser struct {
	u     *keyward.User
	creds []webauthn.Credential
	keys  []*keyward.Passkey
}

func (w *waUser) WebAuthnID() []byte                         { return []byte(w.u.ID) }
func (w *waUser) WebAuthnName() string                       { return w.u.Email }
func (w *waUser) WebAuthnDisplayName() string                { return w.u.Email }
func (w *waUser) WebAuthnCredentials() []webauthn.Credential { return w.creds }

// waUserOf loads the user's passkeys.
func (s *Server) waUserOf(r *http.Request, u *keyward.User) (*waUser, error) {
	keys, err := s.accounts.FindPasskeys(r.Context(), u.ID)
	if err != nil {
		return nil, err
	}
	w := &waUser{u: u, keys: keys}
	for _, k := range keys {
		var c webauthn.Credential
		if err := json.Unmarshal(k.Credential, &c); err != nil {
			return nil, err
		}
		w.creds = append(w.creds, c)
	}
	return w, nil
}

// passkeyFor returns the stored passkey of w with the credential id.
func (w *waUser) passkeyFor(id []byte) *keyward.Passkey {
	for _, k := range w.keys {
		if bytes.Equal(k.CredentialID, id) {
			return k
		}
	}
	return nil
}

// writeJSON answers the passkey script.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

type jsonError struct {
	Error    string `json:"error"`
	Redirect string `json:"redirect,omitempty"`
}

// challengeTTL is how long a passkey ceremony may take, from its options
// to its finish.
const challengeTTL = 5 * time.Minute

// errBadState is a ceremony state that this server did not seal for the
// ceremony and cookie, or whose challenge was used or expired.
var errBadState = errors.New("dashboard: bad passkey ceremony state")

// challengeDigest is the stored form of a ceremony's challenge.
func challengeDigest(challenge string) []byte {
	d := sha256.Sum256([]byte("webauthn-challenge\x00" + challenge))
	return d[:]
}

// sealState records the ceremony's challenge until challengeTTL, and
// seals its session data for the script to carry back, bound to ad (the
// ceremony and the session or pre-session cookie). The sealed state alone
// proves nothing: openState also uses up the challenge, so that a
// finished ceremony cannot be replayed.
func (s *Server) sealState(r *http.Request, sd *webauthn.SessionData, ad string) (string, error) {
	now := s.now().UTC()
	if err := s.accounts.CreateChallenge(r.Context(), challengeDigest(sd.Challenge), now, now.Add(challengeTTL)); err != nil {
		return "", err
	}
	raw, err := json.Marshal(sd)
	if err != nil {
		return "", err
	}
	sealed, err := s.sealer.Seal(raw, ad)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

// openState opens a state of sealState and uses up its challenge. It
// returns errBadState when the state was not sealed for ad, or its
// challenge was used already or expired.
func (s *Server) openState(r *http.Request, state, ad string) (*webauthn.SessionData, error) {
	sealed, err := base64.RawURLEncoding.DecodeString(state)
	if err != nil {
		return nil, errBadState
	}
	raw, err := s.sealer.Open(sealed, ad)
	if err != nil {
		return nil, errBadState
	}
	var sd webauthn.SessionData
	if err := json.Unmarshal(raw, &sd); err != nil || sd.Challenge == "" {
		return nil, errBadState
	}
	err = s.accounts.UseChallenge(r.Context(), challengeDigest(sd.Challenge), s.now().UTC())
	switch {
	case keyward.ErrorCode(err) == keyward.ENOTFOUND:
		return nil, errBadState
	case err != nil:
		return nil, err
	}
	return &sd, nil
}

// stateFailed answers an error of openState.
func (s *Server) stateFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errBadState) {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: msgPasskeyFailed})
		return
	}
	s.failJSON(w, r, err)
}

const msgPasskeyFailed = "The passkey was not accepted. Try again, or use your password."

// msgPasskeySessionsKept: a passkey added whose user's other sessions
// could not be ended after.
const msgPasskeySessionsKept = "The passkey was added, but your other sessions could not be ended: end them on the Sessions page."

// msgPasskeyRemovedSessionsKept: a passkey removed whose user's other
// sessions could not be ended after.
const msgPasskeyRemovedSessionsKept = "The passkey was removed, but your other sessions could not be ended: end them on the Sessions page."

func (s *Server) handlePasskeyRegisterBegin(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !s.recentAuth(r) {
		writeJSON(w, http.StatusForbidden, jsonError{Error: "Confirm your password first.", Redirect: "/reauth?next=/account/mfa"})
		return
	}
	wu, err := s.waUserOf(r, st.user)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	var exclude []protocol.CredentialDescriptor
	for _, c := range wu.creds {
		exclude = append(exclude, c.Descriptor())
	}
	opts, sd, err := s.webauthn.BeginRegistration(wu,
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithExclusions(exclude),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementRequired, RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification: protocol.VerificationRequired,
		}))
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	state, err := s.sealState(r, sd, "passkey-register\x00"+st.session.ID)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"options": opts, "state": state})
}

func (s *Server) handlePasskeyRegisterFinish(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	now := s.now().UTC()
	if !s.recentAuth(r) {
		writeJSON(w, http.StatusForbidden, jsonError{Error: "Confirm your password first.", Redirect: "/reauth?next=/account/mfa"})
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if name == "" {
		name = "passkey"
	}
	if len(name) > 100 {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: "Keep the name under 100 characters."})
		return
	}
	// The name is recorded in the audit log, where no secret may be.
	if secret.Holds(name, s.secretPrefixes(r)...) {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: "The name holds a token's secret; a secret is never stored in plain text."})
		return
	}
	sd, err := s.openState(r, r.PostForm.Get("state"), "passkey-register\x00"+st.session.ID)
	if err != nil {
		s.stateFailed(w, r, err)
		return
	}
	parsed, err := protocol.ParseCredentialCreationResponseBody(strings.NewReader(r.PostForm.Get("credential")))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: msgPasskeyFailed})
		return
	}
	wu, err := s.waUserOf(r, st.user)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	cred, err := s.webauthn.CreateCredential(wu, *sd, parsed)
	if err != nil {
		s.log.Info("passkey registration refused", "user", st.user.ID, "err", err)
		writeJSON(w, http.StatusBadRequest, jsonError{Error: msgPasskeyFailed})
		return
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	pk := &keyward.Passkey{ID: keyward.NewID(keyward.PrefixPasskey, now), UserID: st.user.ID, CredentialID: cred.ID, Credential: raw, Name: name, CreatedAt: now}
	evs, err := s.accountEvents(r, st.user.ID, "mfa.passkey_add", pk.ID, map[string]any{"name": map[string]any{"to": name}}, now)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	if err := s.accounts.AddPasskey(r.Context(), pk, evs...); err != nil {
		if keyward.ErrorCode(err) == keyward.ECONFLICT {
			writeJSON(w, http.StatusConflict, jsonError{Error: "This passkey is registered already."})
			return
		}
		s.failJSON(w, r, err)
		return
	}
	// As for the authenticator app: a session taken before the factor
	// existed does not outlive it. The passkey is stored: a failure here
	// says so.
	if err := s.endOtherSessions(r, st, st.user, "mfa.passkey_add", now); err != nil {
		s.logError(r, "dashboard: other sessions not ended after adding a passkey", err)
		writeJSON(w, http.StatusInternalServerError, jsonError{Error: msgPasskeySessionsKept})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"redirect": "/account/mfa"})
}

func (s *Server) handlePasskeyRemove(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	now := s.now().UTC()
	if !s.recentAuth(r) {
		http.Redirect(w, r, "/reauth?next=/account/mfa", http.StatusSeeOther)
		return
	}
	id := r.PathValue("id")
	keys, err := s.accounts.FindPasskeys(r.Context(), st.user.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var changes any
	for _, k := range keys {
		if k.ID == id { // the name, for the trail: the passkey is gone after
			changes = map[string]any{"name": map[string]any{"from": k.Name}}
		}
	}
	evs, err := s.accountEvents(r, st.user.ID, "mfa.passkey_remove", id, changes, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Whether another factor is left is checked by the store in the step
	// that deletes this one: a check here could pass for two removals (or
	// a removal and the app turned off) at once, leaving none.
	keep, err := s.factorRequired(r.Context(), st)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.accounts.DeletePasskey(r.Context(), st.user.ID, id, keep, evs...); err != nil {
		if keyward.ErrorCode(err) == keyward.ECONFLICT {
			s.renderError(w, r, http.StatusConflict, "A workspace you belong to requires two-step verification: add another factor before removing your last one.")
			return
		}
		s.fail(w, r, err)
		return
	}
	// A session the passkey signed in, here or elsewhere, ends with it.
	// The passkey is gone whatever fails here: the answer says so.
	if err := s.endOtherSessions(r, st, st.user, "mfa.passkey_remove", now); err != nil {
		s.logError(r, "dashboard: other sessions not ended after removing a passkey", err)
		s.renderSessionsKept(w, r, st.user, msgPasskeyRemovedSessionsKept)
		return
	}
	http.Redirect(w, r, "/account/mfa", http.StatusSeeOther)
}

// handlePasskeySignInBegin starts a passwordless sign-in with a
// discoverable credential; the state is bound to the pre-session cookie.
func (s *Server) handlePasskeySignInBegin(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if st.pre == "" {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: "Reload the page and try again."})
		return
	}
	// Each begin stores a challenge, for anyone: an address may begin so
	// many in a window.
	if d := s.begins.take(s.now().UTC(), addrKey(r), beginsPerWindow, challengeTTL); d > 0 {
		retryAfter(w, d)
		writeJSON(w, http.StatusTooManyRequests, jsonError{Error: "Too many passkey sign-ins begun. Try again in " + waitText(d) + "."})
		return
	}
	opts, sd, err := s.webauthn.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	state, err := s.sealState(r, sd, "passkey-signin\x00"+st.pre)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"options": opts, "state": state})
}

func (s *Server) handlePasskeySignInFinish(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	now := s.now().UTC()
	addr := addrKey(r)
	if d := s.throttle.take(now, guard{addr, freeIP}); d > 0 {
		retryAfter(w, d)
		writeJSON(w, http.StatusTooManyRequests, jsonError{Error: "Too many failed attempts. Try again in " + waitText(d) + "."})
		return
	}
	sd, err := s.openState(r, r.PostForm.Get("state"), "passkey-signin\x00"+st.pre)
	if err != nil {
		s.stateFailed(w, r, err)
		return
	}
	parsed, err := protocol.ParseCredentialRequestResponseBody(strings.NewReader(r.PostForm.Get("credential")))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: msgPasskeyFailed})
		return
	}
	var wu *waUser
	handler := func(rawID, userHandle []byte) (webauthn.User, error) {
		pk, err := s.accounts.FindPasskeyByCredential(r.Context(), rawID)
		if err != nil {
			return nil, err
		}
		if pk.UserID != string(userHandle) {
			return nil, errors.New("the user handle is not the passkey's user")
		}
		u, err := s.accounts.FindUser(r.Context(), pk.UserID)
		if err != nil {
			return nil, err
		}
		wu, err = s.waUserOf(r, u)
		return wu, err
	}
	cred, err := s.webauthn.ValidateDiscoverableLogin(handler, *sd, parsed)
	if err != nil || wu == nil {
		s.log.Info("passkey sign-in refused", "err", err)
		if wu != nil {
			// A registered passkey of a known user, whose assertion
			// failed (signature, flags, origin): audited as a password
			// that failed is.
			s.auditFailure(r, wu.u, "passkey", now)
		}
		writeJSON(w, http.StatusUnauthorized, jsonError{Error: msgPasskeyFailed})
		return
	}
	if s.cloned(r, wu, cred, now) {
		writeJSON(w, http.StatusUnauthorized, jsonError{Error: msgPasskeyFailed})
		return
	}
	if err := s.recordPasskeyUse(r, wu, cred, now); err != nil {
		s.failJSON(w, r, err)
		return
	}
	members, err := s.accounts.FindMembers(r.Context(), "", wu.u.ID)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	if len(members) == 0 {
		writeJSON(w, http.StatusUnauthorized, jsonError{Error: msgPasskeyFailed})
		return
	}
	s.throttle.refund(addr, now)
	// A new session, with a new id, whatever the request held before (as
	// at password sign-in).
	if old := st.session; old != nil {
		if _, err := s.accounts.DeleteSessions(r.Context(), old.UserID, old.ID, ""); err != nil {
			s.failJSON(w, r, err)
			return
		}
	}
	// A passkey with user verification is two factors in one: the session
	// is complete at once, with a new id.
	id := newSessionID()
	ses := &keyward.Session{
		ID: keyward.NewID(keyward.PrefixSession, now), Digest: s.digest(id), UserID: wu.u.ID,
		WorkspaceID: pickWorkspace(members), Verified: true, ReauthAt: now, Epoch: wu.u.CredentialEpoch,
		CreatedAt: now, LastSeenAt: now, IP: clientIP(r), UserAgent: secret.UserAgent(r.UserAgent()),
	}
	ev := s.event(r, ses.WorkspaceID, wu.u.ID, "session.signin", ses.ID, now)
	ev.Changes = []byte(`{"factor":"passkey"}`)
	if err := s.accounts.CreateSession(r.Context(), ses, ev); err != nil {
		if keyward.ErrorCode(err) == keyward.ECONFLICT {
			// The user's credentials changed (and its sessions ended)
			// since it was read, before its passkeys were.
			writeJSON(w, http.StatusConflict, jsonError{Error: msgCredentialsChanged})
			return
		}
		s.failJSON(w, r, err)
		return
	}
	s.sweepSessions(r, wu.u.ID, now)
	s.setSession(w, id, wu.u, true, now)
	s.rotatePre(w)
	writeJSON(w, http.StatusOK, map[string]string{"redirect": localPath(r.PostForm.Get("next"))})
}

// cloned reports whether the validated credential's sign count did not
// grow (when it counts at all): the signal of a cloned authenticator, or
// of an old assertion played again. It logs and audits the refusal.
func (s *Server) cloned(r *http.Request, wu *waUser, cred *webauthn.Credential, now time.Time) bool {
	if !cred.Authenticator.CloneWarning {
		return false
	}
	s.log.Warn("passkey refused: its sign count went backwards; the authenticator may be cloned", "user", wu.u.ID, "sign_count", cred.Authenticator.SignCount)
	s.auditFailure(r, wu.u, "passkey_sign_count", now)
	return true
}

// recordPasskeyUse stores the credential's new sign count and last use.
func (s *Server) recordPasskeyUse(r *http.Request, wu *waUser, cred *webauthn.Credential, now time.Time) error {
	pk := wu.passkeyFor(cred.ID)
	if pk == nil {
		return errors.New("dashboard: the validated passkey is not the user's")
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		return err
	}
	return s.accounts.UsePasskey(r.Context(), pk.ID, raw, now)
}

// msgAlreadyVerified answers the second step to a session that has passed
// it: the step is no way to renew a session's recent sign-in (which takes
// the password, or a passkey sign-in with user verification).
const msgAlreadyVerified = "You are signed in already."

// handlePasskeyMFABegin starts a passkey as the second factor of a session
// that presented its password.
func (s *Server) handlePasskeyMFABegin(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if st.session.Verified {
		writeJSON(w, http.StatusConflict, jsonError{Error: msgAlreadyVerified})
		return
	}
	wu, err := s.waUserOf(r, st.user)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	if len(wu.creds) == 0 {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: "You have no passkey. Enter a code instead."})
		return
	}
	opts, sd, err := s.webauthn.BeginLogin(wu)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	state, err := s.sealState(r, sd, "passkey-mfa\x00"+st.session.ID)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"options": opts, "state": state})
}

func (s *Server) handlePasskeyMFAFinish(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if st.session.Verified {
		writeJSON(w, http.StatusConflict, jsonError{Error: msgAlreadyVerified})
		return
	}
	now := s.now().UTC()
	addr := addrKey(r)
	if d := s.throttle.take(now, guard{"mfa:" + st.user.ID, freeAccount}, guard{addr, freeIP}); d > 0 {
		retryAfter(w, d)
		writeJSON(w, http.StatusTooManyRequests, jsonError{Error: "Too many failed attempts. Try again in " + waitText(d) + "."})
		return
	}
	sd, err := s.openState(r, r.PostForm.Get("state"), "passkey-mfa\x00"+st.session.ID)
	if err != nil {
		s.stateFailed(w, r, err)
		return
	}
	parsed, err := protocol.ParseCredentialRequestResponseBody(strings.NewReader(r.PostForm.Get("credential")))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, jsonError{Error: msgPasskeyFailed})
		return
	}
	wu, err := s.waUserOf(r, st.user)
	if err != nil {
		s.failJSON(w, r, err)
		return
	}
	cred, err := s.webauthn.ValidateLogin(wu, *sd, parsed)
	if err != nil {
		s.auditFailure(r, st.user, "passkey", now)
		writeJSON(w, http.StatusUnauthorized, jsonError{Error: msgPasskeyFailed})
		return
	}
	if s.cloned(r, wu, cred, now) {
		writeJSON(w, http.StatusUnauthorized, jsonError{Error: msgPasskeyFailed})
		return
	}
	s.throttle.reset("mfa:" + st.user.ID)
	s.throttle.refund(addr, now) // a success is no strike against the address
	if err := s.recordPasskeyUse(r, wu, cred, now); err != nil {
		s.failJSON(w, r, err)
		return
	}
	id := newSessionID()
	ses := *st.session
	ses.Digest, ses.Verified, ses.ReauthAt, ses.LastSeenAt = s.digest(id), true, now, now
	ev := s.event(r, ses.WorkspaceID, st.user.ID, "session.signin", ses.ID, now)
	ev.Changes = []byte(`{"factor":"passkey"}`)
	if err := s.accounts.UpdateSession(r.Context(), &ses, ev); err != nil {
		if keyward.ErrorCode(err) == keyward.ENOTFOUND {
			s.forgetSession(w, r)
			writeJSON(w, http.StatusConflict, jsonError{Error: msgSignInEnded})
			return
		}
		s.failJSON(w, r, err)
		return
	}
	s.setSession(w, id, st.user, true, now)
	writeJSON(w, http.StatusOK, map[string]string{"redirect": localPath(r.PostForm.Get("next"))})
}

// failJSON answers an internal error to the passkey script, logged once.
func (s *Server) failJSON(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("dashboard passkey request failed", "request_id", requestIDOf(r), "path", secret.RedactPath(r.URL), "err", err)
	writeJSON(w, http.StatusInternalServerError, jsonError{Error: "Something went wrong on our side."})
}
