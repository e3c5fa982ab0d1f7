package dashboard

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward"
)

// The passkey ceremonies themselves run in a real browser with a virtual
// authenticator (e2e/passkey_test.go); these tests cover what the server
// refuses.

func TestPasskeysOffWithIPAddress(t *testing.T) {
	e := newEnv(t) // public URL https://127.0.0.1:port: no relying party id
	b := e.browser()
	_, body := b.get("/signin")
	if strings.Contains(body, "passkey-signin") {
		t.Error("the sign-in page offers passkeys although they are off")
	}
	status, body := b.post("/signin/passkey/begin", nil)
	wantStatus(t, status, http.StatusNotFound, body)
}

func TestPasskeyRefusals(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	_, page := b.get("/signin")
	if !strings.Contains(page, `id="passkey-signin"`) {
		t.Fatal("the sign-in page offers no passkey")
	}
	status, body := b.post("/signin/passkey/begin", url.Values{"csrf": {""}})
	wantStatus(t, status, http.StatusForbidden, body)

	status, body = b.post("/signin/passkey/begin", nil)
	wantStatus(t, status, http.StatusOK, body)
	var begin struct {
		Options struct {
			PublicKey struct {
				RPID             string `json:"rpId"`
				Challenge        string `json:"challenge"`
				UserVerification string `json:"userVerification"`
			} `json:"publicKey"`
		} `json:"options"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(body), &begin); err != nil {
		t.Fatal(err)
	}
	if begin.Options.PublicKey.RPID != "localhost" || begin.Options.PublicKey.Challenge == "" || begin.State == "" ||
		begin.Options.PublicKey.UserVerification != "required" {
		t.Fatalf("begin = %+v", begin)
	}
	if b.last.Header.Get("Cache-Control") != "no-store" {
		t.Error("the ceremony's options may be cached")
	}
	for name, form := range map[string]url.Values{
		"ErrGarbageCredential": {"state": {begin.State}, "credential": {`{"id":"x"}`}},
		"ErrTamperedState":     {"state": {begin.State[:len(begin.State)-2] + "AA"}, "credential": {`{}`}},
		"ErrNoState":           {"credential": {`{}`}},
	} {
		t.Run(name, func(t *testing.T) {
			b.csrf = csrfOf(t, b)
			status, body := b.post("/signin/passkey/finish", form)
			wantStatus(t, status, http.StatusBadRequest, body)
			if !strings.Contains(body, msgPasskeyFailed) {
				t.Errorf("body = %s", body)
			}
		})
	}
	t.Run("ErrStateOfAnotherBrowser", func(t *testing.T) {
		other := e.browser()
		other.get("/signin")
		status, body := other.post("/signin/passkey/finish", url.Values{"state": {begin.State}, "credential": {`{}`}})
		wantStatus(t, status, http.StatusBadRequest, body)
	})
	t.Run("ErrRegisterWithoutRecentPassword", func(t *testing.T) {
		b.signIn("ann@example.com")
		e.clock.Add(reauthFor)
		b.get("/account/mfa")
		status, body := b.post("/account/passkeys/begin", nil)
		wantStatus(t, status, http.StatusForbidden, body)
		if !strings.Contains(body, `"redirect":"/reauth?next=/account/mfa"`) {
			t.Errorf("body = %s", body)
		}
	})
	t.Run("OKRegisterBegin", func(t *testing.T) {
		b.get("/reauth")
		b.post("/reauth", url.Values{"password": {goodPassword}, "next": {"/account/mfa"}})
		status, body := b.post("/account/passkeys/begin", nil)
		wantStatus(t, status, http.StatusOK, body)
		if !strings.Contains(body, `"residentKey":"required"`) || !strings.Contains(body, `"name":"ann@example.com"`) {
			t.Errorf("registration options = %s", body)
		}
	})
	t.Run("ErrRemoveUnknown", func(t *testing.T) {
		status, _ := b.post("/account/passkeys/pk_nope/remove", nil)
		wantStatus(t, status, http.StatusNotFound, "removing an unknown passkey")
	})
}

// csrfOf fetches the sign-in page again for a current CSRF token.
func csrfOf(t *testing.T, b *browser) string {
	t.Helper()
	b.get("/signin")
	return b.csrf
}
