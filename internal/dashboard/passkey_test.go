package dashboard

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
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

// TestPasskeyNameSecretRefused: a passkey's name is recorded in the audit
// log, so one that holds a token's secret, whole or without its prefix,
// is refused before the passkey is stored.
func TestPasskeyNameSecretRefused(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	u := e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/account/mfa") // its CSRF token
	tok, err := secret.Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, passkey string }{
		{"ErrSecret", "key " + tok},
		{"ErrBody", strings.TrimPrefix(tok, "kw_")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			challenge, state := begin(t, b, "/account/passkeys/begin")
			status, body := b.post("/account/passkeys/finish", url.Values{"state": {state}, "name": {tt.passkey}, "credential": {attest(t, challenge, []byte("new-key"))}})
			wantStatus(t, status, http.StatusBadRequest, body)
			wantText(t, body, `{"error":"The name holds a token's secret; a secret is never stored in plain text."}`)
			if keys, err := e.store.FindPasskeys(context.Background(), u.ID); err != nil || len(keys) != 0 {
				t.Errorf("FindPasskeys = %d, %v; want none", len(keys), err)
			}
			e.dash.Wait()
			evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "mfa.passkey_add"})
			if err != nil || len(evs) != 0 {
				t.Errorf("FindAuditEvents = %d, %v; want none", len(evs), err)
			}
		})
	}
}
