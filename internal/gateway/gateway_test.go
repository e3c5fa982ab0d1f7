package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/verify"
)

// fakeVerifier answers by token string; it checks scopes against the
// token's granted scopes so that routes can be told apart.
type fakeVerifier struct {
	mu      sync.Mutex
	tokens  map[string]verify.Result
	lastReq verify.Request
}

func (f *fakeVerifier) Verify(ctx context.Context, req verify.Request) verify.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastReq = req
	res, ok := f.tokens[req.Token]
	if !ok {
		return verify.Result{Outcome: keyward.NotFound}
	}
	if res.Outcome == keyward.Valid && res.Token != nil {
		for _, s := range req.Scopes {
			if !slices.Contains(res.Token.Scopes, s) {
				res.Outcome, res.MissingScope = keyward.InsufficientScope, s
				break
			}
		}
	}
	return res
}

func (f *fakeVerifier) last() verify.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReq
}

func newFake() *fakeVerifier {
	tok := func(id string, scopes ...string) *keyward.Token {
		return &keyward.Token{ID: id, Subject: "user-" + id, Scopes: scopes}
	}
	// The refused tokens have limits too: every response of a limited
	// token shows them (PRODUCT §5), its 401s too.
	lim := verify.Limit{Set: true, Limit: 100, Remaining: 42, Reset: 17 * time.Second, Window: time.Minute}
	return &fakeVerifier{tokens: map[string]verify.Result{
		"good":      {Outcome: keyward.Valid, Token: tok("tok_good", "orders:read", "orders:write")},
		"reader":    {Outcome: keyward.Valid, Token: tok("tok_reader", "orders:read")},
		"limited":   {Outcome: keyward.Valid, Token: tok("tok_limited", "orders:read"), Rate: lim},
		"both":      {Outcome: keyward.Valid, Token: tok("tok_both", "orders:read"), Rate: lim, Quota: verify.Limit{Set: true, Limit: 1000, Remaining: 5, Reset: time.Hour, Window: 24 * time.Hour}},
		"malformed": {Outcome: keyward.Malformed},
		"revoked":   {Outcome: keyward.Revoked, Token: tok("tok_r"), Rate: lim},
		"suspended": {Outcome: keyward.Suspended, Token: tok("tok_s"), Rate: lim},
		"pending":   {Outcome: keyward.PendingApproval, Token: tok("tok_p"), Rate: lim},
		"expired":   {Outcome: keyward.Expired, Token: tok("tok_e"), Rate: lim},
		"ipblocked": {Outcome: keyward.IPNotAllowed, Token: tok("tok_i"), Rate: lim},
		"ratelimit": {Outcome: keyward.RateLimited, Token: tok("tok_rl"), Rate: verify.Limit{Set: true, Limit: 100, Remaining: 0, Reset: 2500 * time.Millisecond, Window: time.Minute}},
		"quota":     {Outcome: keyward.QuotaExceeded, Token: tok("tok_q"), Quota: verify.Limit{Set: true, Limit: 10, Remaining: 0, Reset: time.Hour, Window: 24 * time.Hour}},
		// A quota counted in total: no window, and no slot ever frees.
		"quotatotal": {Outcome: keyward.QuotaExceeded, Token: tok("tok_qt"), Quota: verify.Limit{Set: true, Limit: 10, Remaining: 0}},
		// The fallback of a failing global limiter, for a token with a
		// total quota: come back when the limiter may answer.
		"fallback":   {Outcome: keyward.RateLimited, Token: tok("tok_fb"), Quota: verify.Limit{Set: true, Limit: 10, Reset: time.Second}},
		"storedown":  {Outcome: keyward.NotFound, Err: errors.New("db down")},
		"apikeyonly": {Outcome: keyward.Valid, Token: tok("tok_k", "orders:read")},
	}}
}

// seen is what an upstream received.
type seen struct {
	Path    string
	Header  http.Header
	Trailer http.Header
	Host    string
}

// echoUpstream answers 200 with the request it got as JSON.
func echoUpstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		io.Copy(io.Discard, r.Body) // for the trailers
		json.NewEncoder(w).Encode(seen{Path: r.URL.RequestURI(), Header: r.Header, Trailer: r.Trailer, Host: r.Host})
	}))
	t.Cleanup(s.Close)
	return s
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// gateway parses yml (with {{NAME}} replaced by vars) and serves it.
func gateway(t *testing.T, yml string, vars map[string]string) (*testServer, *fakeVerifier, *logBuf) {
	t.Helper()
	for k, v := range vars {
		yml = strings.ReplaceAll(yml, "{{"+k+"}}", v)
	}
	cfg, err := Parse([]byte(yml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	fv := newFake()
	lb := &logBuf{}
	h := NewHandler(cfg, fv, "ws_1", slog.New(slog.NewJSONHandler(lb, nil)))
	t.Cleanup(func() { h.Close() })
	return serveGateway(t, h), fv, lb
}

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func upstreamSaw(t *testing.T, body string) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("upstream body %q: %v", body, err)
	}
	return s
}

const baseConfig = `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: orders-read
    path_prefix: /orders
    methods: [GET, HEAD]
    upstreams: [{{U}}]
    scopes: [orders:read]
  - name: orders-write
    path_prefix: /orders
    methods: [POST]
    upstreams: [{{U}}]
    scopes: [orders:write]
  - name: orders-special
    path_prefix: /orders/special
    upstreams: [{{U2}}]
    scopes: [orders:read]
  - name: public
    path_prefix: /public
    upstreams: [{{U}}]
    auth: none
  - name: maybe
    path_prefix: /maybe
    upstreams: [{{U}}]
    auth: optional
  - name: keyed
    path_prefix: /keyed
    upstreams: [{{U}}]
    token_header: X-API-Key
    scopes: [orders:read]
  - name: stripped
    path_prefix: /api/v1
    strip_prefix: true
    upstreams: [{{U}}/base]
`

func base(t *testing.T) (*testServer, *fakeVerifier, *logBuf) {
	t.Helper()
	u := echoUpstream(t, "u1")
	u2 := echoUpstream(t, "u2")
	return gateway(t, baseConfig, map[string]string{"U": u.URL, "U2": u2.URL})
}

func TestOutcomes(t *testing.T) {
	gw, _, _ := base(t)
	var invalidBody string
	for _, tc := range []struct {
		name, token   string
		status        int
		challenge     string
		retryAfter    string
		rateLimit     string
		invalidSameAs bool
	}{
		{"OK", "good", 200, "", "", "", false},
		{"NoCredential", "", 401, `Bearer realm="keyward"`, "", "", false},
		{"ErrMalformed", "malformed", 401, `Bearer realm="keyward", error="invalid_token"`, "", "", true},
		{"ErrNotFound", "nope", 401, `Bearer realm="keyward", error="invalid_token"`, "", "", true},
		{"ErrRevoked", "revoked", 401, `Bearer realm="keyward", error="invalid_token"`, "", `"default";r=42;t=17`, true},
		{"ErrSuspended", "suspended", 401, `Bearer realm="keyward", error="invalid_token"`, "", `"default";r=42;t=17`, true},
		{"ErrPending", "pending", 401, `Bearer realm="keyward", error="invalid_token"`, "", `"default";r=42;t=17`, true},
		{"ErrExpired", "expired", 401, `Bearer realm="keyward", error="invalid_token"`, "", `"default";r=42;t=17`, true},
		{"ErrIPNotAllowed", "ipblocked", 401, `Bearer realm="keyward", error="invalid_token"`, "", `"default";r=42;t=17`, true},
		{"ErrInsufficientScope", "reader", 403, `Bearer realm="keyward", error="insufficient_scope", scope="orders:write"`, "", "", false},
		{"ErrRateLimited", "ratelimit", 429, "", "3", `"default";r=0;t=3`, false},
		{"ErrQuotaExceeded", "quota", 429, "", "3600", `"default";r=0;t=3600`, false},
		{"ErrQuotaTotalExceeded", "quotatotal", 429, "", "86400", `"default";r=0`, false},
		{"ErrGlobalFallback", "fallback", 429, "", "1", `"default";r=0;t=1`, false},
		{"ErrStoreDown", "storedown", 503, "", "5", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.token != "" {
				hdr["Authorization"] = "Bearer " + tc.token
			}
			res, body := do(t, "POST", gw.URL+"/orders", hdr)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, body)
			}
			if got := res.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			if got := res.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			if got := res.Header.Get("RateLimit"); got != tc.rateLimit {
				t.Errorf("RateLimit %q, want %q", got, tc.rateLimit)
			}
			if tc.status != 200 {
				if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("Content-Type %q", ct)
				}
				var p problem
				if err := json.Unmarshal([]byte(body), &p); err != nil || p.Status != tc.status {
					t.Errorf("problem body %q: %v", body, err)
				}
			}
			if tc.invalidSameAs {
				var p problem
				json.Unmarshal([]byte(body), &p)
				p.RequestID = ""
				b, _ := json.Marshal(p)
				if invalidBody == "" {
					invalidBody = string(b)
				} else if string(b) != invalidBody {
					t.Errorf("body %s differs from %s", b, invalidBody)
				}
			}
		})
	}
}

// TestInvalidTokenAnswersAlike: every 401 for a presented credential is
// the same answer, byte for byte but for its request id, Date and the
// RateLimit fields PRODUCT §5 puts on every answer of a limited token
// (its fields sorted: the server writes them in no fixed order), whatever
// check failed: its status, challenge and body do not say which.
func TestInvalidTokenAnswersAlike(t *testing.T) {
	gw, _, _ := base(t)
	id := regexp.MustCompile(`req_[0-9a-f]+`)
	date := regexp.MustCompile(`(?m)^(Date|Ratelimit|Ratelimit-Policy): .*\r\n`)
	var want string
	for _, tok := range []string{"nope", "malformed", "revoked", "suspended", "pending", "expired", "ipblocked"} {
		rc := dialRaw(t, gw)
		rc.send("POST /orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		b, err := io.ReadAll(rc.br)
		if err != nil {
			t.Fatal(err)
		}
		got := date.ReplaceAllString(id.ReplaceAllString(string(b), "req_ID"), "")
		if !strings.HasPrefix(got, "HTTP/1.1 401 ") {
			t.Fatalf("%s: %q", tok, got)
		}
		// The fields in order: the server writes them in the map's.
		head, body, _ := strings.Cut(got, "\r\n\r\n")
		lines := strings.Split(head, "\r\n")
		slices.Sort(lines[1:])
		got = strings.Join(lines, "\r\n") + "\r\n\r\n" + body
		if want == "" {
			want = got
		} else if got != want {
			t.Errorf("the 401 for %s:\n%s\ndiffers from the one for an unknown token:\n%s", tok, got, want)
		}
	}
}

func TestIdentityHeaders(t *testing.T) {
	gw, fv, _ := base(t)
	res, body := do(t, "GET", gw.URL+"/orders/1?x=1", map[string]string{
		"Authorization":     "Bearer good",
		"X-Keyward-Subject": "admin",
		"x-keyward-evil":    "1",
		"X-Request-Id":      "abc-123",
		"X-Forwarded-For":   "6.6.6.6",
		// CGI-style servers (WSGI, Rack, PHP) read these as the fields
		// with dashes.
		"X_Keyward_Subject":   "admin",
		"X_keyward_token_id":  "tok_forged",
		"X_Forwarded_For":     "6.6.6.6",
		"X_Request_Id":        "forged",
		"X_Custom":            "kept",
		"X-Real-IP":           "6.6.6.6",
		"True-Client-IP":      "6.6.6.6",
		"X-Client-IP":         "6.6.6.6",
		"Client-IP":           "6.6.6.6",
		"X_Cluster_Client_IP": "6.6.6.6",
		// How the client reached the gateway, which frameworks build
		// URLs from: only a trusted proxy's.
		"X-Forwarded-Port":   "8443",
		"X-Forwarded-Prefix": "/evil",
		"X-Forwarded-Ssl":    "on",
		"X_Forwarded_Scheme": "https",
		"Front-End-Https":    "on",
		"X-Original-URL":     "/admin",
		"X-Scheme":           "https",
		"X_Https":            "on",
	})
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	s := upstreamSaw(t, body)
	for k, vv := range s.Header {
		if strings.Contains(k, "_") && k != "X_custom" {
			t.Errorf("upstream got %s: %q", k, vv)
		}
	}
	if got := s.Header.Get("X_custom"); got != "kept" {
		t.Errorf("an underscore field the gateway does not own: %q, want kept", got)
	}
	want := map[string]string{
		HeaderTokenID:    "tok_good",
		HeaderSubject:    "user-tok_good",
		HeaderScopes:     "orders:read orders:write",
		"X-Request-Id":   "abc-123",
		"Authorization":  "",
		"X-Keyward-Evil": "",
		// RemoteAddr is not a trusted proxy: its X-Forwarded-For is dropped.
		"X-Forwarded-For":    "127.0.0.1",
		"X-Real-Ip":          "127.0.0.1",
		"True-Client-Ip":     "",
		"X-Client-Ip":        "",
		"Client-Ip":          "",
		"X-Forwarded-Proto":  "http",
		"X-Forwarded-Port":   "",
		"X-Forwarded-Prefix": "",
		"X-Forwarded-Ssl":    "",
		"Front-End-Https":    "",
		"X-Original-Url":     "",
		"X-Scheme":           "",
	}
	for k, v := range want {
		if got := strings.Join(s.Header.Values(k), "|"); got != v {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if s.Path != "/orders/1?x=1" {
		t.Errorf("upstream path %q", s.Path)
	}
	if res.Header.Get("X-Request-Id") != "abc-123" {
		t.Errorf("response X-Request-Id %q", res.Header.Get("X-Request-Id"))
	}
	if got := fv.last(); got.WorkspaceID != "ws_1" || got.IP != netip.MustParseAddr("127.0.0.1") || !slices.Equal(got.Scopes, []string{"orders:read"}) {
		t.Errorf("verify request %+v", got)
	}

	// A client request id that is not sane is replaced.
	_, body = do(t, "GET", gw.URL+"/orders", map[string]string{"Authorization": "Bearer good", "X-Request-Id": "bad id!"})
	if id := upstreamSaw(t, body).Header.Get("X-Request-Id"); !strings.HasPrefix(id, keyward.PrefixRequest) {
		t.Errorf("generated request id %q", id)
	}
}

// TestRequestTrailers: a chunked body's trailers reach the upstream but
// those the header would drop (identity, credential, forwarding fields,
// in either spelling) and those a trailer may not carry (RFC 9110 §6.5.1).
func TestRequestTrailers(t *testing.T) {
	gw, _, _ := base(t)
	rc := dialRaw(t, gw)
	rc.send("POST /orders/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3\r\nabc\r\n0\r\n" +
		"X-Keyward-Subject: admin\r\nX_Keyward_Token_Id: tok_forged\r\nAuthorization: Bearer forged\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nX-Request-Id: forged\r\nHost: evil\r\nContent-Length: 3\r\n" +
		"X-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nX_Client_IP: 6.6.6.6\r\nX-Forwarded-Port: 1\r\n" +
		// A space before the colon: Go's reader takes these in trailers,
		// uncanonicalized, and an upstream may trim the space.
		"Authorization : Bearer stolen\r\nHost : evil\r\nX-Real-Ip : 6.6.6.6\r\nContent-Length : 99\r\n" +
		"X-Checksum: sha256=abc\r\n\r\n")
	res, body := rc.read("POST")
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	s := upstreamSaw(t, body)
	if len(s.Trailer) != 1 || s.Trailer.Get("X-Checksum") != "sha256=abc" {
		t.Fatalf("upstream trailers %v, want X-Checksum only", s.Trailer)
	}
	if s.Header.Get(HeaderSubject) != "user-tok_good" || s.Header.Get(HeaderTokenID) != "tok_good" {
		t.Fatalf("upstream identity %v", s.Header)
	}
}

// TestResponseTrailers: the upstream's trailers reach the client but those
// a trailer may not carry and the gateway's own fields.
func TestResponseTrailers(t *testing.T) {
	up := rawUpstreamT(t, func(n int, c net.Conn, br *bufio.Reader) {
		if _, ok := readHead(br); !ok {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, Set-Cookie, X-Request-Id\r\nConnection: close\r\n\r\n"+
			"2\r\nok\r\n0\r\nX-Checksum: sha256=abc\r\nSet-Cookie: evil=1\r\nX-Request-Id: forged\r\nContent-Length: 99\r\n\r\n")
	})
	gw := openRoute(t, up, "")
	res, body := do(t, "GET", gw.URL+"/", nil)
	if res.StatusCode != 200 || body != "ok" {
		t.Fatalf("status %d body %q", res.StatusCode, body)
	}
	if len(res.Trailer) != 1 || res.Trailer.Get("X-Checksum") != "sha256=abc" {
		t.Errorf("trailers %v, want X-Checksum only", res.Trailer)
	}
}

// TestHeadFollowsGet: a route that takes GET takes HEAD too (RFC 9110
// §9.1), unless another route of the prefix names HEAD, and Allow says so.
func TestHeadFollowsGet(t *testing.T) {
	u1, u2 := echoUpstream(t, "get"), echoUpstream(t, "head")
	gw, _, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: read
    path_prefix: /items
    methods: [GET]
    upstreams: [{{U1}}]
    auth: none
  - name: write
    path_prefix: /items
    methods: [POST]
    upstreams: [{{U1}}]
    auth: none
  - name: docs-get
    path_prefix: /docs
    methods: [GET]
    upstreams: [{{U1}}]
    auth: none
  - name: docs-head
    path_prefix: /docs
    methods: [HEAD]
    upstreams: [{{U2}}]
    auth: none
`, map[string]string{"U1": u1.URL, "U2": u2.URL})
	for _, c := range []struct{ method, path, upstream string }{
		{"HEAD", "/items/1", "get"}, {"GET", "/items/1", "get"}, {"HEAD", "/docs", "head"}, {"GET", "/docs", "get"},
	} {
		res, _ := do(t, c.method, gw.URL+c.path, nil)
		if res.StatusCode != 200 || res.Header.Get("X-Upstream") != c.upstream {
			t.Errorf("%s %s: %d from %q, want 200 from %q", c.method, c.path, res.StatusCode, res.Header.Get("X-Upstream"), c.upstream)
		}
	}
	res, _ := do(t, "DELETE", gw.URL+"/items/1", nil)
	if res.StatusCode != 405 || res.Header.Get("Allow") != "GET, POST, HEAD" {
		t.Errorf("DELETE: %d Allow %q, want 405 with GET, POST, HEAD", res.StatusCode, res.Header.Get("Allow"))
	}
}

func TestRouting(t *testing.T) {
	gw, _, _ := base(t)
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		upstream, allow           string
	}{
		{"GETReadScope", "GET", "/orders", "reader", 200, "u1", ""},
		{"POSTNeedsWrite", "POST", "/orders", "reader", 403, "", ""},
		{"POSTWrite", "POST", "/orders/7", "good", 200, "u1", ""},
		{"LongestPrefix", "GET", "/orders/special/1", "reader", 200, "u2", ""},
		{"LongestPrefixAnyMethod", "DELETE", "/orders/special", "reader", 200, "u2", ""},
		{"SegmentBoundary", "GET", "/ordersx", "good", 404, "", ""},
		{"SpecialBoundary", "GET", "/orders/specialx", "good", 200, "u1", ""},
		{"MethodNotAllowed", "DELETE", "/orders/1", "good", 405, "", "GET, HEAD, POST"},
		{"NoRoute", "GET", "/nothing", "good", 404, "", ""},
		{"DotSegments", "GET", "/public/../orders", "", 400, "", ""},
		// What servlet containers and Windows servers read as "..".
		{"DotSegmentWithParams", "GET", "/public/..;x=1/orders", "", 400, "", ""},
		{"DotSegmentEncodedParams", "GET", "/public/..%3b/orders", "", 400, "", ""},
		{"Backslash", "GET", "/public/%5c..%5corders", "", 400, "", ""},
		{"ParamsKept", "GET", "/public/items;v=2/1", "", 200, "u1", ""},
		// Routed as the upstream will read it: without the ;parameters.
		{"ParamsAtBoundary", "GET", "/orders/special;x/1", "reader", 200, "u2", ""},
		{"ParamsOnPrefix", "POST", "/orders;jsessionid=1/7", "reader", 403, "", ""},
		{"ParamsInStrippedPrefix", "GET", "/api;x/v1/items", "reader", 400, "", ""},
		// An encoded ';' is part of its segment: /public;x is no /public.
		{"EncodedSemicolon", "GET", "/public%3Bx/orders/1", "", 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.token != "" {
				hdr["Authorization"] = "Bearer " + tc.token
			}
			res, body := do(t, tc.method, gw.URL+tc.path, hdr)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, body)
			}
			if got := res.Header.Get("X-Upstream"); got != tc.upstream {
				t.Errorf("upstream %q, want %q", got, tc.upstream)
			}
			if got := res.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if tc.status >= 400 && res.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("Content-Type %q", res.Header.Get("Content-Type"))
			}
		})
	}
}

func TestRoutingHostAndRoot(t *testing.T) {
	u1, u2 := echoUpstream(t, "u1"), echoUpstream(t, "u2")
	gw, _, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: root
    path_prefix: /
    upstreams: [{{U}}]
    auth: none
  - name: api-host
    host: API.example.com
    path_prefix: /
    upstreams: [{{U2}}]
    auth: none
  - name: v6-host
    host: 2001:DB8:0::1
    path_prefix: /
    upstreams: [{{U2}}]
    auth: none
`, map[string]string{"U": u1.URL, "U2": u2.URL})
	res, _ := do(t, "GET", gw.URL+"/anything/at/all", nil)
	if res.StatusCode != 200 || res.Header.Get("X-Upstream") != "u1" {
		t.Errorf("root: %d %s", res.StatusCode, res.Header.Get("X-Upstream"))
	}
	res, _ = do(t, "GET", gw.URL+"/x", map[string]string{"Host": "api.EXAMPLE.com:8443"})
	if res.StatusCode != 200 || res.Header.Get("X-Upstream") != "u2" {
		t.Errorf("host route: %d %s", res.StatusCode, res.Header.Get("X-Upstream"))
	}
	// One IPv6 address, written another way than the route's.
	res, _ = do(t, "GET", gw.URL+"/x", map[string]string{"Host": "[2001:db8::0:1]:8081"})
	if res.StatusCode != 200 || res.Header.Get("X-Upstream") != "u2" {
		t.Errorf("IPv6 host route: %d %s", res.StatusCode, res.Header.Get("X-Upstream"))
	}
}

func TestAuthModes(t *testing.T) {
	gw, _, _ := base(t)
	t.Run("NonePassesAuthorization", func(t *testing.T) {
		res, body := do(t, "GET", gw.URL+"/public/x", map[string]string{"Authorization": "Bearer whatever", "X-Keyward-Token-Id": "spoof"})
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		s := upstreamSaw(t, body)
		if s.Header.Get("Authorization") != "Bearer whatever" {
			t.Errorf("Authorization %q", s.Header.Get("Authorization"))
		}
		if s.Header.Get(HeaderTokenID) != "" {
			t.Errorf("spoofed token id passed: %q", s.Header.Get(HeaderTokenID))
		}
	})
	t.Run("OptionalWithout", func(t *testing.T) {
		res, body := do(t, "GET", gw.URL+"/maybe", map[string]string{"X-Keyward-Subject": "admin"})
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		s := upstreamSaw(t, body)
		if s.Header.Get(HeaderSubject) != "" || s.Header.Get(HeaderTokenID) != "" {
			t.Errorf("identity headers without a token: %v", s.Header)
		}
	})
	t.Run("OptionalBad", func(t *testing.T) {
		res, _ := do(t, "GET", gw.URL+"/maybe", map[string]string{"Authorization": "Bearer revoked"})
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != challengeInvalid {
			t.Errorf("status %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("OptionalGood", func(t *testing.T) {
		_, body := do(t, "GET", gw.URL+"/maybe", map[string]string{"Authorization": "Bearer good"})
		if s := upstreamSaw(t, body); s.Header.Get(HeaderTokenID) != "tok_good" || s.Header.Get("Authorization") != "" {
			t.Errorf("headers %v", s.Header)
		}
	})
	t.Run("TokenHeader", func(t *testing.T) {
		res, body := do(t, "GET", gw.URL+"/keyed", map[string]string{"X-API-Key": "apikeyonly"})
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		s := upstreamSaw(t, body)
		if s.Header.Get("X-Api-Key") != "" || s.Header.Get(HeaderTokenID) != "tok_k" {
			t.Errorf("headers %v", s.Header)
		}
	})
	t.Run("QueryStringIgnored", func(t *testing.T) {
		for _, q := range []string{"access_token=good", "token=good", "api_key=good"} {
			res, _ := do(t, "GET", gw.URL+"/orders?"+q, nil)
			if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != challenge {
				t.Errorf("%s: status %d", q, res.StatusCode)
			}
		}
	})
}

func TestTrustedProxies(t *testing.T) {
	u := echoUpstream(t, "u1")
	cfg := `
listen: 127.0.0.1:0
workspace: default
trusted_proxies: [{{T}}]
routes:
  - name: o
    path_prefix: /
    upstreams: [{{U}}]
`
	t.Run("Trusted", func(t *testing.T) {
		gw, fv, _ := gateway(t, cfg, map[string]string{"U": u.URL, "T": "127.0.0.0/8"})
		_, body := do(t, "GET", gw.URL+"/", map[string]string{"Authorization": "Bearer good", "X-Forwarded-For": "9.9.9.9, 203.0.113.7, 127.0.0.2"})
		if ip := fv.last().IP; ip != netip.MustParseAddr("203.0.113.7") {
			t.Errorf("client IP %v, want the rightmost untrusted hop", ip)
		}
		if got := upstreamSaw(t, body).Header.Get("X-Forwarded-For"); got != "9.9.9.9, 203.0.113.7, 127.0.0.2, 127.0.0.1" {
			t.Errorf("X-Forwarded-For %q", got)
		}
		// X-Real-Ip is the client as resolved through the trusted hops.
		if got := upstreamSaw(t, body).Header.Get("X-Real-Ip"); got != "203.0.113.7" {
			t.Errorf("X-Real-Ip %q", got)
		}
		// A trusted CDN's own client-IP field is kept; X-Real-Ip is the
		// gateway's, as a load balancer may pass a client's along.
		_, body = do(t, "GET", gw.URL+"/", map[string]string{"Authorization": "Bearer good", "X-Forwarded-For": "198.51.100.4",
			"X-Real-IP": "6.6.6.6", "Client-IP": "6.6.6.6", "CF-Connecting-IP": "198.51.100.4"})
		if s := upstreamSaw(t, body); s.Header.Get("X-Real-Ip") != "198.51.100.4" || len(s.Header["X-Real-Ip"]) != 1 ||
			s.Header.Get("Cf-Connecting-Ip") != "198.51.100.4" || s.Header.Get("Client-Ip") != "" {
			t.Errorf("a trusted proxy's fields: %v", s.Header)
		}
		// So are a trusted proxy's other forwarding fields, but not those
		// that name another path, which it may pass on from its client.
		_, body = do(t, "GET", gw.URL+"/", map[string]string{"Authorization": "Bearer good", "X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/app",
			"X-Original-URL": "/admin", "X-Rewrite-URL": "/admin"})
		if s := upstreamSaw(t, body); s.Header.Get("X-Forwarded-Port") != "8443" || s.Header.Get("X-Forwarded-Prefix") != "/app" ||
			s.Header.Get("X-Original-Url") != "" || s.Header.Get("X-Rewrite-Url") != "" {
			t.Errorf("a trusted proxy's forwarding fields: %v", s.Header)
		}
	})
	t.Run("Untrusted", func(t *testing.T) {
		gw, fv, _ := gateway(t, cfg, map[string]string{"U": u.URL, "T": "10.0.0.0/8"})
		_, body := do(t, "GET", gw.URL+"/", map[string]string{"Authorization": "Bearer good", "X-Forwarded-For": "203.0.113.7"})
		if ip := fv.last().IP; ip != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("client IP %v, want the connection's", ip)
		}
		if got := upstreamSaw(t, body).Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q", got)
		}
	})
}

func TestRateLimitHeaders(t *testing.T) {
	gw, _, _ := base(t)
	res, _ := do(t, "GET", gw.URL+"/orders", map[string]string{"Authorization": "Bearer limited"})
	if res.StatusCode != 200 || res.Header.Get("RateLimit-Policy") != `"default";q=100;w=60` || res.Header.Get("RateLimit") != `"default";r=42;t=17` {
		t.Errorf("200: %d %q %q", res.StatusCode, res.Header.Get("RateLimit-Policy"), res.Header.Get("RateLimit"))
	}
	res, _ = do(t, "GET", gw.URL+"/orders", map[string]string{"Authorization": "Bearer both"})
	if res.Header.Get("RateLimit-Policy") != `"default";q=1000;w=86400` || res.Header.Get("RateLimit") != `"default";r=5;t=3600` {
		t.Errorf("both: %q %q", res.Header.Get("RateLimit-Policy"), res.Header.Get("RateLimit"))
	}
	res, _ = do(t, "GET", gw.URL+"/orders", map[string]string{"Authorization": "Bearer ratelimit"})
	if res.StatusCode != 429 || res.Header.Get("RateLimit-Policy") != `"default";q=100;w=60` || res.Header.Get("Retry-After") != "3" {
		t.Errorf("429: %d %q %q", res.StatusCode, res.Header.Get("RateLimit-Policy"), res.Header.Get("Retry-After"))
	}
	res, _ = do(t, "GET", gw.URL+"/orders", map[string]string{"Authorization": "Bearer good"})
	if res.Header.Get("RateLimit") != "" || res.Header.Get("RateLimit-Policy") != "" {
		t.Errorf("unlimited token got RateLimit headers")
	}
}

func TestStripPrefix(t *testing.T) {
	gw, _, _ := base(t)
	_, body := do(t, "GET", gw.URL+"/api/v1/users/3?q=1", map[string]string{"Authorization": "Bearer good"})
	if p := upstreamSaw(t, body).Path; p != "/base/users/3?q=1" {
		t.Errorf("path %q", p)
	}
	_, body = do(t, "GET", gw.URL+"/api/v1", map[string]string{"Authorization": "Bearer good"})
	if p := upstreamSaw(t, body).Path; p != "/base/" {
		t.Errorf("path %q", p)
	}
}

// deadURL returns the URL of a port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestUpstreamFailures(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slowheaders":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/slowbody":
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			for i := 0; i < 4; i++ {
				time.Sleep(150 * time.Millisecond)
				fmt.Fprintf(w, "chunk%d\n", i)
				http.NewResponseController(w).Flush()
			}
		}
	}))
	defer slow.Close()
	defer close(release)
	gw, _, lb := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: down
    path_prefix: /down
    upstreams: [{{DEAD}}]
    auth: none
  - name: slow
    path_prefix: /
    upstreams: [{{SLOW}}]
    auth: none
    timeout: 200ms
`, map[string]string{"DEAD": deadURL(t), "SLOW": slow.URL})

	res, body := do(t, "GET", gw.URL+"/down?secret=x", nil)
	if res.StatusCode != 502 || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("down: %d %s", res.StatusCode, body)
	}
	res, body = do(t, "GET", gw.URL+"/slowheaders", nil)
	if res.StatusCode != 504 || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("slow headers: %d %s", res.StatusCode, body)
	}
	res, body = do(t, "GET", gw.URL+"/slowbody", nil)
	if res.StatusCode != 200 || body != "chunk0\nchunk1\nchunk2\nchunk3\n" {
		t.Errorf("slow body cut: %d %q", res.StatusCode, body)
	}

	// The access log: one line per request, route and status, no query.
	gw.Close() // waits for the handlers, which log after answering
	logs := lb.String()
	if strings.Contains(logs, "secret=x") {
		t.Errorf("query string logged: %s", logs)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "gateway request" {
			continue
		}
		if m["path"] == "/down" && m["route"] == "down" && m["status"] == float64(502) {
			found = true
		}
	}
	if !found {
		t.Errorf("no access log line for /down: %s", logs)
	}
}

func TestAccessLogTokenID(t *testing.T) {
	gw, _, lb := base(t)
	do(t, "GET", gw.URL+"/orders", map[string]string{"Authorization": "Bearer good"})
	gw.Close() // waits for the handler, which logs after answering
	logs := lb.String()
	if !strings.Contains(logs, `"token_id":"tok_good"`) || strings.Contains(logs, "Bearer") || strings.Contains(logs, `"good"`) {
		t.Errorf("log %s", logs)
	}
}

// TestAccessLogRedactsSecrets: a secret in the path (a client that put its
// token there) is not kept in the access log.
func TestAccessLogRedactsSecrets(t *testing.T) {
	gw, _, lb := base(t)
	const text = "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"
	do(t, "GET", gw.URL+"/orders/"+text+"/items", map[string]string{"Authorization": "Bearer good"})
	// As the method, which no /orders route takes: nor in the 405's detail.
	res, body := do(t, text, gw.URL+"/orders", map[string]string{"Authorization": "Bearer good"})
	if res.StatusCode != http.StatusMethodNotAllowed || strings.Contains(body, text[3:]) || !strings.Contains(body, "kw_[redacted]") {
		t.Errorf("secret as the method: %d %s", res.StatusCode, body)
	}
	gw.Close()
	logs := lb.String()
	if strings.Contains(logs, text[3:]) || !strings.Contains(logs, `"path":"/orders/kw_[redacted]/items"`) || !strings.Contains(logs, `"method":"kw_[redacted]"`) {
		t.Errorf("log %s", logs)
	}
}

// TestAccessLogEscapedPath: the access log writes the path as the
// request had it, escaped: an encoded "?" decoded would read as a query
// string, which access logs never hold (PRODUCT §7). A secret is redacted
// also where escapes hide it.
func TestAccessLogEscapedPath(t *testing.T) {
	gw, _, lb := base(t)
	const text = "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"
	for _, path := range []string{
		"/public/a%3Faccess_token=x",
		"/public/kw%5F" + text[3:] + "/x%2Fy",
		"/public/" + text[:20] + "%" + fmt.Sprintf("%02X", text[20]) + text[21:],
	} {
		if res, body := do(t, "GET", gw.URL+path, nil); res.StatusCode != 200 {
			t.Fatalf("%s: status %d: %s", path, res.StatusCode, body)
		}
	}
	gw.Close() // waits for the handlers, which log after answering
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(lb.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "gateway request" {
			paths = append(paths, fmt.Sprint(m["path"]))
		}
	}
	want := []string{"/public/a%3Faccess_token=x", "/public/kw%5F[redacted]/x%2Fy", "/public/kw_[redacted]"}
	if !slices.Equal(paths, want) {
		t.Errorf("logged paths %q, want %q", paths, want)
	}
}

func TestSSEStreams(t *testing.T) {
	next := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	defer up.Close()
	gw, _, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: sse
    path_prefix: /
    upstreams: [{{U}}]
    auth: none
`, map[string]string{"U": up.URL})
	res, err := http.Get(gw.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rd := bufio.NewReader(res.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event %q %v", line, err)
	}
	close(next) // the stream ends only after the first event was read
	rest, _ := io.ReadAll(rd)
	if string(rest) != "\ndata: second\n\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestRoundRobinRetry(t *testing.T) {
	up := echoUpstream(t, "alive")
	gw, _, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: rr
    path_prefix: /
    upstreams: [{{DEAD}}, {{U}}]
    auth: none
`, map[string]string{"DEAD": deadURL(t), "U": up.URL})
	for i := 0; i < 6; i++ {
		res, body := do(t, "GET", gw.URL+"/x", nil)
		if res.StatusCode != 200 {
			t.Fatalf("GET %d: %d %s", i, res.StatusCode, body)
		}
	}
	// A PUT or DELETE with a body is retried too: its body was not read
	// when the connection failed.
	for i := 0; i < 4; i++ {
		method := []string{"PUT", "DELETE"}[i%2]
		req, _ := http.NewRequest(method, gw.URL+"/x", strings.NewReader(`{"n":1}`))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s with a body %d: %d", method, i, res.StatusCode)
		}
	}
	// POST is not retried: one of two goes to the dead upstream.
	var codes []int
	for i := 0; i < 2; i++ {
		res, _ := do(t, "POST", gw.URL+"/x", nil)
		codes = append(codes, res.StatusCode)
	}
	slices.Sort(codes)
	if !slices.Equal(codes, []int{200, 502}) {
		t.Errorf("POST codes %v, want one 200 and one 502", codes)
	}
}

func TestRoundRobinSpreads(t *testing.T) {
	u1, u2 := echoUpstream(t, "u1"), echoUpstream(t, "u2")
	gw, _, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: rr
    path_prefix: /
    upstreams: [{{U1}}, {{U2}}]
    auth: none
`, map[string]string{"U1": u1.URL, "U2": u2.URL})
	count := map[string]int{}
	for i := 0; i < 4; i++ {
		res, _ := do(t, "GET", gw.URL+"/", nil)
		count[res.Header.Get("X-Upstream")]++
	}
	if count["u1"] != 2 || count["u2"] != 2 {
		t.Errorf("spread %v", count)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			// Not an upgrade: say what came.
			fmt.Fprintf(w, "plain, upgrade=%q http2-settings=%q", r.Header.Get("Upgrade"), r.Header.Get("Http2-Settings"))
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	}))
	defer up.Close()
	gw, _, logs := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: ws
    path_prefix: /
    upstreams: [{{U}}]
`, map[string]string{"U": up.URL})
	dial := func(t *testing.T, upgrade string) (net.Conn, *bufio.Reader, *http.Response) {
		t.Helper()
		conn, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: "+upgrade+"\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response: %v", err)
		}
		return conn, br, res
	}
	for _, upgrade := range []string{"websocket", "WebSocket", "websocket, h2c"} {
		t.Run(upgrade, func(t *testing.T) {
			conn, br, res := dial(t, upgrade)
			if res.StatusCode != 101 {
				t.Fatalf("upgrade: %d", res.StatusCode)
			}
			fmt.Fprint(conn, "hello\n")
			line, err := br.ReadString('\n')
			if err != nil || line != "echo:hello\n" {
				t.Errorf("echo %q %v", line, err)
			}
		})
	}
	// Each upgrade is logged, once its connection ended (the upstream
	// closes it after the echo), with the status the client got.
	for deadline := time.Now().Add(5 * time.Second); strings.Count(logs.String(), `"status":101`) < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("want 3 access-log lines with status 101:\n%s", logs)
		}
	}
	// h2c carries requests of its own, which the gateway would never
	// see: not passed. The request goes as a plain one.
	for _, upgrade := range []string{"h2c", "echo"} {
		t.Run(upgrade, func(t *testing.T) {
			_, _, res := dial(t, upgrade)
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != 200 || string(b) != `plain, upgrade="" http2-settings=""` {
				t.Fatalf("%d %q, want the request without its upgrade", res.StatusCode, b)
			}
		})
	}
}

// TestUpgradeRefused: an upgrade request the upstream answers as a plain
// request goes through the upgrade path (httputil.ReverseProxy) with the
// same forwarding fields and the same trailer rules as any other, and
// without an Accept-Encoding the client did not send (net/http's
// transport adds one, then decodes the answer, by default).
func TestUpgradeRefused(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum, Set-Cookie, X-Request-Id")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "for=%s host=%s proto=%s port=%q accept-encoding=%q", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"),
			r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Port"), r.Header.Values("Accept-Encoding"))
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set("Set-Cookie", "evil=1")
		w.Header().Set("X-Request-Id", "forged")
	}))
	defer up.Close()
	gw, _, _ := gateway(t, "listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: ws\n    path_prefix: /\n    upstreams: [{{U}}]\n", map[string]string{"U": up.URL})
	rc := dialRaw(t, gw)
	rc.send("GET /ws HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer good\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Port: 1\r\n\r\n")
	res, body := rc.read("GET")
	if res.StatusCode != 400 || body != `for=127.0.0.1 host=gw.example proto=http port="" accept-encoding=[]` {
		t.Errorf("status %d body %q", res.StatusCode, body)
	}
	if len(res.Trailer) != 1 || res.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("trailers %v, want X-Checksum only", res.Trailer)
	}
}

func TestConfigErrors(t *testing.T) {
	yml := `listen: nonsense
workspace: ""
trusted_proxies: [10.0.0.0/33]
bogus: 1
routes:
  - name: a
    path_prefix: orders
    methods: [GET, FETCH]
    upstreams: []
    auth: sometimes
    scopes: [Orders]
    timeout: -1s
  - name: b
    path_prefix: /x
    upstreams: [ftp://h, "http://", "http://127.0.0.1:99999", "http://h:0"]
    extra: true
  - name: c
    path_prefix: /dup
    methods: [GET]
    upstreams: [http://a]
  - name: d
    path_prefix: /dup
    upstreams: [http://b]
    eject_after: 1.5
---
listen: ignored
`
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var ce *ConfigErrors
	if !errors.As(err, &ce) {
		t.Fatalf("err %v", err)
	}
	msg := err.Error()
	wantLines(t, msg,
		path+":1: listen: ",
		path+":2: workspace: required",
		path+":3: trusted_proxies[0]: ",
		path+":4: bogus: unknown key",
		path+":7: routes[0].path_prefix: must start with \"/\"",
		path+":8: routes[0].methods[1]: \"FETCH\" is not an HTTP method",
		path+":9: routes[0].upstreams: at least one upstream",
		path+":10: routes[0].auth: ",
		path+":11: routes[0].scopes[0]: ",
		path+":12: routes[0].timeout: ",
		path+":15: routes[1].upstreams[0]: ",
		path+":15: routes[1].upstreams[1]: ",
		path+":15: routes[1].upstreams[2]: \"http://127.0.0.1:99999\": the port must be a number from 1 to 65535",
		path+":15: routes[1].upstreams[3]: \"http://h:0\": the port must be a number from 1 to 65535",
		path+":16: routes[1].extra: unknown key",
		path+":21: routes[3]: duplicates routes[2]",
		path+":24: routes[3].eject_after: must be a whole number",
		path+":25: the file holds more than one YAML document",
	)
	if len(ce.Errs) != 18 {
		t.Errorf("%d errors, want 18:\n%s", len(ce.Errs), msg)
	}
}

// TestConfigErrorsHideUpstreamPasswords: an upstream URL with a password
// is refused without the password in the error, which ends up in logs.
func TestConfigErrorsHideUpstreamPasswords(t *testing.T) {
	_, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [\"http://svc:S3cretPw@127.0.0.1:1/\", \"http://svc:S3cret%zz@127.0.0.1:1/\", \"https://ghp_S3cretToken@api.example.com\"]\n"))
	if err == nil || strings.Contains(err.Error(), "S3cret") {
		t.Fatalf("err = %v", err)
	}
	wantLines(t, err.Error(),
		`line 6: routes[0].upstreams[0]: "http://xxxxx@127.0.0.1:1/": credentials in an upstream URL are not supported`,
		`line 6: routes[0].upstreams[1]: "http://xxxxx@127.0.0.1:1/" is not a URL`,
		`line 6: routes[0].upstreams[2]: "https://xxxxx@api.example.com": credentials in an upstream URL are not supported`,
	)
}

// A gateway that believes everyone's X-Forwarded-For lets every client
// pick the address its token's allowed_cidrs are checked against.
func TestConfigTrustsEveryone(t *testing.T) {
	_, err := Parse([]byte(`listen: 127.0.0.1:8081
workspace: default
trusted_proxies: [10.0.0.0/8, 0.0.0.0/0, "::/0"]
routes:
  - name: a
    path_prefix: /
    upstreams: [http://127.0.0.1:9001]
`))
	wantLines(t, fmt.Sprint(err),
		`3: trusted_proxies[1]: "0.0.0.0/0": 0.0.0.0/0 trusts every address; name the proxies' own networks`,
		`3: trusted_proxies[2]: "::/0": ::/0 trusts every address; name the proxies' own networks`,
	)
}

func TestConfigOK(t *testing.T) {
	cfg, err := Parse([]byte(`
listen: 127.0.0.1:8081
workspace: default
trusted_proxies: [10.0.0.0/8, 192.168.1.1]
routes:
  - name: orders
    host: Api.Example.com
    path_prefix: /orders/
    methods: [get, POST]
    upstreams: [http://127.0.0.1:9001, https://h.example/base]
    scopes: [orders:read]
    token_header: x-api-key
  - name: rest
    path_prefix: /
    upstreams: [http://127.0.0.1:9003]
    auth: none
    timeout: 5s
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Host != "api.example.com" || r.PathPrefix != "/orders" || !slices.Equal(r.Methods, []string{"GET", "POST"}) ||
		r.Auth != AuthRequired || r.Timeout != DefaultTimeout || r.TokenHeader != "X-Api-Key" || len(r.Upstreams) != 2 {
		t.Errorf("route %+v", r)
	}
	if cfg.Routes[1].Timeout != 5*time.Second || cfg.Routes[1].Auth != AuthNone {
		t.Errorf("route %+v", cfg.Routes[1])
	}
	if len(cfg.TrustedProxies) != 2 || cfg.TrustedProxies[1] != netip.MustParsePrefix("192.168.1.1/32") {
		t.Errorf("trusted %v", cfg.TrustedProxies)
	}
}

// TestConfigSyntaxError: a YAML syntax error is reported at the line it
// lies on, not at the line yaml.v3 names for its parser's errors (the
// 0-based line on which the value around it begins) nor without one.
func TestConfigSyntaxError(t *testing.T) {
	const head = "listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"KeyIndentedWrong", head + "    path_prefix: /\n   upstreams: [http://a]\n",
			"line 6: yaml: did not find expected '-' indicator"},
		{"UnclosedList", head + "    path_prefix: /\n    upstreams: [http://a\n    timeout: 1s\n",
			"line 6: yaml: did not find expected ',' or ']'"},
		{"UnclosedMapping", head + "    path_prefix: /\n    health_check: {path: /h\n",
			"line 6: yaml: did not find expected ',' or '}'"},
		// A list over two lines before the error does not take it.
		{"UnclosedAfterMultiline", head + "    upstreams: [http://a,\n      http://b]\n    path_prefix: /\n    scopes: [a, b\n    timeout: 1s\n",
			"line 8: yaml: did not find expected ',' or ']'"},
		{"ListItemIndentedWrong", head + "    path_prefix: /\n    upstreams:\n      - http://a\n    - http://b\n",
			"line 8: yaml: did not find expected key"},
		{"ListInMapping", "listen: 127.0.0.1:0\nworkspace: default\n- x\n",
			"line 3: yaml: did not find expected key"},
		{"UnknownAlias", head + "    path_prefix: /\n    upstreams: *nope\n",
			"line 6: yaml: unknown anchor 'nope' referenced"},
		// A "[" that ends its line: the next, where what follows it
		// came without a "]".
		{"UnclosedAtLineEnd", "listen: [\nworkspace: x\n", "line 2: yaml: did not find expected ',' or ']'"},
		// Errors yaml.v3 placed right stay where they were.
		{"MappingInValue", head + "    path_prefix: /a: b\n", "line 5: yaml: mapping values are not allowed in this context"},
		{"UnclosedQuote", head + "    path_prefix: \"/a\n    upstreams: [http://a]\n", "line 5: yaml: found unexpected end of stream"},
		{"Tab", "listen: 127.0.0.1:0\n\tworkspace: default\n", "line 2: yaml: found a tab character that violates indentation"},
		{"SecondDocument", head + "    path_prefix: /\n    upstreams: [http://a]\n---\nx: [1\ny: 2\n",
			"line 8: after the configuration, a second YAML document (---) that does not parse: yaml: did not find expected ',' or ']'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			var ce *ConfigErrors
			if !errors.As(err, &ce) || len(ce.Errs) != 1 || err.Error() != tc.want {
				t.Errorf("err = %q, want %q", err, tc.want)
			}
		})
	}
}

// TestConfigSyntaxErrorScanBound: the search for a syntax error's line
// decodes prefixes of the file, whose bytes together grow with the
// square of its length; beyond a bound yaml.v3's own line is kept.
func TestConfigSyntaxErrorScanBound(t *testing.T) {
	for _, tc := range []struct {
		comments int
		want     string
	}{
		{100, "line 106: yaml: did not find expected '-' indicator"}, // found
		{1500, "line 3: yaml: did not find expected '-' indicator"},  // 72 MB of prefixes: yaml.v3's
	} {
		yaml := "listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n" +
			strings.Repeat("    # "+strings.Repeat("c", 58)+"\n", tc.comments) + "   upstreams: [http://a]\n"
		if _, err := Parse([]byte(yaml)); err == nil || err.Error() != tc.want {
			t.Errorf("%d comment lines: err = %v, want %q", tc.comments, err, tc.want)
		}
	}
}

func TestConfigServer(t *testing.T) {
	base := "listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - {name: r, path_prefix: /, upstreams: [http://a]}\n"
	cfg, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ServerSettings{HeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, SendTimeout: time.Minute, BodyTimeout: time.Minute, MaxHeaderBytes: 64 << 10}); cfg.Server != want {
		t.Errorf("defaults %+v, want %+v", cfg.Server, want)
	}
	cfg, err = Parse([]byte(base + "server:\n  header_timeout: 3s\n  idle_timeout: 30s\n  send_timeout: 20s\n  body_timeout: 15s\n  max_header_bytes: 8192\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ServerSettings{HeaderTimeout: 3 * time.Second, IdleTimeout: 30 * time.Second, SendTimeout: 20 * time.Second, BodyTimeout: 15 * time.Second, MaxHeaderBytes: 8192}); cfg.Server != want {
		t.Errorf("settings %+v, want %+v", cfg.Server, want)
	}
	_, err = Parse([]byte(base + "server:\n  header_timeout: soon\n  idle_timeout: -1s\n  max_header_bytes: 10\n  linger: 1s\n"))
	wantLines(t, fmt.Sprint(err),
		"line 6: server.header_timeout: \"soon\" is not a positive duration",
		"line 7: server.idle_timeout: \"-1s\" is not a positive duration",
		"line 8: server.max_header_bytes: must be a number of bytes from 1024 to 1048576",
		"line 9: server.linger: unknown key",
	)
	if _, err := Parse([]byte(base + "server: 5\n")); !strings.Contains(fmt.Sprint(err), "server: must be a mapping") {
		t.Errorf("server: 5: %v", err)
	}
}

// wantLines fails t for every one of wants that msg does not contain.
func wantLines(t *testing.T, msg string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
}

// TestRouteHost: a host that no request's Host could be (a wildcard, a
// URL, which was read as the host "https") is a config error, not a route
// that silently serves nothing; so is a port, which routing does not
// match (the route would serve every port); a bare IPv6 address is taken.
func TestRouteHost(t *testing.T) {
	parse := func(host string) (*Config, error) {
		return Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    host: '" + host + "'\n    path_prefix: /\n    upstreams: [http://127.0.0.1:1]\n"))
	}
	for _, host := range []string{"*.example.com", "https://api.example.com", "api.example.com/v1", "a.example,b.example", "user@api.example.com", "a b", ":8080", "api.example.com:80:80", "fe80::1%eth0", "[fe80::1%25eth0]"} {
		_, err := parse(host)
		want := fmt.Sprintf("line 5: routes[0].host: %q is not a host name or IP address", host)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("host %q: %v, want %q", host, err, want)
		}
	}
	for _, host := range []string{"example.com:8080", "Api.Example.com:443", "192.0.2.1:80", "[::1]:8080", "[2001:db8::1]:8081", "example.com:"} {
		_, err := parse(host)
		want := fmt.Sprintf("line 5: routes[0].host: %q: the port is not matched (host matches any port); give the host alone", host)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("host %q: %v, want %q", host, err, want)
		}
	}
	for host, want := range map[string]string{
		"":                 "",
		"Api.Example.com":  "api.example.com",
		"api.example.com.": "api.example.com",
		"192.0.2.1":        "192.0.2.1",
		"[2001:db8::1]":    "2001:db8::1",
		"2001:db8::1":      "2001:db8::1",
		"2001:DB8:0::0:1":  "2001:db8::1",
		"[2001:0db8::1]":   "2001:db8::1",
		"::1":              "::1",
	} {
		cfg, err := parse(host)
		if err != nil {
			t.Errorf("host %q: %v", host, err)
			continue
		}
		if got := cfg.Routes[0].Host; got != want {
			t.Errorf("host %q: Host = %q, want %q", host, got, want)
		}
	}
}

// TestNormalizeHostAllocs: a request's Host costs no allocation to
// route, an IPv6 address written in its canonical form (as clients write
// it) included; one written otherwise is made canonical.
func TestNormalizeHostAllocs(t *testing.T) {
	for host, want := range map[string]string{
		"api.example.com:8443":    "api.example.com",
		"[2001:db8::1]:8081":      "2001:db8::1",
		"[::1]:80":                "::1",
		"[::ffff:192.0.2.1]:8080": "::ffff:192.0.2.1",
	} {
		if got := normalizeHost(host); got != want {
			t.Errorf("normalizeHost(%q) = %q, want %q", host, got, want)
		}
		if n := testing.AllocsPerRun(100, func() { normalizeHost(host) }); n != 0 {
			t.Errorf("normalizeHost(%q) allocates %v times", host, n)
		}
	}
	for host, want := range map[string]string{"[2001:DB8::1]": "2001:db8::1", "[2001:db8:0::1]:80": "2001:db8::1"} {
		if got := normalizeHost(host); got != want {
			t.Errorf("normalizeHost(%q) = %q, want %q", host, got, want)
		}
	}
}

// TestTokenHeaderRefused: a token_header that cannot carry a token, or
// that HTTP or the gateway reads for another end, is an error at its line,
// not a route that never authenticates (Host, Content-Length: the request
// is refused or routed by it first) or that takes a forwarding or request
// id field for the credential.
func TestTokenHeaderRefused(t *testing.T) {
	parse := func(h string) (*Config, error) {
		return Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [http://127.0.0.1:1]\n    token_header: '" + h + "'\n"))
	}
	const (
		own     = "is read for its Bearer token on every route"
		hop     = "is hop-by-hop (it concerns one connection: proxies do not pass it on, and HTTP/2 forbids most such fields)"
		cookie  = "carries cookies, name=value pairs that browsers attach by themselves to requests any site's page makes"
		meaning = "has a meaning of its own in HTTP (framing, routing, content, caching or authentication)"
		gw      = "is one the gateway sets, replaces or drops itself (identity, request id, client address, forwarding)"
	)
	for _, tc := range []struct{ header, canonical, why string }{
		{"authorization", "Authorization", own},
		{"Connection", "Connection", hop},
		{"Keep-Alive", "Keep-Alive", hop},
		{"Proxy-Connection", "Proxy-Connection", hop},
		{"Proxy-Authorization", "Proxy-Authorization", hop},
		{"TE", "Te", hop},
		{"Trailer", "Trailer", hop},
		{"Transfer-Encoding", "Transfer-Encoding", hop},
		{"Upgrade", "Upgrade", hop},
		{"Cookie", "Cookie", cookie},
		{"Set-Cookie", "Set-Cookie", cookie},
		{"Host", "Host", meaning},
		{"content-length", "Content-Length", meaning},
		{"Content-Type", "Content-Type", meaning},
		{"Expect", "Expect", meaning},
		{"Range", "Range", meaning},
		{"Cache-Control", "Cache-Control", meaning},
		{"WWW-Authenticate", "Www-Authenticate", meaning},
		{"X-Keyward-Token", "X-Keyward-Token", gw},
		{"X-Request-ID", "X-Request-Id", gw},
		{"Forwarded", "Forwarded", gw},
		{"X-Forwarded", "X-Forwarded", gw},
		{"X-Forwarded-For", "X-Forwarded-For", gw},
		{"x-forwarded-token", "X-Forwarded-Token", gw},
		{"X-Real-IP", "X-Real-Ip", gw},
		{"CF-Connecting-IP", "Cf-Connecting-Ip", gw},
		{"X-Original-URL", "X-Original-Url", gw},
		{"X-Scheme", "X-Scheme", gw},
		{"X_Keyward_Token", "X_keyward_token", `reads as "X-Keyward-Token" to CGI-style servers (WSGI, Rack, PHP), which ` + gw},
		{"X_Forwarded_For", "X_forwarded_for", `reads as "X-Forwarded-For" to CGI-style servers (WSGI, Rack, PHP), which ` + gw},
		{"Content_Length", "Content_length", `reads as "Content-Length" to CGI-style servers (WSGI, Rack, PHP), which ` + meaning},
	} {
		t.Run(tc.canonical, func(t *testing.T) {
			_, err := parse(tc.header)
			want := fmt.Sprintf("line 7: routes[0].token_header: %q %s: name another field, such as X-API-Key", tc.canonical, tc.why)
			if err == nil || err.Error() != want {
				t.Errorf("token_header %q:\n got %v\nwant %s", tc.header, err, want)
			}
		})
	}
	for _, h := range []string{":authority", "X API Key", "X-Key:"} {
		want := fmt.Sprintf("line 7: routes[0].token_header: %q is not a header name", h)
		if _, err := parse(h); err == nil || err.Error() != want {
			t.Errorf("token_header %q: %v, want %s", h, err, want)
		}
	}
	for h, want := range map[string]string{
		"x-api-key": "X-Api-Key", "Api-Key": "Api-Key", "X-Auth-Token": "X-Auth-Token",
		"Private-Token": "Private-Token", "X_Api_Key": "X_api_key", "Authorization-Token": "Authorization-Token",
	} {
		cfg, err := parse(h)
		if err != nil {
			t.Errorf("token_header %q: %v", h, err)
			continue
		}
		if got := cfg.Routes[0].TokenHeader; got != want {
			t.Errorf("token_header %q: TokenHeader %q, want %q", h, got, want)
		}
	}
}

// TestPathPrefixClean: a prefix that requests could never match (they are
// routed without ;parameters and dot segments) is a config error.
func TestPathPrefixClean(t *testing.T) {
	for _, prefix := range []string{"/a;b", "/a/../b", "/a?x", "/a//b"} {
		_, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: " + prefix + "\n    upstreams: [http://127.0.0.1:1]\n"))
		if err == nil || !strings.Contains(err.Error(), "is not a clean path") {
			t.Errorf("path_prefix %s: %v, want not a clean path", prefix, err)
		}
	}
}

// TestTotalQuotaHeaders: a quota counted in total has no window and never
// resets; its fields leave out w and t (optional in the draft) rather
// than claim 0.
func TestTotalQuotaHeaders(t *testing.T) {
	gw, _, _ := base(t)
	res, body := do(t, "GET", gw.URL+"/orders", map[string]string{"Authorization": "Bearer quotatotal"})
	if res.StatusCode != 429 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	if got, want := res.Header.Get("RateLimit-Policy"), `"default";q=10`; got != want {
		t.Errorf("RateLimit-Policy %q, want %q", got, want)
	}
	// Every 429 has a Retry-After (PRODUCT §5): a day, for a quota that
	// frees no slot by itself.
	if got := res.Header.Get("Retry-After"); got != "86400" {
		t.Errorf("Retry-After %q, want 86400", got)
	}
}

// TestTwoCredentials: two Authorization fields are refused (RFC 6750
// §3.1 invalid_request), not read first-wins.
func TestTwoCredentials(t *testing.T) {
	gw, _, _ := base(t)
	req, _ := http.NewRequest("GET", gw.URL+"/orders", nil)
	req.Header.Add("Authorization", "Bearer good")
	req.Header.Add("Authorization", "Bearer reader")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("status %d, want 400: %s", res.StatusCode, body)
	}
	if got, want := res.Header.Get("WWW-Authenticate"), `Bearer realm="keyward", error="invalid_request"`; got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}
	// A Bearer token and the route's token header: two credentials too.
	res, body2 := do(t, "GET", gw.URL+"/keyed", map[string]string{"Authorization": "Bearer good", "X-API-Key": "garbage"})
	if res.StatusCode != 400 || res.Header.Get("WWW-Authenticate") != `Bearer realm="keyward", error="invalid_request"` {
		t.Errorf("Bearer and X-API-Key: status %d, WWW-Authenticate %q: %s", res.StatusCode, res.Header.Get("WWW-Authenticate"), body2)
	}
	// Basic credentials for the upstream beside the token header are no
	// second token.
	if res, body := do(t, "GET", gw.URL+"/keyed", map[string]string{"Authorization": "Basic dTpw", "X-API-Key": "good"}); res.StatusCode != 200 {
		t.Errorf("Basic and X-API-Key: status %d: %s", res.StatusCode, body)
	}
}

// TestNoCredentialDetail: the 401 for a request without a credential
// names the fields the route reads one from: its token_header, where it
// has one, besides Authorization: Bearer. The challenge stays PRODUCT §5's.
func TestNoCredentialDetail(t *testing.T) {
	gw, _, _ := base(t)
	for _, tc := range []struct{ path, detail string }{
		{"/orders", "this route needs a token: Authorization: Bearer <token>"},
		{"/keyed", "this route needs a token: Authorization: Bearer <token>, or X-Api-Key: <token>"},
	} {
		res, body := do(t, "GET", gw.URL+tc.path, nil)
		var p problem
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatalf("%s: body %q: %v", tc.path, body, err)
		}
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != `Bearer realm="keyward"` || p.Detail != tc.detail {
			t.Errorf("%s: status %d, WWW-Authenticate %q, detail %q; want 401, %q, %q", tc.path, res.StatusCode, res.Header.Get("WWW-Authenticate"), p.Detail, `Bearer realm="keyward"`, tc.detail)
		}
	}
}

// TestConnectRefused: CONNECT is no API request; a 2xx to it would turn
// the pooled upstream connection into a tunnel.
func TestConnectRefused(t *testing.T) {
	gw, _, _ := base(t)
	rc, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	io.WriteString(rc, "CONNECT /public/x HTTP/1.1\r\nHost: gw\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(rc), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotImplemented || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("CONNECT: status %d %q, want 501 problem+json", res.StatusCode, res.Header.Get("Content-Type"))
	}
	// Its own form, an authority for a target.
	rc2 := dialRaw(t, gw)
	rc2.send("CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n")
	if res, body := rc2.read("CONNECT"); res.StatusCode != http.StatusNotImplemented {
		t.Errorf("CONNECT host:port: status %d, want 501: %s", res.StatusCode, body)
	}
}

// TestAbsoluteTarget: an HTTP/1.1 request in absolute form is routed by
// its target's host, whatever its Host says (RFC 9112 §3.2.2), with any
// port and case.
func TestAbsoluteTarget(t *testing.T) {
	api, other := echoUpstream(t, "api"), echoUpstream(t, "other")
	gw, _, _ := gateway(t, `
listen: 127.0.0.1:0
workspace: default
routes:
  - name: api
    host: api.example.com
    path_prefix: /
    upstreams: [{{A}}]
    auth: none
  - name: rest
    path_prefix: /
    upstreams: [{{O}}]
    auth: none
`, map[string]string{"A": api.URL, "O": other.URL})
	for _, tc := range []struct{ target, host, want string }{
		{"http://api.example.com/x", "other.example", "api"},
		{"http://API.Example.com:8080/x", "api.example.com", "api"},
		{"http://other.example/x", "api.example.com", "other"},
		{"/x", "api.example.com", "api"},
	} {
		rc := dialRaw(t, gw)
		rc.send("GET " + tc.target + " HTTP/1.1\r\nHost: " + tc.host + "\r\n\r\n")
		res, body := rc.read("GET")
		if res.StatusCode != 200 || res.Header.Get("X-Upstream") != tc.want {
			t.Errorf("%s with Host %s: status %d from %q, want 200 from %q: %s", tc.target, tc.host, res.StatusCode, res.Header.Get("X-Upstream"), tc.want, body)
		}
	}
}

// TestCaseInsensitivePaths: by default prefixes match with their case, so
// /ADMIN takes the catch-all route; with case_insensitive_paths (for
// upstreams that route so, as Express does), it takes /admin's, and a
// stripped prefix goes whatever its case.
func TestCaseInsensitivePaths(t *testing.T) {
	admin, rest := echoUpstream(t, "admin"), echoUpstream(t, "rest")
	cfg := `
listen: 127.0.0.1:0
workspace: default
{{F}}
routes:
  - name: admin
    path_prefix: /admin
    upstreams: [{{A}}]
    scopes: [admin:all]
  - name: api
    path_prefix: /api/v1
    strip_prefix: true
    upstreams: [{{R}}]
    auth: none
  - name: rest
    path_prefix: /
    upstreams: [{{R}}]
    auth: none
`
	for _, tc := range []struct {
		flag, path string
		status     int
		from, saw  string
	}{
		{"", "/ADMIN/users", 200, "rest", "/ADMIN/users"},
		{"", "/admin/users", 401, "", ""},
		{"case_insensitive_paths: true", "/ADMIN/users", 401, "", ""},
		{"case_insensitive_paths: true", "/Admin", 401, "", ""},
		{"case_insensitive_paths: true", "/adminx", 200, "rest", "/adminx"},
		{"case_insensitive_paths: true", "/API/V1/users", 200, "rest", "/users"},
		{"", "/API/V1/users", 200, "rest", "/API/V1/users"},
	} {
		gw, _, _ := gateway(t, cfg, map[string]string{"A": admin.URL, "R": rest.URL, "F": tc.flag})
		res, body := do(t, "GET", gw.URL+tc.path, nil)
		if res.StatusCode != tc.status || res.StatusCode == 200 && (res.Header.Get("X-Upstream") != tc.from || upstreamSaw(t, body).Path != tc.saw) {
			t.Errorf("%q %s: status %d from %q: %s; want %d from %q seeing %s", tc.flag, tc.path, res.StatusCode, res.Header.Get("X-Upstream"), body, tc.status, tc.from, tc.saw)
		}
	}
	// Prefixes that differ only in case are one route's, once folded.
	_, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: a\n    path_prefix: /Admin\n    upstreams: [http://a]\n  - name: b\n    path_prefix: /admin\n    upstreams: [http://a]\ncase_insensitive_paths: true\n"))
	if err == nil || !strings.Contains(err.Error(), "duplicates routes[0]") {
		t.Errorf("folded duplicates: %v", err)
	}
	if _, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: a\n    path_prefix: /Admin\n    upstreams: [http://a]\n  - name: b\n    path_prefix: /admin\n    upstreams: [http://a]\n")); err != nil {
		t.Errorf("prefixes that differ in case, without folding: %v", err)
	}
}

// TestTargetHostDisagrees: a request whose target names another host than
// its Host (an absolute :path in HTTP/2, which RFC 9113 §8.3.1 does not
// allow) is refused rather than routed by one and forwarded with the
// other.
func TestTargetHostDisagrees(t *testing.T) {
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [http://127.0.0.1:1]\n    auth: none\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(cfg, newFake(), "ws_1", nil)
	defer h.Close()
	r := httptest.NewRequest("GET", "http://api.example.com/x", nil)
	r.Host = "other.example"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Errorf("status %d, want 400: %s", w.Code, w.Body)
	}
}

// baseHandler returns a Handler of baseConfig, not yet served, whose every
// upstream is up.
func baseHandler(t *testing.T, up *httptest.Server) *Handler {
	t.Helper()
	t.Cleanup(up.Close)
	cfg, err := Parse([]byte(strings.NewReplacer("{{U}}", up.URL, "{{U2}}", up.URL).Replace(baseConfig)))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(cfg, newFake(), "ws_1", slog.New(slog.NewJSONHandler(io.Discard, nil)))
	t.Cleanup(func() { h.Close() })
	return h
}

// TestRequestLineSafe: a method or a query that net/http's HTTP/2 server
// lets through with spaces (h2c, TLS) is refused: written into the
// upstream's request line, it would name another target than the one
// routed and authorized.
func TestRequestLineSafe(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	h := baseHandler(t, up)
	h2 := func(r *http.Request) { r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0 }
	for _, tc := range []struct {
		name, detail string
		mod          func(r *http.Request)
	}{
		{"MethodWithSpace", "a request line cannot carry", func(r *http.Request) { r.Method = "GET /admin/secret" }},
		{"MethodWithTab", "a request line cannot carry", func(r *http.Request) { r.Method = "GET\t/admin/secret" }},
		// As HTTP/2's :path can carry it.
		{"QueryWithSpace", "a request line cannot carry", func(r *http.Request) { r.URL.RawQuery = "a /admin HTTP/1.0" }},
		// What net/http's HTTP/2 server makes of a content-length it
		// cannot parse (none), and of a header ending the stream (no body).
		{"ContentLengthUnparsed", "Content-Length", func(r *http.Request) { h2(r); r.Method = "DELETE"; r.Header.Set("Content-Length", "1e3") }},
		{"ContentLengthNoBody", "Content-Length", func(r *http.Request) { h2(r); r.Method = "POST"; r.Header.Set("Content-Length", "5") }},
		{"ContentLengthTwiceDiffering", "Content-Length", func(r *http.Request) { h2(r); r.Header["Content-Length"] = []string{"0", "1"} }},
		{"HostDisagrees", "Host", func(r *http.Request) { h2(r); r.Header.Set("Host", "free.example") }},
		{"HostTwice", "Host", func(r *http.Request) { h2(r); r.Header["Host"] = []string{"gw.example", "gw.example"} }},
		{"NoAuthority", "no host", func(r *http.Request) { h2(r); r.Host, r.URL.Host = "", "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://gw.example/public/x", nil)
			tc.mod(req)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			// The gateway's own 400, before any upstream (which would
			// answer 400 too, to a broken request line) is asked.
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.detail) || hits.Load() != 0 {
				t.Errorf("status %d, upstream hit %d times: %s", rec.Code, hits.Load(), rec.Body)
			}
		})
	}
	for _, mod := range []func(r *http.Request){
		func(r *http.Request) {},
		func(r *http.Request) { h2(r); r.Header.Set("Host", "GW.example") },
		func(r *http.Request) {
			h2(r)
			r.Host, r.URL.Host = "gw.example:443", ""
			r.Header.Set("Host", "gw.example")
		}, // the default port
		func(r *http.Request) {
			h2(r)
			r.Method = "POST"
			r.ContentLength = 2
			r.Header["Content-Length"] = []string{"2", "2"}
		},
		func(r *http.Request) {
			h2(r)
			r.Method = "POST"
			r.ContentLength = 2
			r.Header.Set("Content-Length", "2")
		},
	} {
		req := httptest.NewRequest("GET", "http://gw.example/public/x?a=1", strings.NewReader("{}"))
		mod(req)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("a plain request: status %d, want 200: %s", rec.Code, rec.Body)
		}
	}
	if hits.Load() != 5 {
		t.Errorf("upstream hit %d times, want 5", hits.Load())
	}
}

// TestNoContentTypeInvented: an upstream answer without a Content-Type
// gets none through net/http's servers (TLS, h2c) either, which would
// otherwise guess one from the body, text/html included.
func TestNoContentTypeInvented(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // send none
		w.Header().Set("X-Content-Type-Options", "nosniff")
		io.WriteString(w, "<html><body><script>alert(document.domain)</script></body></html>")
	}))
	h := baseHandler(t, up)
	for _, srv := range []*httptest.Server{httptest.NewServer(h), httptest.NewTLSServer(h)} {
		t.Cleanup(srv.Close)
		// Also an upgrade the upstream refuses, which takes another path.
		for _, upgrade := range []bool{false, true} {
			req, _ := http.NewRequest("GET", srv.URL+"/public/x", nil)
			if upgrade {
				req.Header.Set("Connection", "upgrade")
				req.Header.Set("Upgrade", "websocket")
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 200 || len(res.Header["Content-Type"]) != 0 {
				t.Errorf("%s (upgrade %v): status %d, Content-Type %q, want none", srv.URL, upgrade, res.StatusCode, res.Header["Content-Type"])
			}
		}
	}
	// Through the gateway's own server, as before.
	gw := serveGateway(t, h)
	res, _ := do(t, "GET", gw.URL+"/public/x", nil)
	if len(res.Header["Content-Type"]) != 0 {
		t.Errorf("own server: Content-Type %q, want none", res.Header["Content-Type"])
	}
}

// TestConfigDocuments: an empty document after the configuration (a file
// that ends with ---) is nothing; a second one with content, or broken,
// is refused; an empty file is said to be empty.
func TestConfigDocuments(t *testing.T) {
	for _, empty := range []string{"", "# nothing\n"} {
		if _, err := Parse([]byte(empty)); err == nil || !strings.Contains(err.Error(), "the configuration is empty") {
			t.Errorf("Parse(%q) = %v, want it said to be empty", empty, err)
		}
	}
	const base = "listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: a\n    path_prefix: /\n    upstreams: [http://127.0.0.1:1]\n"
	for _, tc := range []struct {
		name, tail, want string
	}{
		{"OKEndsWithSeparator", "---\n", ""},
		{"OKSeparatorAndComment", "--- # end\n# nothing more\n", ""},
		{"OKDocumentEnd", "...\n", ""},
		{"ErrSecondDocument", "---\nlisten: other\n", "more than one YAML document"},
		{"ErrSecondBroken", "---\n: bad: [\n", "second YAML document (---) that does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(base + tc.tail))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Parse = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestConfigAliases: a value named once (&name) is used by several routes
// (*name, and <<: *name to merge a mapping), as YAML loaders allow.
func TestConfigAliases(t *testing.T) {
	cfg, err := Parse([]byte(`
listen: 127.0.0.1:0
workspace: default
x-upstreams: &ups [http://127.0.0.1:9001, http://127.0.0.1:9002]
x-defaults: &defaults
  upstreams: *ups
  scopes: [orders:read]
  timeout: 5s
x-strict: &strict
  scopes: [admin]
  auth: required
routes:
  - name: orders
    path_prefix: /orders
    <<: *defaults
  - name: admin
    path_prefix: /admin
    <<: [*strict, *defaults]
    timeout: 9s
  - &plain
    name: plain
    path_prefix: /plain
    upstreams: *ups
    auth: none
  - <<: *plain
    name: other
    path_prefix: /other
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 4 {
		t.Fatalf("%d routes", len(cfg.Routes))
	}
	ups := []string{"http://127.0.0.1:9001", "http://127.0.0.1:9002"}
	upstreams := func(r Route) []string {
		var out []string
		for _, u := range r.Upstreams {
			out = append(out, u.String())
		}
		return out
	}
	for _, tc := range []struct {
		i       int
		name    string
		scopes  []string
		timeout time.Duration
		auth    string
	}{
		{0, "orders", []string{"orders:read"}, 5 * time.Second, AuthRequired},
		// The first merged mapping wins; the route's own key wins over both.
		{1, "admin", []string{"admin"}, 9 * time.Second, AuthRequired},
		{2, "plain", nil, DefaultTimeout, AuthNone},
		{3, "other", nil, DefaultTimeout, AuthNone},
	} {
		r := cfg.Routes[tc.i]
		if r.Name != tc.name || !slices.Equal(r.Scopes, tc.scopes) || r.Timeout != tc.timeout || r.Auth != tc.auth || !slices.Equal(upstreams(r), ups) {
			t.Errorf("routes[%d] = %+v", tc.i, r)
		}
	}
	if cfg.Routes[3].PathPrefix != "/other" {
		t.Errorf("routes[3].path_prefix = %q, want the route's own", cfg.Routes[3].PathPrefix)
	}
}

func TestConfigAliasErrors(t *testing.T) {
	const head = "listen: 127.0.0.1:0\nworkspace: default\n"
	// Six lists of ten, each item the list before: 10^6 values.
	laughs := head + "x-a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for c := 'b'; c <= 'f'; c++ {
		item := "*" + string(c-1)
		laughs += fmt.Sprintf("x-%c: &%c [%s]\n", c, c, strings.Repeat(item+", ", 9)+item)
	}
	laughs += "routes:\n  - {name: r, path_prefix: /, upstreams: *f}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"UnknownAnchor", head + "routes:\n  - {name: r, path_prefix: /, upstreams: *none}\n",
			"cfg.yaml:4: yaml: unknown anchor 'none' referenced"},
		// The alias's line, not the anchor's, for a value it stands for.
		{"AliasedScalarLine", head + "x-t: &t soon\nroutes:\n  - name: r\n    path_prefix: /\n    upstreams: [http://a]\n    timeout: *t\n",
			`cfg.yaml:8: routes[0].timeout: "soon" is not a positive duration`},
		{"MergeRepeatedKey", head + "x-d: &d\n  timeout: 1s\n  timeout: 2s\nroutes:\n  - name: r\n    <<: *d\n    path_prefix: /\n    upstreams: [http://a]\n",
			"cfg.yaml:5: routes[0].timeout: repeated key"},
		{"TwoMergeKeys", head + "x-a: &a {timeout: 1s}\nx-b: &b {timeout: 2s}\nroutes:\n  - name: r\n    <<: *a\n    <<: *b\n    path_prefix: /\n    upstreams: [http://a]\n",
			"cfg.yaml:8: <<: repeated key: merge several mappings as one list, <<: [*a, *b]"},
		{"MergeScalar", head + "x-s: &s text\nroutes:\n  - name: r\n    <<: *s\n    path_prefix: /\n    upstreams: [http://a]\n",
			"cfg.yaml:6: <<: must name a mapping (<<: *name) or a list of them"},
		{"SelfReference", head + "routes: &r\n  - name: r\n    path_prefix: /\n    upstreams: [http://a]\n    scopes: *r\n",
			"cfg.yaml:7: alias *r is used within the value it names"},
		// Resolved once each, not into a million values, and refused.
		{"BillionLaughs", laughs, "cfg.yaml:1: the aliases (*name) make the configuration more than 100000 values: use fewer, or name smaller values"},
		// 400 routes of 400 upstreams, 160,000 values read from a 5 KB
		// file (3,000 of 3,000, 24 KB, took 100 s and 8 GB to list the
		// errors of): refused too.
		{"Quadratic", head + "x-l: &l [x]\nx-u: &u [" + strings.Repeat("*l, ", 399) + "*l]\nx-r: &r {name: r, path_prefix: /, upstreams: *u}\nroutes: [" + strings.Repeat("*r, ", 399) + "*r]\n",
			"cfg.yaml:1: the aliases (*name) make the configuration more than 100000 values: use fewer, or name smaller values"},
		{"ExtensionOnlyAtTop", head + "routes:\n  - name: r\n    x-note: hi\n    path_prefix: /\n    upstreams: [http://a]\n",
			"cfg.yaml:5: routes[0].x-note: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cfg.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load: no error, want %q", tc.want)
			}
			got := strings.ReplaceAll(err.Error(), filepath.Dir(path)+string(filepath.Separator), "")
			if !strings.Contains(got, tc.want) {
				t.Fatalf("Load = %q, want %q in it", got, tc.want)
			}
		})
	}
}

// TestConfigAliasesNested: values named within named values, each used,
// are resolved once each: the resolved file holds the file's lists, and
// one for each alias, rather than a copy of every inner one for each
// alias around it (200 nested lists made 20,000, and 5,000 in an 80 KB
// file took 20 s and 2 GB).
func TestConfigAliasesNested(t *testing.T) {
	const depth = 200
	var b strings.Builder
	b.WriteString("x-n: ")
	for i := range depth {
		fmt.Fprintf(&b, "&a%d [", i)
	}
	b.WriteString("x" + strings.Repeat("]", depth) + "\nx-m: [")
	for i := range depth {
		fmt.Fprintf(&b, "*a%d, ", i)
	}
	b.WriteString("x]\n")
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatal(err)
	}
	root, cerr := resolveAliases(doc.Content[0])
	if cerr != nil {
		t.Fatal(cerr)
	}
	lists := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if lists[n] {
			return
		}
		if n.Kind == yaml.SequenceNode {
			lists[n] = true
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(root)
	// The file's 201, and the one at each alias's line.
	if want := 2*depth + 1; len(lists) != want {
		t.Errorf("the resolved file holds %d lists, want %d", len(lists), want)
	}
}

// TestConfigDuplicatesOnce: a route that repeats several before it is
// reported once, with the first: copies of a route, which aliases make
// cheap, make one error each rather than one for each pair (4,000 copies,
// a 16 KB file, made 16 million errors, 148 s and 8.5 GB).
func TestConfigDuplicatesOnce(t *testing.T) {
	_, err := Parse([]byte(`
listen: 127.0.0.1:0
workspace: default
case_insensitive_paths: true
routes:
  - {name: r, path_prefix: /r, upstreams: [http://a]}
  - {name: r, path_prefix: /r, upstreams: [http://a]}
  - {name: r, path_prefix: /r, upstreams: [http://a]}
  - {name: r, path_prefix: /r, upstreams: [http://a]}
  - {name: get, path_prefix: /a, methods: [GET], upstreams: [http://a]}
  - {name: post, path_prefix: /A, methods: [POST], upstreams: [http://a]}
  - {name: any, path_prefix: /a, upstreams: [http://a]}
  - {name: post-get, path_prefix: /a/, methods: [POST, GET], upstreams: [http://a]}
  - {name: put, path_prefix: /a, methods: [PUT], upstreams: [http://a]}
  - {name: other-host, host: example.com, path_prefix: /a, methods: [PUT], upstreams: [http://a]}
`))
	got := configErrorLines(t, err)
	want := []string{
		`7: routes[1].name: "r" is also the name of routes[0]`,
		`7: routes[1]: duplicates routes[0] (same host, path_prefix and methods)`,
		`8: routes[2].name: "r" is also the name of routes[0]`,
		`8: routes[2]: duplicates routes[0] (same host, path_prefix and methods)`,
		`9: routes[3].name: "r" is also the name of routes[0]`,
		`9: routes[3]: duplicates routes[0] (same host, path_prefix and methods)`,
		`12: routes[6]: duplicates routes[4] (same host, path_prefix and methods)`,
		`13: routes[7]: duplicates routes[4] (same host, path_prefix and methods)`,
		`14: routes[8]: duplicates routes[6] (same host, path_prefix and methods)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestConfigAliasLines: a list or mapping that an alias names is at the
// alias's line for its own errors (a route without a name, an upstreams
// that is not a list), as a scalar is; the fields within keep theirs.
func TestConfigAliasLines(t *testing.T) {
	_, err := Parse([]byte(`listen: 127.0.0.1:0
workspace: default
x-r: &r {path_prefix: /r, upstreams: [http://a], timeout: soon}
x-m: &m {a: b}
routes:
  - {name: a, path_prefix: /a, upstreams: [http://a]}
  - *r
  - {name: b, path_prefix: /b, upstreams: *m}
`))
	got := configErrorLines(t, err)
	want := []string{
		`3: routes[1].timeout: "soon" is not a positive duration such as "30s"`,
		`7: routes[1].name: required`,
		`8: routes[2].upstreams: must be a list`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// configErrorLines returns err's problems as "line: field: message".
func configErrorLines(t *testing.T, err error) []string {
	t.Helper()
	var ce *ConfigErrors
	if !errors.As(err, &ce) {
		t.Fatalf("Parse: %v, want *ConfigErrors", err)
	}
	var lines []string
	for _, e := range ce.Errs {
		lines = append(lines, fmt.Sprintf("%d: %s: %s", e.Line, e.Field, e.Msg))
	}
	return lines
}

// routeObserver records the route and status of each request observed.
type routeObserver struct {
	mu   sync.Mutex
	seen map[string]int // "route status": requests
}

func (o *routeObserver) ObserveGateway(route string, status int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen[fmt.Sprintf("%s %d", route, status)]++
}

func (o *routeObserver) ObserveGatewayVerify(time.Duration)           {}
func (o *routeObserver) ObserveGatewayUpstream(string, time.Duration) {}

// TestObserverUnmatched: requests no route takes (404, 405 for any
// method, 400 for an unclean path) are observed under the route name
// "unmatched", whatever their path, host or method, so that clients
// cannot add metric series; a matched one under its route's name.
func TestObserverUnmatched(t *testing.T) {
	up := echoUpstream(t, "u")
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: orders\n    path_prefix: /orders\n    methods: [GET]\n    auth: none\n    upstreams: [" + up.URL + "]\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(cfg, newFake(), "ws_1", nil)
	t.Cleanup(func() { h.Close() })
	obs := &routeObserver{seen: map[string]int{}}
	h.SetObserver(obs)
	s := serveGateway(t, h)
	for _, tc := range []struct {
		method, path, host string
		status             int
	}{
		{"GET", "/orders/1", "", 200},
		{"GET", "/nope", "", 404},
		{"GET", "/other", "a.example", 404},
		{"FOOBAR", "/orders", "", 405},
		{"BAZ", "/orders/2", "b.example", 405},
		{"GET", "/orders/../admin", "", 400},
	} {
		res, _ := do(t, tc.method, s.URL+tc.path, map[string]string{"Host": tc.host})
		if res.StatusCode != tc.status {
			t.Fatalf("%s %s: %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := map[string]int{"orders 200": 1, "unmatched 404": 2, "unmatched 405": 2, "unmatched 400": 1}
	if !maps.Equal(obs.seen, want) {
		t.Errorf("observed %v, want %v", obs.seen, want)
	}
}

// TestConfigUnmatchedReserved: no route may take the name that labels
// unmatched requests in the metrics.
func TestConfigUnmatchedReserved(t *testing.T) {
	_, err := Parse([]byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: unmatched\n    path_prefix: /x\n    upstreams: [http://127.0.0.1:1]\n"))
	if want := `4: routes[0].name: "unmatched" is reserved: it labels the requests no route matched in /metrics`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want %s", err, want)
	}
}

// TestBearerNotSetOffBySpace: RFC 6750 §2.1 sets the token off from
// "Bearer" with spaces only. A token set off by a tab is a credential
// presented in a form that cannot be used: refused as an invalid token
// (PRODUCT §5), on an optional route too, not taken for no credential,
// which would pass the optional route without identity and answer the
// required one with the challenge of a request that sent none. Another
// scheme, or the scheme with nothing after it, presents no token.
func TestBearerNotSetOffBySpace(t *testing.T) {
	gw, fake, _ := base(t)
	const invalid, none = `Bearer realm="keyward", error="invalid_token"`, `Bearer realm="keyward"`
	for _, tt := range []struct {
		name, auth, path string
		status           int
		challenge        string
		verified         string // the text verified; "" for none
	}{
		{"OK", "Bearer good", "/orders", 200, "", "good"},
		{"ErrTab", "Bearer\tgood", "/orders", 401, invalid, "\tgood"},
		{"ErrTabOptional", "Bearer\tgood", "/maybe", 401, invalid, "\tgood"},
		{"ErrTabLowerCase", "bearer\tgood", "/orders", 401, invalid, "\tgood"},
		{"ErrTabAfterSpace", "Bearer \tgood", "/maybe", 401, invalid, "\tgood"},
		{"ErrNoBreakSpace", "Bearer \u00a0good", "/orders", 401, invalid, "\u00a0good"},
		{"OKTrailingTab", "Bearer good\t", "/orders", 200, "", "good"},
		{"NoTokenAfterScheme", "Bearer", "/orders", 401, none, ""},
		{"NoTokenAfterSchemeOptional", "Bearer", "/maybe", 200, "", ""},
		{"OtherScheme", "Basic Z29vZA==", "/orders", 401, none, ""},
		{"OtherSchemeOptional", "Basic Z29vZA==", "/maybe", 200, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake.mu.Lock()
			fake.lastReq = verify.Request{}
			fake.mu.Unlock()
			res, body := do(t, "GET", gw.URL+tt.path, map[string]string{"Authorization": tt.auth})
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, body)
			}
			if got := res.Header.Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
			}
			if got := fake.last().Token; got != tt.verified {
				t.Errorf("verified %q, want %q", got, tt.verified)
			}
			if tt.status == 200 && tt.path == "/maybe" {
				if s := upstreamSaw(t, body); s.Header.Get("Authorization") != "" || s.Header.Get("X-Keyward-Token-Id") != "" {
					t.Errorf("the upstream saw %v", s.Header)
				}
			}
		})
	}
	t.Run("TokenHeaderSpaces", func(t *testing.T) {
		// The token header's value loses the spaces and tabs around it
		// (OWS), and nothing else: a no-break space stays with the
		// token, which is then invalid.
		for _, tt := range []struct {
			value, verified string
			status          int
		}{
			{" good\t", "good", 200},
			{"\u00a0good", "\u00a0good", 401},
			{"good\u0085", "good\u0085", 401},
		} {
			res, body := do(t, "GET", gw.URL+"/keyed", map[string]string{"X-API-Key": tt.value})
			if res.StatusCode != tt.status {
				t.Errorf("X-API-Key %q: status %d, want %d: %s", tt.value, res.StatusCode, tt.status, body)
			}
			if got := fake.last().Token; got != tt.verified {
				t.Errorf("X-API-Key %q: verified %q, want %q", tt.value, got, tt.verified)
			}
		}
	})
	t.Run("ErrTabAndTokenHeader", func(t *testing.T) {
		// Two credentials, as with a space: which one counts would be a
		// guess.
		res, body := do(t, "GET", gw.URL+"/keyed", map[string]string{"Authorization": "Bearer\tgood", "X-API-Key": "good"})
		if res.StatusCode != 400 || res.Header.Get("WWW-Authenticate") != `Bearer realm="keyward", error="invalid_request"` {
			t.Errorf("status %d, WWW-Authenticate %q, want 400 invalid_request: %s", res.StatusCode, res.Header.Get("WWW-Authenticate"), body)
		}
	})
}
