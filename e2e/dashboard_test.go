package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/keyward/keyward/client"
	"github.com/keyward/keyward/internal/account"
)

// chromium returns the path of a Chromium or Chrome binary. Without one
// the test is skipped, but under CI=true it fails: the browser test must
// run in CI.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found: install it (apt-get install -y chromium) to run the dashboard's browser test"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so the test must run")
	}
	t.Skip(msg)
	return ""
}

// artifacts returns the directory for screenshots: $KEYWARD_ARTIFACTS/dashboard,
// or a temporary directory that the test removes.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if base := os.Getenv("KEYWARD_ARTIFACTS"); base != "" {
		dir = filepath.Join(base, "dashboard")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// browserTab starts a headless Chromium with a fresh profile and returns a
// tab's context. Each call is a new browser: its own cookies.
func browserTab(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		// Containers often have a tiny /dev/shm, which makes Chromium crash.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return ctx
}

// shot writes a full-page screenshot.
func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("%s: %v (at %s)\n%s", what, err, loc, body)
	}
}

func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("text of #%s: %v", id, err)
	}
	return strings.TrimSpace(s)
}

func userCreate(t *testing.T, st *store, email, password string, flags ...string) {
	t.Helper()
	out, errOut, code := cli(t, password+"\n", st.env, append(append([]string{"user", "create", "--email", email, "--password-stdin"}, st.args...), flags...)...)
	if code != 0 {
		t.Fatalf("keyward user create %s: exit %d: %s%s", email, code, out, errOut)
	}
}

func signIn(t *testing.T, ctx context.Context, url, email, password string) {
	t.Helper()
	do(t, ctx, "sign in as "+email,
		chromedp.Navigate(url+"/signin"),
		chromedp.SendKeys(chromedp.ID("email"), email),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("signin")),
	)
}

// TestDashboardBrowser is the dashboard's acceptance test in a real
// browser: the owner made on the command line signs in, enrols TOTP,
// signs in again with both factors, creates a token, copies it from the
// show-once page, sees it verify, revokes it, and sees it stop verifying;
// a member cannot open another member's token; a form without its CSRF
// token is refused.
func TestDashboardBrowser(t *testing.T) {
	exe := chromium(t)
	t.Run("SQLite", func(t *testing.T) { dashboardBrowser(t, exe, sqliteStore(t), artifacts(t)) })
	t.Run("PostgreSQL", func(t *testing.T) {
		st := postgresStore(t)
		dashboardBrowser(t, exe, st, t.TempDir()) // screenshots once, from SQLite
	})
}

func dashboardBrowser(t *testing.T, exe string, st *store, shots string) {
	const ownerPW = "correct horse battery staple"
	const memberPW = "another long passphrase here"
	userCreate(t, st, "owner@example.com", ownerPW, "--owner")
	userCreate(t, st, "mia@example.com", memberPW)
	userCreate(t, st, "max@example.com", memberPW)
	root := initRoot(t, st)
	srv := startServer(t, st)
	api := newClient(t, srv.URL, root)

	ctx := browserTab(t, exe)
	do(t, ctx, "open the start page", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("email")))
	shot(t, ctx, shots, "01-signin")

	signIn(t, ctx, srv.URL, "owner@example.com", ownerPW)
	do(t, ctx, "land on the tokens page", chromedp.WaitVisible(chromedp.ID("token-list")))
	shot(t, ctx, shots, "02-tokens-empty")

	// Enrol TOTP: the test reads the secret shown as text.
	do(t, ctx, "start TOTP enrolment",
		chromedp.Navigate(srv.URL+"/account/mfa"),
		chromedp.Click(chromedp.ID("totp-setup")),
		chromedp.WaitVisible(chromedp.ID("totp-secret")),
	)
	shot(t, ctx, shots, "03-totp-enrol")
	secret, err := account.ParseTOTPSecretText(text(t, ctx, "totp-secret"))
	if err != nil {
		t.Fatalf("the shown TOTP secret does not parse: %v", err)
	}
	enrolStep := account.TOTPStep(time.Now())
	do(t, ctx, "confirm TOTP",
		chromedp.SendKeys(chromedp.ID("code"), account.TOTPCode(secret, enrolStep)),
		chromedp.Click(chromedp.ID("totp-confirm")),
		chromedp.WaitVisible(chromedp.ID("recovery-codes")),
	)
	shot(t, ctx, shots, "04-recovery-codes")

	do(t, ctx, "sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("email")))

	// Sign in with password and TOTP. The enrolment code may not be used
	// again, so take the next step's (one step ahead is accepted).
	signIn(t, ctx, srv.URL, "owner@example.com", ownerPW)
	do(t, ctx, "reach the second step", chromedp.WaitVisible(chromedp.ID("code")))
	shot(t, ctx, shots, "05-mfa")
	next := max(account.TOTPStep(time.Now()), enrolStep+1)
	do(t, ctx, "enter the TOTP code",
		chromedp.SendKeys(chromedp.ID("code"), account.TOTPCode(secret, next)),
		chromedp.Click(chromedp.ID("verify")),
		chromedp.WaitVisible(chromedp.ID("token-list")),
	)

	// Create a token and read its secret from the show-once page.
	do(t, ctx, "create a token",
		chromedp.Click(chromedp.ID("new-token")),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "orders sync"),
		chromedp.SendKeys(chromedp.ID("extra_scopes"), "orders:read"),
	)
	shot(t, ctx, shots, "06-token-new")
	do(t, ctx, "submit the token", chromedp.Click(chromedp.ID("create")), chromedp.WaitVisible(chromedp.ID("secret")))
	shot(t, ctx, shots, "07-token-show-once")
	tokenText := text(t, ctx, "secret")
	if !strings.HasPrefix(tokenText, "kw_") || len(tokenText) != 41 {
		t.Fatalf("show-once page shows %q, not a token", tokenText)
	}
	expectCode(t, api, client.VerifyRequest{Token: tokenText, Scopes: []string{"orders:read"}}, "VALID")

	// Revoke it in the UI.
	do(t, ctx, "revoke the token",
		chromedp.Click(chromedp.ID("token-link")),
		chromedp.WaitVisible(chromedp.ID("revoke")),
		chromedp.SendKeys(chromedp.ID("reason"), "leaked in a test"),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("revoke")),
		chromedp.WaitVisible(chromedp.CSS(".state-revoked")),
	)
	shot(t, ctx, shots, "08-token-revoked")
	expectCode(t, api, client.VerifyRequest{Token: tokenText, Scopes: []string{"orders:read"}}, "REVOKED")
	do(t, ctx, "the list", chromedp.Navigate(srv.URL+"/tokens"), chromedp.WaitVisible(chromedp.ID("token-list")))
	shot(t, ctx, shots, "09-tokens")
	do(t, ctx, "the sessions page", chromedp.Navigate(srv.URL+"/sessions"), chromedp.WaitVisible(chromedp.ID("signout-everywhere")))
	shot(t, ctx, shots, "10-sessions")

	// A form posted without its CSRF token is refused: the browser submits
	// the new-token form, with the session cookie, after the test removed
	// the form's token.
	do(t, ctx, "open the new token form", chromedp.Navigate(srv.URL+"/tokens/new"), chromedp.WaitVisible(chromedp.ID("name")))
	res, err := chromedp.RunResponse(ctx,
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](`document.querySelector("form[action='/tokens'] input[name=csrf]").remove()`)(ctx, tg)
			return err
		}),
		chromedp.SendKeys(chromedp.ID("name"), "csrf-less"),
		chromedp.Click(chromedp.ID("create")),
	)
	if err != nil || res.Status != 403 {
		t.Fatalf("a form without CSRF token: %v, %v; want status 403", res, err)
	}
	shot(t, ctx, shots, "11-csrf-refused")
	if toks, err := api.ListTokens(context.Background(), client.TokenFilter{Name: "csrf-less"}); err != nil || len(toks.Items) != 0 {
		t.Fatalf("the refused form created a token: %v, %v", toks, err)
	}

	// A member cannot open another member's token.
	mia := browserTab(t, exe)
	signIn(t, mia, srv.URL, "mia@example.com", memberPW)
	do(t, mia, "mia creates a token",
		chromedp.WaitVisible(chromedp.ID("new-token")),
		chromedp.Click(chromedp.ID("new-token")),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "mia's token"),
		chromedp.SendKeys(chromedp.ID("extra_scopes"), "orders:read"),
		chromedp.Click(chromedp.ID("create")),
		chromedp.WaitVisible(chromedp.ID("token-link")),
	)
	href, err := chromedp.Run(mia, chromedp.Evaluate[string](`document.getElementById("token-link").getAttribute("href")`))
	if err != nil || !strings.HasPrefix(href, "/tokens/tok_") {
		t.Fatalf("token link %q, %v", href, err)
	}
	maxTab := browserTab(t, exe)
	signIn(t, maxTab, srv.URL, "max@example.com", memberPW)
	do(t, maxTab, "max signed in", chromedp.WaitVisible(chromedp.ID("token-list")))
	res, err = chromedp.RunResponse(maxTab, chromedp.Navigate(srv.URL+href))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 404 {
		t.Fatalf("max opening mia's token: status %d, want 404", res.Status)
	}
	shot(t, maxTab, shots, "12-member-404")
	if list := text(t, maxTab, "error-message"); !strings.Contains(list, "There is no such page.") {
		t.Errorf("404 page says %q", list)
	}
	t.Logf("screenshots in %s", shots)
}

// TestDashboardTokenExpiry gives a token a new expiry from its page in a
// real browser: the owner picks a date, and the API then shows the token
// valid through its end, with the member's token.update event.
func TestDashboardTokenExpiry(t *testing.T) {
	exe := chromium(t)
	st := sqliteStore(t)
	const pw = "correct horse battery staple"
	userCreate(t, st, "owner@example.com", pw, "--owner")
	root := initRoot(t, st)
	srv := startServer(t, st)
	api := newClient(t, srv.URL, root)
	ctx := context.Background()
	in30 := time.Now().UTC().Add(30 * 24 * time.Hour)
	tok, err := api.CreateToken(ctx, client.CreateTokenRequest{Name: "nightly export", Scopes: []string{"orders:read"}, ExpiresAt: &in30})
	if err != nil {
		t.Fatal(err)
	}

	tab := browserTab(t, exe)
	signIn(t, tab, srv.URL, "owner@example.com", pw)
	do(t, tab, "signed in", chromedp.WaitVisible(chromedp.ID("token-list")))
	date := time.Now().UTC().Add(10 * 24 * time.Hour).Format("2006-01-02")
	do(t, tab, "open the token and choose a date",
		chromedp.Navigate(srv.URL+"/tokens/"+tok.ID),
		chromedp.WaitVisible(chromedp.ID("change-expiry")),
		chromedp.Click(chromedp.ID("expiry-custom")),
		chromedp.SetValue(chromedp.ID("expires_on"), date),
	)
	shot(t, tab, artifacts(t), "13-token-expiry")
	res, err := chromedp.RunResponse(tab, chromedp.Click(chromedp.ID("change-expiry")))
	if err != nil || res.Status != 200 {
		t.Fatalf("changing the expiry: %v, %v; want status 200", res, err)
	}
	end, _ := time.Parse("2006-01-02", date)
	end = end.Add(24 * time.Hour) // valid through the date, UTC
	if got := text(t, tab, "token-expires"); got != end.Format("2006-01-02 15:04 UTC") {
		t.Errorf("the page shows expiry %q, want %q", got, end.Format("2006-01-02 15:04 UTC"))
	}
	got, err := api.GetToken(ctx, tok.ID)
	if err != nil || got.ExpiresAt == nil || !got.ExpiresAt.Equal(end) {
		t.Fatalf("the API shows %+v, %v; want expires_at %v", got, err, end)
	}
	evs, err := api.ListAudit(ctx, client.ListOptions{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var update *client.AuditEvent
	for i, ev := range evs.Items {
		if ev.Action == "token.update" && ev.Target == tok.ID {
			update = &evs.Items[i]
			break
		}
	}
	if update == nil || update.Actor.Type != "member" || update.Changes["expires_at"] == nil {
		t.Fatalf("no token.update of the member with the expiry among %+v", evs.Items)
	}
	if c, _ := update.Changes["expires_at"].(map[string]any); c == nil || c["from"] == nil || c["to"] != end.Format(time.RFC3339) {
		t.Errorf("the event's changes %v, want expires_at from the old expiry to %s", update.Changes, end.Format(time.RFC3339))
	}
}

// TestDashboardLongNames opens a token whose name and scope are single
// words as long as they may be: the token's page does not grow wider than
// the window, and in the list they wrap within the table, so that the
// other columns stay in sight.
func TestDashboardLongNames(t *testing.T) {
	exe := chromium(t)
	st := sqliteStore(t)
	const pw = "correct horse battery staple"
	userCreate(t, st, "owner@example.com", pw, "--owner")
	root := initRoot(t, st)
	srv := startServer(t, st)
	api := newClient(t, srv.URL, root)
	tok, err := api.CreateToken(context.Background(), client.CreateTokenRequest{
		Name: strings.Repeat("x", 200), Scopes: []string{"orders:" + strings.Repeat("segment", 20)},
	})
	if err != nil {
		t.Fatal(err)
	}

	tab := browserTab(t, exe)
	signIn(t, tab, srv.URL, "owner@example.com", pw)
	do(t, tab, "the token's page", chromedp.WaitVisible(chromedp.ID("token-list")),
		chromedp.Navigate(srv.URL+"/tokens/"+tok.ID), chromedp.WaitVisible(chromedp.ID("token-state")))
	wide, err := chromedp.Run(tab, chromedp.Evaluate[string](
		`document.documentElement.scrollWidth > document.documentElement.clientWidth ? "page " + document.documentElement.scrollWidth + "px wide in a window of " + document.documentElement.clientWidth : ""`))
	if err != nil {
		t.Fatal(err)
	}
	if wide != "" {
		t.Errorf("the token's page: %s", wide)
	}
	do(t, tab, "the list", chromedp.Navigate(srv.URL+"/tokens"), chromedp.WaitVisible(chromedp.ID("token-list")))
	wide, err = chromedp.Run(tab, chromedp.Evaluate[string](
		`(function () { var t = document.getElementById("token-list"), w = t.parentElement.clientWidth;
		  return t.offsetWidth > w ? "table " + t.offsetWidth + "px wide in a box of " + w : ""; })()`))
	if err != nil {
		t.Fatal(err)
	}
	if wide != "" {
		t.Errorf("the token list: %s", wide)
	}
}

// TestDashboardSecretNotBack leaves the page that shows a new token's
// secret and comes back with the browser's Back button. Browsers may show
// a page that was left from memory (the back-forward cache) without asking
// the server, Cache-Control: no-store or not: the secret must not be on it.
func TestDashboardSecretNotBack(t *testing.T) {
	exe := chromium(t)
	st := sqliteStore(t)
	const pw = "correct horse battery staple"
	userCreate(t, st, "owner@example.com", pw, "--owner")
	srv := startServer(t, st)

	tab := browserTab(t, exe)
	signIn(t, tab, srv.URL, "owner@example.com", pw)
	do(t, tab, "create a token",
		chromedp.WaitVisible(chromedp.ID("new-token")),
		chromedp.Click(chromedp.ID("new-token")),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "back button"),
		chromedp.SendKeys(chromedp.ID("extra_scopes"), "orders:read"),
		chromedp.Click(chromedp.ID("create")),
		chromedp.WaitVisible(chromedp.ID("secret")),
	)
	secret := text(t, tab, "secret")
	do(t, tab, "go to the token, then back",
		chromedp.Click(chromedp.ID("token-link")),
		chromedp.WaitVisible(chromedp.ID("token-state")),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](`history.back()`)(ctx, t)
			return err
		}),
	)
	// A page restored from the back-forward cache sends none of the
	// events that DOM queries wait for: poll with script instead.
	var body string
	for {
		page, err := chromedp.Run(tab, chromedp.Evaluate[string](
			`location.pathname.endsWith("/created") && document.readyState === "complete" ? document.body.innerText : ""`))
		if err != nil {
			t.Fatal(err)
		}
		if page != "" {
			body = page
			break
		}
		if err := chromedp.Do(tab, chromedp.Sleep(50*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(body, secret) {
		t.Errorf("back on the show-once page, the secret is shown again:\n%s", body)
	}
}
