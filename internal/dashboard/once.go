package dashboard

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
)

// A secret that a form makes (a token's, an invitation's link) is shown by
// the page the form's POST redirects to (Post/Redirect/Get), not by the
// POST's own answer: reloading that page, or coming back to it, sends
// nothing again, so no second token, rotation or invitation is made behind
// the user's back. The secret travels to that page once, in a cookie
// sealed (AES-GCM, under a key derived from the server secret, as the TOTP
// enrolment's) to the user, the session and the page, that lives
// onceMaxAge and that the page deletes as it shows it: a reload shows that
// it was shown already. The server keeps no copy.

// onceMaxAge is how long, in seconds, the sealed secret waits for its
// page: the redirect follows at once.
const onceMaxAge = 60

// onceCookie is the name of the cookie that carries page's secret: one a
// page, so that two forms sent at once (two tabs) do not lose the first
// one's secret to the second.
func (s *Server) onceCookie(page string) string {
	sum := sha256.Sum256([]byte(page))
	name := "keyward_once_" + hex.EncodeToString(sum[:6])
	if s.secure {
		return "__Host-" + name
	}
	return name
}

// onceAD binds a sealed secret to the user, the session, the workspace and
// its page: a page of the same path in another workspace (the user
// switched meanwhile) does not show it.
func onceAD(st *state, page string) string {
	return "once\x00" + st.user.ID + "\x00" + st.session.ID + "\x00" + st.member.WorkspaceID + "\x00" + page
}

// showOnce redirects to page, which shows secret once (takeOnce).
func (s *Server) showOnce(w http.ResponseWriter, r *http.Request, page, secret string) {
	sealed, err := s.sealer.Seal([]byte(secret), onceAD(stateOf(r), page))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.setCookie(w, s.onceCookie(page), base64.RawURLEncoding.EncodeToString(sealed), onceMaxAge)
	http.Redirect(w, r, page, http.StatusSeeOther)
}

// takeOnce returns the secret showOnce sent to page, and deletes it from
// the browser; ok is false when there is none for this page and session
// (it was shown already, or it came too late).
func (s *Server) takeOnce(w http.ResponseWriter, r *http.Request, page string) (secret string, ok bool) {
	c, err := r.Cookie(s.onceCookie(page))
	if err != nil {
		return "", false
	}
	sealed, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return "", false
	}
	raw, err := s.sealer.Open(sealed, onceAD(stateOf(r), page))
	if err != nil {
		return "", false // another workspace's: leave it for that one
	}
	s.setCookie(w, s.onceCookie(page), "", -1)
	return string(raw), true
}
