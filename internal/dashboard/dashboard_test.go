package dashboard

import (
	"context"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
)

// clock is the injected time of a test server.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is a dashboard over a real SQLite store, served over TLS so that
// Secure cookies travel as they do in a browser.
type env struct {
	t     *testing.T
	srv   *httptest.Server
	store *sqlite.DB
	svc   *manage.Service
	keys  *secret.Keyring
	clock *clock
	ws    *keyward.Workspace
	log   *syncBuffer // everything the dashboard logged
	dash  *Server
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const goodPassword = "correct horse battery staple"

func newEnv(t *testing.T) *env { t.Helper(); return newEnvAt(t, "") }

// newEnvAt is newEnv with the given public URL ("" for the test server's).
func newEnvAt(t *testing.T, publicURL string) *env {
	t.Helper()
	return newEnvWith(t, publicURL, nil)
}

// newEnvWith is newEnvAt with the dashboard's keyward.Store wrapped by
// wrap, when not nil.
func newEnvWith(t *testing.T, publicURL string, wrap func(keyward.Store) keyward.Store) *env {
	t.Helper()
	return newEnvAccounts(t, publicURL, wrap, nil)
}

// newEnvWrapped is newEnvWith with the dashboard's keyward.AccountStore
// wrapped by wrapAccounts too.
func newEnvWrapped(t *testing.T, publicURL string, wrap func(keyward.Store) keyward.Store, wrapAccounts func(keyward.AccountStore) keyward.AccountStore) *env {
	t.Helper()
	return newEnvAccounts(t, publicURL, wrap, func(db *sqlite.DB) keyward.AccountStore { return wrapAccounts(db) })
}

// newEnvAccounts is newEnvWith with the dashboard's keyward.AccountStore
// wrapped by wrapAccounts too (given the SQLite store), when not nil.
func newEnvAccounts(t *testing.T, publicURL string, wrap func(keyward.Store) keyward.Store, wrapAccounts func(*sqlite.DB) keyward.AccountStore) *env {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keys, err := secret.NewKeyring(strings.Repeat("k", 64))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{now: time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)}
	svc := &manage.Service{Store: db, Keys: keys, Now: c.Now}
	ws, err := svc.EnsureDefaultWorkspace(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: db, svc: svc, keys: keys, clock: c, ws: ws, log: &syncBuffer{}}
	e.srv = httptest.NewUnstartedServer(nil)
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	if publicURL == "" {
		publicURL = e.srv.URL
	}
	public, _ := url.Parse(publicURL)
	var store keyward.Store = db
	if wrap != nil {
		store = wrap(db)
	}
	var accounts keyward.AccountStore = db
	if wrapAccounts != nil {
		accounts = wrapAccounts(db)
	}
	d, err := New(Config{Service: svc, Store: store, Accounts: accounts, Keys: keys, Now: c.Now, PublicURL: public, Secure: true,
		Log:            slog.New(slog.NewTextHandler(e.log, nil)),
		PasswordParams: account.TestParams})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Config.Handler = d.Handler()
	e.dash = d
	t.Cleanup(d.Wait) // before the store closes (cleanups run last first)
	return e
}

// user creates a user with goodPassword and the role in the default
// workspace.
func (e *env) user(email, role string) *keyward.User {
	e.t.Helper()
	u, err := account.CreateUser(context.Background(), e.store, account.NewUser{Email: email, Password: goodPassword, WorkspaceID: e.ws.ID, Role: role},
		account.TestParams, keyward.Actor{Type: keyward.ActorSystem}, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// browser is a client with a cookie jar that remembers the CSRF token of
// the last page it got.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
	last *http.Response
	body string
	hdr  http.Header // headers added to every request
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client() // a copy: each browser has its own jar
	c.Jar = jar
	return &browser{e: e, c: &c, hdr: http.Header{}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

func (b *browser) do(req *http.Request) (int, string) {
	b.e.t.Helper()
	for k, v := range b.hdr {
		req.Header[k] = v
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	b.last, b.body = res, string(raw)
	if m := csrfRE.FindStringSubmatch(b.body); m != nil {
		b.csrf = m[1]
	}
	return res.StatusCode, b.body
}

func (b *browser) get(path string) (int, string) {
	b.e.t.Helper()
	req, _ := http.NewRequest("GET", b.e.srv.URL+path, nil)
	return b.do(req)
}

// post submits a form with the current CSRF token (unless form sets csrf).
func (b *browser) post(path string, form url.Values) (int, string) {
	b.e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	req, _ := http.NewRequest("POST", b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// path returns the path of the last response's request (after redirects).
func (b *browser) path() string { return b.last.Request.URL.Path }

// signIn signs in with the password and expects to land on /tokens.
func (b *browser) signIn(email string) {
	b.e.t.Helper()
	b.get("/signin")
	status, body := b.post("/signin", url.Values{"email": {email}, "password": {goodPassword}})
	if status != http.StatusOK || b.path() != "/tokens" {
		b.e.t.Fatalf("sign in as %s: %d at %s\n%s", email, status, b.path(), body)
	}
}

func wantStatus(t *testing.T, got, want int, body string) {
	t.Helper()
	if got != want {
		t.Fatalf("status %d, want %d\n%s", got, want, body)
	}
}

func wantText(t *testing.T, body string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if !strings.Contains(html.UnescapeString(body), s) {
			t.Errorf("page lacks %q", s)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	for _, path := range []string{"/", "/signin", "/no-such-page", "/static/app.js"} {
		t.Run(strings.Trim(path, "/"), func(t *testing.T) {
			b.get(path)
			h := b.last.Header
			for k, want := range map[string]string{
				"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
				"X-Content-Type-Options":  "nosniff",
				"X-Frame-Options":         "DENY",
				"Referrer-Policy":         "same-origin",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if path != "/static/app.js" && h.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", h.Get("Cache-Control"))
			}
		})
	}
	if status, body := b.get("/no-such-page"); status != http.StatusNotFound {
		t.Errorf("unknown page: %d\n%s", status, body)
	}
	if status, body := b.get("/static/"); status != http.StatusNotFound || strings.Contains(body, "app.js") {
		t.Errorf("the static files' directory: %d, want 404 without a listing\n%s", status, body)
	}
	_, body := b.get("/")
	if strings.Contains(body, "<script>") || strings.Contains(body, " onclick=") || strings.Contains(body, "style=") {
		t.Errorf("the page has inline script or style")
	}
}

// TestHSTS: Strict-Transport-Security goes with every page browsers reach
// over TLS: served by keyward, or by a TLS proxy the public URL names.
func TestHSTS(t *testing.T) {
	for _, tc := range []struct {
		name, public, target, want string
	}{
		{"OKTLSProxy", "https://keys.example.com", "http://keys.example.com/signin", "max-age=31536000"},
		{"OKServedTLS", "http://localhost:8080", "https://localhost:8080/signin", "max-age=31536000"},
		{"OKPlainLoopback", "http://localhost:8080", "http://localhost:8080/signin", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvAt(t, tc.public)
			for _, path := range []string{"/signin", "/no-such-page", "/static/app.js"} {
				w := httptest.NewRecorder()
				e.dash.Handler().ServeHTTP(w, httptest.NewRequest("GET", strings.Replace(tc.target, "/signin", path, 1), nil))
				if got := w.Header().Get("Strict-Transport-Security"); got != tc.want {
					t.Errorf("%s: %d, Strict-Transport-Security %q, want %q", path, w.Code, got, tc.want)
				}
			}
		})
	}
}

// TestRequestID: every answer carries an X-Request-Id, the client's when
// it is well-formed (as the API does), and the access log line and the
// audit events of the request carry the same id.
func TestRequestID(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	t.Run("OKNew", func(t *testing.T) {
		b := e.browser()
		b.get("/signin")
		first := b.last.Header.Get("X-Request-Id")
		b.get("/signin")
		second := b.last.Header.Get("X-Request-Id")
		for _, id := range []string{first, second} {
			if !strings.HasPrefix(id, keyward.PrefixRequest) || !keyward.ValidRequestID(id) {
				t.Errorf("X-Request-Id = %q, want a new req_... id", id)
			}
		}
		if first == second {
			t.Errorf("two requests got the same id %q", first)
		}
	})
	t.Run("OKClientIDKept", func(t *testing.T) {
		b := e.browser()
		b.hdr.Set("X-Request-Id", "abc-123")
		b.get("/signin")
		if got := b.last.Header.Get("X-Request-Id"); got != "abc-123" {
			t.Errorf("X-Request-Id = %q, want abc-123", got)
		}
	})
	for _, tt := range []struct{ name, id string }{
		{"ErrRequestIDWithSpace", "a b"},
		{"ErrRequestIDWithQuote", `a"b`},
		{"ErrRequestIDTooLong", strings.Repeat("a", 65)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := e.browser()
			b.hdr.Set("X-Request-Id", tt.id)
			b.get("/signin")
			if got := b.last.Header.Get("X-Request-Id"); !strings.HasPrefix(got, keyward.PrefixRequest) {
				t.Errorf("X-Request-Id = %q, want a new req_... id in place of %q", got, tt.id)
			}
		})
	}
	t.Run("OKAuditAndLog", func(t *testing.T) {
		b := e.browser()
		b.get("/signin")
		b.hdr.Set("X-Request-Id", "signin-failed-1")
		status, body := b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}})
		wantStatus(t, status, http.StatusUnauthorized, body)
		b.hdr.Set("X-Request-Id", "signin-1")
		b.signIn("ann@example.com")
		b.hdr.Del("X-Request-Id")
		b.get("/tokens/new")
		b.hdr.Set("X-Request-Id", "token-create-1")
		status, body = b.post("/tokens", url.Values{"name": {"x"}, "expiry": {"30"}, "quota_period": {"month"}})
		wantStatus(t, status, http.StatusOK, body) // after the redirect to the secret's page
		e.dash.Wait()

		evs, err := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"session.signin_failed": "signin-failed-1", "session.signin": "signin-1", "token.create": "token-create-1"}
		for _, ev := range evs {
			if id, ok := want[ev.Action]; ok {
				if ev.RequestID != id {
					t.Errorf("%s event request_id = %q, want %q", ev.Action, ev.RequestID, id)
				}
				delete(want, ev.Action)
			}
		}
		if len(want) > 0 {
			t.Errorf("no events %v", want)
		}
		if line := "request_id=signin-1 method=POST path=/signin"; !strings.Contains(e.log.String(), line) {
			t.Errorf("the access log has no line with %q:\n%s", line, e.log.String())
		}
	})
}

func TestFirstRun(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	status, body := b.get("/")
	wantStatus(t, status, http.StatusOK, body)
	wantText(t, body, "No owner yet", "keyward user create --owner --email you@example.com", "--password-stdin")
	if strings.Contains(body, "?token=") || strings.Contains(b.last.Request.URL.RawQuery, "secret") {
		t.Error("the first-run page carries a setup secret")
	}
	e.user("owner@example.com", keyward.RoleOwner)
	_, body = b.get("/")
	if strings.Contains(body, "No owner yet") {
		t.Error("the page still says there is no owner")
	}
}

func TestSignIn(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	tests := []struct {
		name   string
		form   url.Values
		status int
		want   string
	}{
		{"ErrNoEmail", url.Values{"password": {goodPassword}}, 400, "Enter your email address."},
		{"ErrNoPassword", url.Values{"email": {"ann@example.com"}}, 400, "Enter your password."},
		{"ErrWrongPassword", url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}}, 401, msgBadCredentials},
		{"ErrUnknownEmail", url.Values{"email": {"nobody@example.com"}, "password": {goodPassword}}, 401, msgBadCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := e.browser()
			b.get("/signin")
			status, body := b.post("/signin", tt.form)
			wantStatus(t, status, tt.status, body)
			wantText(t, body, tt.want)
		})
	}
	t.Run("OKCookie", func(t *testing.T) {
		b := e.browser()
		b.get("/signin")
		form := url.Values{"email": {"Ann@Example.com "}, "password": {goodPassword}, "csrf": {b.csrf}}
		req, _ := http.NewRequest("POST", e.srv.URL+"/signin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		c := *b.c
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/tokens" {
			t.Fatalf("sign in: %d to %q", res.StatusCode, res.Header.Get("Location"))
		}
		var set string
		for _, c := range res.Header.Values("Set-Cookie") {
			if strings.HasPrefix(c, "__Host-keyward_session=") {
				set = c
			}
		}
		for _, attr := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
			if !strings.Contains(set, attr) {
				t.Errorf("session cookie %q lacks %s", set, attr)
			}
		}
		if strings.Contains(set, "Domain=") {
			t.Errorf("a __Host- cookie has a Domain: %q", set)
		}
		value := strings.TrimPrefix(strings.SplitN(set, ";", 2)[0], "__Host-keyward_session=")
		if len(value) < 22 { // 128 bits in base64
			t.Errorf("session id %q is shorter than 128 bits", value)
		}
		// The store holds only a digest of it.
		ses, err := e.store.FindSessions(context.Background(), mustUser(t, e, "ann@example.com").ID)
		if err != nil || len(ses) != 1 || strings.Contains(string(ses[0].Digest), value) {
			t.Fatalf("sessions = %v, %v", ses, err)
		}
	})
	t.Run("NewSessionIDAtSignIn", func(t *testing.T) {
		b := e.browser()
		b.signIn("ann@example.com")
		before := sessionCookie(b)
		b.signIn("ann@example.com")
		after := sessionCookie(b)
		if before == after || after == "" {
			t.Fatalf("the session id did not change at sign-in")
		}
		// The old id is void.
		old := e.browser()
		u, _ := url.Parse(e.srv.URL)
		old.c.Jar.SetCookies(u, []*http.Cookie{{Name: "__Host-keyward_session", Value: before, Path: "/", Secure: true}})
		old.get("/tokens")
		if old.path() != "/signin" {
			t.Errorf("the session id from before sign-in still works (at %s)", old.path())
		}
	})
}

func mustUser(t *testing.T, e *env, email string) *keyward.User {
	t.Helper()
	u, err := e.store.FindUserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func sessionCookie(b *browser) string {
	u, _ := url.Parse(b.e.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "__Host-keyward_session" {
			return c.Value
		}
	}
	return ""
}

func TestCSRF(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	newToken := url.Values{"name": {"x"}, "expiry": {"30"}, "quota_period": {"month"}}
	other := e.browser()
	other.signIn("ann@example.com")

	tests := []struct {
		name   string
		csrf   string
		header [2]string
	}{
		{"ErrNoToken", "", [2]string{}},
		{"ErrWrongToken", "AAAA", [2]string{}},
		{"ErrOtherSessionsToken", other.csrf, [2]string{}},
		{"ErrCrossOrigin", "<valid>", [2]string{"Origin", "https://evil.example"}},
		{"ErrCrossSiteFetch", "<valid>", [2]string{"Sec-Fetch-Site", "cross-site"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.get("/tokens/new")
			form := url.Values{}
			for k, v := range newToken {
				form[k] = v
			}
			form.Set("csrf", tt.csrf)
			if tt.csrf == "<valid>" {
				form.Set("csrf", b.csrf)
			}
			if tt.header[0] != "" {
				b.hdr.Set(tt.header[0], tt.header[1])
				defer b.hdr.Del(tt.header[0])
			}
			status, body := b.post("/tokens", form)
			wantStatus(t, status, http.StatusForbidden, body)
			toks, _ := e.store.FindTokens(context.Background(), keyward.TokenFilter{WorkspaceID: e.ws.ID})
			if len(toks) != 0 {
				t.Fatalf("a refused form created a token")
			}
		})
	}
	t.Run("ErrOversizedWithoutToken", func(t *testing.T) {
		form := url.Values{"name": {strings.Repeat("x", maxForm)}, "csrf": {""}}
		status, body := b.post("/tokens", form)
		wantStatus(t, status, http.StatusForbidden, body)
		c := e.browser()
		status, body = c.post("/signin", url.Values{"email": {strings.Repeat("a", maxForm)}, "csrf": {""}})
		wantStatus(t, status, http.StatusForbidden, body)
	})
	t.Run("ErrSignInWithoutToken", func(t *testing.T) {
		c := e.browser()
		status, body := c.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}, "csrf": {""}})
		wantStatus(t, status, http.StatusForbidden, body)
	})
	t.Run("OKSameOrigin", func(t *testing.T) {
		b.get("/tokens/new")
		b.hdr.Set("Origin", e.srv.URL)
		defer b.hdr.Del("Origin")
		status, body := b.post("/tokens", newToken)
		wantStatus(t, status, http.StatusOK, body)
		if b.path() == "/tokens" || !strings.HasSuffix(b.path(), "/created") {
			t.Errorf("after the create: at %s, want the secret's page", b.path())
		}
	})
	t.Run("NoStateChangeByGET", func(t *testing.T) {
		for _, path := range []string{"/signout", "/signout/everywhere", "/tokens/x/revoke"} {
			status, _ := b.get(path)
			if status == http.StatusOK || status/100 == 3 {
				t.Errorf("GET %s = %d", path, status)
			}
		}
		b.get("/tokens")
		if b.path() != "/tokens" {
			t.Errorf("GET /signout signed out")
		}
	})
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	t.Run("Idle", func(t *testing.T) {
		b := e.browser()
		b.signIn("ann@example.com")
		e.clock.Add(DefaultIdleTimeout - time.Minute)
		if b.get("/tokens"); b.path() != "/tokens" {
			t.Fatalf("signed out before the idle timeout")
		}
		e.clock.Add(DefaultIdleTimeout - time.Minute) // used a minute ago: still alive
		if b.get("/tokens"); b.path() != "/tokens" {
			t.Fatalf("use did not extend the session")
		}
		e.clock.Add(DefaultIdleTimeout)
		if b.get("/tokens"); b.path() != "/signin" {
			t.Fatalf("still signed in after %s idle (at %s)", DefaultIdleTimeout, b.path())
		}
	})
	t.Run("ShortIdle", func(t *testing.T) {
		// At the shortest idle timeout, a session used every 19 s lives
		// on: its recorded last use lags by a tenth of the timeout at most.
		e.dash.idle = time.Minute
		defer func() { e.dash.idle = DefaultIdleTimeout }()
		b := e.browser()
		b.signIn("ann@example.com")
		for i := range 8 {
			e.clock.Add(19 * time.Second)
			if b.get("/tokens"); b.path() != "/tokens" {
				t.Fatalf("signed out after %d uses 19 s apart", i)
			}
		}
		e.clock.Add(time.Minute + time.Second)
		if b.get("/tokens"); b.path() != "/signin" {
			t.Fatalf("still signed in after a minute idle (at %s)", b.path())
		}
	})
	t.Run("Absolute", func(t *testing.T) {
		b := e.browser()
		b.signIn("ann@example.com")
		for elapsed := time.Duration(0); elapsed < DefaultAbsoluteTimeout-time.Hour; elapsed += 30 * time.Minute {
			e.clock.Add(30 * time.Minute)
			if b.get("/tokens"); b.path() != "/tokens" {
				t.Fatalf("signed out after %s of use", elapsed)
			}
		}
		e.clock.Add(time.Hour)
		if b.get("/tokens"); b.path() != "/signin" {
			t.Fatalf("still signed in after the absolute lifetime")
		}
	})
}

func TestThrottle(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.get("/signin")
	wrong := url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}}
	for i := range freeAccount {
		if status, body := b.post("/signin", wrong); status != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d\n%s", i+1, status, body)
		}
	}
	// After freeAccount failures, the next attempt waits, even with the
	// right password.
	status, body := b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
	wantStatus(t, status, http.StatusTooManyRequests, body)
	wantText(t, body, "Too many failed attempts. Try again in 1 second.")
	if b.last.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q", b.last.Header.Get("Retry-After"))
	}
	// The delay doubles with each further failure.
	e.clock.Add(time.Second)
	b.post("/signin", wrong)
	_, body = b.post("/signin", wrong)
	wantText(t, body, "Try again in 2 seconds.")
	e.clock.Add(2 * time.Second)
	b.signIn("ann@example.com")

	t.Run("UnknownEmailAlike", func(t *testing.T) {
		c := e.browser()
		c.get("/signin")
		form := url.Values{"email": {"nobody@example.com"}, "password": {"wrong password here"}}
		for i := range freeAccount {
			if status, body := c.post("/signin", form); status != http.StatusUnauthorized {
				t.Fatalf("failure %d: status %d\n%s", i+1, status, body)
			}
		}
		status, body := c.post("/signin", form)
		wantStatus(t, status, http.StatusTooManyRequests, body)
	})
	t.Run("DeviceCookie", func(t *testing.T) {
		// A stranger's failures lock the account for browsers that never
		// signed in to it, not for its owner's browser (b signed in
		// above), whose own failures count against its cookie alone.
		e.clock.Add(time.Hour * 2)
		e.user("bob@example.com", keyward.RoleMember)
		wrong := func() url.Values {
			return url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}}
		}
		stranger := e.browser()
		stranger.get("/signin")
		for range freeAccount {
			if status, body := stranger.post("/signin", wrong()); status != http.StatusUnauthorized {
				t.Fatalf("stranger: status %d\n%s", status, body)
			}
		}
		status, body := stranger.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
		wantStatus(t, status, http.StatusTooManyRequests, body)
		b.post("/signout", nil)
		b.signIn("ann@example.com") // fails the test unless signed in
		b.post("/signout", nil)
		for range freeAccount {
			if status, body := b.post("/signin", wrong()); status != http.StatusUnauthorized {
				t.Fatalf("owner's browser: status %d\n%s", status, body)
			}
		}
		status, body = b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
		wantStatus(t, status, http.StatusTooManyRequests, body)
		// A cookie of another account is no way around the lock.
		bob := e.browser()
		bob.signIn2("bob@example.com")
		bob.post("/signout", nil)
		status, body = bob.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
		wantStatus(t, status, http.StatusTooManyRequests, body)
	})
	t.Run("PerIP", func(t *testing.T) {
		e.clock.Add(time.Hour * 2)
		c := e.browser()
		c.get("/signin")
		for i := range freeIP {
			form := url.Values{"email": {"user" + string(rune('a'+i)) + "@example.com"}, "password": {"wrong password here"}}
			if status, body := c.post("/signin", form); status != http.StatusUnauthorized {
				t.Fatalf("failure %d: status %d\n%s", i+1, status, body)
			}
		}
		status, body := c.post("/signin", url.Values{"email": {"fresh@example.com"}, "password": {"wrong password here"}})
		wantStatus(t, status, http.StatusTooManyRequests, body)
	})
}

func TestLocalPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/tokens"},
		{"/tokens/tok_1", "/tokens/tok_1"},
		{"/audit?cursor=abc", "/audit?cursor=abc"},
		{"/account/mfa", "/account/mfa"},
		{"//evil.com", "/"},
		{"///evil.com", "/"},
		{"/\\evil.com", "/"},
		{"\\\\evil.com", "/"},
		{"/\t/evil.com", "/"},
		{"/\n/evil.com", "/"},
		{"/\r/evil.com", "/"},
		{"/\x00/evil.com", "/"},
		{"/\x7f/evil.com", "/"},
		{"/%09/evil.com", "/"},
		{"/%2F/evil.com", "/"},
		{"/%5Cevil.com", "/"},
		{"https://evil.com", "/"},
		{"https:/evil.com", "/"},
		{"javascript:alert(1)", "/"},
		{"evil.com", "/"},
		{" /tokens", "/"},
	}
	for _, tt := range tests {
		if got := localPath(tt.in); got != tt.want {
			t.Errorf("localPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestDeviceCookie: the device cookie that gives a browser its own
// sign-in throttle is earned only by a whole sign-in, cannot be forged,
// and is void once the password changes (so that cookies gathered before
// give no guesses at the new one); the browser that changed it gets a
// new one.
func TestDeviceCookie(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	e.user("cat@example.com", keyward.RoleMember)
	site, _ := url.Parse(e.srv.URL)
	var name string
	device := func(b *browser) string {
		for _, c := range b.c.Jar.Cookies(site) {
			if strings.HasSuffix(c.Name, "keyward_device") {
				name = c.Name
				return c.Value
			}
		}
		return ""
	}
	with := func(value string) *browser {
		b := e.browser()
		b.c.Jar.SetCookies(site, []*http.Cookie{{Name: name, Value: value, Path: "/", Secure: true}})
		b.get("/signin")
		return b
	}
	lock := func() {
		t.Helper()
		s := e.browser()
		s.get("/signin")
		for range freeAccount {
			s.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}})
		}
	}
	signIn := func(b *browser, pw string) int {
		status, _ := b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {pw}})
		return status
	}

	owner := e.browser()
	owner.signIn("ann@example.com")
	old := device(owner)
	if old == "" {
		t.Fatal("no device cookie after a sign-in")
	}
	lock()
	// The cookie, carried by another browser, opens the lock: with
	// hands it over as a browser would.
	if got := signIn(with(old), goodPassword); got != http.StatusOK {
		t.Fatalf("the owner's device cookie in another browser: %d, want signed in despite the lock", got)
	}
	nonce, _, _ := strings.Cut(old, ".")
	if got := signIn(with(nonce+".1700000000.forged"), goodPassword); got != http.StatusTooManyRequests {
		t.Errorf("a forged device cookie: %d, want 429 (the account's lock)", got)
	}
	owner.post("/signout", nil)
	owner.get("/signin")
	if got := signIn(owner, goodPassword); got != http.StatusOK || owner.path() != "/tokens" {
		t.Fatalf("the owner's browser: %d at %s, want signed in despite the lock", got, owner.path())
	}

	const newPassword = "a different passphrase entirely"
	owner.get("/account/password")
	status, body := owner.post("/account/password", url.Values{"current": {goodPassword}, "password": {newPassword}, "password2": {newPassword}})
	wantStatus(t, status, http.StatusOK, body)
	if renewed := device(owner); renewed == "" || renewed == old {
		t.Errorf("device cookie after the password change: %q, want a new one", renewed)
	}
	if got := signIn(with(old), newPassword); got != http.StatusTooManyRequests {
		t.Errorf("a device cookie from before the password change: %d, want 429 (the account's lock)", got)
	}
	owner.post("/signout", nil)
	owner.get("/signin")
	if got := signIn(owner, newPassword); got != http.StatusOK || owner.path() != "/tokens" {
		t.Errorf("the browser that changed the password: %d at %s, want signed in", got, owner.path())
	}

	// The password alone, a second factor still owed, earns no cookie.
	cat := e.browser()
	cat.signIn("cat@example.com")
	enrolTOTP(t, cat)
	pending := e.browser()
	pending.signIn2("cat@example.com")
	if pending.path() != "/signin/mfa" {
		t.Fatalf("after the password: at %s", pending.path())
	}
	if v := device(pending); v != "" {
		t.Errorf("a device cookie before the second factor: %q", v)
	}
}
