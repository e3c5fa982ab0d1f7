package e2e

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
	"github.com/keyward/keyward/internal/account"
)

// upgradeFixture is testdata/upgrade/fixture.json: what the store beside
// it, written by an earlier release (see testdata/upgrade/README.md),
// holds and answered.
type upgradeFixture struct {
	Day          string `json:"day"`
	ServerSecret string `json:"server_secret"`
	Root         string `json:"root"`
	Verifier     string `json:"verifier"`
	Tokens       []struct {
		Name    string `json:"name"`
		Secret  string `json:"secret"`
		Code    string `json:"code"`
		OldCode string `json:"old_code"`
		IP      string `json:"ip"`
	} `json:"tokens"`
	Usage struct {
		TokenID   string           `json:"token_id"`
		Total     int64            `json:"total"`
		ByOutcome map[string]int64 `json:"by_outcome"`
	} `json:"usage"`
	Users []struct {
		Email      string `json:"email"`
		Password   string `json:"password"`
		TOTPSecret string `json:"totp_secret"`
	} `json:"users"`
}

// TestUpgradeFromFixture: a store an earlier release wrote (migrations
// 0001 to 0005: before rate windows, workspace name keys and session
// epochs) is served in place by this one. Every token answers as the old
// release answered it, the rotation grace still holds and a new rotation
// ends it, usage history is there, both dashboard users sign in (one
// with TOTP), and the audit chain verifies across the upgrade.
func TestUpgradeFromFixture(t *testing.T) {
	raw, err := os.ReadFile("testdata/upgrade/fixture.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx upgradeFixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unzip(t, "testdata/upgrade/keyward.db.gz", filepath.Join(dir, "keyward.db"))
	st := &store{args: []string{"--data-dir", dir}, env: []string{"KEYWARD_SECRET=" + fx.ServerSecret}, dir: dir}

	// Kept forever, so that the fixture's usage is not past retention.
	srv := startServer(t, st, "--usage-minute-retention", "0", "--usage-hour-retention", "0", "--usage-event-retention", "0")
	if !strings.Contains(srv.log.String(), `msg="store migrated"`) {
		t.Errorf("serve did not log the migrations it applied:\n%s", srv.log)
	}
	ctx := ctxT(t)
	root := newClient(t, srv.URL, fx.Root)
	verifier := newClient(t, srv.URL, fx.Verifier)

	// Usage first: the verifications below add to it.
	day, err := time.Parse(time.DateOnly, fx.Day)
	if err != nil {
		t.Fatal(err)
	}
	u, err := root.TokenUsage(ctx, fx.Usage.TokenID, client.UsageQuery{Granularity: "day", From: day, To: day.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if u.Total != fx.Usage.Total || u.ByOutcome["VALID"] != fx.Usage.ByOutcome["VALID"] {
		t.Errorf("usage of %s after the upgrade: total %d, by outcome %v; want %d, %v", fx.Usage.TokenID, u.Total, u.ByOutcome, fx.Usage.Total, fx.Usage.ByOutcome)
	}

	secret := map[string]string{}
	for _, tok := range fx.Tokens {
		secret[tok.Name] = tok.Secret
		want := tok.Code
		if tok.Code != tok.OldCode {
			t.Fatalf("fixture: %s answered %s to the old release, not %s", tok.Name, tok.OldCode, tok.Code)
		}
		res, err := verifier.Verify(ctx, client.VerifyRequest{Token: tok.Secret, Scopes: []string{"orders:read"}, IP: tok.IP})
		if err != nil {
			t.Fatalf("verify %s: %v", tok.Name, err)
		}
		if tok.Name == "grace-old" {
			// Rotated with the longest grace (720h) when the fixture was
			// made: valid until then, expired after.
			g, err := root.GetToken(ctx, res.TokenID)
			if err != nil || g.RotatedAt == nil {
				t.Fatalf("the rotated token: %+v, %v", g, err)
			}
			end := g.RotatedAt.Add(720 * time.Hour)
			if !time.Now().Before(end) {
				want = "EXPIRED"
			} else if res.ExpiresAt == nil || !res.ExpiresAt.Equal(end) {
				t.Errorf("the secret in its rotation grace: expires_at %v, want %v", res.ExpiresAt, end)
			}
		}
		if res.Code != want {
			t.Errorf("%s: %s after the upgrade, want %s", tok.Name, res.Code, want)
		}
	}

	// A rotation now ends the grace the old release gave.
	grace, err := verifier.Verify(ctx, client.VerifyRequest{Token: secret["grace-new"]})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := root.RotateToken(ctx, grace.TokenID, &client.RotateRequest{GracePeriod: client.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, verifier, client.VerifyRequest{Token: secret["grace-old"]}, "EXPIRED")
	expectCode(t, verifier, client.VerifyRequest{Token: secret["grace-new"]}, "VALID")
	expectCode(t, verifier, client.VerifyRequest{Token: rotated.Secret}, "VALID")

	for _, usr := range fx.Users {
		if got := dashboardSignIn(t, srv.URL, usr.Email, usr.Password, usr.TOTPSecret); got != "/tokens" {
			t.Errorf("%s signs in to %q, want /tokens", usr.Email, got)
		}
	}
	if got := dashboardSignIn(t, srv.URL, fx.Users[1].Email, "not the password at all", ""); got != "401" {
		t.Errorf("a wrong password signs in to %q, want 401", got)
	}
	srv.stop()

	out, errOut, code := cli(t, "", st.env, append([]string{"audit", "verify"}, st.args...)...)
	if code != 0 || strings.Count(out, ": OK, ") != 2 {
		t.Errorf("audit verify after the upgrade: exit %d\n%s%s", code, out, errOut)
	}
}

// unzip writes the gunzipped file src to dst, mode 0600.
func unzip(t *testing.T, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// dashboardSignIn signs in to the dashboard at base as a program would,
// with the TOTP code of totpSecret (its text as the dashboard shows it)
// when the second step asks for one. It returns where the last step
// sends the browser, or the status of a refusal.
func dashboardSignIn(t *testing.T, base, email, password, totpSecret string) string {
	t.Helper()
	cookies := map[string]string{}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, form url.Values) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		// By hand: the cookies are Secure, which net/http's jar keeps
		// from plain http even on loopback, where browsers send them.
		for k, v := range cookies {
			req.AddCookie(&http.Cookie{Name: k, Value: v})
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, c := range resp.Cookies() {
			if c.MaxAge < 0 {
				delete(cookies, c.Name)
			} else {
				cookies[c.Name] = c.Value
			}
		}
		return resp, string(b)
	}
	csrf := func(page string) string {
		t.Helper()
		m := csrfRE.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no CSRF token in the page:\n%s", page)
		}
		return m[1]
	}
	_, page := do("GET", "/signin", nil)
	resp, _ := do("POST", "/signin", url.Values{"csrf": {csrf(page)}, "email": {email}, "password": {password}})
	if resp.StatusCode != http.StatusSeeOther {
		return resp.Status[:3]
	}
	next := resp.Header.Get("Location")
	if !strings.HasPrefix(next, "/signin/mfa") || totpSecret == "" {
		return next
	}
	secret, err := account.ParseTOTPSecretText(totpSecret)
	if err != nil {
		t.Fatal(err)
	}
	_, page = do("GET", next, nil)
	resp, _ = do("POST", "/signin/mfa", url.Values{"csrf": {csrf(page)}, "code": {account.TOTPCode(secret, account.TOTPStep(time.Now()))}})
	if resp.StatusCode != http.StatusSeeOther {
		return resp.Status[:3]
	}
	return resp.Header.Get("Location")
}
