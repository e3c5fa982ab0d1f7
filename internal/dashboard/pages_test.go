package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
)

var (
	secretRE   = regexp.MustCompile(`<code id="totp-secret">([A-Z2-7 ]+)</code>`)
	tokenRE    = regexp.MustCompile(`<code id="secret" class="secret">([^<]+)</code>`)
	tokenIDRE  = regexp.MustCompile(`href="/tokens/(tok_[0-9a-z]+)"`)
	recoveryRE = regexp.MustCompile(`<li><code>([a-z2-7]{5}-[a-z2-7]{5})</code></li>`)
)

// enrolTOTP sets up TOTP for the signed-in browser and returns the secret
// and the recovery codes.
func enrolTOTP(t *testing.T, b *browser) ([]byte, []string) {
	t.Helper()
	b.get("/account/mfa")
	status, body := b.post("/account/mfa/totp", nil)
	wantStatus(t, status, http.StatusOK, body)
	m := secretRE.FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, "<svg") {
		t.Fatalf("enrolment page without secret or QR code:\n%s", body)
	}
	secret, err := account.ParseTOTPSecretText(m[1])
	if err != nil {
		t.Fatal(err)
	}
	pending := regexp.MustCompile(`name="pending" value="([^"]+)"`).FindStringSubmatch(body)[1]
	status, body = b.post("/account/mfa/totp/confirm", url.Values{"pending": {pending}, "code": {"000000"}})
	wantStatus(t, status, http.StatusBadRequest, body)
	wantText(t, body, "That code is not right.")
	code := account.TOTPCode(secret, account.TOTPStep(b.e.clock.Now()))
	status, body = b.post("/account/mfa/totp/confirm", url.Values{"pending": {pending}, "code": {code}})
	wantStatus(t, status, http.StatusOK, body)
	var codes []string
	for _, m := range recoveryRE.FindAllStringSubmatch(body, -1) {
		codes = append(codes, m[1])
	}
	if len(codes) != account.RecoveryCodes {
		t.Fatalf("%d recovery codes shown, want %d", len(codes), account.RecoveryCodes)
	}
	return secret, codes
}

func TestTOTP(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	secret, codes := enrolTOTP(t, b)
	enrolStep := account.TOTPStep(e.clock.Now())
	u := mustUser(t, e, "ann@example.com")
	if strings.Contains(string(u.TOTPSecret), string(secret)) {
		t.Fatal("the store holds the TOTP secret in clear")
	}
	b.post("/signout", nil)

	signIn := func(b *browser) {
		t.Helper()
		b.get("/signin")
		b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
		if b.path() != "/signin/mfa" {
			t.Fatalf("after the password: at %s, want /signin/mfa", b.path())
		}
	}
	t.Run("PendingSessionIsConfined", func(t *testing.T) {
		c := e.browser()
		signIn(c)
		if c.get("/tokens"); c.path() != "/signin/mfa" {
			t.Errorf("a session without its second factor reached %s", c.path())
		}
	})
	t.Run("ErrCodeReused", func(t *testing.T) {
		c := e.browser()
		signIn(c)
		status, body := c.post("/signin/mfa", url.Values{"code": {account.TOTPCode(secret, enrolStep)}})
		wantStatus(t, status, http.StatusUnauthorized, body)
		wantText(t, body, msgBadCode)
	})
	t.Run("ErrNoCode", func(t *testing.T) {
		c := e.browser()
		signIn(c)
		status, body := c.post("/signin/mfa", url.Values{"code": {""}})
		wantStatus(t, status, http.StatusBadRequest, body)
		wantText(t, body, "Enter the code from your authenticator app, or a recovery code.")
	})
	t.Run("OKNextCodeOnce", func(t *testing.T) {
		e.clock.Add(account.TOTPPeriod)
		code := account.TOTPCode(secret, account.TOTPStep(e.clock.Now()))
		c := e.browser()
		signIn(c)
		before := sessionCookie(c)
		c.post("/signin/mfa", url.Values{"code": {code}})
		if c.path() != "/tokens" {
			t.Fatalf("after a good code: at %s", c.path())
		}
		if sessionCookie(c) == before {
			t.Error("the session id did not change when the second factor was presented")
		}
		d := e.browser()
		signIn(d)
		status, _ := d.post("/signin/mfa", url.Values{"code": {code}})
		wantStatus(t, status, http.StatusUnauthorized, "the same code accepted twice")
	})
	t.Run("OKRecoveryCodeOnce", func(t *testing.T) {
		c := e.browser()
		signIn(c)
		c.post("/signin/mfa", url.Values{"code": {strings.ToUpper(codes[0])}})
		if c.path() != "/tokens" {
			t.Fatalf("after a recovery code: at %s", c.path())
		}
		d := e.browser()
		signIn(d)
		status, _ := d.post("/signin/mfa", url.Values{"code": {codes[0]}})
		wantStatus(t, status, http.StatusUnauthorized, "a recovery code accepted twice")
		if n, _ := e.store.RecoveryCodesLeft(context.Background(), u.ID); n != account.RecoveryCodes-1 {
			t.Errorf("%d recovery codes left, want %d", n, account.RecoveryCodes-1)
		}
	})
	t.Run("ReauthBeforeChangingFactors", func(t *testing.T) {
		c := e.browser()
		signIn(c)
		e.clock.Add(account.TOTPPeriod)
		c.post("/signin/mfa", url.Values{"code": {account.TOTPCode(secret, account.TOTPStep(e.clock.Now()))}})
		e.clock.Add(reauthFor)
		c.get("/account/mfa")
		c.post("/account/mfa/totp/disable", nil)
		if c.path() != "/reauth" {
			t.Fatalf("turning TOTP off without a recent factor: at %s, want /reauth", c.path())
		}
		status, body := c.post("/reauth", url.Values{"password": {"wrong password here"}, "next": {"/account/mfa"}})
		wantStatus(t, status, http.StatusUnauthorized, body)
		wantText(t, body, "The password is incorrect.")
		c.post("/reauth", url.Values{"password": {goodPassword}, "next": {"/account/mfa"}})
		if c.path() != "/account/mfa" {
			t.Fatalf("after reauth: at %s", c.path())
		}
		c.post("/account/mfa/totp/disable", nil)
		if got := mustUser(t, e, "ann@example.com"); got.HasMFA() {
			t.Error("TOTP still on")
		}
	})
	t.Run("Audit", func(t *testing.T) {
		e.dash.Wait()
		evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID})
		seen := map[string]bool{}
		for _, ev := range evs {
			seen[ev.Action] = true
			if strings.Contains(string(ev.Changes), goodPassword) {
				t.Errorf("event %s holds the password", ev.Action)
			}
		}
		for _, a := range []string{"user.create", "session.signin", "session.signin_pending", "session.signout", "session.signin_failed", "mfa.totp_enable",
			"mfa.recovery_codes_create", "mfa.recovery_code_use", "mfa.totp_disable"} {
			if !seen[a] {
				t.Errorf("no %s event", a)
			}
		}
	})
}

// TestFactorChangeEndsOtherSessions: turning TOTP on or off ends the
// user's other sessions (one taken before the factor existed must not
// outlive it), and keeps the one that made the change.
func TestFactorChangeEndsOtherSessions(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	e.user("bob@example.com", keyward.RoleAdmin)
	b, other, bob := e.browser(), e.browser(), e.browser()
	b.signIn("ann@example.com")
	other.signIn("ann@example.com")
	bob.signIn("bob@example.com")
	signedIn := func(c *browser) bool {
		t.Helper()
		c.get("/tokens")
		return c.path() == "/tokens"
	}

	secret, _ := enrolTOTP(t, b)
	if signedIn(other) {
		t.Error("a session from before TOTP was turned on still works")
	}
	if !signedIn(b) || !signedIn(bob) {
		t.Error("turning TOTP on ended the session that did it, or another user's")
	}

	// Another session, signed in with both factors, then TOTP off.
	third := e.browser()
	third.get("/signin")
	third.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
	e.clock.Add(account.TOTPPeriod)
	third.post("/signin/mfa", url.Values{"code": {account.TOTPCode(secret, account.TOTPStep(e.clock.Now()))}})
	if !signedIn(third) {
		t.Fatalf("could not sign in with both factors: at %s", third.path())
	}
	b.post("/account/mfa/totp/disable", nil)
	if got := mustUser(t, e, "ann@example.com"); got.HasMFA() {
		t.Fatal("TOTP still on")
	}
	if signedIn(third) {
		t.Error("another session outlived turning TOTP off")
	}
	if !signedIn(b) || !signedIn(bob) {
		t.Error("turning TOTP off ended the session that did it, or another user's")
	}
}

func TestTokenForm(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	base := func(kv ...string) url.Values {
		v := url.Values{"name": {"ci"}, "expiry": {"30"}, "quota_period": {"month"}}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	tests := []struct {
		name  string
		form  url.Values
		field string
		want  string
	}{
		{"ErrNoName", base("name", " "), "name", "name is required"},
		{"ErrLongName", base("name", strings.Repeat("n", 201)), "name", "name must be at most 200 characters"},
		{"ErrBadScope", base("extra_scopes", "Orders:Read"), "scopes", "segments use only a-z 0-9 _ . -"},
		{"ErrUnknownManagementScope", base("extra_scopes", "keyward:root"), "scopes", "is not a keyward management scope"},
		{"ErrNoExpiryChoice", base("expiry", ""), "expiry", "Choose when the token expires."},
		{"ErrBadDate", base("expiry", "custom", "expires_on", "14/03/2027"), "expiry", "Enter the date as YYYY-MM-DD"},
		{"ErrPastDate", base("expiry", "custom", "expires_on", "2020-01-01"), "expiry", "The expiry date must be today or later (UTC)."},
		{"ErrBadCIDR", base("cidrs", "10.0.0.0/33"), "cidrs", "is not a CIDR such as 203.0.113.0/24"},
		{"ErrRateLimitSyntax", base("rate_limit", "100 per minute"), "rate_limit", "Write the rate limit as COUNT/WINDOW"},
		{"ErrRateLimitZero", base("rate_limit", "0/1m"), "rate_limit", "limit must be a positive number"},
		{"ErrRateLimitWindow", base("rate_limit", "10/1ms"), "rate_limit", "window must be between 1s and 744h"},
		{"ErrQuotaNumber", base("quota_limit", "lots"), "quota", "The quota must be a whole number"},
		{"ErrQuotaPeriod", base("quota_limit", "10", "quota_period", "week"), "quota", "period must be one of day, month, none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.get("/tokens/new")
			status, body := b.post("/tokens", tt.form)
			wantStatus(t, status, http.StatusBadRequest, body)
			// The message sits next to its field.
			re := regexp.MustCompile(`<p class="field-error" id="` + tt.field + `-error">([^<]*)</p>`)
			m := re.FindStringSubmatch(body)
			if m == nil || !strings.Contains(unescape(m[1]), tt.want) {
				t.Fatalf("no %q next to %s; page:\n%s", tt.want, tt.field, body)
			}
		})
	}
	t.Run("Policy", func(t *testing.T) {
		err := e.store.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID, MaxTokenLifetime: 90 * day})
		if err != nil {
			t.Fatal(err)
		}
		defer e.store.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID})
		_, body := b.get("/tokens/new")
		if strings.Contains(body, `value="never"`) {
			t.Error("the form offers never although the policy forbids it")
		}
		if strings.Contains(body, `value="365"`) || !strings.Contains(body, `value="90" checked`) {
			t.Error("the form offers 365 days, or does not start on 90, under a 90-day policy")
		}
		e.store.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID, MaxTokenLifetime: 30 * day})
		if _, body = b.get("/tokens/new"); strings.Contains(body, `value="90"`) || !strings.Contains(body, `value="30" checked`) {
			t.Error("under a 30-day policy the form offers 90 days or does not start on 30")
		}
		// A date is valid through its end: the last one allowed is 29 days
		// on, which the date field and the error name.
		today := e.clock.Now().UTC()
		last, over := today.Add(29*day).Format("2006-01-02"), today.Add(30*day).Format("2006-01-02")
		wantText(t, body, `max="`+last+`"`)
		status, body := b.post("/tokens", base("name", "last day", "expiry", "custom", "expires_on", last))
		wantStatus(t, status, http.StatusOK, body)
		b.get("/tokens/new")
		status, body = b.post("/tokens", base("name", "a day over", "expiry", "custom", "expires_on", over))
		wantStatus(t, status, http.StatusBadRequest, body)
		wantText(t, body, "the latest date it allows is "+last+".")
		e.store.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID, MaxTokenLifetime: 90 * day})
		for form, want := range map[string]string{"never": "the workspace policy requires an expiry", "365": "the workspace policy allows at most 90 days"} {
			status, body := b.post("/tokens", base("expiry", form))
			wantStatus(t, status, http.StatusBadRequest, body)
			wantText(t, body, want)
		}
	})
	t.Run("OKDateIsWholeDay", func(t *testing.T) {
		// A date is valid through its end, UTC, and the rate window reads
		// as people write it.
		date := e.clock.Now().UTC().Add(3 * day).Format("2006-01-02")
		b.get("/tokens/new")
		status, body := b.post("/tokens", base("name", "dated", "expiry", "custom", "expires_on", date, "rate_limit", "100/1m"))
		wantStatus(t, status, http.StatusOK, body)
		id := tokenIDRE.FindStringSubmatch(body)[1]
		tok, err := e.store.FindToken(context.Background(), e.ws.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := time.Parse("2006-01-02", date)
		if tok.ExpiresAt == nil || !tok.ExpiresAt.Equal(d.Add(day)) {
			t.Errorf("expires_at %v, want %v (the end of %s)", tok.ExpiresAt, d.Add(day), date)
		}
		_, page := b.get("/tokens/" + id)
		wantText(t, page, "100 per 1 minute")
	})
	t.Run("OKShowOnce", func(t *testing.T) {
		b.get("/tokens/new")
		status, body := b.post("/tokens", base("name", "CRM sync", "extra_scopes", "orders:read orders:write", "cidrs", "203.0.113.0/24\n10.0.0.1",
			"rate_limit", "100/1m", "quota_limit", "1000", "quota_period", "day"))
		wantStatus(t, status, http.StatusOK, body)
		if b.last.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("show-once page Cache-Control = %q", b.last.Header.Get("Cache-Control"))
		}
		m := tokenRE.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no secret on the page:\n%s", body)
		}
		wantText(t, body, "It is shown only this once", `curl -H "Authorization: Bearer `+m[1])
		id := tokenIDRE.FindStringSubmatch(body)[1]
		tok, err := e.store.FindToken(context.Background(), e.ws.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		u := mustUser(t, e, "ann@example.com")
		if tok.CreatedBy != u.ID || tok.RateLimit.Limit != 100 || tok.Quota.Period != "day" || len(tok.AllowedCIDRs) != 2 || tok.ExpiresAt == nil {
			t.Errorf("stored token = %+v", tok)
		}
		evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Target: id})
		if len(evs) != 1 || evs[0].Actor != (keyward.Actor{Type: keyward.ActorMember, ID: u.ID}) || evs[0].IP == "" {
			t.Errorf("token.create event = %+v", evs[0])
		}
		// Reloading the secret's page (or coming back to it) makes no
		// second token and shows the secret no more; the sealed cookie
		// that carried it was deleted as it was shown.
		created := b.path()
		if created != "/tokens/"+id+"/created" {
			t.Errorf("the secret's page is %s", created)
		}
		if once := findCookie(b, "keyward_once"); once != "" {
			t.Errorf("the secret's cookie outlived its page: %q", once)
		}
		status, again := b.get(created)
		wantStatus(t, status, http.StatusGone, again)
		wantText(t, again, `id="secret-gone"`, "rotate the token for a new one")
		if strings.Contains(again, m[1]) {
			t.Error("the reloaded page shows the secret")
		}
		if toks, _ := e.store.FindTokens(context.Background(), keyward.TokenFilter{WorkspaceID: e.ws.ID, Name: "CRM sync"}); len(toks) != 1 {
			t.Errorf("%d tokens named CRM sync, want 1", len(toks))
		}
		// The secret is never on another page.
		_, list := b.get("/tokens")
		_, page := b.get("/tokens/" + id)
		if strings.Contains(list+page, m[1]) {
			t.Error("the secret shows again")
		}
		wantText(t, list, "CRM sync", tok.Hint, "orders:read orders:write", "ann@example.com")

		// The token page shows the subject and metadata, escaped.
		other, _, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID),
			&keyward.Token{Name: "billing", Subject: "customer-42", Metadata: []byte(`{"plan":"<b>pro</b>"}`)})
		if err != nil {
			t.Fatal(err)
		}
		_, page = b.get("/tokens/" + other.ID)
		// Raw HTML: the metadata's markup is escaped, not rendered.
		for _, want := range []string{`<code id="token-subject">customer-42</code>`, `<code id="token-metadata">{&#34;plan&#34;:&#34;&lt;b&gt;pro&lt;/b&gt;&#34;}</code>`} {
			if !strings.Contains(page, want) {
				t.Errorf("token page lacks %s", want)
			}
		}
		if _, page = b.get("/tokens/" + id); !strings.Contains(page, "<dt>Subject</dt><dd>none</dd>") {
			t.Errorf("a token without a subject: %s", page)
		}

		t.Run("ErrRevokeUnconfirmed", func(t *testing.T) {
			status, body := b.post("/tokens/"+id+"/revoke", url.Values{"reason": {"leaked"}})
			wantStatus(t, status, http.StatusBadRequest, body)
			wantText(t, body, "Tick the box to confirm: revocation cannot be undone.")
		})
		t.Run("ErrRevokeReasonTooLong", func(t *testing.T) {
			b.get("/tokens/" + id)
			status, body := b.post("/tokens/"+id+"/revoke", url.Values{"reason": {strings.Repeat("r", 501)}, "confirm": {"yes"}})
			wantStatus(t, status, http.StatusBadRequest, body)
			wantText(t, body, "Reason must be at most 500 characters.")
		})
		t.Run("ErrRevokeReasonControl", func(t *testing.T) {
			b.get("/tokens/" + id)
			status, body := b.post("/tokens/"+id+"/revoke", url.Values{"reason": {"leaked\x1b[2Jin a log"}, "confirm": {"yes"}})
			wantStatus(t, status, http.StatusBadRequest, body)
			wantText(t, body, "Reason must not contain control characters.")
		})
		t.Run("ErrRotateGrace", func(t *testing.T) {
			b.get("/tokens/" + id)
			status, body := b.post("/tokens/"+id+"/rotate", url.Values{"grace": {"1y"}})
			wantStatus(t, status, http.StatusBadRequest, body)
			wantText(t, body, "Choose how long the old secret stays valid.")
		})
		t.Run("OKRotate", func(t *testing.T) {
			b.get("/tokens/" + id)
			status, body := b.post("/tokens/"+id+"/rotate", url.Values{"grace": {"1h"}})
			wantStatus(t, status, http.StatusOK, body)
			if n := tokenRE.FindStringSubmatch(body); n == nil || n[1] == m[1] {
				t.Fatalf("rotation showed no new secret")
			}
			// A reload rotates nothing again (which would end the grace
			// just given to the old secret).
			status, again := b.get("/tokens/" + id + "/rotated")
			wantStatus(t, status, http.StatusGone, again)
			evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Target: id, Action: "token.rotate"})
			if len(evs) != 1 {
				t.Errorf("%d token.rotate events, want 1", len(evs))
			}
		})
		t.Run("OKRevoke", func(t *testing.T) {
			b.get("/tokens/" + id)
			b.post("/tokens/"+id+"/revoke", url.Values{"reason": {"leaked"}, "confirm": {"yes"}})
			if b.path() != "/tokens/"+id {
				t.Fatalf("after revoke: at %s", b.path())
			}
			wantText(t, b.body, `<span id="token-state" class="state state-revoked">revoked</span>`, "token.revoke")
		})
	})
}

// findCookie returns the value the browser holds for a cookie whose name
// starts with prefix (after any __Host- prefix), "" when none.
func findCookie(b *browser, prefix string) string {
	u, _ := url.Parse(b.e.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		if strings.HasPrefix(strings.TrimPrefix(c.Name, "__Host-"), prefix) {
			return c.Value
		}
	}
	return ""
}

// noFollow stops b following redirects, until the returned function runs.
func noFollow(b *browser) func() {
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return func() { b.c.CheckRedirect = nil }
}

// TestShowOnceTwoTabs: two forms sent before either's redirect is followed
// (two tabs) each show their own secret.
func TestShowOnceTwoTabs(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/tokens/new")
	restore := noFollow(b)
	b.post("/tokens", url.Values{"name": {"tab A"}, "expiry": {"30"}, "quota_period": {"month"}})
	locA := b.last.Header.Get("Location")
	if findCookie(b, "keyward_once") == "" {
		t.Fatal("no cookie carries the secret")
	}
	b.post("/tokens", url.Values{"name": {"tab B"}, "expiry": {"30"}, "quota_period": {"month"}})
	locB := b.last.Header.Get("Location")
	restore()
	for _, loc := range []string{locA, locB} {
		status, body := b.get(loc)
		if status != http.StatusOK || tokenRE.FindStringSubmatch(body) == nil {
			t.Errorf("%s: %d, no secret shown", loc, status)
		}
	}
}

// TestShowOnceOtherWorkspace: a secret made in one workspace is not shown
// on the same page of another, which the user switched to meanwhile.
func TestShowOnceOtherWorkspace(t *testing.T) {
	e := newEnv(t)
	u := e.user("ann@example.com", keyward.RoleOwner)
	acme := e.memberOf(t, "acme", u, keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	b.post("/workspace", url.Values{"workspace": {acme.ID}})
	b.get("/members")
	restore := noFollow(b)
	b.post("/members/invite", url.Values{"email": {"new@example.com"}, "role": {keyward.RoleOwner}})
	invited := b.last.Header.Get("Location")
	restore()
	b.get("/tokens")
	b.post("/workspace", url.Values{"workspace": {e.ws.ID}})
	// acme's invitation is a foreign object in default: 404, as any.
	if status, body := b.get(invited); status != http.StatusNotFound || strings.Contains(body, `id="invite-link"`) {
		t.Errorf("default's page (%d, want 404) shows the link of an invitation to acme", status)
	}
	b.post("/workspace", url.Values{"workspace": {acme.ID}})
	if status, body := b.get(invited); status != http.StatusOK || !strings.Contains(body, `id="invite-link"`) {
		t.Errorf("acme's page (%d) does not show its link", status)
	}
}

func unescape(s string) string {
	return strings.NewReplacer("&#34;", `"`, "&#39;", "'", "&amp;", "&", "&lt;", "<", "&gt;", ">").Replace(s)
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	e.user("mia@example.com", keyward.RoleMember)
	e.user("max@example.com", keyward.RoleMember)
	e.user("vic@example.com", keyward.RoleViewer)
	mia := e.browser()
	mia.signIn("mia@example.com")
	mia.get("/tokens/new")
	status, body := mia.post("/tokens", url.Values{"name": {"mia's"}, "extra_scopes": {"orders:read"}, "expiry": {"7"}})
	wantStatus(t, status, http.StatusOK, body)
	id := tokenIDRE.FindStringSubmatch(body)[1]

	t.Run("MemberCannotSeeOthers", func(t *testing.T) {
		max := e.browser()
		max.signIn("max@example.com")
		status, _ := max.get("/tokens/" + id)
		wantStatus(t, status, http.StatusNotFound, "another member's token")
		_, list := max.get("/tokens")
		if strings.Contains(list, id) {
			t.Error("a member's list shows another member's token")
		}
		status, _ = max.post("/tokens/"+id+"/revoke", url.Values{"confirm": {"yes"}})
		wantStatus(t, status, http.StatusNotFound, "revoking another member's token")
		status, _ = max.get("/tokens/tok_00000000000000000000000000")
		wantStatus(t, status, http.StatusNotFound, "an unknown token")
	})
	t.Run("MemberCannotGrantManagementScopes", func(t *testing.T) {
		mia.get("/tokens/new")
		status, body := mia.post("/tokens", url.Values{"name": {"admin"}, "extra_scopes": {"keyward:admin"}, "expiry": {"7"}})
		wantStatus(t, status, http.StatusForbidden, body)
		wantText(t, body, "the scope keyward:admin is not held by the caller")
	})
	t.Run("ViewerReadsOnly", func(t *testing.T) {
		vic := e.browser()
		vic.signIn("vic@example.com")
		status, body := vic.get("/tokens/" + id)
		wantStatus(t, status, http.StatusOK, body)
		if strings.Contains(body, `id="revoke"`) || strings.Contains(body, `id="rotate"`) {
			t.Error("a viewer is offered revoke or rotate")
		}
		status, _ = vic.post("/tokens/"+id+"/revoke", url.Values{"confirm": {"yes"}})
		wantStatus(t, status, http.StatusForbidden, "a viewer revoking")
		status, _ = vic.get("/tokens/new")
		wantStatus(t, status, http.StatusForbidden, "a viewer's new token form")
		status, _ = vic.get("/settings")
		wantStatus(t, status, http.StatusForbidden, "a viewer's settings")
	})
	t.Run("OwnerSeesAll", func(t *testing.T) {
		o := e.browser()
		o.signIn("owner@example.com")
		_, list := o.get("/tokens")
		wantText(t, list, "mia's", "mia@example.com")
	})
	t.Run("RemovedMemberSessionEnds", func(t *testing.T) {
		u := mustUser(t, e, "mia@example.com")
		if err := e.store.RemoveMember(context.Background(), e.ws.ID, u.ID); err != nil {
			t.Fatal(err)
		}
		if mia.get("/tokens"); mia.path() != "/signin" {
			t.Errorf("a removed member is still signed in")
		}
	})
}

func TestSettingsAndMFARequired(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	e.user("mia@example.com", keyward.RoleMember)
	o := e.browser()
	o.signIn("owner@example.com")
	o.get("/settings")
	tests := []struct {
		name  string
		form  url.Values
		field string
		want  string
	}{
		{"ErrMaxDays", url.Values{"max_days": {"0"}}, "max_days", "Enter a number of days between 1 and 3650"},
		{"ErrCatalogScope", url.Values{"catalog": {"orders:read\nBad Scope"}}, "catalog", "Line 2:"},
		{"ErrCatalogTwice", url.Values{"catalog": {"a:b\na:b"}}, "catalog", "Line 2: a:b is listed twice."},
		{"ErrCatalogColumn", url.Values{"catalog": {"a:b | x | maybe"}}, "catalog", `Line 1: the third column is "privileged" or empty.`},
		{"ErrMFAWithoutOwnFactor", url.Values{"mfa_required": {"on"}}, "mfa_required", "Set up two-step verification for yourself first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := o.post("/settings", tt.form)
			wantStatus(t, status, http.StatusBadRequest, body)
			re := regexp.MustCompile(`<p class="field-error" id="` + tt.field + `-error">([^<]*)</p>`)
			if m := re.FindStringSubmatch(body); m == nil || !strings.Contains(unescape(m[1]), tt.want) {
				t.Fatalf("no %q next to %s", tt.want, tt.field)
			}
		})
	}
	enrolTOTP(t, o)
	o.get("/settings")
	o.post("/settings", url.Values{"mfa_required": {"on"}, "catalog": {"orders:read | read orders\norders:write | change orders | privileged"}})
	if o.path() != "/settings" || !strings.Contains(o.body, "Saved.") {
		t.Fatalf("saving settings: at %s\n%s", o.path(), o.body)
	}
	_, form := o.get("/tokens/new")
	wantText(t, form, "orders:write", "privileged", "read orders")

	mia := e.browser()
	mia.signIn2("mia@example.com")
	if mia.path() != "/account/mfa" {
		t.Fatalf("a member without a factor landed on %s, want /account/mfa", mia.path())
	}
	wantText(t, mia.body, "Your workspace requires two-step verification.")
	if mia.get("/tokens"); mia.path() != "/account/mfa" {
		t.Errorf("a member without a factor reached %s", mia.path())
	}
	enrolTOTP(t, mia)
	if mia.get("/tokens"); mia.path() != "/tokens" {
		t.Errorf("after enrolment: at %s", mia.path())
	}
	// Her only factor stays; with a passkey as well, the app may go.
	mia.get("/account/mfa")
	status, body := mia.post("/account/mfa/totp/disable", nil)
	wantStatus(t, status, http.StatusConflict, body)
	wantText(t, body, "add a passkey before turning the authenticator app off")
	newSoftKey(t, e, mustUser(t, e, "mia@example.com"))
	mia.post("/account/mfa/totp/disable", nil)
	if got := mustUser(t, e, "mia@example.com"); got.HasMFA() || mia.path() != "/account/mfa" {
		t.Errorf("turning the app off beside a passkey: at %s, app on %v", mia.path(), got.HasMFA())
	}
	evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "workspace.settings_update"})
	if len(evs) != 1 {
		t.Errorf("%d settings events, want 1", len(evs))
	}
	_, audit := o.get("/audit?action=mfa.totp_enable")
	wantText(t, audit, "mfa.totp_enable", "mia@example.com")
	if strings.Contains(audit, "session.signin") {
		t.Error("the action filter let other actions through")
	}
	today := e.clock.Now().Format("2006-01-02")
	_, audit = o.get("/audit?action=mfa.totp_enable&from=" + today + "&to=" + today)
	wantText(t, audit, "mfa.totp_enable")
	_, audit = o.get("/audit?from=2020-01-01&to=2020-01-02")
	wantText(t, audit, "No events.")
	status, audit = o.get("/audit?from=14/03/2026")
	wantStatus(t, status, http.StatusBadRequest, audit)
	if !strings.Contains(audit, `<span class="field-error" id="from-error">Enter a date as YYYY-MM-DD.</span>`) {
		t.Error("no date message next to the from field")
	}
	status, audit = o.get("/audit?from=2026-12-01&to=2026-11-01")
	wantStatus(t, status, http.StatusBadRequest, audit)
	wantText(t, audit, "The end date must be on or after the start date.")
	// People are shown, and found, by email; an event shows its changes.
	for _, actor := range []string{mustUser(t, e, "mia@example.com").ID, "Mia@Example.com"} {
		_, audit = o.get("/audit?action=mfa.totp_enable&actor=" + url.QueryEscape(actor))
		if strings.Contains(audit, "No events.") || !strings.Contains(audit, "mfa.totp_enable") {
			t.Errorf("no events of mia with the actor filter %q", actor)
		}
	}
	if _, audit = o.get("/audit?actor=nobody@example.com"); !strings.Contains(audit, "No events.") {
		t.Error("an unknown email's filter lets events through")
	}
	_, audit = o.get("/audit?action=workspace.settings_update")
	wantText(t, audit, `<ul class="changes">`, "<li>mfa_required: false → true</li>",
		"<li>scopes added: orders:read (description read orders), orders:write (description change orders; privileged true)</li>")
}

// signIn2 signs in with the password and lands wherever the server sends.
func (b *browser) signIn2(email string) {
	b.e.t.Helper()
	b.get("/signin")
	b.post("/signin", url.Values{"email": {email}, "password": {goodPassword}})
}

func TestSessionsPage(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	laptop, phone, tablet := e.browser(), e.browser(), e.browser()
	for _, b := range []*browser{laptop, phone, tablet} {
		b.signIn("ann@example.com")
		e.clock.Add(time.Second)
	}
	_, body := laptop.get("/sessions")
	if n := strings.Count(body, "End this session"); n != 3 {
		t.Fatalf("%d sessions listed, want 3", n)
	}
	wantText(t, body, "(this session)")
	ids := regexp.MustCompile(`action="/sessions/(ses_[0-9a-z]+)/end"`).FindAllStringSubmatch(body, -1)
	// Newest first: the tablet's session is the first row.
	laptop.post("/sessions/"+ids[0][1]+"/end", nil)
	if tablet.get("/tokens"); tablet.path() != "/signin" {
		t.Errorf("an ended session still works")
	}
	status, _ := laptop.post("/sessions/ses_nope/end", nil)
	wantStatus(t, status, http.StatusNotFound, "ending an unknown session")
	laptop.get("/sessions")
	laptop.post("/signout/everywhere", nil)
	for name, b := range map[string]*browser{"laptop": laptop, "phone": phone} {
		if b.get("/tokens"); b.path() != "/signin" {
			t.Errorf("%s still signed in after sign out everywhere", name)
		}
	}
}

// TestDeadSessions: the sessions page lists only sessions that are signed
// in and usable, and a sign-in deletes the user's sessions that are no
// longer: expired ones and those left waiting for a second factor.
func TestDeadSessions(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	old, laptop := e.browser(), e.browser()
	laptop.signIn("ann@example.com")
	secret, _ := enrolTOTP(t, laptop)
	old.signIn2("ann@example.com")
	e.clock.Add(account.TOTPPeriod)
	old.post("/signin/mfa", url.Values{"code": {account.TOTPCode(secret, account.TOTPStep(e.clock.Now()))}})
	if old.path() != "/tokens" {
		t.Fatalf("after both factors: at %s", old.path())
	}
	e.clock.Add(DefaultIdleTimeout - pendingTimeout)
	laptop.get("/tokens")
	pending := e.browser()
	pending.signIn2("ann@example.com")
	if pending.path() != "/signin/mfa" {
		t.Fatalf("after the password: at %s, want /signin/mfa", pending.path())
	}

	_, body := laptop.get("/sessions")
	if n := strings.Count(body, "End this session"); n != 2 {
		t.Errorf("%d sessions listed, want 2: a session waiting for its second factor is not a sign-in", n)
	}

	// The old session idles out; the pending one passes its limit (but
	// not the idle timeout).
	e.clock.Add(2 * pendingTimeout)
	_, body = laptop.get("/sessions")
	if n := strings.Count(body, "End this session"); n != 1 {
		t.Errorf("%d sessions listed, want 1", n)
	}

	u := mustUser(t, e, "ann@example.com")
	ctx := context.Background()
	if ss, _ := e.store.FindSessions(ctx, u.ID); len(ss) != 3 {
		t.Fatalf("%d sessions stored before the sign-in, want 3 (one live, two dead)", len(ss))
	}
	e.browser().signIn2("ann@example.com")
	e.dash.Wait()
	ss, err := e.store.FindSessions(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 {
		t.Errorf("%d sessions stored after the sign-in, want 2 (the laptop's and the new one)", len(ss))
	}
	for _, ses := range ss {
		if !e.dash.live(ses, e.clock.Now()) {
			t.Errorf("dead session %s (verified %t) kept", ses.ID, ses.Verified)
		}
	}
	if laptop.get("/tokens"); laptop.path() != "/tokens" {
		t.Errorf("the sweep ended a live session (at %s)", laptop.path())
	}
}

// TestLatestDate: the last date whose end is within the policy's longest
// lifetime, none when not even today's is.
func TestLatestDate(t *testing.T) {
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	for _, c := range []struct {
		max  time.Duration
		now  string
		want string
	}{
		{0, "2026-11-24T12:00:00Z", ""},
		{day, "2026-11-24T00:00:00Z", "2026-11-24"},
		{day, "2026-11-24T23:59:00Z", "2026-11-24"},
		{30 * day, "2026-11-24T00:00:00Z", "2026-12-23"},
		{30 * day, "2026-11-24T23:59:59Z", "2026-12-23"},
		{12 * time.Hour, "2026-11-24T06:00:00Z", ""},
	} {
		if got := latestDate(c.max, at(c.now)); got != c.want {
			t.Errorf("latestDate(%v, %s) = %q, want %q", c.max, c.now, got, c.want)
		}
	}
}

// TestStaleWorkspaceForm: a form shown before the session switched
// workspace (in another tab) is refused, not applied to the workspace
// switched to, which forms do not name.
func TestStaleWorkspaceForm(t *testing.T) {
	e := newEnv(t)
	u := e.user("ann@example.com", keyward.RoleOwner)
	acme := e.memberOf(t, "acme", u, keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	// Which workspace a sign-in lands in follows the ids: start in default.
	b.post("/workspace", url.Values{"workspace": {e.ws.ID}})
	_, staleBody := b.get("/tokens/new")
	stale := b.csrf                                                                                                         // tab A: default's form
	if st, body := b.post("/workspace", url.Values{"workspace": {acme.ID}}); st != http.StatusOK || b.path() != "/tokens" { // tab B switches
		t.Fatalf("switch: %d at %s\n%s", st, b.path(), body)
	}
	status, body := b.post("/tokens", url.Values{"csrf": {stale}, "name": {"from tab A"}, "expiry": {"7"}, "quota_period": {"month"}})
	wantStatus(t, status, http.StatusForbidden, body)
	wantText(t, body, "reload the page")
	for _, ws := range []string{e.ws.ID, acme.ID} {
		if toks, _ := e.store.FindTokens(context.Background(), keyward.TokenFilter{WorkspaceID: ws, Name: "from tab A"}); len(toks) != 0 {
			t.Errorf("the stale form made a token in %s", ws)
		}
	}
	// The header's forms, which act in no workspace, still work from the
	// stale tab: it can switch, and sign out.
	staleSession := regexp.MustCompile(`name="csrf_session" value="([^"]+)"`).FindStringSubmatch(staleBody)[1]
	b.post("/workspace", url.Values{"csrf": {stale}, "csrf_session": {staleSession}, "workspace": {e.ws.ID}})
	if b.last.StatusCode != http.StatusOK || b.path() != "/tokens" {
		t.Errorf("the stale tab's switch: %d at %s", b.last.StatusCode, b.path())
	}
	b.post("/workspace", url.Values{"workspace": {acme.ID}})
	// The page shown after the switch works.
	b.get("/tokens/new")
	status, body = b.post("/tokens", url.Values{"name": {"from tab B"}, "expiry": {"7"}, "quota_period": {"month"}})
	wantStatus(t, status, http.StatusOK, body)
}

// TestMFARequiredOtherWorkspace: a user without a second factor, sent to
// set one up by a workspace that requires it, may switch back to another
// of their workspaces that does not.
func TestMFARequiredOtherWorkspace(t *testing.T) {
	e := newEnv(t)
	u := e.user("ann@example.com", keyward.RoleOwner)
	acme := e.memberOf(t, "acme", u, keyward.RoleAdmin)
	b := e.browser()
	b.signIn("ann@example.com")
	// Required once signed in: which workspace a sign-in lands in follows
	// the ids.
	if err := e.store.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{WorkspaceID: acme.ID, MFARequired: true}); err != nil {
		t.Fatal(err)
	}
	b.post("/workspace", url.Values{"workspace": {acme.ID}})
	if b.get("/tokens"); b.path() != "/account/mfa" {
		t.Fatalf("in acme without a factor: at %s, want /account/mfa", b.path())
	}
	wantText(t, b.body, "or switch to another of your workspaces above")
	b.post("/workspace", url.Values{"workspace": {e.ws.ID}})
	if b.get("/tokens"); b.path() != "/tokens" {
		t.Errorf("after switching back: at %s, want /tokens", b.path())
	}
}

// TestMemberCatalog: the new-token form offers a member no keyward:
// scope of the catalog, which a member cannot grant; an admin sees it.
func TestMemberCatalog(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	e.user("mia@example.com", keyward.RoleMember)
	err := e.store.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID,
		Scopes: []keyward.ScopeInfo{{Name: "orders:read"}, {Name: "keyward:tokens:read", Privileged: true}}})
	if err != nil {
		t.Fatal(err)
	}
	for who, offered := range map[string]bool{"ann@example.com": true, "mia@example.com": false} {
		b := e.browser()
		b.signIn(who)
		_, body := b.get("/tokens/new")
		got := strings.Contains(body, `value="keyward:tokens:read"`)
		if !strings.Contains(body, `value="orders:read"`) || got != offered {
			t.Errorf("%s: keyward:tokens:read offered %v, want %v (orders:read always)", who, got, offered)
		}
	}
}

// TestPresetAtPolicyMax: a preset as long as the policy's longest lifetime
// passes, whatever the clock's nanoseconds.
func TestPresetAtPolicyMax(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	if err := e.store.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID, MaxTokenLifetime: 7 * day}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(1500 * time.Nanosecond) // not on a microsecond
	b := e.browser()
	b.signIn("ann@example.com")
	b.get("/tokens/new")
	status, body := b.post("/tokens", url.Values{"name": {"seven"}, "expiry": {"7"}, "quota_period": {"month"}})
	if status != http.StatusOK || !strings.HasSuffix(b.path(), "/created") {
		t.Errorf("7-day preset under a 7-day policy: %d at %s\n%s", status, b.path(), body)
	}
}

// memberOf makes a workspace named name, with u in it as role.
func (e *env) memberOf(t *testing.T, name string, u *keyward.User, role string) *keyward.Workspace {
	t.Helper()
	ws, _, err := e.svc.CreateWorkspace(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Workspace{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutMember(context.Background(), &keyward.Member{WorkspaceID: ws.ID, UserID: u.ID, Role: role, CreatedAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	return ws
}

// TestPageBasics: a skip link to the page's content, and session buttons
// each named for their session.
func TestPageBasics(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	_, body := b.get("/sessions")
	wantText(t, body, `<a href="#content" class="skip">`, `<main id="content">`, `aria-label="End the session signed in `,
		`<a href="/sessions" aria-current="page">Sessions</a>`, `<a href="/tokens">Tokens</a>`)
	tok, _, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Token{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	_, body = b.get("/tokens/" + tok.ID) // a page below the menu's item
	wantText(t, body, `<a href="/tokens" aria-current="page">Tokens</a>`, `<a href="/sessions">Sessions</a>`)
}

// TestWrongMethod: a page asked with a method it does not take answers
// 405 with the methods it does; an unknown page 404.
func TestWrongMethod(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/signout", http.StatusMethodNotAllowed, "POST"},
		{"POST", "/audit", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"GET", "/no/such/page", http.StatusNotFound, ""},
	} {
		var status int
		if c.method == "GET" {
			status, _ = b.get(c.path)
		} else {
			status, _ = b.post(c.path, nil)
		}
		if status != c.status || b.last.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow %q, want %d %q", c.method, c.path, status, b.last.Header.Get("Allow"), c.status, c.allow)
		}
	}
}

// TestAccountEventsEveryWorkspace: a change to a user's account (factors,
// password, sessions everywhere) is in the audit log of every workspace the
// user is a member of, not only of the one the session acts in.
func TestAccountEventsEveryWorkspace(t *testing.T) {
	e := newEnv(t)
	u := e.user("ann@example.com", keyward.RoleOwner)
	other := e.memberOf(t, "other", u, keyward.RoleMember)
	e.browser().signIn("ann@example.com") // a session to end
	b := e.browser()
	b.signIn("ann@example.com")
	enrolTOTP(t, b)
	b.get("/account/mfa")
	b.post("/account/mfa/totp/disable", nil)
	const newPassword = "a quite different passphrase"
	b.get("/account/password")
	status, body := b.post("/account/password", url.Values{"current": {goodPassword}, "password": {newPassword}, "password2": {newPassword}})
	if status != http.StatusOK && status != http.StatusSeeOther {
		t.Fatalf("password change: %d\n%s", status, body)
	}
	b.get("/sessions")
	b.post("/signout/everywhere", nil)

	want := []string{"mfa.totp_enable", "session.end_others", "mfa.recovery_codes_create", "mfa.totp_disable", "user.password_change", "session.signout_all"}
	for _, ws := range []string{e.ws.ID, other.ID} {
		evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: ws})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, ev := range evs {
			if ev.Actor.ID == u.ID {
				got[ev.Action]++
			}
		}
		for _, a := range want {
			if got[a] == 0 {
				t.Errorf("workspace %s: no %s event (has %v)", ws, a, got)
			}
		}
	}
}

// TestUserAgentSecret: a secret in a browser's User-Agent reaches neither
// the session list nor the audit log.
func TestUserAgentSecret(t *testing.T) {
	e := newEnv(t)
	u := e.user("ann@example.com", keyward.RoleOwner)
	_, tok, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Token{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.hdr.Set("User-Agent", "MyApp/1.0 key="+tok)
	b.signIn("ann@example.com")
	_, page := b.get("/sessions")
	wantText(t, page, "MyApp/1.0 key=kw_[redacted]")
	ss, err := e.store.FindSessions(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "session.signin"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 1 || len(evs) != 1 {
		t.Fatalf("%d sessions, %d sign-in events, want 1 and 1", len(ss), len(evs))
	}
	for _, ua := range []string{ss[0].UserAgent, evs[0].UserAgent} {
		if strings.Contains(ua, tok[3:]) || ua != "MyApp/1.0 key=kw_[redacted]" {
			t.Errorf("stored user agent %q, want the secret redacted", ua)
		}
	}
	if strings.Contains(page, tok[3:]) {
		t.Error("the sessions page shows the secret")
	}
	// Nor does a secret sent as the method reach the access log.
	req, _ := http.NewRequest(tok, e.srv.URL+"/tokens", nil)
	b.do(req)
	if l := e.log.String(); strings.Contains(l, tok[3:]) || !strings.Contains(l, "method=kw_[redacted]") {
		t.Errorf("the log holds the secret, or no redacted method:\n%s", l)
	}
}

// TestFormErrorsRedactSecrets: a secret typed where a scope, a CIDR or a
// catalog line belongs is not repeated in the error, as the API's are not.
func TestFormErrorsRedactSecrets(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	_, tok, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Token{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("ann@example.com")
	for _, tc := range []struct {
		field string
		form  url.Values
	}{
		{"scope", url.Values{"name": {"x"}, "expiry": {"30"}, "extra_scopes": {tok}}},
		{"cidr", url.Values{"name": {"x"}, "expiry": {"30"}, "cidrs": {tok}}},
	} {
		b.get("/tokens/new")
		status, body := b.post("/tokens", tc.form)
		wantStatus(t, status, http.StatusBadRequest, body)
		if strings.Count(body, tok[3:]) > 1 { // the field keeps what was typed
			t.Errorf("%s: the error repeats the secret:\n%s", tc.field, body)
		}
		wantText(t, body, "kw_[redacted]")
	}
	b.get("/settings")
	status, body := b.post("/settings", url.Values{"catalog": {"orders:read " + tok}})
	wantStatus(t, status, http.StatusBadRequest, body)
	if strings.Count(body, tok[3:]) > 1 {
		t.Errorf("catalog: the error repeats the secret:\n%s", body)
	}
	wantText(t, body, "Line 1:", "kw_[redacted]")
}

// TestFormErrorsRedactBareBodies: a secret pasted without its prefix (its
// 38 characters alone) where a form's error quotes what was typed (a
// scope, a CIDR, a line of the scope catalog) is not repeated either, for
// the session's workspace's prefix and the default one: its checksum
// tells it from a long word, which is repeated as it is.
func TestFormErrorsRedactBareBodies(t *testing.T) {
	e := newEnv(t)
	ann := e.user("ann@example.com", keyward.RoleOwner)
	ctx := context.Background()
	acme, _, err := e.svc.CreateWorkspace(ctx, manage.SystemCaller(e.ws.ID), &keyward.Workspace{Name: "acme", TokenPrefix: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutMember(ctx, &keyward.Member{WorkspaceID: acme.ID, UserID: ann.ID, Role: keyward.RoleOwner, CreatedAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	_, kw, err := e.svc.CreateToken(ctx, manage.SystemCaller(e.ws.ID), &keyward.Token{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	_, inAcme, err := e.svc.CreateToken(ctx, manage.SystemCaller(acme.ID), &keyward.Token{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	word := strings.Repeat("Ab1", 12) + "Zz" // 38 base62 characters, no secret
	b := e.browser()
	b.signIn("ann@example.com")
	for _, ws := range []struct {
		name, id string
		pasted   []string
	}{
		{"Default", e.ws.ID, []string{kw[len("kw_"):]}},
		{"WorkspacePrefix", acme.ID, []string{inAcme[len("acme_"):], kw[len("kw_"):]}},
	} {
		if status, body := b.post("/workspace", url.Values{"workspace": {ws.id}}); status != http.StatusOK || b.path() != "/tokens" {
			t.Fatalf("%s: switch: %d at %s\n%s", ws.name, status, b.path(), body)
		}
		for _, pasted := range append(ws.pasted, word) {
			for _, tc := range []struct {
				field, path string
				form        url.Values
			}{
				{"scope", "/tokens", url.Values{"name": {"x"}, "expiry": {"30"}, "extra_scopes": {pasted}}},
				{"cidr", "/tokens", url.Values{"name": {"x"}, "expiry": {"30"}, "cidrs": {pasted}}},
				{"catalog", "/settings", url.Values{"catalog": {"orders:read\n" + pasted}}},
			} {
				name := ws.name + "/" + tc.field
				if pasted == word {
					name += "/LongWord"
				}
				b.get(strings.Replace(tc.path, "/tokens", "/tokens/new", 1))
				status, body := b.post(tc.path, tc.form)
				wantStatus(t, status, http.StatusBadRequest, body)
				// The field keeps what was typed; the error repeats only a
				// long word.
				want := 1
				if pasted == word {
					want = 2
				} else if !strings.Contains(body, "[redacted]") {
					t.Errorf("%s: no [redacted] in the error:\n%s", name, body)
				}
				if n := strings.Count(body, pasted); n != want {
					t.Errorf("%s: the page holds what was typed %d times, want %d:\n%s", name, n, want, body)
				}
			}
		}
	}
}

// TestAccessLogEscapedPath: the access log writes the path as it came,
// escaped: a decoded "%3F" would read as a query string, which logs never
// hold; a secret behind an escape is still cut.
func TestAccessLogEscapedPath(t *testing.T) {
	e := newEnv(t)
	tok, err := secret.Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	for _, path := range []string{"/tokens/a%3Faccess_token=x", "/tokens/kw%5F" + tok[3:]} {
		b.get(path)
	}
	l := e.log.String()
	for _, want := range []string{`path="/tokens/a%3Faccess_token=x"`, `path=/tokens/kw%5F[redacted]`} {
		if !strings.Contains(l, want) {
			t.Errorf("the access log lacks %s:\n%s", want, l)
		}
	}
	if strings.Contains(l, "?access_token") || strings.Contains(l, tok[3:]) {
		t.Errorf("the access log holds a decoded \"?\" or the secret:\n%s", l)
	}
}
