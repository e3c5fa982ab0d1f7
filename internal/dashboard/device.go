package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
)

// Device cookies keep a stranger from locking a person out of sign-in.
// Failed sign-ins for an account are throttled (freeAccount, then waits
// that double); counted for the account as a whole, anyone who knows an
// email could keep its owner waiting. A browser that signed in to an
// account before holds a device cookie for it, and its attempts count
// against that cookie instead: the account's own count, which strangers
// drive up, only slows browsers without one. The cookie is a random
// nonce and a MAC binding it to the account's email, under a key derived
// from the server secret; it grants nothing but its own count.

// deviceMaxAge is how long a device cookie is kept: a year of sign-ins
// from the same browser.
const deviceMaxAge = 365 * 24 * 60 * 60

func (s *Server) deviceCookie() string {
	if s.secure {
		return "__Host-keyward_device"
	}
	return "keyward_device"
}

func (s *Server) deviceMAC(email, nonce string) string {
	m := hmac.New(sha256.New, s.deviceKey)
	m.Write([]byte("device\x00" + email + "\x00" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// device returns the nonce of the request's device cookie when it was
// issued for email, else "".
func (s *Server) device(r *http.Request, email string) string {
	c, err := r.Cookie(s.deviceCookie())
	if err != nil {
		return ""
	}
	nonce, mac, ok := strings.Cut(c.Value, ".")
	if !ok || len(nonce) != 22 || !hmac.Equal([]byte(mac), []byte(s.deviceMAC(email, nonce))) {
		return ""
	}
	return nonce
}

// setDevice gives the browser a device cookie for email, after it signed
// in with the password. A browser holds one, for the account it signed in
// to last.
func (s *Server) setDevice(w http.ResponseWriter, email string) {
	b := make([]byte, 16)
	rand.Read(b)
	nonce := base64.RawURLEncoding.EncodeToString(b)
	s.setCookie(w, s.deviceCookie(), nonce+"."+s.deviceMAC(email, nonce), deviceMaxAge)
}

// signInGuard is the throttle's key for a password attempt on email: the
// browser's device cookie for it, or the account.
func (s *Server) signInGuard(r *http.Request, email string) guard {
	if nonce := s.device(r, email); nonce != "" {
		return guard{"device:" + nonce, freeAccount}
	}
	return guard{"account:" + email, freeAccount}
}
