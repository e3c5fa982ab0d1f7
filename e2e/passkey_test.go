package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// virtualAuthenticator gives the tab Chromium's virtual WebAuthn
// authenticator: a platform authenticator with resident keys whose user
// verification always succeeds.
func virtualAuthenticator() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21,
				Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true, HasUserVerification: true,
				IsUserVerified: true, AutomaticPresenceSimulation: true,
			},
		})
		return err
	})
}

// TestDashboardPasskeys registers a passkey with Chromium's virtual
// authenticator, then signs in with it alone (passwordless) and uses it as
// the second step after the password. Passkeys need a host name as relying
// party, so the server runs with --public-url http://localhost:PORT.
func TestDashboardPasskeys(t *testing.T) {
	exe := chromium(t)
	shots := artifacts(t)
	st := sqliteStore(t)
	const pw = "correct horse battery staple"
	userCreate(t, st, "owner@example.com", pw, "--owner")
	port := freePort(t)
	base := fmt.Sprintf("http://localhost:%d", port)
	startServer(t, st, "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--public-url", base)

	ctx := browserTab(t, exe)
	do(t, ctx, "add a virtual authenticator", virtualAuthenticator())
	signIn(t, ctx, base, "owner@example.com", pw)
	do(t, ctx, "register a passkey",
		chromedp.WaitVisible(chromedp.ID("token-list")),
		chromedp.Navigate(base+"/account/mfa"),
		chromedp.SendKeys(chromedp.ID("passkey-name"), "virtual"),
		chromedp.Click(chromedp.ID("passkey-add")),
		chromedp.WaitVisible(chromedp.ID("passkey-list")),
	)
	shot(t, ctx, shots, "20-passkey-added")
	if list := text(t, ctx, "passkey-list"); !strings.Contains(list, "virtual") {
		t.Fatalf("passkey list: %q", list)
	}

	do(t, ctx, "sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("passkey-signin")))
	do(t, ctx, "sign in with the passkey alone",
		chromedp.Click(chromedp.ID("passkey-signin")),
		chromedp.WaitVisible(chromedp.ID("token-list")),
	)
	shot(t, ctx, shots, "21-passkey-signed-in")

	do(t, ctx, "sign out again", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("email")))
	signIn(t, ctx, base, "owner@example.com", pw)
	do(t, ctx, "the passkey as second step",
		chromedp.WaitVisible(chromedp.ID("passkey-mfa")),
		chromedp.Click(chromedp.ID("passkey-mfa")),
		chromedp.WaitVisible(chromedp.ID("token-list")),
	)
	do(t, ctx, "the audit log", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS("table")))
	body, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"mfa.passkey_add", "session.signin"} {
		if !strings.Contains(body, a) {
			t.Errorf("audit log lacks %s", a)
		}
	}
	shot(t, ctx, shots, "22-audit")

	// A page whose session ended meanwhile (signed out in another tab):
	// the button says to reload, not what parsing an HTML page as JSON
	// says.
	do(t, ctx, "a stale passkey form",
		chromedp.Navigate(base+"/account/mfa"),
		chromedp.WaitVisible(chromedp.ID("passkey-add")),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, network.ClearBrowserCookies, cdp.Empty{})
			return err
		}),
		chromedp.SendKeys(chromedp.ID("passkey-name"), "second"),
		chromedp.Click(chromedp.ID("passkey-add")),
		chromedp.WaitVisible(chromedp.ID("passkey-error")),
	)
	if msg := text(t, ctx, "passkey-error"); !strings.Contains(msg, "This page has expired") {
		t.Errorf("stale form: %q", msg)
	}
}

// TestDashboardPasskeyEnter adds a passkey from the keyboard: Enter in the
// name field runs the ceremony, as the button does. The form must never
// submit itself: it has no action of its own, and a GET would put its CSRF
// token and the name in the page's URL. Without JavaScript, which passkeys
// need, the form is not shown.
func TestDashboardPasskeyEnter(t *testing.T) {
	exe := chromium(t)
	st := sqliteStore(t)
	const pw = "correct horse battery staple"
	userCreate(t, st, "owner@example.com", pw, "--owner")
	port := freePort(t)
	base := fmt.Sprintf("http://localhost:%d", port)
	startServer(t, st, "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--public-url", base)

	ctx := browserTab(t, exe)
	do(t, ctx, "add a virtual authenticator", virtualAuthenticator())
	signIn(t, ctx, base, "owner@example.com", pw)
	do(t, ctx, "name a passkey and press Enter",
		chromedp.WaitVisible(chromedp.ID("token-list")),
		chromedp.Navigate(base+"/account/mfa"),
		chromedp.SendKeys(chromedp.ID("passkey-name"), "typed\r"),
		chromedp.WaitVisible(chromedp.ID("passkey-list")),
	)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if loc != base+"/account/mfa" {
		t.Errorf("after Enter the page is %s, want %s/account/mfa (no query)", loc, base)
	}
	if list := text(t, ctx, "passkey-list"); !strings.Contains(list, "typed") {
		t.Fatalf("passkey list: %q", list)
	}

	noJS := browserTab(t, exe)
	do(t, noJS, "turn JavaScript off", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
	do(t, noJS, "the sign-in page without JavaScript", chromedp.Navigate(base+"/signin"), chromedp.WaitVisible(chromedp.ID("email")))
	shown, err := chromedp.Run(noJS, chromedp.Evaluate[bool](`document.querySelector("form[data-passkey-form]").getClientRects().length > 0`))
	if err != nil {
		t.Fatal(err)
	}
	if shown {
		t.Error("without JavaScript the passkey form is shown, though its button cannot work")
	}
}
