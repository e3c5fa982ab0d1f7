package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
)

// Device cookies keep a stranger from locking a person out of sign-in.
// Failed sign-ins for an account are throttled (freeAccount, then waits
// that double); counted for the account as a whole, anyone who knows an
// email could keep its owner waiting. A browser that signed in to an
// account (every factor presented) holds a device cookie for it, and its
// password attempts count against that cookie instead: the account's own
// count, which strangers drive up, only slows browsers without one.
//
// The cookie is a random nonce, its issue time and a MAC binding both to
// the user and to the user's credentials as they stood (a digest of the
// password hash and the TOTP secret): it is no good for another account,
// after a year, or once the password or the factor changed, so that
// cookies gathered before a password change give no guesses at the new
// one. It grants nothing but its own count.

// deviceMaxAge is how long a device cookie is good for: a year of
// sign-ins from the same browser.
const deviceMaxAge = 365 * 24 * time.Hour

func (s *Server) deviceCookie() string {
	if s.secure {
		return "__Host-keyward_device"
	}
	return "keyward_device"
}

// deviceMAC binds a nonce and its issue time to u and u's credentials.
func (s *Server) deviceMAC(u *keyward.User, nonce, issued string) string {
	cred := sha256.New()
	cred.Write([]byte(u.PasswordHash))
	cred.Write([]byte{0})
	cred.Write(u.TOTPSecret)
	m := hmac.New(sha256.New, s.deviceKey)
	m.Write([]byte("device\x00" + u.ID + "\x00" + nonce + "\x00" + issued + "\x00"))
	m.Write(cred.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// device returns the nonce of the request's device cookie when it was
// issued to u, within deviceMaxAge of now and since u's credentials last
// changed; else "".
func (s *Server) device(r *http.Request, u *keyward.User, now time.Time) string {
	if u == nil {
		return ""
	}
	c, err := r.Cookie(s.deviceCookie())
	if err != nil {
		return ""
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 || len(parts[0]) != 22 {
		return ""
	}
	nonce, issued, mac := parts[0], parts[1], parts[2]
	sec, err := strconv.ParseInt(issued, 10, 64)
	if err != nil || now.Sub(time.Unix(sec, 0)) > deviceMaxAge || time.Unix(sec, 0).After(now.Add(time.Minute)) {
		return ""
	}
	if !hmac.Equal([]byte(mac), []byte(s.deviceMAC(u, nonce, issued))) {
		return ""
	}
	return nonce
}

// setDevice gives the browser a device cookie for u, which has just
// signed in with every factor. A browser holds one, for the account it
// signed in to last.
func (s *Server) setDevice(w http.ResponseWriter, u *keyward.User, now time.Time) {
	b := make([]byte, 16)
	rand.Read(b)
	nonce := base64.RawURLEncoding.EncodeToString(b)
	issued := strconv.FormatInt(now.Unix(), 10)
	s.setCookie(w, s.deviceCookie(), nonce+"."+issued+"."+s.deviceMAC(u, nonce, issued), int(deviceMaxAge/time.Second))
}

// signInGuard is the throttle's key for a password attempt on email, whose
// user is u (nil: no such user): the browser's device cookie for u, or the
// account.
func (s *Server) signInGuard(r *http.Request, email string, u *keyward.User, now time.Time) guard {
	if nonce := s.device(r, u, now); nonce != "" {
		return guard{"device:" + nonce, freeAccount}
	}
	return guard{"account:" + email, freeAccount}
}
