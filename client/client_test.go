package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testToken = "kw_0123456789abcdefghijABCDEFGHIJ01abcd42"

// request is what the test server saw.
type request struct {
	Method   string
	Path     string // escaped
	RawQuery string
	Header   http.Header
	Body     []byte
}

// reply is what the test server answers.
type reply struct {
	Status      int
	ContentType string
	Header      map[string]string
	Body        string
}

// newTestClient starts a server that records each request and answers with
// the replies in turn (the last one repeatedly), and a Client for it.
func newTestClient(t *testing.T, replies ...reply) (*Client, *[]request) {
	t.Helper()
	var seen []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, request{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), b})
		rep := reply{Status: 200, ContentType: "application/json", Body: "{}"}
		if len(replies) > 0 {
			rep = replies[min(len(seen), len(replies))-1]
		}
		if rep.ContentType != "" {
			w.Header().Set("Content-Type", rep.ContentType)
		}
		for k, v := range rep.Header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(rep.Status)
		io.WriteString(w, rep.Body)
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, testToken, WithUserAgent("keyward-test/1"))
	if err != nil {
		t.Fatal(err)
	}
	return c, &seen
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("invalid JSON %q: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

const tokenJSON = `{
  "id": "tok_01jd8",
  "name": "ci deploy",
  "hint": "kw_…x9Qa",
  "state": "active",
  "scopes": ["orders:read", "orders:write"],
  "expires_at": "2026-12-23T10:00:00Z",
  "allowed_cidrs": ["203.0.113.0/24"],
  "rate_limit": {"limit": 100, "window": "1m"},
  "quota": {"limit": 10000, "period": "month"},
  "subject": "customer-42",
  "metadata": {"team": "payments"},
  "created_by": "tok_01jd7",
  "created_at": "2026-11-23T10:00:00Z",
  "updated_at": "2026-11-23T10:00:00Z",
  "rotated_at": null,
  "revoked_at": null,
  "revoke_reason": "",
  "suspended_at": null,
  "suspend_reason": "",
  "last_used_at": null,
  "last_used_ip": ""
}`

func issuedJSON(secret string) string {
	return strings.TrimSuffix(tokenJSON, "}") + `, "token": "` + secret + `"}`
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name, url, token, wantErr string
	}{
		{"OK", "http://127.0.0.1:8080", testToken, ""},
		{"OKPrefixAndSlash", "https://keyward.example.com/api/", testToken, ""},
		{"OKNoToken", "http://127.0.0.1:8080", "", ""},
		{"ErrScheme", "ftp://example.com", testToken, "must start with http"},
		{"ErrNoSchemeIP", "127.0.0.1:8080", testToken, "invalid server URL"},
		{"ErrNoSchemeHost", "localhost:8080", testToken, "must start with http"},
		{"ErrNoHost", "http://", testToken, "has no host"},
		{"ErrCredentials", "http://admin:hunter2@example.com", testToken, "must not contain credentials"},
		{"ErrQuery", "http://example.com/?token=x", testToken, "query"},
		{"ErrTokenNewline", "http://example.com", testToken + "\r\nX-Evil: 1", "spaces or control characters"},
		// No error repeats a secret that was put in the URL.
		{"ErrSchemeAndCredentials", "ftp://admin:hunter2@example.com", testToken, "must not contain credentials"},
		{"ErrNoHostAndCredentials", "http://admin:hunter2@/x", testToken, "must not contain credentials"},
		{"ErrQueryWithToken", "http://example.com/?token=" + testToken, testToken, "query"},
		{"ErrFragmentWithToken", "http://example.com/#" + testToken, testToken, "query or fragment"},
		{"ErrSchemeWithTokenInPath", "ftp://example.com/" + testToken, testToken, "must start with http"},
		{"ErrParseWithToken", "http://exa mple.com/" + testToken, testToken, "invalid server URL"},
		{"ErrParseWithPassword", "http://admin:hunter2@exa mple.com/", testToken, "invalid server URL"},
		{"ErrPortIsPassword", "https://admin:hunter2", testToken, "invalid port after host"},
		{"ErrPortIsToken", "http://127.0.0.1:" + testToken, testToken, "invalid port after host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.url, tc.token)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), testToken) {
				t.Fatalf("error %q leaks a secret", err)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	c, err := New("http://example.com/", testToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.httpClient.Timeout != DefaultTimeout || DefaultTimeout != 30*time.Second {
		t.Errorf("timeout = %v, want 30s", c.httpClient.Timeout)
	}
	if c.BaseURL() != "http://example.com" {
		t.Errorf("BaseURL = %q", c.BaseURL())
	}
	hc := &http.Client{Timeout: time.Second}
	c, _ = New("http://example.com", testToken, WithHTTPClient(hc), WithUserAgent("x/1"))
	if c.httpClient != hc || c.userAgent != "x/1" {
		t.Errorf("options not applied")
	}
}

func TestMethods(t *testing.T) {
	expires := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		call      func(ctx context.Context, c *Client) (any, error)
		reply     reply
		method    string
		path      string
		query     url.Values
		body      string // JSON, compared by value; "" for no body
		form      url.Values
		noAuth    bool
		checkResp func(t *testing.T, got any)
	}{
		{
			name: "CreateToken",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateToken(ctx, CreateTokenRequest{
					Name:         "ci deploy",
					Scopes:       []string{"orders:read"},
					ExpiresIn:    Duration(720 * time.Hour),
					AllowedCIDRs: []string{"203.0.113.0/24"},
					RateLimit:    &RateLimit{Limit: 100, Window: Duration(time.Minute)},
					Quota:        &Quota{Limit: 10000, Period: PeriodMonth},
					Subject:      "customer-42",
					Metadata:     map[string]any{"team": "payments"},
				})
			},
			reply:  reply{Status: 201, ContentType: "application/json", Body: issuedJSON("kw_secret")},
			method: "POST", path: "/v1/tokens",
			body: `{"name":"ci deploy","scopes":["orders:read"],"expires_in":"720h","allowed_cidrs":["203.0.113.0/24"],
				"rate_limit":{"limit":100,"window":"1m"},"quota":{"limit":10000,"period":"month"},"subject":"customer-42","metadata":{"team":"payments"}}`,
			checkResp: func(t *testing.T, got any) {
				it := got.(*IssuedToken)
				if it.Secret != "kw_secret" || it.ID != "tok_01jd8" || it.Hint != "kw_…x9Qa" || it.State != StateActive {
					t.Errorf("got %+v", it)
				}
				if it.RateLimit == nil || time.Duration(it.RateLimit.Window) != time.Minute || it.Quota.Period != "month" {
					t.Errorf("limits = %+v %+v", it.RateLimit, it.Quota)
				}
				if it.ExpiresAt == nil || !it.ExpiresAt.Equal(time.Date(2026, 12, 23, 10, 0, 0, 0, time.UTC)) {
					t.Errorf("expires_at = %v", it.ExpiresAt)
				}
			},
		},
		{
			name: "CreateTokenMinimal",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateToken(ctx, CreateTokenRequest{Name: "n", ExpiresAt: &expires})
			},
			reply:  reply{Status: 201, ContentType: "application/json", Body: issuedJSON("kw_s")},
			method: "POST", path: "/v1/tokens",
			body: `{"name":"n","expires_at":"2027-01-02T03:04:05Z"}`,
		},
		{
			name: "ListTokens",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ListTokens(ctx, TokenFilter{State: "active", Subject: "a b", Scope: "orders:read", Name: "ci&x", Limit: 10, Cursor: "tok_1"})
			},
			reply:  reply{Status: 200, ContentType: "application/json", Body: `{"items":[` + tokenJSON + `],"next_cursor":"tok_01jd8"}`},
			method: "GET", path: "/v1/tokens",
			query: url.Values{"state": {"active"}, "subject": {"a b"}, "scope": {"orders:read"}, "name": {"ci&x"}, "limit": {"10"}, "cursor": {"tok_1"}},
			checkResp: func(t *testing.T, got any) {
				l := got.(*List[Token])
				if len(l.Items) != 1 || l.Items[0].Name != "ci deploy" || l.NextCursor != "tok_01jd8" {
					t.Errorf("got %+v", l)
				}
			},
		},
		{
			name:   "ListTokensNoFilter",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListTokens(ctx, TokenFilter{}) },
			reply:  reply{Status: 200, ContentType: "application/json", Body: `{"items":[]}`},
			method: "GET", path: "/v1/tokens", query: url.Values{},
		},
		{
			name:   "GetTokenEscapesID",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.GetToken(ctx, "tok_1/../x?y") },
			reply:  reply{Status: 200, ContentType: "application/json", Body: tokenJSON},
			method: "GET", path: "/v1/tokens/tok_1%2F..%2Fx%3Fy",
		},
		{
			name: "UpdateToken",
			call: func(ctx context.Context, c *Client) (any, error) {
				p := new(TokenPatch).SetName("renamed").ClearExpiresAt().SetScopes([]string{"a:b"}).ClearMetadata()
				return c.UpdateToken(ctx, "tok_1", p)
			},
			reply:  reply{Status: 200, ContentType: "application/json", Body: tokenJSON},
			method: "PATCH", path: "/v1/tokens/tok_1",
			body: `{"name":"renamed","expires_at":null,"scopes":["a:b"],"metadata":null}`,
		},
		{
			name:   "UpdateTokenNil",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.UpdateToken(ctx, "tok_1", nil) },
			reply:  reply{Status: 200, ContentType: "application/json", Body: tokenJSON},
			method: "PATCH", path: "/v1/tokens/tok_1", body: `{}`,
		},
		{
			name: "RotateToken",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.RotateToken(ctx, "tok_1", &RotateRequest{GracePeriod: Duration(24 * time.Hour)})
			},
			reply:  reply{Status: 200, ContentType: "application/json", Body: issuedJSON("kw_new")},
			method: "POST", path: "/v1/tokens/tok_1/rotate", body: `{"grace_period":"24h"}`,
			checkResp: func(t *testing.T, got any) {
				if s := got.(*IssuedToken).Secret; s != "kw_new" {
					t.Errorf("secret = %q", s)
				}
			},
		},
		{
			name:   "RotateTokenNoGrace",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.RotateToken(ctx, "tok_1", nil) },
			reply:  reply{Status: 200, ContentType: "application/json", Body: issuedJSON("kw_new")},
			method: "POST", path: "/v1/tokens/tok_1/rotate", body: `{}`,
		},
		{
			name:   "RevokeToken",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.RevokeToken(ctx, "tok_1", "leaked") },
			reply:  reply{Status: 200, ContentType: "application/json", Body: tokenJSON},
			method: "POST", path: "/v1/tokens/tok_1/revoke", body: `{"reason":"leaked"}`,
		},
		{
			name:   "SuspendToken",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.SuspendToken(ctx, "tok_1", "") },
			reply:  reply{Status: 200, ContentType: "application/json", Body: tokenJSON},
			method: "POST", path: "/v1/tokens/tok_1/suspend", body: `{}`,
		},
		{
			name:   "ResumeToken",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ResumeToken(ctx, "tok_1", "ok now") },
			reply:  reply{Status: 200, ContentType: "application/json", Body: tokenJSON},
			method: "POST", path: "/v1/tokens/tok_1/resume", body: `{"reason":"ok now"}`,
		},
		{
			name: "Verify",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Verify(ctx, VerifyRequest{Token: "kw_x", Scopes: []string{"orders:read"}, IP: "203.0.113.7"})
			},
			reply: reply{Status: 200, ContentType: "application/json", Body: `{"valid":true,"code":"VALID","token_id":"tok_1","name":"ci",
				"subject":"customer-42","scopes":["orders:read"],"metadata":{"team":"payments"},"expires_at":null,
				"rate_limit":{"limit":100,"remaining":99,"reset":60},"quota":{"limit":10000,"remaining":9999,"reset":691200}}`},
			method: "POST", path: "/v1/verify", body: `{"token":"kw_x","scopes":["orders:read"],"ip":"203.0.113.7"}`,
			checkResp: func(t *testing.T, got any) {
				r := got.(*VerifyResponse)
				if !r.Valid || r.Code != CodeValid || r.TokenID != "tok_1" || r.RateLimit.Remaining != 99 || r.Quota.Reset != 691200 {
					t.Errorf("got %+v", r)
				}
			},
		},
		{
			name: "VerifyMinimal",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Verify(ctx, VerifyRequest{Token: "garbage"})
			},
			reply:  reply{Status: 200, ContentType: "application/json", Body: `{"valid":false,"code":"MALFORMED"}`},
			method: "POST", path: "/v1/verify", body: `{"token":"garbage"}`,
		},
		{
			name: "CreateWorkspace",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateWorkspace(ctx, CreateWorkspaceRequest{Name: "acme", TokenPrefix: "acme"})
			},
			reply: reply{Status: 201, ContentType: "application/json",
				Body: `{"id":"ws_1","name":"acme","token_prefix":"acme","created_at":"2026-11-23T10:00:00Z","token":"acme_x"}`},
			method: "POST", path: "/v1/workspaces", body: `{"name":"acme","token_prefix":"acme"}`,
			checkResp: func(t *testing.T, got any) {
				r := got.(*CreateWorkspaceResponse)
				if r.ID != "ws_1" || r.TokenPrefix != "acme" || r.Token != "acme_x" || r.CreatedAt.IsZero() {
					t.Errorf("got %+v", r)
				}
			},
		},
		{
			name:   "ListWorkspaces",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListWorkspaces(ctx, ListOptions{Limit: 2}) },
			reply:  reply{Status: 200, ContentType: "application/json", Body: `{"items":[{"id":"ws_1","name":"default","token_prefix":"kw","created_at":"2026-11-23T10:00:00Z"}]}`},
			method: "GET", path: "/v1/workspaces", query: url.Values{"limit": {"2"}},
			checkResp: func(t *testing.T, got any) {
				if l := got.(*List[Workspace]); len(l.Items) != 1 || l.Items[0].Name != "default" || l.NextCursor != "" {
					t.Errorf("got %+v", l)
				}
			},
		},
		{
			name: "ListAudit",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ListAudit(ctx, ListOptions{Cursor: "evt_9"})
			},
			reply: reply{Status: 200, ContentType: "application/json", Body: `{"items":[{"id":"evt_1","time":"2026-11-23T10:00:00Z",
				"action":"token.update","actor":{"type":"token","id":"tok_0"},"target":"tok_1","ip":"127.0.0.1","user_agent":"ua",
				"request_id":"req_1","changes":{"name":{"from":"a","to":"b"}}}],"next_cursor":"evt_1"}`},
			method: "GET", path: "/v1/audit", query: url.Values{"cursor": {"evt_9"}},
			checkResp: func(t *testing.T, got any) {
				l := got.(*List[AuditEvent])
				e := l.Items[0]
				if e.Action != "token.update" || e.Actor != (Actor{"token", "tok_0"}) || e.RequestID != "req_1" || e.Changes["name"] == nil {
					t.Errorf("got %+v", e)
				}
			},
		},
		{
			name:   "IntrospectActive",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Introspect(ctx, "kw_some+token") },
			reply:  reply{Status: 200, ContentType: "application/json", Body: `{"active":true,"token_type":"Bearer","scope":"a b","token_id":"tok_1"}`},
			method: "POST", path: "/oauth2/introspect", form: url.Values{"token": {"kw_some+token"}},
			checkResp: func(t *testing.T, got any) {
				in := got.(*Introspection)
				if !in.Active || in.Fields["scope"] != "a b" || !strings.HasPrefix(string(in.Raw), `{"active":true`) {
					t.Errorf("got %+v", in)
				}
			},
		},
		{
			name:   "IntrospectInactive",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Introspect(ctx, "kw_x") },
			reply:  reply{Status: 200, ContentType: "application/json", Body: `{"active":false}`},
			method: "POST", path: "/oauth2/introspect", form: url.Values{"token": {"kw_x"}},
			checkResp: func(t *testing.T, got any) {
				in := got.(*Introspection)
				if in.Active || string(in.Raw) != `{"active":false}` {
					t.Errorf("got %+v", in)
				}
			},
		},
		{
			name:  "OAuthRevoke",
			call:  func(ctx context.Context, c *Client) (any, error) { return nil, c.OAuthRevoke(ctx, "kw_x") },
			reply: reply{Status: 200}, method: "POST", path: "/oauth2/revoke",
			form: url.Values{"token": {"kw_x"}},
		},
		{
			name:   "Health",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Health(ctx) },
			reply:  reply{Status: 200, ContentType: "text/plain", Body: "ok"},
			method: "GET", path: "/healthz", noAuth: true,
		},
		{
			name:   "Ready",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Ready(ctx) },
			reply:  reply{Status: 200, ContentType: "text/plain", Body: "ok"},
			method: "GET", path: "/readyz", noAuth: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, seen := newTestClient(t, tc.reply)
			got, err := tc.call(context.Background(), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if len(*seen) != 1 {
				t.Fatalf("server saw %d requests, want 1", len(*seen))
			}
			r := (*seen)[0]
			if r.Method != tc.method || r.Path != tc.path {
				t.Errorf("request = %s %s, want %s %s", r.Method, r.Path, tc.method, tc.path)
			}
			if tc.query != nil {
				q, err := url.ParseQuery(r.RawQuery)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(q, tc.query) {
					t.Errorf("query = %v, want %v", q, tc.query)
				}
			} else if r.RawQuery != "" {
				t.Errorf("query = %q, want none", r.RawQuery)
			}
			wantAuth := "Bearer " + testToken
			if tc.noAuth {
				wantAuth = ""
			}
			if got := r.Header.Get("Authorization"); got != wantAuth {
				t.Errorf("Authorization = %q, want %q", got, wantAuth)
			}
			if got := r.Header.Get("User-Agent"); got != "keyward-test/1" {
				t.Errorf("User-Agent = %q", got)
			}
			if got := r.Header.Get("Accept"); got != "application/json" {
				t.Errorf("Accept = %q", got)
			}
			switch {
			case tc.body != "":
				if ct := r.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				if !jsonEqual(t, r.Body, []byte(tc.body)) {
					t.Errorf("body = %s\nwant %s", r.Body, tc.body)
				}
			case tc.form != nil:
				if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
					t.Errorf("Content-Type = %q, want a form", ct)
				}
				f, err := url.ParseQuery(string(r.Body))
				if err != nil || !reflect.DeepEqual(f, tc.form) {
					t.Errorf("form = %q, want %v", r.Body, tc.form)
				}
			default:
				if len(r.Body) != 0 || r.Header.Get("Content-Type") != "" {
					t.Errorf("unexpected body %q (Content-Type %q)", r.Body, r.Header.Get("Content-Type"))
				}
			}
			if tc.checkResp != nil {
				tc.checkResp(t, got)
			}
		})
	}
}

func TestBasePathPrefix(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, tokenJSON)
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/keyward/", testToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetToken(context.Background(), "tok_1"); err != nil {
		t.Fatal(err)
	}
	if path != "/keyward/v1/tokens/tok_1" {
		t.Errorf("path = %q", path)
	}
}

func TestIntrospectBasicAuth(t *testing.T) {
	var user, pass, bearer string
	var ok bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok = r.BasicAuth()
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer") {
			bearer = a
		}
		io.WriteString(w, `{"active":false}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, testToken, WithOAuthBasicAuth("my-client"))
	if _, err := c.Introspect(context.Background(), "kw_x"); err != nil {
		t.Fatal(err)
	}
	if !ok || user != "my-client" || pass != testToken || bearer != "" {
		t.Errorf("basic auth = %v %q %q, bearer %q", ok, user, pass, bearer)
	}
}

func TestTokenJSONRoundTrip(t *testing.T) {
	var tok Token
	if err := json.Unmarshal([]byte(tokenJSON), &tok); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, b, []byte(tokenJSON)) {
		t.Errorf("round trip changed the token:\n%s\nwant\n%s", b, tokenJSON)
	}
	var it IssuedToken
	if err := json.Unmarshal([]byte(issuedJSON("kw_s")), &it); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(it)
	if !jsonEqual(t, b, []byte(issuedJSON("kw_s"))) {
		t.Errorf("issued round trip = %s", b)
	}
}

func TestVerifyResponseJSON(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"Unidentified", `{"valid":false,"code":"NOT_FOUND"}`},
		{"IdentifiedNoLimits", `{"valid":false,"code":"REVOKED","token_id":"tok_1","name":"n","subject":"","scopes":[],"metadata":null,"expires_at":null}`},
		{"Valid", `{"valid":true,"code":"VALID","token_id":"tok_1","name":"n","subject":"s","scopes":["a"],"metadata":{"k":"v"},
			"expires_at":"2026-12-23T10:00:00Z","rate_limit":{"limit":1,"remaining":0,"reset":5},"quota":{"limit":2,"remaining":1,"reset":9}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r VerifyResponse
			if err := json.Unmarshal([]byte(tc.in), &r); err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, b, []byte(tc.in)) {
				t.Errorf("got %s\nwant %s", b, tc.in)
			}
		})
	}
}

func TestTokenPatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch *TokenPatch
		want  string
	}{
		{"Nil", nil, `{}`},
		{"Empty", new(TokenPatch), `{}`},
		{"Values", new(TokenPatch).SetName("n").SetSubject("s").SetRateLimit(RateLimit{5, Duration(time.Second)}).
			SetQuota(Quota{7, PeriodDay}).SetAllowedCIDRs(nil).SetMetadata(map[string]any{"a": 1.0}).
			SetExpiresAt(time.Date(2027, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600))),
			`{"name":"n","subject":"s","rate_limit":{"limit":5,"window":"1s"},"quota":{"limit":7,"period":"day"},
			"allowed_cidrs":[],"metadata":{"a":1},"expires_at":"2026-12-31T23:00:00Z"}`},
		{"Clears", new(TokenPatch).ClearExpiresAt().ClearAllowedCIDRs().ClearRateLimit().ClearQuota().ClearSubject().ClearMetadata().ClearScopes(),
			`{"expires_at":null,"allowed_cidrs":null,"rate_limit":null,"quota":null,"subject":null,"metadata":null,"scopes":null}`},
		{"SetThenUnset", new(TokenPatch).SetName("n").ClearQuota().Unset("name"), `{"quota":null}`},
		{"Raw", new(TokenPatch).Set("unknown_field", true), `{"unknown_field":true}`},
		{"ExpiresIn", new(TokenPatch).SetExpiresAt(time.Unix(0, 0)).SetExpiresIn(720 * time.Hour), `{"expires_in":"720h"}`},
		{"ExpiresAtAfterIn", new(TokenPatch).SetExpiresIn(time.Hour).SetExpiresAt(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)), `{"expires_at":"2027-01-01T00:00:00Z"}`},
		// The server refuses expires_in with a null expires_at ("not
		// both"): the last call wins, as between the two setters.
		{"ClearExpiresAtAfterIn", new(TokenPatch).SetExpiresIn(time.Hour).ClearExpiresAt(), `{"expires_at":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.patch.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, b, []byte(tc.want)) {
				t.Errorf("patch = %s, want %s", b, tc.want)
			}
		})
	}
	p := new(TokenPatch).SetName("n").ClearQuota()
	if got := p.Fields(); !reflect.DeepEqual(got, []string{"name", "quota"}) || p.Len() != 2 {
		t.Errorf("Fields = %v, Len = %d", got, p.Len())
	}
}

func TestAllTokens(t *testing.T) {
	page := func(ids []string, next string) string {
		var items []string
		for _, id := range ids {
			items = append(items, `{"id":"`+id+`","name":"n","scopes":[],"allowed_cidrs":[]}`)
		}
		s := `{"items":[` + strings.Join(items, ",") + `]`
		if next != "" {
			s += `,"next_cursor":"` + next + `"`
		}
		return s + "}"
	}
	c, seen := newTestClient(t,
		reply{Status: 200, ContentType: "application/json", Body: page([]string{"tok_1", "tok_2"}, "tok_2")},
		reply{Status: 200, ContentType: "application/json", Body: page([]string{"tok_3"}, "")},
	)
	toks, err := c.AllTokens(context.Background(), TokenFilter{State: "active", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tok := range toks {
		ids = append(ids, tok.ID)
	}
	if !reflect.DeepEqual(ids, []string{"tok_1", "tok_2", "tok_3"}) {
		t.Errorf("ids = %v", ids)
	}
	if len(*seen) != 2 || (*seen)[0].RawQuery != "limit=2&state=active" || (*seen)[1].RawQuery != "cursor=tok_2&limit=2&state=active" {
		t.Errorf("requests = %+v", *seen)
	}

	t.Run("ErrStopsIteration", func(t *testing.T) {
		c, seen := newTestClient(t,
			reply{Status: 200, ContentType: "application/json", Body: page([]string{"tok_1"}, "tok_1")},
			reply{Status: 500, ContentType: "application/problem+json", Body: `{"title":"Internal Server Error","status":500,"code":"internal"}`},
		)
		var n int
		var errs []error
		for _, err := range c.Tokens(context.Background(), TokenFilter{}) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			n++
		}
		if n != 1 || len(errs) != 1 || StatusCode(errs[0]) != 500 || len(*seen) != 2 {
			t.Errorf("n = %d, errs = %v, requests = %d", n, errs, len(*seen))
		}
		if _, err := c.AllTokens(context.Background(), TokenFilter{}); StatusCode(err) != 500 {
			t.Errorf("AllTokens error = %v", err)
		}
	})
	t.Run("BreakStopsFetching", func(t *testing.T) {
		c, seen := newTestClient(t, reply{Status: 200, ContentType: "application/json", Body: page([]string{"tok_1", "tok_2"}, "tok_2")})
		for range c.Tokens(context.Background(), TokenFilter{}) {
			break
		}
		if len(*seen) != 1 {
			t.Errorf("requests = %d, want 1", len(*seen))
		}
	})
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		reply      reply
		want       Error
		wantString string
		is         func(error) bool
	}{
		{
			name: "Validation",
			reply: reply{Status: 400, ContentType: "application/problem+json", Body: `{"type":"about:blank","title":"Bad Request","status":400,
				"detail":"the request is invalid","code":"invalid","request_id":"req_1",
				"errors":[{"pointer":"/name","detail":"name is required"},{"pointer":"/scopes/0","detail":"bad scope"}]}`},
			want: Error{StatusCode: 400, Type: "about:blank", Code: "invalid", Title: "Bad Request", Detail: "the request is invalid", RequestID: "req_1",
				Errors: []FieldError{{"/name", "name is required"}, {"/scopes/0", "bad scope"}}},
			wantString: "the request is invalid: /name: name is required; /scopes/0: bad scope (HTTP 400 invalid, request req_1)",
			is:         IsInvalid,
		},
		{
			// The server's detail repeats its one field error: said once.
			name: "ValidationOneField",
			reply: reply{Status: 400, ContentType: "application/problem+json", Body: `{"title":"Bad Request","status":400,
				"detail":"scope \"BAD\": segments use only a-z 0-9 _ . -","code":"invalid",
				"errors":[{"pointer":"/scopes/0","detail":"scope \"BAD\": segments use only a-z 0-9 _ . -"}]}`},
			want: Error{StatusCode: 400, Code: "invalid", Title: "Bad Request", Detail: `scope "BAD": segments use only a-z 0-9 _ . -`,
				Errors: []FieldError{{"/scopes/0", `scope "BAD": segments use only a-z 0-9 _ . -`}}},
			wantString: `/scopes/0: scope "BAD": segments use only a-z 0-9 _ . - (HTTP 400 invalid)`,
			is:         IsInvalid,
		},
		{
			name: "NotFound",
			reply: reply{Status: 404, ContentType: "application/problem+json; charset=utf-8", Header: map[string]string{"X-Request-Id": "req_h"},
				Body: `{"title":"Not Found","status":404,"detail":"token not found","code":"not_found"}`},
			want:       Error{StatusCode: 404, Code: "not_found", Title: "Not Found", Detail: "token not found", RequestID: "req_h"},
			wantString: "token not found (HTTP 404 not_found, request req_h)",
			is:         IsNotFound,
		},
		{
			name:       "UnauthorizedNoBody",
			reply:      reply{Status: 401, Header: map[string]string{"WWW-Authenticate": `Bearer realm="keyward"`}},
			want:       Error{StatusCode: 401, Title: "Unauthorized"},
			wantString: "Unauthorized (HTTP 401)",
			is:         IsUnauthorized,
		},
		{
			name:       "Forbidden",
			reply:      reply{Status: 403, ContentType: "application/problem+json", Body: `{"title":"Forbidden","status":403,"code":"forbidden","detail":"needs keyward:tokens:write"}`},
			want:       Error{StatusCode: 403, Code: "forbidden", Title: "Forbidden", Detail: "needs keyward:tokens:write"},
			wantString: "needs keyward:tokens:write (HTTP 403 forbidden)",
			is:         IsForbidden,
		},
		{
			name:       "Conflict",
			reply:      reply{Status: 409, ContentType: "application/problem+json", Body: `{"title":"Conflict","status":409,"code":"conflict","detail":"the token is revoked"}`},
			want:       Error{StatusCode: 409, Code: "conflict", Title: "Conflict", Detail: "the token is revoked"},
			wantString: "the token is revoked (HTTP 409 conflict)",
			is:         IsConflict,
		},
		{
			name: "RateLimited",
			reply: reply{Status: 429, ContentType: "application/problem+json", Header: map[string]string{"Retry-After": "17"},
				Body: `{"title":"Too Many Requests","status":429,"code":"rate_limited","detail":"this token is over its limit; retry later"}`},
			want:       Error{StatusCode: 429, Code: "rate_limited", Title: "Too Many Requests", Detail: "this token is over its limit; retry later", RetryAfter: 17 * time.Second},
			wantString: "this token is over its limit; retry later (HTTP 429 rate_limited)",
			is:         IsRateLimited,
		},
		{
			name: "Unavailable",
			reply: reply{Status: 503, ContentType: "application/problem+json", Header: map[string]string{"Retry-After": "1"},
				Body: `{"title":"Service Unavailable","status":503,"code":"unavailable","detail":"the token store is unavailable"}`},
			want:       Error{StatusCode: 503, Code: "unavailable", Title: "Service Unavailable", Detail: "the token store is unavailable", RetryAfter: time.Second},
			wantString: "the token store is unavailable (HTTP 503 unavailable)",
			is:         IsUnavailable,
		},
		{
			// The OAuth routes answer OAuth's error format (RFC 6749 §5.2).
			name:       "OAuthInvalidClient",
			reply:      reply{Status: 401, ContentType: "application/json", Body: `{"error":"invalid_client","error_description":"the token is not valid"}`},
			want:       Error{StatusCode: 401, Code: "unauthorized", Title: "Unauthorized", Detail: "the token is not valid"},
			wantString: "the token is not valid (HTTP 401 unauthorized)",
			is:         IsUnauthorized,
		},
		{
			name:       "OAuthTemporarilyUnavailable",
			reply:      reply{Status: 503, ContentType: "application/json", Header: map[string]string{"Retry-After": "1"}, Body: `{"error":"temporarily_unavailable"}`},
			want:       Error{StatusCode: 503, Code: "unavailable", Title: "Service Unavailable", Detail: "temporarily_unavailable", RetryAfter: time.Second},
			wantString: "temporarily_unavailable (HTTP 503 unavailable)",
			is:         IsUnavailable,
		},
		{
			name:       "HTMLFromProxy",
			reply:      reply{Status: 502, ContentType: "text/html", Body: "<html>bad gateway</html>"},
			want:       Error{StatusCode: 502, Title: "Bad Gateway"},
			wantString: "Bad Gateway (HTTP 502)",
		},
		{
			name:       "GarbledJSON",
			reply:      reply{Status: 500, ContentType: "application/json", Body: `{"title":`},
			want:       Error{StatusCode: 500, Title: "Internal Server Error"},
			wantString: "Internal Server Error (HTTP 500)",
		},
		{
			name: "RedactsEchoedToken",
			reply: reply{Status: 401, ContentType: "application/problem+json",
				Body: `{"title":"Unauthorized","status":401,"code":"unauthorized","detail":"bad token ` + testToken + "\\n" + `x"}`},
			want:       Error{StatusCode: 401, Code: "unauthorized", Title: "Unauthorized", Detail: "bad token [redacted]\nx"},
			wantString: "bad token [redacted] x (HTTP 401 unauthorized)",
			is:         IsUnauthorized,
		},
		{
			// Another secret, such as the one given to Verify, echoed by
			// a proxy before keyward.
			name: "RedactsEchoedOtherSecret",
			reply: reply{Status: 400, ContentType: "application/problem+json",
				Body: `{"title":"Bad Request","status":400,"code":"invalid","detail":"bad body","errors":[{"pointer":"/token","detail":"token kw_9876543210abcdefghijABCDEFGHIJ01abcd42 is odd"}]}`},
			want:       Error{StatusCode: 400, Code: "invalid", Title: "Bad Request", Detail: "bad body", Errors: []FieldError{{"/token", "token kw_[redacted] is odd"}}},
			wantString: "bad body: /token: token kw_[redacted] is odd (HTTP 400 invalid)",
			is:         IsInvalid,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestClient(t, tc.reply)
			_, err := c.GetToken(context.Background(), "tok_1")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if !reflect.DeepEqual(*e, tc.want) {
				t.Errorf("error = %#v\nwant %#v", *e, tc.want)
			}
			if got := e.Error(); got != tc.wantString {
				t.Errorf("Error() = %q\nwant %q", got, tc.wantString)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("error leaks the token")
			}
			if tc.is != nil && !tc.is(err) {
				t.Errorf("predicate false for %v", err)
			}
			if got := RetryAfter(fmt.Errorf("wrapped: %w", err)); got != tc.want.RetryAfter {
				t.Errorf("RetryAfter = %v, want %v", got, tc.want.RetryAfter)
			}
			for _, is := range []func(error) bool{IsInvalid, IsUnauthorized, IsForbidden, IsNotFound, IsConflict, IsRateLimited, IsUnavailable} {
				if reflect.ValueOf(is).Pointer() != reflect.ValueOf(tc.is).Pointer() && is(err) {
					t.Errorf("another predicate is true for %v", err)
				}
			}
		})
	}
}

func TestTransportErrorHasNoToken(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, _ := New(url, testToken)
	_, err := c.ListTokens(context.Background(), TokenFilter{})
	if err == nil {
		t.Fatal("no error from a closed server")
	}
	if strings.Contains(err.Error(), testToken) {
		t.Errorf("error %q leaks the token", err)
	}
	if StatusCode(err) != 0 || IsNotFound(err) {
		t.Errorf("transport error has a status")
	}
}

func TestDoRaw(t *testing.T) {
	c, seen := newTestClient(t, reply{Status: 200, ContentType: "application/json", Body: `{"x": 1}`})
	var raw json.RawMessage
	if err := c.Do(context.Background(), "POST", "/v1/tokens?dry=1", json.RawMessage(`{"name":"n","bogus":1}`), &raw); err != nil {
		t.Fatal(err)
	}
	r := (*seen)[0]
	if string(r.Body) != `{"name":"n","bogus":1}` || r.RawQuery != "dry=1" || string(raw) != `{"x": 1}` {
		t.Errorf("request %+v, response %s", r, raw)
	}
	if err := c.Do(context.Background(), "GET", "v1/tokens", nil, nil); err == nil {
		t.Error("a relative path was accepted")
	}
}

// TestIncompleteAnswers: a success answer without what it must hold (a
// server that is not keyward answering 200 {}) is an error, not a token
// with empty fields.
func TestIncompleteAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	}))
	defer srv.Close()
	c, err := New(srv.URL, testToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"CreateToken": func() error { _, err := c.CreateToken(ctx, CreateTokenRequest{Name: "x"}); return err },
		"GetToken":    func() error { _, err := c.GetToken(ctx, "tok_1"); return err },
		"UpdateToken": func() error { _, err := c.UpdateToken(ctx, "tok_1", &TokenPatch{}); return err },
		"RotateToken": func() error { _, err := c.RotateToken(ctx, "tok_1", nil); return err },
		"RevokeToken": func() error { _, err := c.RevokeToken(ctx, "tok_1", ""); return err },
		"Verify":      func() error { _, err := c.Verify(ctx, VerifyRequest{Token: "kw_x"}); return err },
		"CreateWorkspace": func() error {
			_, err := c.CreateWorkspace(ctx, CreateWorkspaceRequest{Name: "acme"})
			return err
		},
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "the answer lacks") {
			t.Errorf("%s on 200 {}: %v, want an error", name, err)
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{"120", 2 * time.Minute},
		{" 5 ", 5 * time.Second},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := retryAfter(tc.in, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestRedirectKeepsToken checks that the management token follows no
// redirect to another port of the same host, where net/http would send it
// again.
func TestRedirectKeepsToken(t *testing.T) {
	var leaked []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = append(leaked, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, tokenJSON)
	}))
	defer other.Close()
	otherURL, _ := url.Parse(other.URL)
	// The same host name as other, another port.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/tokens/tok_same" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, tokenJSON)
			return
		}
		if r.URL.Path == "/v1/tokens/tok_local" {
			http.Redirect(w, r, "/v1/tokens/tok_same", http.StatusFound)
			return
		}
		http.Redirect(w, r, "http://"+otherURL.Host+r.URL.Path, http.StatusFound)
	}))
	defer srv.Close()
	c, err := New(srv.URL, testToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetToken(context.Background(), "tok_1")
	if StatusCode(err) != http.StatusFound {
		t.Errorf("redirect to another port: err = %v, want the 302 as an *Error", err)
	}
	if len(leaked) != 0 {
		t.Errorf("the other port got Authorization %q", leaked)
	}
	// A redirect within the same origin is followed.
	if tok, err := c.GetToken(context.Background(), "tok_local"); err != nil || tok.ID != "tok_01jd8" {
		t.Errorf("same-origin redirect: %v, %v", tok, err)
	}

	for _, tc := range []struct {
		from, to string
		follow   bool
	}{
		{"https://k.example.com/v1/x", "https://k.example.com/v1/y", true},
		{"http://k.example.com/v1/x", "https://k.example.com/v1/x", true},
		{"http://k.example.com:8080/v1/x", "https://k.example.com/v1/x", true},
		{"https://k.example.com/v1/x", "http://k.example.com/v1/x", false},
		{"https://k.example.com/v1/x", "https://k.example.com:8443/v1/x", false},
		{"http://k.example.com/v1/x", "https://k.example.com:8443/v1/x", false},
		{"https://k.example.com/v1/x", "https://other.example.com/v1/x", false},
	} {
		from, _ := http.NewRequest("GET", tc.from, nil)
		to, _ := http.NewRequest("GET", tc.to, nil)
		if got := SameOriginRedirect(to, []*http.Request{from}) == nil; got != tc.follow {
			t.Errorf("%s -> %s: follow = %v, want %v", tc.from, tc.to, got, tc.follow)
		}
	}

	// A caller's own http.Client keeps the token to the origin with the
	// exported policy.
	leaked = nil
	c, err = New(srv.URL, testToken, WithHTTPClient(&http.Client{Timeout: time.Minute, CheckRedirect: SameOriginRedirect}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetToken(context.Background(), "tok_1"); StatusCode(err) != http.StatusFound || len(leaked) != 0 {
		t.Errorf("with SameOriginRedirect: err = %v, the other port got %q", err, leaked)
	}
}
