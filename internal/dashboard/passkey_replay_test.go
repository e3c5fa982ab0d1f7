package dashboard

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/keyward/keyward"
)

// softKey is a software passkey: a P-256 key registered straight in the
// store, which signs assertions as an authenticator would.
type softKey struct {
	id     []byte
	key    *ecdsa.PrivateKey
	userID string
}

// newCOSEKey returns a new P-256 key and its public half in COSE, as an
// authenticator registers it.
func newCOSEKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	cose, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve:         int64(webauthncose.P256), XCoord: pt[1:33], YCoord: pt[33:],
	})
	if err != nil {
		t.Fatal(err)
	}
	return key, cose
}

func newSoftKey(t *testing.T, e *env, u *keyward.User) *softKey {
	t.Helper()
	key, cose := newCOSEKey(t)
	k := &softKey{id: []byte("soft-" + u.ID), key: key, userID: u.ID}
	raw, _ := json.Marshal(webauthn.Credential{ID: k.id, PublicKey: cose, AttestationType: "none",
		Flags: webauthn.CredentialFlags{UserPresent: true, UserVerified: true}})
	now := e.clock.Now()
	if err := e.store.AddPasskey(context.Background(), &keyward.Passkey{ID: keyward.NewID(keyward.PrefixPasskey, now), UserID: u.ID,
		CredentialID: k.id, Credential: raw, Name: "soft", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	return k
}

// assert returns the credential JSON of an assertion of challenge for the
// origin https://localhost with the sign count.
func (k *softKey) assert(t *testing.T, challenge string, count uint32) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	clientData, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": challenge, "origin": "https://localhost", "crossOrigin": false})
	rp := sha256.Sum256([]byte("localhost"))
	auth := append(rp[:], 0x05) // user present, user verified
	auth = binary.BigEndian.AppendUint32(auth, count)
	cd := sha256.Sum256(clientData)
	msg := sha256.Sum256(append(append([]byte{}, auth...), cd[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, msg[:])
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(map[string]any{
		"id": b64(k.id), "rawId": b64(k.id), "type": "public-key",
		"response": map[string]string{"clientDataJSON": b64(clientData), "authenticatorData": b64(auth), "signature": b64(sig), "userHandle": b64([]byte(k.userID))},
	})
	return string(raw)
}

// beginSignIn starts a passkey sign-in and returns the challenge and the
// sealed state.
func beginSignIn(t *testing.T, b *browser) (challenge, state string) {
	t.Helper()
	b.csrf = csrfOf(t, b)
	return begin(t, b, "/signin/passkey/begin")
}

// begin posts to a passkey ceremony's begin path and returns the
// challenge and the sealed state.
func begin(t *testing.T, b *browser, path string) (challenge, state string) {
	t.Helper()
	status, body := b.post(path, nil)
	wantStatus(t, status, http.StatusOK, body)
	var begin struct {
		Options struct {
			PublicKey struct {
				Challenge string `json:"challenge"`
			} `json:"publicKey"`
		} `json:"options"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(body), &begin); err != nil {
		t.Fatal(err)
	}
	return begin.Options.PublicKey.Challenge, begin.State
}

func TestPasskeySignInSingleUse(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	k := newSoftKey(t, e, e.user("ann@example.com", keyward.RoleOwner))
	srv, _ := url.Parse(e.srv.URL)
	preOf := func(b *browser) *http.Cookie {
		for _, c := range b.c.Jar.Cookies(srv) {
			if c.Name == "__Host-keyward_pre" {
				return c
			}
		}
		return nil
	}

	t.Run("ErrReplay", func(t *testing.T) {
		b := e.browser()
		challenge, state := beginSignIn(t, b)
		pre, csrf := preOf(b), b.csrf
		form := url.Values{"state": {state}, "credential": {k.assert(t, challenge, 0)}}
		status, body := b.post("/signin/passkey/finish", form)
		wantStatus(t, status, http.StatusOK, body)
		if p := preOf(b); p == nil || p.Value == pre.Value {
			t.Error("the pre-session cookie was not rotated at sign-in")
		}
		// The same body again, with the cookie it was bound to, as someone
		// who captured both would send it.
		replay := e.browser()
		replay.c.Jar.SetCookies(srv, []*http.Cookie{{Name: pre.Name, Value: pre.Value, Path: "/", Secure: true}})
		form.Set("csrf", csrf)
		status, body = replay.post("/signin/passkey/finish", form)
		wantStatus(t, status, http.StatusBadRequest, body)
		if sessionCookie(replay) != "" {
			t.Error("the replay got a session")
		}
	})
	t.Run("ErrExpired", func(t *testing.T) {
		b := e.browser()
		challenge, state := beginSignIn(t, b)
		e.clock.Add(challengeTTL)
		status, body := b.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 0)}})
		wantStatus(t, status, http.StatusBadRequest, body)
	})
	t.Run("ErrSignCountBackwards", func(t *testing.T) {
		b := e.browser()
		challenge, state := beginSignIn(t, b)
		status, body := b.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 7)}})
		wantStatus(t, status, http.StatusOK, body)
		c := e.browser()
		challenge, state = beginSignIn(t, c)
		status, body = c.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 5)}})
		wantStatus(t, status, http.StatusUnauthorized, body)
		if sessionCookie(c) != "" {
			t.Error("a passkey whose count went backwards got a session")
		}
	})
	t.Run("OKEndsPriorSession", func(t *testing.T) {
		e.clock.Add(time.Minute)
		b := e.browser()
		b.signIn2("ann@example.com") // a password session
		before := sessionCookie(b)
		challenge, state := beginSignIn(t, b)
		status, body := b.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 9)}})
		wantStatus(t, status, http.StatusOK, body)
		if after := sessionCookie(b); after == "" || after == before {
			t.Fatal("passkey sign-in kept the session id")
		}
		old := e.browser()
		old.c.Jar.SetCookies(srv, []*http.Cookie{{Name: "__Host-keyward_session", Value: before, Path: "/", Secure: true}})
		if old.get("/tokens"); old.path() != "/signin" {
			t.Errorf("the session from before the passkey sign-in still works (at %s)", old.path())
		}
	})
	t.Run("OKSignOutRotatesPre", func(t *testing.T) {
		e.clock.Add(time.Minute)
		b := e.browser()
		challenge, state := beginSignIn(t, b)
		status, body := b.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, 10)}})
		wantStatus(t, status, http.StatusOK, body)
		b.get("/tokens")
		before := preOf(b)
		b.post("/signout", nil)
		if after := preOf(b); after == nil || before != nil && after.Value == before.Value {
			t.Error("the pre-session cookie was not rotated at sign-out")
		}
	})
}

// TestPasskeySecondStep: after the password, the passkey step signs in;
// good steps cost the address nothing (people behind one NAT sign in all
// day), and a signed-in session cannot take the step again to renew its
// recent sign-in.
func TestPasskeySecondStep(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	k := newSoftKey(t, e, e.user("ann@example.com", keyward.RoleOwner))
	var count uint32
	for i := range freeIP + 2 {
		e.clock.Add(time.Minute)
		b := e.browser()
		b.signIn2("ann@example.com")
		if b.path() != "/signin/mfa" {
			t.Fatalf("sign-in %d: at %s after the password, want the second step", i, b.path())
		}
		count++
		challenge, state := begin(t, b, "/signin/mfa/passkey/begin")
		status, body := b.post("/signin/mfa/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, count)}})
		wantStatus(t, status, http.StatusOK, body)
		if b.get("/tokens"); b.path() != "/tokens" {
			t.Fatalf("sign-in %d: at %s after the passkey step", i, b.path())
		}
		if i < freeIP+1 {
			continue
		}
		// Signed in: the step is closed to this session.
		status, body = b.post("/signin/mfa/passkey/begin", nil)
		wantStatus(t, status, http.StatusConflict, body)
		status, body = b.post("/signin/mfa/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, count+1)}})
		wantStatus(t, status, http.StatusConflict, body)
	}
}

// TestPasskeyRemoveEndsOtherSessions: removing a passkey ends the user's
// other sessions (one it signed in among them), as a change of the
// authenticator app does, and the trail keeps the passkey's name.
func TestPasskeyRemoveEndsOtherSessions(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	u := e.user("ann@example.com", keyward.RoleOwner)
	k := newSoftKey(t, e, u)
	signIn := func(count uint32) *browser {
		b := e.browser()
		challenge, state := beginSignIn(t, b)
		status, body := b.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {k.assert(t, challenge, count)}})
		wantStatus(t, status, http.StatusOK, body)
		b.get("/account/mfa") // its CSRF token
		return b
	}
	elsewhere, here := signIn(1), signIn(2)
	keys, err := e.store.FindPasskeys(context.Background(), u.ID)
	if err != nil || len(keys) != 1 {
		t.Fatalf("FindPasskeys = %v, %v", keys, err)
	}
	status, body := here.post("/account/passkeys/"+keys[0].ID+"/remove", nil)
	wantStatus(t, status, http.StatusOK, body)
	if here.path() != "/account/mfa" {
		t.Fatalf("after the removal: at %s", here.path())
	}
	if elsewhere.get("/tokens"); elsewhere.path() != "/signin" {
		t.Errorf("the other session, signed in with the passkey, goes on (at %s)", elsewhere.path())
	}
	if here.get("/tokens"); here.path() != "/tokens" {
		t.Errorf("the session that removed it ended (at %s)", here.path())
	}
	evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Target: keys[0].ID})
	if err != nil || len(evs) != 1 || evs[0].Action != "mfa.passkey_remove" || string(evs[0].Changes) != `{"name":{"from":"soft"}}` {
		t.Errorf("the removal's event: %+v, %v", evs, err)
	}
}

// TestPasskeySignInFailureAudited: an assertion of a known user's passkey
// that fails (here its signature, by another key) is audited, as a wrong
// password of a known user is.
func TestPasskeySignInFailureAudited(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	u := e.user("ann@example.com", keyward.RoleOwner)
	k := newSoftKey(t, e, u)
	forged := *k
	var err error
	if forged.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	challenge, state := beginSignIn(t, b)
	status, body := b.post("/signin/passkey/finish", url.Values{"state": {state}, "credential": {forged.assert(t, challenge, 1)}})
	wantStatus(t, status, http.StatusUnauthorized, body)
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "session.signin_failed"})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 1 && evs[0].Target == u.ID && string(evs[0].Changes) == `{"factor":"passkey"}` {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session.signin_failed of the passkey: %+v", evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPasskeyBeginsThrottled: an address may begin beginsPerWindow
// passkey sign-ins in a window of challengeTTL (each stores a challenge);
// then it waits for the window's end, which clears it whatever came before.
func TestPasskeyBeginsThrottled(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	b := e.browser()
	b.csrf = csrfOf(t, b)
	for range beginsPerWindow {
		begin(t, b, "/signin/passkey/begin")
	}
	e.clock.Add(time.Minute)
	status, body := b.post("/signin/passkey/begin", nil)
	wantStatus(t, status, http.StatusTooManyRequests, body)
	if got, want := b.last.Header.Get("Retry-After"), fmt.Sprint(int((challengeTTL-time.Minute)/time.Second)); got != want {
		t.Errorf("Retry-After = %q, want %s", got, want)
	}
	e.clock.Add(challengeTTL - time.Minute)
	for range beginsPerWindow {
		begin(t, b, "/signin/passkey/begin")
	}
}

// attest returns the credential JSON of a registration of a new software
// passkey (attestation "none") for challenge, at the origin
// https://localhost, user verified.
func attest(t *testing.T, challenge string, id []byte) string {
	t.Helper()
	_, cose := newCOSEKey(t)
	rp := sha256.Sum256([]byte("localhost"))
	auth := append(rp[:], 0x45) // user present, user verified, credential data attached
	auth = binary.BigEndian.AppendUint32(auth, 0)
	auth = append(auth, make([]byte, 16)...) // AAGUID
	auth = binary.BigEndian.AppendUint16(auth, uint16(len(id)))
	auth = append(append(auth, id...), cose...)
	att, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": auth})
	if err != nil {
		t.Fatal(err)
	}
	clientData, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": challenge, "origin": "https://localhost", "crossOrigin": false})
	b64 := base64.RawURLEncoding.EncodeToString
	raw, _ := json.Marshal(map[string]any{
		"id": b64(id), "rawId": b64(id), "type": "public-key",
		"response": map[string]string{"clientDataJSON": b64(clientData), "attestationObject": b64(att)},
	})
	return string(raw)
}

// TestPasskeyAddEndsOtherSessions: adding a passkey ends the user's other
// sessions, as turning on the authenticator app does: none taken before
// the factor existed outlives it.
func TestPasskeyAddEndsOtherSessions(t *testing.T) {
	e := newEnvAt(t, "https://localhost")
	e.user("ann@example.com", keyward.RoleOwner)
	elsewhere, here := e.browser(), e.browser()
	elsewhere.signIn("ann@example.com")
	here.signIn("ann@example.com")
	here.get("/account/mfa") // its CSRF token
	challenge, state := begin(t, here, "/account/passkeys/begin")
	status, body := here.post("/account/passkeys/finish", url.Values{"state": {state}, "name": {"laptop"}, "credential": {attest(t, challenge, []byte("new-key"))}})
	wantStatus(t, status, http.StatusOK, body)
	if elsewhere.get("/tokens"); elsewhere.path() != "/signin" {
		t.Errorf("the session from before the passkey goes on (at %s)", elsewhere.path())
	}
	if here.get("/tokens"); here.path() != "/tokens" {
		t.Errorf("the session that added it ended (at %s)", here.path())
	}
}

// TestPasskeyAddSessionsKept: a passkey added whose user's other sessions
// could not be ended after is stored, and the answer says both.
func TestPasskeyAddSessionsKept(t *testing.T) {
	f := &failLater{}
	e := newEnvWrapped(t, "https://localhost", nil, func(a keyward.AccountStore) keyward.AccountStore { f.AccountStore = a; return f })
	u := e.user("ann@example.com", keyward.RoleOwner)
	elsewhere, here := e.browser(), e.browser()
	elsewhere.signIn("ann@example.com")
	here.signIn("ann@example.com")
	here.get("/account/mfa")
	challenge, state := begin(t, here, "/account/passkeys/begin")
	f.arm(true, false)
	status, body := here.post("/account/passkeys/finish", url.Values{"state": {state}, "name": {"laptop"}, "credential": {attest(t, challenge, []byte("new-key"))}})
	wantStatus(t, status, http.StatusInternalServerError, body)
	wantText(t, body, `{"error":"`+msgPasskeySessionsKept+`"}`)
	if keys, err := e.store.FindPasskeys(context.Background(), u.ID); err != nil || len(keys) != 1 || keys[0].Name != "laptop" {
		t.Errorf("FindPasskeys = %d, %v; want the laptop's", len(keys), err)
	}
	if !strings.Contains(e.log.String(), "injected failure") {
		t.Error("the failure was not logged")
	}
	if elsewhere.get("/tokens"); elsewhere.path() != "/tokens" {
		t.Errorf("the other session at %s, want it kept (its ending failed)", elsewhere.path())
	}
}
