package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
	"github.com/keyward/keyward/internal/secret"
)

// TestLifecycle drives the whole token lifecycle against the real server,
// through the Go client and the CLI: init, create, every verification
// outcome but PENDING_APPROVAL, rotation with and without grace, revocation
// and introspection. Then it checks that no secret was stored or logged,
// and that a restart keeps every token's state and every quota count.
func TestLifecycle(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) { testLifecycle(t, sqliteStore(t)) })
	t.Run("PostgreSQL", func(t *testing.T) { testLifecycle(t, postgresStore(t)) })
}

func testLifecycle(t *testing.T, st *store) {
	ctx := ctxT(t)
	srv := startServer(t, st)
	var seen secrets

	// init runs as its own process beside the running server, as a user
	// would; the server finds the root token within its lookup budget.
	root := seen.add(initRoot(t, st))
	admin := newClient(t, srv.URL, root)
	if _, _, code := cli(t, "", st.env, append([]string{"init"}, st.args...)...); code != 1 {
		t.Fatalf("a second init exited %d, want 1 (a root token exists)", code)
	}

	issue := func(req client.CreateTokenRequest) *client.IssuedToken {
		t.Helper()
		it, err := admin.CreateToken(ctx, req)
		if err != nil {
			t.Fatalf("create %q: %v", req.Name, err)
		}
		seen.add(it.Secret)
		if it.State != "active" || it.Hint == "" || !strings.HasSuffix(it.Secret, it.Hint[len(it.Hint)-4:]) {
			t.Fatalf("created token %+v", it.Token)
		}
		return it
	}
	v := func(tok string, scopes []string, ip string) client.VerifyRequest {
		return client.VerifyRequest{Token: tok, Scopes: scopes, IP: ip}
	}
	// raw sends a JSON body as root and returns the answer as it came, for
	// what the Go client would hide: a body a client of another kind sends,
	// and the text of an answer.
	raw := func(t *testing.T, method, path, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+root)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}

	main := issue(client.CreateTokenRequest{
		Name: "orders service", Scopes: []string{"orders:read", "billing:*"},
		Subject: "customer-42", Metadata: map[string]any{"team": "payments"},
	})
	res := expectCode(t, admin, v(main.Secret, []string{"orders:read", "billing:invoices:write"}, ""), "VALID")
	if res.TokenID != main.ID || res.Subject != "customer-42" || res.Metadata["team"] != "payments" {
		t.Fatalf("verify response %+v", res)
	}

	t.Run("Malformed", func(t *testing.T) {
		garbled := main.Secret[:len(main.Secret)-1] + string(main.Secret[len(main.Secret)-1]^1)
		res := expectCode(t, admin, v(garbled, nil, ""), "MALFORMED")
		if res.TokenID != "" {
			t.Fatal("a malformed token is identified")
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		// Well-formed (right checksum) but never issued.
		unknown := "kw_AbCdEfGhIjKlMnOpQrStUvWxYz0123452ZGy5c"
		expectCode(t, admin, v(unknown, nil, ""), "NOT_FOUND")
	})
	t.Run("Suspended", func(t *testing.T) {
		s := issue(client.CreateTokenRequest{Name: "suspend me"})
		if _, err := admin.SuspendToken(ctx, s.ID, "investigating"); err != nil {
			t.Fatal(err)
		}
		expectCode(t, admin, v(s.Secret, nil, ""), "SUSPENDED")
		if _, err := admin.ResumeToken(ctx, s.ID, ""); err != nil {
			t.Fatal(err)
		}
		expectCode(t, admin, v(s.Secret, nil, ""), "VALID")
	})
	t.Run("Expired", func(t *testing.T) {
		e := issue(client.CreateTokenRequest{Name: "short", ExpiresIn: client.Duration(2 * time.Second)})
		expectCode(t, admin, v(e.Secret, nil, ""), "VALID")
		time.Sleep(2100 * time.Millisecond)
		expectCode(t, admin, v(e.Secret, nil, ""), "EXPIRED")
	})
	t.Run("IPNotAllowed", func(t *testing.T) {
		n := issue(client.CreateTokenRequest{Name: "office only", AllowedCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"}})
		expectCode(t, admin, v(n.Secret, nil, "127.0.0.1"), "IP_NOT_ALLOWED")
		expectCode(t, admin, v(n.Secret, nil, ""), "IP_NOT_ALLOWED")
		// A client that always writes the field sends "ip":"" for no ip:
		// answered (200), and an allowlist still fails closed.
		for tok, want := range map[string]string{n.Secret: "IP_NOT_ALLOWED", main.Secret: "VALID"} {
			status, body := raw(t, "POST", "/v1/verify", `{"token":"`+tok+`","ip":""}`)
			var got struct{ Code string }
			if err := json.Unmarshal(body, &got); err != nil || status != 200 || got.Code != want {
				t.Fatalf(`verify with "ip":"" = %d %s, want 200 %s`, status, body, want)
			}
		}
		expectCode(t, admin, v(n.Secret, nil, "10.1.2.3"), "VALID")
		expectCode(t, admin, v(n.Secret, nil, "2001:db8::1"), "VALID")
	})
	t.Run("InsufficientScope", func(t *testing.T) {
		expectCode(t, admin, v(main.Secret, []string{"orders:write"}, ""), "INSUFFICIENT_SCOPE")
	})
	t.Run("RateLimited", func(t *testing.T) {
		r := issue(client.CreateTokenRequest{Name: "limited", RateLimit: &client.RateLimit{Limit: 2, Window: client.Duration(time.Minute)}})
		expectCode(t, admin, v(r.Secret, nil, ""), "VALID")
		res := expectCode(t, admin, v(r.Secret, nil, ""), "VALID")
		if res.RateLimit == nil || res.RateLimit.Limit != 2 || res.RateLimit.Remaining != 0 || res.RateLimit.Reset < 1 || res.RateLimit.Reset > 63 {
			t.Fatalf("rate_limit %+v", res.RateLimit)
		}
		expectCode(t, admin, v(r.Secret, nil, ""), "RATE_LIMITED")
		// The window reads back as it was given (PRODUCT §5: "1m"), not
		// as Go prints it ("1m0s").
		status, body := raw(t, "GET", "/v1/tokens/"+r.ID, "")
		var got struct {
			RateLimit json.RawMessage `json:"rate_limit"`
		}
		if err := json.Unmarshal(body, &got); err != nil || status != 200 || string(got.RateLimit) != `{"limit":2,"window":"1m"}` {
			t.Fatalf("GET /v1/tokens/%s = %d, rate_limit %s", r.ID, status, got.RateLimit)
		}
	})
	quota := issue(client.CreateTokenRequest{Name: "metered", Quota: &client.Quota{Limit: 3, Period: "month"}})
	t.Run("QuotaExceeded", func(t *testing.T) {
		expectCode(t, admin, v(quota.Secret, nil, ""), "VALID")
		expectCode(t, admin, v(quota.Secret, nil, ""), "VALID")
		// Failures consume nothing.
		expectCode(t, admin, v(quota.Secret, []string{"nope"}, ""), "INSUFFICIENT_SCOPE")
		res := expectCode(t, admin, v(quota.Secret, nil, ""), "VALID")
		if res.Quota == nil || res.Quota.Remaining != 0 {
			t.Fatalf("quota %+v", res.Quota)
		}
		expectCode(t, admin, v(quota.Secret, nil, ""), "QUOTA_EXCEEDED")
	})

	t.Run("RotateWithGrace", func(t *testing.T) {
		r := issue(client.CreateTokenRequest{Name: "rotating"})
		next, err := admin.RotateToken(ctx, r.ID, &client.RotateRequest{GracePeriod: client.Duration(2 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		seen.add(next.Secret)
		if next.ID != r.ID || next.Secret == r.Secret {
			t.Fatalf("rotate kept id %v, changed secret %v", next.ID == r.ID, next.Secret != r.Secret)
		}
		expectCode(t, admin, v(r.Secret, nil, ""), "VALID")
		expectCode(t, admin, v(next.Secret, nil, ""), "VALID")
		time.Sleep(2100 * time.Millisecond)
		expectCode(t, admin, v(r.Secret, nil, ""), "EXPIRED")
		expectCode(t, admin, v(next.Secret, nil, ""), "VALID")

		t.Run("ZeroGrace", func(t *testing.T) {
			third, err := admin.RotateToken(ctx, r.ID, &client.RotateRequest{})
			if err != nil {
				t.Fatal(err)
			}
			seen.add(third.Secret)
			expectCode(t, admin, v(next.Secret, nil, ""), "EXPIRED")
			expectCode(t, admin, v(third.Secret, nil, ""), "VALID")
		})
	})

	t.Run("RevokeThenIntrospect", func(t *testing.T) {
		r := issue(client.CreateTokenRequest{Name: "to revoke", Scopes: []string{"orders:read"}})
		in, err := admin.Introspect(ctx, r.Secret)
		if err != nil || !in.Active {
			t.Fatalf("introspect before revoke: %+v %v", in, err)
		}
		if _, err := admin.RevokeToken(ctx, r.ID, "leaked"); err != nil {
			t.Fatal(err)
		}
		res := expectCode(t, admin, v(r.Secret, nil, ""), "REVOKED")
		if res.TokenID != r.ID {
			t.Fatal("a revoked token is identified in the verify response")
		}
		in, err = admin.Introspect(ctx, r.Secret)
		if err != nil {
			t.Fatal(err)
		}
		if string(bytes.TrimSpace(in.Raw)) != `{"active":false}` {
			t.Fatalf("introspection of a revoked token: %s", in.Raw)
		}
		if _, err := admin.RotateToken(ctx, r.ID, nil); !client.IsConflict(err) {
			t.Fatalf("rotating a revoked token: %v, want 409", err)
		}
	})

	t.Run("CLI", func(t *testing.T) {
		env := []string{"KEYWARD_SERVER=" + srv.URL, "KEYWARD_TOKEN=" + root}
		out, errOut, code := cli(t, "", env, "token", "create", "--name", "from cli", "--scope", "reports:read", "--output", "json")
		if code != 0 {
			t.Fatalf("token create: exit %d: %s", code, errOut)
		}
		var created struct{ ID, Token string }
		if err := json.Unmarshal([]byte(out), &created); err != nil || created.Token == "" {
			t.Fatalf("token create output %q: %v", out, err)
		}
		seen.add(created.Token)
		if _, errOut, code := cli(t, created.Token+"\n", env, "verify", "--scope", "reports:read"); code != 0 {
			t.Fatalf("verify VALID: exit %d: %s", code, errOut)
		}
		if out, _, code := cli(t, created.Token+"\n", env, "verify", "--scope", "reports:write"); code != 1 || !strings.Contains(out, "INSUFFICIENT_SCOPE") {
			t.Fatalf("verify INSUFFICIENT_SCOPE: exit %d: %s", code, out)
		}
		if _, errOut, code := cli(t, "", env, "token", "revoke", created.ID, "--reason", "done"); code != 0 {
			t.Fatalf("token revoke: exit %d: %s", code, errOut)
		}
		if out, _, code := cli(t, created.Token+"\n", env, "verify", "--output", "json"); code != 1 || !strings.Contains(out, `"REVOKED"`) {
			t.Fatalf("verify after revoke: exit %d: %s", code, out)
		}
		out, errOut, code = cli(t, "", env, "token", "list")
		if code != 0 || !strings.Contains(out, created.ID) || !strings.Contains(out, "revoked") {
			t.Fatalf("token list: exit %d: %s %s", code, out, errOut)
		}
		if _, errOut, code := cli(t, "", []string{"KEYWARD_SERVER=" + srv.URL, "KEYWARD_TOKEN=" + main.Secret}, "token", "list"); code != 1 || strings.Contains(errOut, main.Secret) {
			t.Fatalf("token list with a non-management token: exit %d: %s", code, errOut)
		}
	})

	// Snapshot every token's state, then let the last use flush.
	before, err := admin.AllTokens(ctx, client.TokenFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(before) < 10 {
		t.Fatalf("only %d tokens", len(before))
	}
	// While the server runs (WAL and shared memory files in place), and
	// after it stopped.
	seen.assertNowhere(t, st.dir, map[string]string{"database": st.dump(t)})
	srv.stop()

	t.Run("NoSecretAtRest", func(t *testing.T) {
		seen.assertNowhere(t, st.dir, map[string]string{"server log": srv.log.String(), "database": st.dump(t)})
	})

	t.Run("Restart", func(t *testing.T) {
		srv2 := startServer(t, st)
		admin2 := newClient(t, srv2.URL, root)
		after, err := admin2.AllTokens(ctx, client.TokenFilter{})
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]string{}
		for _, tok := range after {
			states[tok.ID] = tok.State
		}
		for _, tok := range before {
			if states[tok.ID] != tok.State {
				t.Errorf("token %s (%s): state %q after restart, %q before", tok.ID, tok.Name, states[tok.ID], tok.State)
			}
		}
		if len(after) != len(before) {
			t.Errorf("%d tokens after restart, %d before", len(after), len(before))
		}
		// The quota kept its count: still exceeded.
		expectCode(t, admin2, v(quota.Secret, nil, ""), "QUOTA_EXCEEDED")
		got, err := admin2.GetToken(ctx, main.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.LastUsedAt == nil {
			t.Error("last use was not flushed before shutdown")
		}
		srv2.stop()
		seen.assertNowhere(t, st.dir, map[string]string{"server log after restart": srv2.log.String(), "database": st.dump(t)})
	})
}

// TestHTTPBasics checks what every client relies on, on the real binary:
// the 401 challenge, problem+json and no-store.
func TestHTTPBasics(t *testing.T) {
	srv := startServer(t, sqliteStore(t))
	resp, err := http.Post(srv.URL+"/v1/tokens", "application/json", strings.NewReader(`{"name":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="keyward"` {
		t.Fatalf("WWW-Authenticate %q", got)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/problem+json" {
		t.Fatalf("Content-Type %q", got)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Fatalf("Cache-Control %q", got)
	}
	// An unknown API path is the API's 404; GET / is the dashboard's
	// sign-in page (PRODUCT §5).
	resp, err = http.Get(srv.URL + "/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("GET /v1/nope: status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET /: status %d, %s, CSP %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
}

// TestWrongServerSecret: a node started with a server secret other than
// the one that made the stored tokens says so at start, rather than
// answering NOT_FOUND for every token without a word.
func TestWrongServerSecret(t *testing.T) {
	st := sqliteStore(t)
	initRoot(t, st) // under the secret generated into the data dir
	right := startServer(t, st)
	right.stop()
	if strings.Contains(right.log.String(), "server secret this node does not have") {
		t.Fatalf("warned with the right secret:\n%s", right.log)
	}
	wrong := *st
	wrong.env = append(slices.Clone(st.env), "KEYWARD_SECRET="+strings.Repeat("ab", 32))
	s := startServer(t, &wrong)
	s.stop()
	if log := s.log.String(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "server secret this node does not have") || !strings.Contains(log, "secrets=1 of=1") {
		t.Fatalf("no error for the unknown key:\n%s", log)
	}
}

// TestRotationProgress: while a previous server secret is given, serve
// says at start how many stored token secrets are still under it; once it
// is dropped, the tokens nobody used meanwhile are a warning, not an
// error on every start (nothing is wrong: the rotation is over).
func TestRotationProgress(t *testing.T) {
	st := sqliteStore(t)
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	st.env = append(st.env, "KEYWARD_SECRET="+a)
	root := initRoot(t, st)
	srv := startServer(t, st)
	if _, err := newClient(t, srv.URL, root).CreateToken(ctxT(t), client.CreateTokenRequest{Name: "never used"}); err != nil {
		t.Fatal(err)
	}
	srv.stop()

	rotating := *st
	rotating.env = append(slices.Clone(st.env[:len(st.env)-1]), "KEYWARD_SECRET="+b, "KEYWARD_SECRET_PREVIOUS="+a)
	srv = startServer(t, &rotating)
	newClient(t, srv.URL, root).ListTokens(ctxT(t), client.TokenFilter{}) // the root token moves to b
	srv.stop()
	if log := srv.log.String(); !strings.Contains(log, "server secret rotation") || !strings.Contains(log, "secrets=2 of=2") {
		t.Fatalf("no word of the rotation's progress:\n%s", log)
	}

	done := *st
	done.env = append(slices.Clone(st.env[:len(st.env)-1]), "KEYWARD_SECRET="+b)
	srv = startServer(t, &done)
	srv.stop()
	log := srv.log.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "secrets=1 of=2") || strings.Contains(log, "level=ERROR") {
		t.Fatalf("after the rotation, want a warning of the unused token's secret:\n%s", log)
	}
}

// onEachStore runs f as a subtest on a new SQLite store and on a new
// PostgreSQL store.
func onEachStore(t *testing.T, f func(t *testing.T, st *store)) {
	for _, c := range []struct {
		name  string
		store func(testing.TB) *store
	}{{"SQLite", sqliteStore}, {"PostgreSQL", postgresStore}} {
		t.Run(c.name, func(t *testing.T) { f(t, c.store(t)) })
	}
}

// TestRateLimitAcrossRestart: a server restarted within a token's rate
// window counts what it admitted before (PRODUCT §4: never more than N
// VALID in any window), on each store.
func TestRateLimitAcrossRestart(t *testing.T) {
	onEachStore(t, func(t *testing.T, st *store) {
		root := initRoot(t, st)
		srv := startServer(t, st)
		admin := newClient(t, srv.URL, root)
		it, err := admin.CreateToken(ctxT(t), client.CreateTokenRequest{Name: "limited", RateLimit: &client.RateLimit{Limit: 2, Window: client.Duration(time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
		req := client.VerifyRequest{Token: it.Secret}
		expectCode(t, admin, req, "VALID")
		expectCode(t, admin, req, "VALID")
		srv.stop()
		srv = startServer(t, st)
		admin = newClient(t, srv.URL, root)
		res := expectCode(t, admin, req, "RATE_LIMITED")
		// reset counts from the latest admission, kept with the window:
		// at most the window (by sub-windows alone, up to W/20 more).
		if res.RateLimit == nil || res.RateLimit.Remaining != 0 || res.RateLimit.Reset < 3000 || res.RateLimit.Reset > 3600 {
			t.Fatalf("rate limit after the restart %+v, want none left for most of the hour, and at most the hour", res.RateLimit)
		}
	})
}

// TestRealTokensThroughFlood: a node just restarted, so that it has cached
// no token, still verifies real tokens and authenticates real credentials
// while made-up tokens spend its lookup budget (PRODUCT §3: a token
// verifies on every node), on each store.
func TestRealTokensThroughFlood(t *testing.T) {
	onEachStore(t, func(t *testing.T, st *store) {
		root := initRoot(t, st)
		srv := startServer(t, st, "--lookup-budget", "3")
		admin := newClient(t, srv.URL, root)
		var real []string
		for i := range 4 {
			it, err := admin.CreateToken(ctxT(t), client.CreateTokenRequest{Name: fmt.Sprintf("real %d", i), Scopes: []string{"keyward:tokens:read"}})
			if err != nil {
				t.Fatal(err)
			}
			real = append(real, it.Secret)
		}
		srv.stop()
		srv = startServer(t, st, "--lookup-budget", "3")
		admin = newClient(t, srv.URL, root)
		for range 30 {
			made, err := secret.Generate("kw")
			if err != nil {
				t.Fatal(err)
			}
			expectCode(t, admin, client.VerifyRequest{Token: made}, "NOT_FOUND")
		}
		for _, text := range real[:3] {
			expectCode(t, admin, client.VerifyRequest{Token: text}, "VALID")
		}
		// A credential this node has not cached authenticates.
		if _, err := newClient(t, srv.URL, real[3]).ListTokens(ctxT(t), client.TokenFilter{}); err != nil {
			t.Fatalf("listing tokens with an uncached credential during the flood: %v", err)
		}
	})
}

// TestUncleanAPIPaths: on the listener the API shares with the dashboard,
// a path that cleans to an API path (//v1/..., /x/../v1/...) is the API's
// 404 problem+json, not a redirect that repeats the path, a secret in it
// too, in Location.
func TestUncleanAPIPaths(t *testing.T) {
	st := sqliteStore(t)
	root := initRoot(t, st)
	srv := startServer(t, st)
	made, err := secret.Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, tt := range []struct{ method, target string }{
		{"GET", "//v1/tokens/" + made},
		{"GET", "/./v1/tokens/" + made},
		{"GET", "/x/../v1/tokens/" + made},
		{"POST", "/dashboard/../v1/tokens/" + made + "/revoke"},
		{"GET", "/v1//tokens/" + made},
	} {
		t.Run(tt.method+" "+strings.Replace(tt.target, made, "SECRET", 1), func(t *testing.T) {
			// A raw request: an HTTP client would clean the path itself.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", tt.method, tt.target, addr, root)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("status %d, %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("Location: %s", loc)
			}
			if strings.Contains(string(body), made[3:]) {
				t.Errorf("the body repeats the secret: %s", body)
			}
		})
	}
}

// TestBackupRestore: a backup taken while keyward serves holds the tokens
// made before it; restore refuses while keyward serves, then puts it back,
// keeping the store it replaces; the tokens made after the backup are
// gone, those before verify.
func TestBackupRestore(t *testing.T) {
	st := sqliteStore(t)
	root := initRoot(t, st)
	srv := startServer(t, st)
	c := newClient(t, srv.URL, root)
	before, err := c.CreateToken(ctxT(t), client.CreateTokenRequest{Name: "before the backup", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "keyward-backup.db")
	out, errOut, code := cli(t, "", st.env, append([]string{"backup", "--output-file", backup}, st.args...)...)
	if code != 0 || !strings.Contains(out, "written to "+backup) || !strings.Contains(out, "does not hold the server secret") {
		t.Fatalf("keyward backup: exit %d\n%s%s", code, out, errOut)
	}
	after, err := c.CreateToken(ctxT(t), client.CreateTokenRequest{Name: "after the backup", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	// Not over an existing file; not while serve runs.
	if _, errOut, code := cli(t, "", st.env, append([]string{"backup", "--output-file", backup}, st.args...)...); code != 1 || !strings.Contains(errOut, "exists already") {
		t.Errorf("backup over an existing file: exit %d: %s", code, errOut)
	}
	restore := append([]string{"restore", "--from", backup}, st.args...)
	if _, errOut, code := cli(t, "", st.env, restore...); code != 1 || !strings.Contains(errOut, "stop it before a restore") {
		t.Errorf("restore while serve runs: exit %d: %s", code, errOut)
	}
	expectCode(t, c, client.VerifyRequest{Token: after.Secret}, "VALID")
	srv.stop()

	// Run as root (sudo), restore refuses a data dir of the service's
	// user, whose links could send root's writes elsewhere: it is run as
	// that user.
	if os.Geteuid() == 0 {
		if err := os.Chown(st.dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, errOut, code := cli(t, "", st.env, restore...); code != 1 || !strings.Contains(errOut, "run keyward restore as the data dir's owner") {
			t.Errorf("restore as root into the service user's data dir: exit %d: %s", code, errOut)
		}
		if err := os.Chown(st.dir, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code = cli(t, "", st.env, restore...)
	if code != 0 || !strings.Contains(out, "Restored "+backup) || !strings.Contains(out, "keyward.db.before-restore-") {
		t.Fatalf("keyward restore: exit %d\n%s%s", code, out, errOut)
	}
	srv = startServer(t, st)
	c = newClient(t, srv.URL, root)
	expectCode(t, c, client.VerifyRequest{Token: before.Secret, Scopes: []string{"orders:read"}}, "VALID")
	expectCode(t, c, client.VerifyRequest{Token: after.Secret}, "NOT_FOUND")
	aside, _ := filepath.Glob(filepath.Join(st.dir, "keyward.db.before-restore-*"))
	if len(aside) != 1 {
		t.Fatalf("the replaced store: %v, want one file", aside)
	}
	// The PostgreSQL store is pg_dump's.
	if _, errOut, code := cli(t, "", nil, "backup", "--database-url", "postgres://x@127.0.0.1:1/x", "--output-file", backup+"2"); code != 2 || !strings.Contains(errOut, "pg_dump") {
		t.Errorf("backup of PostgreSQL: exit %d: %s", code, errOut)
	}
}
