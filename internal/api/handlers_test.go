package api_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/verify"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	revokedID, revoked := s.newToken("revoked", "keyward:admin")
	wantStatus(t, s.do("POST", "/v1/tokens/"+revokedID+"/revoke", s.root, nil), http.StatusOK)
	suspendedID, suspended := s.newToken("suspended", "keyward:admin")
	wantStatus(t, s.do("POST", "/v1/tokens/"+suspendedID+"/suspend", s.root, nil), http.StatusOK)
	_, plain := s.newToken("plain", "orders:read")
	_, reader := s.newToken("reader", "keyward:tokens:read")
	_, admin := s.newToken("admin", "keyward:admin")

	const challenge = `Bearer realm="keyward"`
	// The same challenge for a credential that is not valid (PRODUCT §5).
	const invalid = challenge
	tests := []struct {
		name          string
		method, path  string
		authorization string // the whole header; "" for none
		body          any
		status        int
		code          string
		challenge     string // WWW-Authenticate; "" for none
	}{
		{"ErrNoCredential", "GET", "/v1/tokens", "", nil, 401, "unauthorized", challenge},
		{"ErrEmptyBearer", "GET", "/v1/tokens", "Bearer ", nil, 401, "unauthorized", challenge},
		{"ErrGarbageToken", "GET", "/v1/tokens", "Bearer garbage", nil, 401, "unauthorized", invalid},
		{"ErrUnknownToken", "GET", "/v1/tokens", "Bearer " + unknownToken(t), nil, 401, "unauthorized", invalid},
		{"ErrRevokedToken", "GET", "/v1/tokens", "Bearer " + revoked, nil, 401, "unauthorized", invalid},
		{"ErrSuspendedToken", "GET", "/v1/tokens", "Bearer " + suspended, nil, 401, "unauthorized", invalid},
		{"ErrNoCredentialOnWrite", "POST", "/v1/tokens", "", map[string]any{"name": "x"}, 401, "unauthorized", challenge},
		{"ErrNotManagementToken", "GET", "/v1/tokens", "Bearer " + plain, nil, 403, "forbidden", ""},
		{"ErrReadOnlyWrites", "POST", "/v1/tokens", "Bearer " + reader, map[string]any{"name": "x"}, 403, "forbidden", ""},
		{"ErrReadOnlyVerifies", "POST", "/v1/verify", "Bearer " + reader, map[string]any{"token": "x"}, 403, "forbidden", ""},
		{"ErrReadOnlyAudit", "GET", "/v1/audit", "Bearer " + reader, nil, 403, "forbidden", ""},
		{"ErrAdminCreatesWorkspace", "POST", "/v1/workspaces", "Bearer " + admin, map[string]any{"name": "acme"}, 403, "forbidden", ""},
		{"ErrAdminListsWorkspaces", "GET", "/v1/workspaces", "Bearer " + admin, nil, 403, "forbidden", ""},
		{"OKReadOnlyReads", "GET", "/v1/tokens", "Bearer " + reader, nil, 200, "", ""},
		{"OKAdminVerifies", "POST", "/v1/verify", "Bearer " + admin, map[string]any{"token": "x"}, 200, "", ""},
		{"OKAdminAudit", "GET", "/v1/audit", "Bearer " + admin, nil, 200, "", ""},
		{"OKLowercaseScheme", "GET", "/v1/tokens", "bearer " + admin, nil, 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := s.request(tt.method, tt.path, "", tt.body)
			if tt.authorization != "" {
				req.Header.Set("Authorization", tt.authorization)
			}
			before := s.state()
			r := s.send(req)
			if tt.code == "" {
				wantStatus(t, r, tt.status)
				return
			}
			wantProblem(t, r, tt.status, tt.code)
			if got := r.Header.Get("WWW-Authenticate"); tt.challenge != "" && got != tt.challenge {
				t.Fatalf("WWW-Authenticate = %q, want %q", got, tt.challenge)
			}
			s.wantUnchanged(before)
		})
	}
}

func TestWorkspaces(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	r := s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "acme", "token_prefix": "acme"})
	wantStatus(t, r, http.StatusCreated)
	ws := r.object(t)
	id, _ := ws["id"].(string)
	if !strings.HasPrefix(id, "ws_") || ws["name"] != "acme" || ws["token_prefix"] != "acme" {
		t.Fatalf("created workspace = %s", r.Body)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(ws["created_at"])); err != nil {
		t.Fatalf("created_at = %v: %v", ws["created_at"], err)
	}
	acme, _ := ws["token"].(string)
	if p, err := secret.Parse(acme); err != nil || p.Prefix != "acme" {
		t.Fatalf("workspace token %q does not parse with prefix acme: %v", acme, err)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", cc)
	}

	t.Run("OKNewAdminSeesOnlyItsWorkspace", func(t *testing.T) {
		r := s.do("GET", "/v1/tokens", acme, nil)
		wantStatus(t, r, http.StatusOK)
		var l struct {
			Items []struct {
				ID     string   `json:"id"`
				Name   string   `json:"name"`
				Scopes []string `json:"scopes"`
			}
		}
		json.Unmarshal(r.Body, &l)
		if len(l.Items) != 1 || l.Items[0].Name != "admin" || !slices.Equal(l.Items[0].Scopes, []string{"keyward:admin"}) {
			t.Fatalf("acme's tokens = %s, want only its admin token", r.Body)
		}
	})
	t.Run("ErrOtherWorkspacesToken", func(t *testing.T) {
		wantProblem(t, s.do("GET", "/v1/tokens/"+s.rootID, acme, nil), 404, "not_found")
		wantProblem(t, s.do("PATCH", "/v1/tokens/"+s.rootID, acme, map[string]any{"name": "x"}), 404, "not_found")
		wantProblem(t, s.do("POST", "/v1/tokens/"+s.rootID+"/revoke", acme, nil), 404, "not_found")
		r := s.do("POST", "/v1/verify", acme, map[string]any{"token": s.root})
		wantStatus(t, r, 200)
		if m := r.object(t); m["code"] != "NOT_FOUND" {
			t.Fatalf("verify of another workspace's token = %s, want NOT_FOUND", r.Body)
		}
		r = s.form("/oauth2/introspect", "Bearer "+acme, url.Values{"token": {s.root}})
		if r.Status != 200 || string(r.Body) != `{"active":false}` {
			t.Fatalf("introspect of another workspace's token = %d %s", r.Status, r.Body)
		}
		wantStatus(t, s.form("/oauth2/revoke", "Bearer "+acme, url.Values{"token": {s.root}}), 200)
		s.wantCode(s.root, "VALID")
	})
	t.Run("ErrDuplicateName", func(t *testing.T) {
		wantProblem(t, s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "acme"}), 409, "conflict")
		// Names that read alike are taken for each other.
		wantProblem(t, s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "ACME"}), 409, "conflict")
		wantInvalid(t, s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "acme "}), "/name")
		wantInvalid(t, s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": " other"}), "/name")
	})
	t.Run("ErrBadPrefix", func(t *testing.T) {
		wantInvalid(t, s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "beta", "token_prefix": "B"}), "/token_prefix")
		// Empty is no prefix, not the default (absent or null).
		p := wantInvalid(t, s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "beta", "token_prefix": ""}), "/token_prefix")
		if errs, _ := p["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["detail"] != "token prefix must be 2 to 16 characters" {
			t.Errorf("errors = %v", p["errors"])
		}
	})
	t.Run("OKDefaultPrefix", func(t *testing.T) {
		r := s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "gamma", "token_prefix": nil})
		wantStatus(t, r, http.StatusCreated)
		if ws := r.object(t); ws["token_prefix"] != "kw" {
			t.Fatalf("token_prefix null: %s, want kw", r.Body)
		}
	})
	t.Run("ErrNoName", func(t *testing.T) {
		wantInvalid(t, s.do("POST", "/v1/workspaces", s.root, map[string]any{}), "/name")
	})
	t.Run("OKList", func(t *testing.T) {
		r := s.do("GET", "/v1/workspaces", s.root, nil)
		wantStatus(t, r, 200)
		var l struct {
			Items []map[string]any `json:"items"`
		}
		json.Unmarshal(r.Body, &l)
		var names []string
		for _, it := range l.Items {
			names = append(names, it["name"].(string))
			if _, ok := it["token"]; ok {
				t.Errorf("workspace list shows a token: %v", it)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"acme", "default", "gamma"}) {
			t.Fatalf("workspaces = %q, want acme, default and gamma", names)
		}
	})
}

func TestCreateToken(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	before := s.clock.Now()
	r := s.do("POST", "/v1/tokens", s.root, map[string]any{
		"name":          "ci deploy",
		"scopes":        []string{"orders:read", "orders:write"},
		"expires_in":    "720h",
		"allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/32"},
		"rate_limit":    map[string]any{"limit": 100, "window": "1m"},
		"quota":         map[string]any{"limit": 10000, "period": "month"},
		"subject":       "customer-42",
		"metadata":      map[string]any{"team": "payments"},
	})
	after := s.clock.Now()
	wantStatus(t, r, http.StatusCreated)
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", cc)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	var v struct {
		ID           string          `json:"id"`
		Token        string          `json:"token"`
		Hint         string          `json:"hint"`
		State        string          `json:"state"`
		Name         string          `json:"name"`
		Scopes       []string        `json:"scopes"`
		ExpiresAt    time.Time       `json:"expires_at"`
		AllowedCIDRs []string        `json:"allowed_cidrs"`
		RateLimit    json.RawMessage `json:"rate_limit"`
		Quota        json.RawMessage `json:"quota"`
		Subject      string          `json:"subject"`
		Metadata     json.RawMessage `json:"metadata"`
		CreatedBy    string          `json:"created_by"`
		CreatedAt    time.Time       `json:"created_at"`
		RevokedAt    *time.Time      `json:"revoked_at"`
	}
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.ID, "tok_") {
		t.Errorf("id = %q, want tok_...", v.ID)
	}
	if p, err := secret.Parse(v.Token); err != nil || p.Prefix != "kw" || len(v.Token) != 41 {
		t.Errorf("token %q is not a 41-character kw_ token: %v", v.Token, err)
	}
	if want := "kw_…" + v.Token[len(v.Token)-4:]; v.Hint != want {
		t.Errorf("hint = %q, want %q", v.Hint, want)
	}
	if v.State != "active" || v.Name != "ci deploy" || v.Subject != "customer-42" || v.CreatedBy != s.rootID || v.RevokedAt != nil {
		t.Errorf("token = %s", r.Body)
	}
	if !slices.Equal(v.Scopes, []string{"orders:read", "orders:write"}) || !slices.Equal(v.AllowedCIDRs, []string{"203.0.113.0/24", "2001:db8::/32"}) {
		t.Errorf("scopes %q, allowed_cidrs %q", v.Scopes, v.AllowedCIDRs)
	}
	if string(v.RateLimit) != `{"limit":100,"window":"1m"}` || string(v.Quota) != `{"limit":10000,"period":"month"}` || string(v.Metadata) != `{"team":"payments"}` {
		t.Errorf("rate_limit %s, quota %s, metadata %s", v.RateLimit, v.Quota, v.Metadata)
	}
	lo, hi := before.Add(720*time.Hour).Truncate(time.Second), after.Add(720*time.Hour)
	if v.ExpiresAt.Before(lo) || v.ExpiresAt.After(hi) || v.ExpiresAt.Location() != time.UTC {
		t.Errorf("expires_at = %v, want 720h from now (%v…%v) in UTC", v.ExpiresAt, lo, hi)
	}
	if v.CreatedAt.Before(before.Truncate(time.Millisecond)) || v.CreatedAt.After(after) {
		t.Errorf("created_at = %v, want between %v and %v", v.CreatedAt, before, after)
	}

	t.Run("OKGetNeverShowsSecret", func(t *testing.T) {
		for _, path := range []string{"/v1/tokens/" + v.ID, "/v1/tokens?limit=500"} {
			r := s.do("GET", path, s.root, nil)
			wantStatus(t, r, 200)
			if strings.Contains(string(r.Body), v.Token) || strings.Contains(string(r.Body), `"token"`) {
				t.Fatalf("GET %s shows the secret: %s", path, r.Body)
			}
		}
		got := s.get(v.ID)
		for _, k := range []string{"state", "last_used_at", "last_used_ip", "rotated_at", "revoked_at", "suspended_at", "updated_at", "revoke_reason", "suspend_reason"} {
			if _, ok := got[k]; !ok {
				t.Errorf("GET token has no %q: %v", k, got)
			}
		}
	})
	t.Run("OKVerifies", func(t *testing.T) {
		// The token has an allowlist: without an ip the verify API fails closed.
		if m := s.verify(v.Token, "orders:read"); m["code"] != "IP_NOT_ALLOWED" {
			t.Fatalf("verify without ip = %v, want IP_NOT_ALLOWED", m["code"])
		}
		r := s.do("POST", "/v1/verify", s.root, map[string]any{"token": v.Token, "scopes": []string{"orders:read"}, "ip": "203.0.113.9"})
		wantStatus(t, r, 200)
		if m := r.object(t); m["code"] != "VALID" || m["valid"] != true {
			t.Fatalf("verify = %s, want VALID", r.Body)
		}
	})
	t.Run("OKMinimal", func(t *testing.T) {
		m := s.create(map[string]any{"name": "minimal"})
		for k, want := range map[string]string{"scopes": "[]", "allowed_cidrs": "[]", "expires_at": "null", "rate_limit": "null", "quota": "null", "metadata": "null", "subject": `""`} {
			b, _ := json.Marshal(m[k])
			if _, ok := m[k]; !ok || string(b) != want {
				t.Errorf("%s = %s, want %s", k, b, want)
			}
		}
	})
	t.Run("OKExpiresAt", func(t *testing.T) {
		at := s.clock.Now().Add(48 * time.Hour).Truncate(time.Second)
		m := s.create(map[string]any{"name": "at", "expires_at": at.Format(time.RFC3339)})
		if m["expires_at"] != at.Format(time.RFC3339) {
			t.Fatalf("expires_at = %v, want %s", m["expires_at"], at.Format(time.RFC3339))
		}
	})
	t.Run("OKExpiresAtLowercase", func(t *testing.T) {
		// RFC 3339 §5.6: "T" and "Z" may be lowercase.
		at := s.clock.Now().Add(48 * time.Hour).Truncate(time.Second).UTC()
		m := s.create(map[string]any{"name": "at", "expires_at": strings.ToLower(at.Format(time.RFC3339))})
		if m["expires_at"] != at.Format(time.RFC3339) {
			t.Fatalf("expires_at = %v, want %s", m["expires_at"], at.Format(time.RFC3339))
		}
	})
	t.Run("OKWholeNumbersWrittenAsFloats", func(t *testing.T) {
		// 100.0 and 1e2 are integers to JSON Schema, and what a client
		// that counts in floats sends.
		r := s.do("POST", "/v1/tokens", s.root, json.RawMessage(`{"name":"floats","rate_limit":{"limit":100.0,"window":"1m"},"quota":{"limit":1e3,"period":"day"}}`))
		wantStatus(t, r, 201)
		var m struct {
			RateLimit struct{ Limit int64 } `json:"rate_limit"`
			Quota     struct{ Limit int64 }
		}
		json.Unmarshal(r.Body, &m)
		if m.RateLimit.Limit != 100 || m.Quota.Limit != 1000 {
			t.Fatalf("limits %d and %d, want 100 and 1000: %s", m.RateLimit.Limit, m.Quota.Limit, r.Body)
		}
	})
	t.Run("OKNullsMeanAbsent", func(t *testing.T) {
		m := s.create(map[string]any{"name": "nulls", "scopes": nil, "expires_at": nil, "rate_limit": nil, "quota": nil, "subject": nil, "metadata": nil, "allowed_cidrs": nil})
		if m["rate_limit"] != nil || m["expires_at"] != nil || m["subject"] != "" {
			t.Fatalf("token = %v", m)
		}
	})
}

// TestTokenListsTidied: repeated scopes are kept once, and a CIDR is
// stored as the prefix it means, on create and on update.
func TestTokenListsTidied(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	m := s.create(map[string]any{"name": "tidy", "scopes": []string{"a:read", "b", "a:read"},
		"allowed_cidrs": []string{"10.0.0.1/8", "10.0.0.0/8", "192.0.2.7", "2001:db8::1/32"}})
	want := func(m map[string]any, scopes, cidrs string) {
		t.Helper()
		if got := fmt.Sprint(m["scopes"]); got != scopes {
			t.Errorf("scopes = %s, want %s", got, scopes)
		}
		if got := fmt.Sprint(m["allowed_cidrs"]); got != cidrs {
			t.Errorf("allowed_cidrs = %s, want %s", got, cidrs)
		}
	}
	want(m, "[a:read b]", "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32]")
	r := s.do("PATCH", "/v1/tokens/"+m["id"].(string), s.root, map[string]any{"scopes": []string{"c", "c"}, "allowed_cidrs": []string{"198.51.100.9/24"}})
	wantStatus(t, r, 200)
	want(r.object(t), "[c]", "[198.51.100.0/24]")
}

func TestCreateTokenBadInput(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	future := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name    string
		body    string
		pointer string
	}{
		{"ErrMalformedJSON", `{"name":`, ""},
		{"ErrEmptyBody", ``, ""},
		{"ErrNotJSON", `name=x`, ""},
		{"ErrArray", `["name"]`, ""},
		{"ErrString", `"name"`, ""},
		{"ErrNull", `null`, ""},
		{"ErrNumber", `42`, ""},
		{"ErrTwoObjects", `{"name":"a"} {"name":"b"}`, ""},
		{"ErrUnknownField", `{"name":"a","bogus":1}`, "/bogus"},
		{"ErrUnknownNestedField", `{"name":"a","rate_limit":{"limit":1,"window":"1m","burst":2}}`, "/rate_limit/burst"},
		{"ErrNameNumber", `{"name":5}`, "/name"},
		{"ErrFieldNameCase", `{"Name":"a"}`, "/Name"},
		{"ErrNameMissing", `{"scopes":["orders:read"]}`, "/name"},
		{"ErrNameEmpty", `{"name":""}`, "/name"},
		{"ErrNameTooLong", `{"name":"` + strings.Repeat("n", 201) + `"}`, "/name"},
		{"ErrNameControl", `{"name":"a\u0000b"}`, "/name"},
		{"ErrScopesString", `{"name":"a","scopes":"orders:read"}`, "/scopes"},
		{"ErrScopesNumbers", `{"name":"a","scopes":[1]}`, "/scopes"},
		{"ErrScope", `{"name":"a","scopes":["orders:read","Orders:Read"]}`, "/scopes/1"},
		{"ErrScopeBareWildcard", `{"name":"a","scopes":["*"]}`, "/scopes/0"},
		{"ErrScopeUnknownManagement", `{"name":"a","scopes":["keyward:bogus"]}`, "/scopes/0"},
		{"ErrCIDR", `{"name":"a","allowed_cidrs":["10.0.0.0/33"]}`, "/allowed_cidrs/0"},
		{"ErrCIDRsString", `{"name":"a","allowed_cidrs":"10.0.0.0/8"}`, "/allowed_cidrs"},
		{"ErrExpiresAtPast", `{"name":"a","expires_at":"2000-01-01T00:00:00Z"}`, "/expires_at"},
		{"ErrExpiresAtFar", `{"name":"a","expires_at":"9999-12-31T23:59:59-05:00"}`, "/expires_at"},
		{"ErrExpiresAtBeyondNanoseconds", `{"name":"a","expires_at":"2262-04-12T00:00:00Z"}`, "/expires_at"},
		{"ErrExpiresInFar", `{"name":"a","expires_in":"2000000h"}`, "/expires_in"},
		{"ErrExpiresAtNotRFC3339", `{"name":"a","expires_at":"tomorrow"}`, "/expires_at"},
		{"ErrExpiresAtNumber", `{"name":"a","expires_at":1767225600}`, "/expires_at"},
		{"ErrExpiresBoth", `{"name":"a","expires_in":"1h","expires_at":"` + future + `"}`, "/expires_in"},
		{"ErrExpiresInNegative", `{"name":"a","expires_in":"-1h"}`, "/expires_in"},
		{"ErrExpiresInZero", `{"name":"a","expires_in":"0s"}`, "/expires_in"},
		{"ErrExpiresInNoUnit", `{"name":"a","expires_in":"3600"}`, "/expires_in"},
		{"ErrRateLimitNotObject", `{"name":"a","rate_limit":100}`, "/rate_limit"},
		{"ErrRateLimitLimitString", `{"name":"a","rate_limit":{"limit":"5","window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitLimitFraction", `{"name":"a","rate_limit":{"limit":1.5,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitLimitHuge", `{"name":"a","rate_limit":{"limit":1e30,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitLimitFractionExponent", `{"name":"a","rate_limit":{"limit":15e-1,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitLimitHugeExponent", `{"name":"a","rate_limit":{"limit":1e-999999999,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitLimitZeroHugeExponent", `{"name":"a","rate_limit":{"limit":0e99999,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitLimitBeyondInt64", `{"name":"a","rate_limit":{"limit":9223372036854775808.0,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitNegative", `{"name":"a","rate_limit":{"limit":-1,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitZero", `{"name":"a","rate_limit":{"limit":0,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrRateLimitNoLimit", `{"name":"a","rate_limit":{"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrWindowZero", `{"name":"a","rate_limit":{"limit":1,"window":"0s"}}`, "/rate_limit/window"},
		{"ErrWindowMissing", `{"name":"a","rate_limit":{"limit":1}}`, "/rate_limit/window"},
		{"ErrWindowNumber", `{"name":"a","rate_limit":{"limit":1,"window":60}}`, "/rate_limit/window"},
		{"ErrWindowTooLong", `{"name":"a","rate_limit":{"limit":1,"window":"745h"}}`, "/rate_limit/window"},
		{"ErrQuotaWeek", `{"name":"a","quota":{"limit":1,"period":"week"}}`, "/quota/period"},
		{"ErrQuotaZero", `{"name":"a","quota":{"limit":0,"period":"day"}}`, "/quota/limit"},
		{"ErrQuotaNotObject", `{"name":"a","quota":"daily"}`, "/quota"},
		{"ErrMetadataArray", `{"name":"a","metadata":[1,2]}`, "/metadata"},
		{"ErrMetadataString", `{"name":"a","metadata":"team"}`, "/metadata"},
		{"ErrMetadataTooLarge", `{"name":"a","metadata":{"a":"` + strings.Repeat("x", 8<<10) + `"}}`, "/metadata"},
		// What parsers read differently: the body as a whole is refused,
		// pointing at the field that holds it when one does.
		{"ErrDuplicateName", `{"name":"a","name":"b"}`, ""},
		{"ErrMetadataDuplicateName", `{"name":"a","metadata":{"role":"user","role":"admin"}}`, "/metadata"},
		{"ErrMetadataHugeNumber", `{"name":"a","metadata":{"n":1e400}}`, "/metadata"},
		{"ErrMetadataLoneSurrogate", `{"name":"a","metadata":{"s":"\ud800"}}`, "/metadata"},
		{"ErrMetadataNotUTF8", "{\"name\":\"a\",\"metadata\":{\"s\":\"\xff\"}}", "/metadata"},
		{"ErrNameNotUTF8", "{\"name\":\"u8\xff\"}", "/name"},
		{"ErrTwoAmbiguousFields", `{"subject":{"a":1,"a":2},"name":"a","metadata":{"n":1e400}}`, "/metadata"},
		{"ErrExpiresInUnderASecond", `{"name":"a","expires_in":"500ms"}`, "/expires_in"},
		{"ErrRateLimitNullLimit", `{"name":"a","rate_limit":{"limit":null,"window":"1m"}}`, "/rate_limit/limit"},
		{"ErrSubjectTrailingSpace", `{"name":"a","subject":"customer-42 "}`, "/subject"},
		{"ErrSubjectNonASCII", `{"name":"a","subject":"müller"}`, "/subject"},
		{"ErrSubjectNumber", `{"name":"a","subject":42}`, "/subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.state()
			wantInvalid(t, s.do("POST", "/v1/tokens", s.root, tt.body), tt.pointer)
			s.wantUnchanged(before)
		})
	}

	t.Run("ErrSeveralFields", func(t *testing.T) {
		before := s.state()
		p := wantInvalid(t, s.do("POST", "/v1/tokens", s.root, `{"name":"","scopes":["Bad"],"rate_limit":{"limit":-1,"window":"1m"},"subject":" x"}`), "/name")
		if ps := pointersOf(t, p); !slices.Equal(ps, []string{"/name", "/scopes/0", "/rate_limit/limit", "/subject"}) {
			t.Fatalf("pointers = %q", ps)
		}
		s.wantUnchanged(before)
	})
	t.Run("OKAnyContentType", func(t *testing.T) {
		// JSON is read whatever the Content-Type says (curl -d sends a form
		// type); the API takes no cookies, so a cross-site form gains nothing.
		req := s.request("POST", "/v1/tokens", s.root, `{"name":"form typed"}`)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		wantStatus(t, s.send(req), http.StatusCreated)
	})
	t.Run("ErrTooLarge", func(t *testing.T) {
		before := s.state()
		body := `{"name":"a","metadata":{"a":"` + strings.Repeat("x", 1<<20) + `"}}`
		wantProblem(t, s.do("POST", "/v1/tokens", s.root, body), http.StatusRequestEntityTooLarge, "too_large")
		s.wantUnchanged(before)
	})
	t.Run("ErrTooLargeWithoutContentLength", func(t *testing.T) {
		before := s.state()
		body := `{"name":"` + strings.Repeat("x", 1<<20) + `"}`
		req := s.request("POST", "/v1/tokens", s.root, nil)
		req.Header.Set("Content-Type", "application/json")
		req.Body = readerOnly{strings.NewReader(body)}
		req.ContentLength = -1
		wantProblem(t, s.send(req), http.StatusRequestEntityTooLarge, "too_large")
		s.wantUnchanged(before)
	})
}

// readerOnly hides every method of its reader but Read, so that the client
// sends the body chunked, without a Content-Length.
type readerOnly struct{ r *strings.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }
func (r readerOnly) Close() error               { return nil }

// TestCreateTokenTrailingData checks that a body holding more than one JSON
// value is refused, whatever follows the object.
// TestAmbiguousFieldPointer: what parsers read differently is reported at
// the field that holds it, with what that field holds.
func TestAmbiguousFieldPointer(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r := s.do("POST", "/v1/tokens", s.root, json.RawMessage(`{"subject":{"a":1,"a":2},"name":"a","metadata":{"n":1e400}}`))
	p := wantInvalid(t, r, "/metadata")
	errs := p["errors"].([]any)
	if len(errs) != 1 || !strings.Contains(errs[0].(map[string]any)["detail"].(string), "number") {
		t.Fatalf("errors %v, want one about /metadata's number", errs)
	}
}

func TestCreateTokenTrailingData(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, tt := range []struct{ name, body string }{
		{"ErrTrailingObject", `{"name":"a"}{}`},
		{"ErrTrailingWord", `{"name":"a"} x`},
		{"ErrTrailingBrace", `{"name":"a"}}`},
		{"ErrTrailingBracket", `{"name":"a"}]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := s.state()
			wantInvalid(t, s.do("POST", "/v1/tokens", s.root, tt.body), "")
			s.wantUnchanged(before)
		})
	}
}

// TestUnknownFieldPointerEscaped checks that a field name holding '/' or '~'
// is escaped in its JSON pointer as RFC 6901 requires.
func TestUnknownFieldPointerEscaped(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	wantInvalid(t, s.do("POST", "/v1/tokens", s.root, `{"name":"a","a/b~c":1}`), "/a~1b~0c")
}

// TestCreateTokenDeepMetadata checks that metadata nested deeper than the
// store's JSON parser accepts is refused as invalid, not failed as an
// internal error.
func TestCreateTokenDeepMetadata(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, depth := range []int{100, 998, 1001, 2000} {
		t.Run(fmt.Sprintf("Depth%d", depth), func(t *testing.T) {
			meta := `{"a":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
			before := s.state()
			r := s.do("POST", "/v1/tokens", s.root, `{"name":"deep","metadata":`+meta+`}`)
			switch r.Status {
			case http.StatusCreated:
				id := r.object(t)["id"].(string)
				got, _ := json.Marshal(s.get(id)["metadata"])
				if string(got) != meta {
					t.Fatalf("stored metadata differs from the one sent")
				}
			case http.StatusBadRequest:
				wantInvalid(t, r, "/metadata")
				s.wantUnchanged(before)
			default:
				t.Fatalf("status = %d, want 201 or 400; body: %s", r.Status, r.Body)
			}
		})
	}
}

func TestListTokens(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	t.Run("ErrLimit", func(t *testing.T) {
		for _, q := range []string{"limit=0", "limit=501", "limit=abc", "limit=-1", "limit=1.5", "limit=%201"} {
			wantInvalid(t, s.do("GET", "/v1/tokens?"+q, s.root, nil), "/limit")
		}
	})
	t.Run("ErrState", func(t *testing.T) {
		wantInvalid(t, s.do("GET", "/v1/tokens?state=bogus", s.root, nil), "/state")
	})
	t.Run("OKLimitBounds", func(t *testing.T) {
		wantStatus(t, s.do("GET", "/v1/tokens?limit=1", s.root, nil), 200)
		wantStatus(t, s.do("GET", "/v1/tokens?limit=500", s.root, nil), 200)
	})

	var paged []string
	for i := 0; i < 5; i++ {
		id, _ := s.newToken(fmt.Sprintf("page-%d", i))
		paged = append(paged, id)
	}
	t.Run("OKPaging", func(t *testing.T) {
		var seen []string
		cursor := ""
		for pageNo := 1; ; pageNo++ {
			if pageNo > 10 {
				t.Fatal("paging does not end")
			}
			path := "/v1/tokens?limit=2&name=page-"
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			r := s.do("GET", path, s.root, nil)
			wantStatus(t, r, 200)
			var l map[string]json.RawMessage
			json.Unmarshal(r.Body, &l)
			var items []struct{ ID string }
			json.Unmarshal(l["items"], &items)
			for _, it := range items {
				seen = append(seen, it.ID)
			}
			raw, has := l["next_cursor"]
			last := pageNo == 3
			if want := map[bool]int{false: 2, true: 1}[last]; len(items) != want {
				t.Fatalf("page %d has %d items, want %d: %s", pageNo, len(items), want, r.Body)
			}
			if last {
				if has {
					t.Fatalf("last page has next_cursor %s", raw)
				}
				break
			}
			if !has {
				t.Fatalf("page %d has no next_cursor", pageNo)
			}
			json.Unmarshal(raw, &cursor)
			if cursor != items[len(items)-1].ID {
				t.Fatalf("next_cursor = %q, want the last id shown %q", cursor, items[len(items)-1].ID)
			}
		}
		// Ids made in one millisecond may sort either way: compare as sets
		// of ids, each seen once.
		want := slices.Clone(paged)
		slices.Sort(want)
		if !slices.Equal(seen, want) {
			t.Fatalf("pages visited %q, want each of %q once, in id order", seen, paged)
		}
	})
	t.Run("ErrCursor", func(t *testing.T) {
		// A cursor that is not an id of the listed kind would answer some
		// page, quietly: refused on every list.
		for _, path := range []string{
			"/v1/tokens?cursor=bogus", "/v1/tokens?cursor=" + paged[0][:10], "/v1/tokens?cursor=ws_01m85kevx6kke0qegzbn8j1mjt",
			"/v1/workspaces?cursor=tok_01m85kevx6kke0qegzbn8j1mjt", "/v1/audit?cursor=zzz", "/v1/usage/events?cursor=evt_x",
			"/v1/reports/dormant?days=30&cursor=1", "/v1/reports/tokens?cursor=tok_", "/v1/tokens?cursor=TOK_01M85KEVX6KKE0QEGZBN8J1MJT",
		} {
			wantInvalid(t, s.do("GET", path, s.root, nil), "/cursor")
		}
		wantStatus(t, s.do("GET", "/v1/tokens?cursor="+paged[0], s.root, nil), 200)
	})
	t.Run("OKExactPageHasNoCursor", func(t *testing.T) {
		r := s.do("GET", "/v1/tokens?limit=5&name=page-", s.root, nil)
		wantStatus(t, r, 200)
		m := r.object(t)
		if _, ok := m["next_cursor"]; ok || len(m["items"].([]any)) != 5 {
			t.Fatalf("limit=5 over 5 tokens = %s, want 5 items and no next_cursor", r.Body)
		}
	})
	t.Run("OKDefaultLimit", func(t *testing.T) {
		r := s.do("GET", "/v1/tokens", s.root, nil)
		wantStatus(t, r, 200)
		if n := len(r.object(t)["items"].([]any)); n != 6 {
			t.Fatalf("%d items, want 6 (root and 5)", n)
		}
	})

	t.Run("OKFilters", func(t *testing.T) {
		s := newStack(t)
		a := s.create(map[string]any{"name": "Alpha Deploy", "subject": "cust-1", "scopes": []string{"orders:read"}})["id"].(string)
		b := s.create(map[string]any{"name": "beta", "subject": "cust-2", "scopes": []string{"orders:write"}})["id"].(string)
		c := s.create(map[string]any{"name": "gamma alpha", "subject": "cust-1", "scopes": []string{"orders:*"}})["id"].(string)
		d := s.create(map[string]any{"name": "delta", "expires_in": "1h", "scopes": []string{"orders:read", "users:read"}})["id"].(string)
		e := s.create(map[string]any{"name": "Ünïcode ÄLPHA"})["id"].(string)
		wantStatus(t, s.do("POST", "/v1/tokens/"+b+"/revoke", s.root, nil), 200)
		wantStatus(t, s.do("POST", "/v1/tokens/"+c+"/suspend", s.root, nil), 200)
		s.clock.Advance(time.Hour + time.Second)

		tests := []struct {
			name  string
			query string
			want  []string
		}{
			{"StateActive", "state=active", []string{s.rootID, a, e}},
			{"StateRevoked", "state=revoked", []string{b}},
			{"StateSuspended", "state=suspended", []string{c}},
			{"StateExpired", "state=expired", []string{d}},
			{"Subject", "subject=cust-1", []string{a, c}},
			{"SubjectExact", "subject=cust", nil},
			{"ScopeExact", "scope=orders:read", []string{a, d}},
			{"ScopeWildcardIsLiteral", "scope=orders:*", []string{c}},
			{"NameSubstringCaseInsensitive", "name=ALPHA", []string{a, c}},
			{"NameUnicodeFold", "name=älpha", []string{e}},
			{"NamePercentIsLiteral", "name=" + url.QueryEscape("%"), nil},
			{"Combined", "name=alpha&state=suspended", []string{c}},
			{"CombinedSubjectScope", "subject=cust-1&scope=orders:read", []string{a}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := s.do("GET", "/v1/tokens?"+tt.query, s.root, nil)
				wantStatus(t, r, 200)
				var l struct {
					Items []struct{ ID, State string }
				}
				json.Unmarshal(r.Body, &l)
				var got []string
				for _, it := range l.Items {
					got = append(got, it.ID)
				}
				want := slices.Clone(tt.want)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("GET /v1/tokens?%s = %q, want %q", tt.query, got, want)
				}
				if st, ok := strings.CutPrefix(tt.query, "state="); ok {
					for _, it := range l.Items {
						if it.State != st {
							t.Fatalf("item %s has state %q in a list filtered on %q", it.ID, it.State, st)
						}
					}
				}
			})
		}
	})
}

// TestPatchLimitNoneToMerge: a partial rate limit or quota on a token that
// has none says which field is missing and why, not that zero is refused.
func TestPatchLimitNoneToMerge(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id := s.create(map[string]any{"name": "bare"})["id"].(string)
	for _, tc := range []struct{ patch, pointer, detail string }{
		{`{"quota":{"limit":7}}`, "/quota/period", "period is required: the token has no quota to merge into, so give both fields"},
		{`{"rate_limit":{"window":"1m"}}`, "/rate_limit/limit", "limit is required: the token has no rate limit to merge into, so give both fields"},
		{`{"rate_limit":{}}`, "/rate_limit/limit", "limit is required: the token has no rate limit to merge into, so give both fields"},
	} {
		p := wantInvalid(t, s.do("PATCH", "/v1/tokens/"+id, s.root, json.RawMessage(tc.patch)), tc.pointer)
		found := false
		for _, e := range p["errors"].([]any) {
			e := e.(map[string]any)
			if e["pointer"] == tc.pointer {
				found = e["detail"] == tc.detail
			}
		}
		if !found {
			t.Errorf("PATCH %s: errors %v, want %q at %s", tc.patch, p["errors"], tc.detail, tc.pointer)
		}
	}
	if m := s.get(id); m["rate_limit"] != nil || m["quota"] != nil {
		t.Errorf("a refused PATCH set a limit: %v", m)
	}
	// Whole, they are taken; then a partial one merges.
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, json.RawMessage(`{"quota":{"limit":7,"period":"day"}}`)), 200)
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, json.RawMessage(`{"quota":{"limit":8}}`)), 200)
}

func TestPatchToken(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	exp := s.clock.Now().Add(48 * time.Hour).Truncate(time.Second).Format(time.RFC3339)
	full := func(t *testing.T) (string, map[string]any) {
		t.Helper()
		m := s.create(map[string]any{
			"name":          "full",
			"scopes":        []string{"orders:read"},
			"expires_at":    exp,
			"allowed_cidrs": []string{"10.0.0.0/8"},
			"rate_limit":    map[string]any{"limit": 10, "window": "1m"},
			"quota":         map[string]any{"limit": 100, "period": "day"},
			"subject":       "cust-1",
			"metadata":      map[string]any{"a": 1, "b": map[string]any{"x": 1, "y": 2}},
		})
		return m["id"].(string), s.get(m["id"].(string))
	}
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }

	tests := []struct {
		name  string
		patch string
		// want lists the fields expected to change and their JSON; every
		// other field of the token object must stay as it was.
		want map[string]string
	}{
		{"OKEmptyPatch", `{}`, nil},
		{"OKName", `{"name":"renamed"}`, map[string]string{"name": `"renamed"`}},
		{"OKScopes", `{"scopes":["orders:write","users:*"]}`, map[string]string{"scopes": `["orders:write","users:*"]`}},
		{"OKNullScopes", `{"scopes":null}`, map[string]string{"scopes": `[]`}},
		{"OKNullExpiresAt", `{"expires_at":null}`, map[string]string{"expires_at": `null`}},
		{"OKNullAllowedCIDRs", `{"allowed_cidrs":null}`, map[string]string{"allowed_cidrs": `[]`}},
		{"OKNullRateLimit", `{"rate_limit":null}`, map[string]string{"rate_limit": `null`}},
		{"OKNullQuota", `{"quota":null}`, map[string]string{"quota": `null`}},
		{"OKNullSubject", `{"subject":null}`, map[string]string{"subject": `""`}},
		{"OKNullMetadata", `{"metadata":null}`, map[string]string{"metadata": `null`}},
		{"OKMetadataMerge", `{"metadata":{"a":null,"c":3}}`, map[string]string{"metadata": `{"b":{"x":1,"y":2},"c":3}`}},
		{"OKMetadataNestedMerge", `{"metadata":{"b":{"x":null,"z":3}}}`, map[string]string{"metadata": `{"a":1,"b":{"y":2,"z":3}}`}},
		{"OKMetadataReplaceValue", `{"metadata":{"b":"flat"}}`, map[string]string{"metadata": `{"a":1,"b":"flat"}`}},
		{"OKRateLimitPartial", `{"rate_limit":{"limit":5}}`, map[string]string{"rate_limit": `{"limit":5,"window":"1m"}`}},
		{"OKRateLimitWindowOnly", `{"rate_limit":{"window":"1h"}}`, map[string]string{"rate_limit": `{"limit":10,"window":"1h"}`}},
		{"OKQuotaPartial", `{"quota":{"period":"month"}}`, map[string]string{"quota": `{"limit":100,"period":"month"}`}},
		{"OKSeveral", `{"name":"n","subject":"cust-2","allowed_cidrs":["192.0.2.0/24"]}`, map[string]string{"name": `"n"`, "subject": `"cust-2"`, "allowed_cidrs": `["192.0.2.0/24"]`}},
	}
	stable := []string{"id", "name", "hint", "state", "scopes", "expires_at", "allowed_cidrs", "rate_limit", "quota", "subject", "metadata", "created_by", "created_at", "rotated_at", "revoked_at", "suspended_at"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, before := full(t)
			st := s.state()
			r := s.do("PATCH", "/v1/tokens/"+id, s.root, tt.patch)
			wantStatus(t, r, 200)
			patched := r.object(t)
			after := s.get(id)
			for _, k := range stable {
				want, changed := tt.want[k]
				if !changed {
					want = js(before[k])
				}
				if got := js(after[k]); got != want {
					t.Errorf("%s = %s, want %s", k, got, want)
				}
				if got := js(patched[k]); got != js(after[k]) {
					t.Errorf("PATCH response %s = %s, but GET says %s", k, got, js(after[k]))
				}
			}
			if _, ok := patched["token"]; ok {
				t.Errorf("PATCH response shows a secret")
			}
			wantEvents := 1
			if tt.want == nil {
				wantEvents = 0 // nothing changed: nothing to audit
			}
			if n := len(s.newEvents(st)); n != wantEvents {
				t.Errorf("%d audit events added, want %d", n, wantEvents)
			}
		})
	}

	bad := []struct {
		name, patch, pointer string
	}{
		{"ErrNullName", `{"name":null}`, "/name"},
		{"ErrEmptyName", `{"name":""}`, "/name"},
		{"ErrExpiresAtPast", `{"expires_at":"2000-01-01T00:00:00Z"}`, "/expires_at"},
		{"ErrExpiresAtFar", `{"expires_at":"9999-12-31T23:59:59Z"}`, "/expires_at"},
		{"ErrUnknownField", `{"bogus":1}`, "/bogus"},
		{"ErrImmutableField", `{"id":"tok_x"}`, "/id"},
		{"ErrStateField", `{"revoked":true}`, "/revoked"},
		{"ErrScope", `{"scopes":["Bad"]}`, "/scopes/0"},
		{"ErrRateLimitZero", `{"rate_limit":{"limit":0}}`, "/rate_limit/limit"},
		{"ErrQuotaPeriod", `{"quota":{"period":"week"}}`, "/quota/period"},
		{"ErrMetadataNotObject", `{"metadata":[1]}`, "/metadata"},
		{"ErrMetadataDuplicateName", `{"metadata":{"role":"user","role":"admin"}}`, "/metadata"},
		// RFC 7396 would remove the member, leaving the object incomplete.
		{"ErrRateLimitNullWindow", `{"rate_limit":{"window":null}}`, "/rate_limit/window"},
		{"ErrRateLimitNullLimit", `{"rate_limit":{"limit":null}}`, "/rate_limit/limit"},
		{"ErrQuotaNullLimit", `{"quota":{"limit":null}}`, "/quota/limit"},
		{"ErrQuotaNullPeriod", `{"quota":{"period":null}}`, "/quota/period"},
		{"ErrExpiresInAndClear", `{"expires_in":"1h","expires_at":null}`, "/expires_in"},
		{"ErrSubject", `{"subject":"x "}`, "/subject"},
		{"ErrNotObject", `[]`, ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			id, before := full(t)
			st := s.state()
			wantInvalid(t, s.do("PATCH", "/v1/tokens/"+id, s.root, tt.patch), tt.pointer)
			if got, want := js(s.get(id)), js(before); got != want {
				t.Fatalf("a refused PATCH changed the token:\nbefore %s\nafter  %s", want, got)
			}
			s.wantUnchanged(st)
		})
	}

	t.Run("OKRateLimitAdded", func(t *testing.T) {
		id, _ := s.newToken("plain")
		r := s.do("PATCH", "/v1/tokens/"+id, s.root, `{"rate_limit":{"limit":3,"window":"10s"}}`)
		wantStatus(t, r, 200)
		if got := js(r.object(t)["rate_limit"]); got != `{"limit":3,"window":"10s"}` {
			t.Fatalf("rate_limit = %s", got)
		}
	})
	t.Run("ErrRateLimitPartialWithoutOne", func(t *testing.T) {
		id, _ := s.newToken("plain")
		wantInvalid(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"rate_limit":{"limit":3}}`), "/rate_limit/window")
	})
	t.Run("ErrRevoked", func(t *testing.T) {
		id, _ := full(t)
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, nil), 200)
		st := s.state()
		wantProblem(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"name":"again"}`), 409, "conflict")
		if s.get(id)["name"] != "full" {
			t.Fatal("PATCH of a revoked token changed it")
		}
		s.wantUnchanged(st)
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		wantProblem(t, s.do("PATCH", "/v1/tokens/tok_00000000000000000000000000", s.root, `{"name":"x"}`), 404, "not_found")
	})
	t.Run("OKExpiredTokenRenamed", func(t *testing.T) {
		// An expiry that passed is not the patch's fault: a rename succeeds,
		// and a new expiry brings the token back.
		s := newStack(t)
		c := s.create(map[string]any{"name": "old", "expires_in": "1m", "scopes": []string{"a"}})
		id, text := c["id"].(string), c["token"].(string)
		s.clock.Advance(2 * time.Minute)
		r := s.do("PATCH", "/v1/tokens/"+id, s.root, `{"name":"renamed"}`)
		wantStatus(t, r, 200)
		if m := r.object(t); m["name"] != "renamed" || m["state"] != "expired" {
			t.Fatalf("patched expired token = %s", r.Body)
		}
		wantInvalid(t, s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"expires_at": s.clock.Now().Add(-time.Second).Format(time.RFC3339)}), "/expires_at")
		r = s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"expires_at": s.clock.Now().Add(time.Hour).Format(time.RFC3339)})
		wantStatus(t, r, 200)
		if m := r.object(t); m["state"] != "active" {
			t.Fatalf("token with a new expiry = %s", r.Body)
		}
		s.wantCode(text, "VALID")
	})
	t.Run("OKExpiresIn", func(t *testing.T) {
		id, text := s.newToken("p", "a")
		r := s.do("PATCH", "/v1/tokens/"+id, s.root, `{"expires_in":"1h"}`)
		wantStatus(t, r, 200)
		at, err := time.Parse(time.RFC3339, fmt.Sprint(r.object(t)["expires_at"]))
		if d := time.Until(at); err != nil || d < 59*time.Minute || d > time.Hour {
			t.Fatalf("expires_at = %v (%v), want in about 1h", r.object(t)["expires_at"], err)
		}
		s.wantCode(text, "VALID")
	})
	t.Run("OKPatchedTokenVerifiesNewScopes", func(t *testing.T) {
		id, text := s.newToken("p", "orders:read")
		wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"scopes":["orders:write"]}`), 200)
		if m := s.verify(text, "orders:read"); m["code"] != "INSUFFICIENT_SCOPE" {
			t.Fatalf("verify of the removed scope = %v, want INSUFFICIENT_SCOPE", m["code"])
		}
		if m := s.verify(text, "orders:write"); m["code"] != "VALID" {
			t.Fatalf("verify of the added scope = %v, want VALID", m["code"])
		}
	})
}

func TestEscalation(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	writerID, writer := s.newToken("writer", "keyward:tokens:write")
	_, admin := s.newToken("admin", "keyward:admin")
	plainID, _ := s.newToken("plain", "orders:read")

	t.Run("ErrWriterCreatesAdmin", func(t *testing.T) {
		st := s.state()
		wantProblem(t, s.do("POST", "/v1/tokens", writer, map[string]any{"name": "x", "scopes": []string{"keyward:admin"}}), 403, "forbidden")
		s.wantUnchanged(st)
	})
	t.Run("ErrWriterCreatesVerify", func(t *testing.T) {
		st := s.state()
		wantProblem(t, s.do("POST", "/v1/tokens", writer, map[string]any{"name": "x", "scopes": []string{"orders:read", "keyward:verify"}}), 403, "forbidden")
		s.wantUnchanged(st)
	})
	t.Run("ErrWriterAddsVerify", func(t *testing.T) {
		st := s.state()
		wantProblem(t, s.do("PATCH", "/v1/tokens/"+plainID, writer, map[string]any{"scopes": []string{"orders:read", "keyward:verify"}}), 403, "forbidden")
		if got := s.get(plainID)["scopes"].([]any); len(got) != 1 || got[0] != "orders:read" {
			t.Fatalf("scopes = %v after a refused PATCH", got)
		}
		s.wantUnchanged(st)
	})
	t.Run("ErrWriterGrantsItselfVerify", func(t *testing.T) {
		wantProblem(t, s.do("PATCH", "/v1/tokens/"+writerID, writer, map[string]any{"scopes": []string{"keyward:tokens:write", "keyward:verify"}}), 403, "forbidden")
	})
	for _, op := range []string{"rotate", "revoke", "suspend", "resume"} {
		t.Run("ErrWriter_"+op+"_Root", func(t *testing.T) {
			st := s.state()
			wantProblem(t, s.do("POST", "/v1/tokens/"+s.rootID+"/"+op, writer, nil), 403, "forbidden")
			s.wantUnchanged(st)
			s.wantCode(s.root, "VALID")
		})
	}
	t.Run("ErrWriterPatchesRoot", func(t *testing.T) {
		wantProblem(t, s.do("PATCH", "/v1/tokens/"+s.rootID, writer, map[string]any{"name": "mine"}), 403, "forbidden")
	})
	t.Run("ErrAdminCreatesInstance", func(t *testing.T) {
		wantProblem(t, s.do("POST", "/v1/tokens", admin, map[string]any{"name": "x", "scopes": []string{"keyward:instance"}}), 403, "forbidden")
	})
	t.Run("OKWriterCreatesPlain", func(t *testing.T) {
		wantStatus(t, s.do("POST", "/v1/tokens", writer, map[string]any{"name": "x", "scopes": []string{"orders:*"}}), 201)
	})
	t.Run("OKWriterCreatesWhatItHolds", func(t *testing.T) {
		wantStatus(t, s.do("POST", "/v1/tokens", writer, map[string]any{"name": "x", "scopes": []string{"keyward:tokens:write"}}), 201)
	})
	t.Run("OKWriterPatchesPlain", func(t *testing.T) {
		wantStatus(t, s.do("PATCH", "/v1/tokens/"+plainID, writer, map[string]any{"scopes": []string{"orders:write"}}), 200)
	})
	t.Run("OKAdminCreatesVerify", func(t *testing.T) {
		wantStatus(t, s.do("POST", "/v1/tokens", admin, map[string]any{"name": "x", "scopes": []string{"keyward:verify", "keyward:audit:read"}}), 201)
	})
	t.Run("OKRootCreatesAdminAndInstance", func(t *testing.T) {
		wantStatus(t, s.do("POST", "/v1/tokens", s.root, map[string]any{"name": "x", "scopes": []string{"keyward:admin", "keyward:instance"}}), 201)
	})
	t.Run("OKRootAddsVerify", func(t *testing.T) {
		r := s.do("PATCH", "/v1/tokens/"+plainID, s.root, map[string]any{"scopes": []string{"orders:read", "keyward:verify"}})
		wantStatus(t, r, 200)
		if got := r.object(t)["scopes"].([]any); len(got) != 2 || got[1] != "keyward:verify" {
			t.Fatalf("scopes = %v", got)
		}
	})
	t.Run("OKRootRotatesRoot", func(t *testing.T) {
		r := s.do("POST", "/v1/tokens/"+s.rootID+"/rotate", s.root, map[string]any{"grace_period": "1h"})
		wantStatus(t, r, 200)
		old := s.root
		s.root = r.object(t)["token"].(string)
		s.wantCode(s.root, "VALID")
		s.wantCode(old, "VALID") // in its grace
	})
}

// TestBoundManagementTokens: a management token bound to networks or to a
// lifetime cannot lift its bounds, nor get or hand out a management token
// without them.
func TestBoundManagementTokens(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	m := s.create(map[string]any{"name": "ci", "scopes": []string{"keyward:tokens:write"},
		"allowed_cidrs": []string{"127.0.0.0/8"}, "expires_in": "1h"})
	boundID, bound := m["id"].(string), m["token"].(string)
	freeID, _ := s.newToken("free", "keyward:tokens:write")
	peer := func(extra map[string]any) map[string]any {
		b := map[string]any{"name": "peer", "scopes": []string{"keyward:tokens:write"}}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}
	// In order: the last ones change the bound token.
	for _, tc := range []struct {
		name         string
		method, path string
		body         map[string]any
		want         int
		detail       string
	}{
		{"ErrLiftsOwnCIDRs", "PATCH", "/v1/tokens/" + boundID, map[string]any{"allowed_cidrs": nil}, 403, "must keep to the calling token's allowed_cidrs (127.0.0.0/8)"},
		{"ErrWidensOwnCIDRs", "PATCH", "/v1/tokens/" + boundID, map[string]any{"allowed_cidrs": []string{"127.0.0.0/8", "10.0.0.0/8"}}, 403, "10.0.0.0/8 is outside the calling token's allowed_cidrs"},
		{"ErrLiftsOwnExpiry", "PATCH", "/v1/tokens/" + boundID, map[string]any{"expires_at": nil}, 403, "cannot be valid after the calling token, which expires at "},
		{"ErrPeerUnbound", "POST", "/v1/tokens", peer(map[string]any{"expires_in": "30m"}), 403, "must keep to the calling token's allowed_cidrs"},
		{"ErrPeerWider", "POST", "/v1/tokens", peer(map[string]any{"expires_in": "30m", "allowed_cidrs": []string{"0.0.0.0/1"}}), 403, "0.0.0.0/1 is outside"},
		{"ErrPeerNoExpiry", "POST", "/v1/tokens", peer(map[string]any{"allowed_cidrs": []string{"127.0.0.1"}}), 403, "cannot be valid after the calling token"},
		{"ErrPeerLonger", "POST", "/v1/tokens", peer(map[string]any{"allowed_cidrs": []string{"127.0.0.1"}, "expires_in": "2h"}), 403, "cannot be valid after the calling token"},
		{"ErrRotatesUnbound", "POST", "/v1/tokens/" + freeID + "/rotate", map[string]any{}, 403, "cannot rotate the token"},
		{"ErrBoundsUnbound", "PATCH", "/v1/tokens/" + freeID, map[string]any{"scopes": []string{"keyward:tokens:write", "orders:read"}}, 403, "cannot change the token"},
		{"OKPeerWithin", "POST", "/v1/tokens", peer(map[string]any{"allowed_cidrs": []string{"127.0.0.1"}, "expires_in": "30m"}), 201, ""},
		{"OKAppTokenUnbound", "POST", "/v1/tokens", map[string]any{"name": "app", "scopes": []string{"orders:read"}}, 201, ""},
		{"OKRenamesItself", "PATCH", "/v1/tokens/" + boundID, map[string]any{"name": "ci (renamed)"}, 200, ""},
		{"OKNarrowsOwnCIDRs", "PATCH", "/v1/tokens/" + boundID, map[string]any{"allowed_cidrs": []string{"127.0.0.0/16"}}, 200, ""},
		{"OKRenamesUnbound", "PATCH", "/v1/tokens/" + freeID, map[string]any{"name": "free (renamed)"}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, bound, tc.body)
			if tc.want >= 400 {
				p := wantProblem(t, r, tc.want, "forbidden")
				if d, _ := p["detail"].(string); !strings.Contains(d, tc.detail) {
					t.Errorf("detail %q, want it to hold %q", d, tc.detail)
				}
				return
			}
			wantStatus(t, r, tc.want)
		})
	}
	if got := s.get(boundID); got["expires_at"] == nil || got["allowed_cidrs"] == nil {
		t.Errorf("the bound token after the refusals: %v", got)
	}
	// A new workspace's first admin token takes the bounds of the token
	// that made it.
	inst := s.create(map[string]any{"name": "provisioner", "scopes": []string{"keyward:instance"},
		"allowed_cidrs": []string{"127.0.0.0/8"}, "expires_in": "1h"})
	r := s.do("POST", "/v1/workspaces", inst["token"].(string), map[string]any{"name": "tenant"})
	wantStatus(t, r, http.StatusCreated)
	admin := r.object(t)["token"].(string)
	r = s.do("GET", "/v1/tokens", admin, nil)
	wantStatus(t, r, http.StatusOK)
	items := r.object(t)["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("the new workspace's tokens: %s", r.Body)
	}
	got := items[0].(map[string]any)
	if got["expires_at"] != inst["expires_at"] || fmt.Sprint(got["allowed_cidrs"]) != "[127.0.0.0/8]" {
		t.Errorf("the new workspace's admin token: expires_at %v, allowed_cidrs %v; want %v, [127.0.0.0/8]", got["expires_at"], got["allowed_cidrs"], inst["expires_at"])
	}
	// The root token, bound by nothing, binds nothing.
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+boundID, s.root, map[string]any{"allowed_cidrs": nil, "expires_at": nil}), 200)
}

// TestLimitedManagementTokens: a management token with a rate limit or a
// quota cannot lift or loosen them, nor get or hand out a management
// token admitted more often; the tokens it makes for customers take any
// limits.
func TestLimitedManagementTokens(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	m := s.create(map[string]any{"name": "ci", "scopes": []string{"keyward:tokens:write"},
		"rate_limit": map[string]any{"limit": 50, "window": "1h"}, "quota": map[string]any{"limit": 500, "period": "day"}})
	limitedID, limited := m["id"].(string), m["token"].(string)
	freeID, _ := s.newToken("free", "keyward:tokens:write")
	within := map[string]any{"rate_limit": map[string]any{"limit": 50, "window": "1h"}, "quota": map[string]any{"limit": 500, "period": "day"}}
	peer := func(rate, quota any) map[string]any {
		return map[string]any{"name": "peer", "scopes": []string{"keyward:tokens:write"}, "rate_limit": rate, "quota": quota}
	}
	rl := func(limit int, window string) map[string]any { return map[string]any{"limit": limit, "window": window} }
	qt := func(limit int, period string) map[string]any { return map[string]any{"limit": limit, "period": period} }
	for _, tc := range []struct {
		name         string
		method, path string
		body         map[string]any
		want         int
		detail       string
	}{
		{"ErrLiftsOwnLimits", "PATCH", "/v1/tokens/" + limitedID, map[string]any{"rate_limit": nil, "quota": nil}, 403,
			"cannot change the token: a token with keyward: scopes must keep to the calling token's rate_limit (50 per 1h)"},
		{"ErrLiftsOwnQuota", "PATCH", "/v1/tokens/" + limitedID, map[string]any{"quota": nil}, 403,
			"cannot change the token: a token with keyward: scopes must keep to the calling token's quota (500 per day)"},
		{"ErrRaisesOwnLimit", "PATCH", "/v1/tokens/" + limitedID, map[string]any{"rate_limit": map[string]any{"limit": 51}}, 403,
			"cannot change the token: a rate_limit of 51 per 1h admits 51 in 1h, more than the calling token's rate_limit (50 per 1h)"},
		{"ErrShortensOwnWindow", "PATCH", "/v1/tokens/" + limitedID, map[string]any{"rate_limit": map[string]any{"window": "59m"}}, 403,
			"a rate_limit of 50 per 59m admits 100 in 1h"},
		{"ErrRaisesOwnQuota", "PATCH", "/v1/tokens/" + limitedID, map[string]any{"quota": map[string]any{"limit": 501}}, 403,
			"cannot change the token: a quota of 501 per day admits more than the calling token's quota (500 per day)"},
		{"ErrPeerUnlimited", "POST", "/v1/tokens", peer(nil, nil), 403, "cannot create the token: a token with keyward: scopes must keep to the calling token's rate_limit"},
		{"ErrPeerNoQuota", "POST", "/v1/tokens", peer(rl(50, "1h"), nil), 403, "must keep to the calling token's quota (500 per day)"},
		{"ErrPeerShorterWindow", "POST", "/v1/tokens", peer(rl(26, "30m"), qt(500, "day")), 403, "a rate_limit of 26 per 30m admits 52 in 1h"},
		{"ErrPeerPerMinute", "POST", "/v1/tokens", peer(rl(1, "1m"), qt(500, "day")), 403, "a rate_limit of 1 per 1m admits 60 in 1h"},
		{"ErrPeerQuotaHigher", "POST", "/v1/tokens", peer(rl(50, "1h"), qt(501, "month")), 403, "a quota of 501 per month admits more than the calling token's quota (500 per day)"},
		{"ErrRotatesUnlimited", "POST", "/v1/tokens/" + freeID + "/rotate", map[string]any{}, 403, "cannot rotate the token: a token with keyward: scopes must keep to the calling token's rate_limit"},
		{"ErrLimitsUnlimitedHalfway", "PATCH", "/v1/tokens/" + freeID, map[string]any{"rate_limit": rl(10, "1h")}, 403, "must keep to the calling token's quota"},
		{"OKPeerSame", "POST", "/v1/tokens", peer(rl(50, "1h"), qt(500, "day")), 201, ""},
		{"OKPeerStricter", "POST", "/v1/tokens", peer(rl(25, "30m"), qt(500, "none")), 201, ""},
		{"OKPeerLongerWindow", "POST", "/v1/tokens", peer(rl(50, "2h"), qt(400, "month")), 201, ""},
		{"OKAppTokenUnlimited", "POST", "/v1/tokens", map[string]any{"name": "app", "scopes": []string{"orders:read"}}, 201, ""},
		{"OKAppTokenLooser", "POST", "/v1/tokens", map[string]any{"name": "app", "scopes": []string{"orders:read"},
			"rate_limit": rl(1000, "1s"), "quota": qt(1000000, "month")}, 201, ""},
		{"OKRenamesUnlimited", "PATCH", "/v1/tokens/" + freeID, map[string]any{"name": "free (renamed)"}, 200, ""},
		{"OKLimitsUnlimited", "PATCH", "/v1/tokens/" + freeID, within, 200, ""},
		{"OKRenamesItself", "PATCH", "/v1/tokens/" + limitedID, map[string]any{"name": "ci (renamed)"}, 200, ""},
		{"OKTightensOwn", "PATCH", "/v1/tokens/" + limitedID, map[string]any{"rate_limit": rl(40, "1h"), "quota": qt(300, "day")}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, limited, tc.body)
			if tc.want >= 400 {
				p := wantProblem(t, r, tc.want, "forbidden")
				if d, _ := p["detail"].(string); !strings.Contains(d, tc.detail) {
					t.Errorf("detail %q, want it to hold %q", d, tc.detail)
				}
				return
			}
			wantStatus(t, r, tc.want)
		})
	}
	got := s.get(limitedID)
	if fmt.Sprint(got["rate_limit"], got["quota"]) != "map[limit:40 window:1h] map[limit:300 period:day]" {
		t.Errorf("the limited token after the refusals: rate_limit %v, quota %v", got["rate_limit"], got["quota"])
	}
	// A new workspace's first admin token takes the limits of the token
	// that made it.
	inst := s.create(map[string]any{"name": "provisioner", "scopes": []string{"keyward:instance"},
		"rate_limit": rl(20, "1m"), "quota": qt(1000, "month")})
	r := s.do("POST", "/v1/workspaces", inst["token"].(string), map[string]any{"name": "tenant"})
	wantStatus(t, r, http.StatusCreated)
	r = s.do("GET", "/v1/tokens", r.object(t)["token"].(string), nil)
	wantStatus(t, r, http.StatusOK)
	items := r.object(t)["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("the new workspace's tokens: %s", r.Body)
	}
	adm := items[0].(map[string]any)
	if fmt.Sprint(adm["rate_limit"], adm["quota"]) != "map[limit:20 window:1m] map[limit:1000 period:month]" {
		t.Errorf("the new workspace's admin token: rate_limit %v, quota %v", adm["rate_limit"], adm["quota"])
	}
	// The root token, limited by nothing, limits nothing.
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+limitedID, s.root, map[string]any{"rate_limit": nil, "quota": nil}), 200)
}

func TestRotate(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	bad := []struct{ name, body, pointer string }{
		{"ErrFractionalGrace", `{"grace_period":"1.5s"}`, "/grace_period"},
		{"ErrMillisecondGrace", `{"grace_period":"500ms"}`, "/grace_period"},
		{"ErrNegativeGrace", `{"grace_period":"-1s"}`, "/grace_period"},
		{"ErrGraceTooLong", `{"grace_period":"721h"}`, "/grace_period"},
		{"ErrGraceNumber", `{"grace_period":60}`, "/grace_period"},
		{"ErrGraceNoUnit", `{"grace_period":"60"}`, "/grace_period"},
		{"ErrUnknownField", `{"grace":"1h"}`, "/grace"},
		{"ErrNotObject", `"1h"`, ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			id, text := s.newToken("r")
			st := s.state()
			wantInvalid(t, s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, tt.body), tt.pointer)
			s.wantUnchanged(st)
			s.wantCode(text, "VALID")
			if s.get(id)["rotated_at"] != nil {
				t.Fatal("a refused rotation set rotated_at")
			}
		})
	}

	// The bound is named as the API spells a duration.
	t.Run("ErrGraceTooLongDetail", func(t *testing.T) {
		id, _ := s.newToken("r")
		p := wantInvalid(t, s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"721h"}`), "/grace_period")
		errs, _ := p["errors"].([]any)
		if len(errs) != 1 || errs[0].(map[string]any)["detail"] != "grace_period must be whole seconds between 0s and 720h" {
			t.Fatalf("errors = %v", p["errors"])
		}
	})

	t.Run("OK", func(t *testing.T) {
		id, old := s.newToken("r", "orders:read")
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, nil)
		wantStatus(t, r, 200)
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("Cache-Control = %q, want no-store", cc)
		}
		m := r.object(t)
		text, _ := m["token"].(string)
		if _, err := secret.Parse(text); err != nil || text == old {
			t.Fatalf("rotate token = %q (old %q): %v", text, old, err)
		}
		if m["id"] != id || m["hint"] != "kw_…"+text[len(text)-4:] || m["rotated_at"] == nil || m["state"] != "active" {
			t.Fatalf("rotated token = %s", r.Body)
		}
		s.wantCode(text, "VALID")
		s.wantCode(old, "EXPIRED") // no grace by default
	})
	t.Run("OKZeroGrace", func(t *testing.T) {
		id, old := s.newToken("r")
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"0s"}`)
		wantStatus(t, r, 200)
		s.wantCode(old, "EXPIRED")
		s.wantCode(r.object(t)["token"].(string), "VALID")
	})
	t.Run("OKGrace", func(t *testing.T) {
		id, first := s.newToken("r")
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"1h"}`)
		wantStatus(t, r, 200)
		second := r.object(t)["token"].(string)
		s.wantCode(first, "VALID")
		s.wantCode(second, "VALID")
		// A new rotation ends the first grace at once.
		r = s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"1h"}`)
		wantStatus(t, r, 200)
		third := r.object(t)["token"].(string)
		s.wantCode(first, "EXPIRED")
		s.wantCode(second, "VALID")
		s.wantCode(third, "VALID")
	})
	t.Run("OKGraceEnds", func(t *testing.T) {
		s := newStack(t)
		id, old := s.newToken("r")
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"30s"}`)
		wantStatus(t, r, 200)
		s.wantCode(old, "VALID")
		s.clock.Advance(31 * time.Second)
		s.wantCode(old, "EXPIRED")
		s.wantCode(r.object(t)["token"].(string), "VALID")
	})
	t.Run("OKGraceExpiry", func(t *testing.T) {
		// A secret in its grace period says when it stops verifying: the
		// grace's end, when that comes before the token's expiry. Its
		// successor says when it was issued.
		s := newStack(t)
		tokenExp := s.clock.Now().Add(24 * time.Hour).Truncate(time.Second)
		made := s.create(map[string]any{"name": "g", "expires_at": tokenExp.Format(time.RFC3339)})
		id, old := made["id"].(string), made["token"].(string)
		s.clock.Advance(10 * time.Second)
		rotatedAt := s.clock.Now()
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"60s"}`)
		wantStatus(t, r, 200)
		current := r.object(t)["token"].(string)
		graceEnd := rotatedAt.Add(60 * time.Second)
		for _, c := range []struct {
			name, text string
			exp, iat   time.Time
		}{
			{"Replaced", old, graceEnd, s.clock.Now().Add(-10 * time.Second)},
			{"Current", current, tokenExp, rotatedAt},
		} {
			// The stack's clock runs: the times are the test's within a
			// second.
			near := func(v any, want time.Time) bool {
				f, _ := v.(float64)
				return math.Abs(f-float64(want.Unix())) <= 1
			}
			m := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {c.text}}).object(t)
			if m["active"] != true || !near(m["exp"], c.exp) || !near(m["iat"], c.iat) {
				t.Fatalf("%s: introspection = %v, want exp %d iat %d", c.name, m, c.exp.Unix(), c.iat.Unix())
			}
			v := s.verify(c.text)
			if got, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(v["expires_at"])); v["code"] != "VALID" || got.Sub(c.exp).Abs() > time.Second {
				t.Fatalf("%s: verify = %v, want expires_at %v", c.name, v, c.exp)
			}
		}
		// Without a token expiry, the replaced secret still has one.
		id, old = s.newToken("g2")
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"60s"}`), 200)
		if m := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {old}}).object(t); math.Abs(m["exp"].(float64)-float64(s.clock.Now().Add(60*time.Second).Unix())) > 1 {
			t.Fatalf("replaced secret of a token without expiry: introspection = %v", m)
		}
	})
	t.Run("OKMaxGrace", func(t *testing.T) {
		id, _ := s.newToken("r")
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"720h"}`), 200)
	})
	t.Run("ErrRevoked", func(t *testing.T) {
		id, _ := s.newToken("r")
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, nil), 200)
		st := s.state()
		wantProblem(t, s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, nil), 409, "conflict")
		s.wantUnchanged(st)
	})
	t.Run("ErrExpired", func(t *testing.T) {
		// A new secret would be expired on arrival: 409 until the token
		// gets a later expiry.
		s := newStack(t)
		made := s.create(map[string]any{"name": "e", "expires_in": "1h"})
		id := made["id"].(string)
		s.clock.Advance(time.Hour + time.Second)
		st := s.state()
		p := wantProblem(t, s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, nil), 409, "conflict")
		if !strings.Contains(fmt.Sprint(p["detail"]), "expired") {
			t.Fatalf("detail = %v", p["detail"])
		}
		s.wantUnchanged(st)
		wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"expires_in": "24h"}), 200)
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, nil)
		wantStatus(t, r, 200)
		s.wantCode(r.object(t)["token"].(string), "VALID")
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		wantProblem(t, s.do("POST", "/v1/tokens/tok_nope/rotate", s.root, nil), 404, "not_found")
	})
	t.Run("OKSuspendedStaysSuspended", func(t *testing.T) {
		id, _ := s.newToken("r")
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, nil), 200)
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, nil)
		wantStatus(t, r, 200)
		s.wantCode(r.object(t)["token"].(string), "SUSPENDED")
	})
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	t.Run("OKIdempotent", func(t *testing.T) {
		id, text := s.newToken("r")
		st := s.state()
		r1 := s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, `{"reason":"leaked in CI log"}`)
		wantStatus(t, r1, 200)
		m1 := r1.object(t)
		if m1["state"] != "revoked" || m1["revoked_at"] == nil || m1["revoke_reason"] != "leaked in CI log" {
			t.Fatalf("revoked token = %s", r1.Body)
		}
		r2 := s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, `{"reason":"again"}`)
		wantStatus(t, r2, 200)
		m2 := r2.object(t)
		if m2["revoked_at"] != m1["revoked_at"] || m2["revoke_reason"] != m1["revoke_reason"] || m2["updated_at"] != m1["updated_at"] {
			t.Fatalf("second revoke changed the token:\nfirst  %s\nsecond %s", r1.Body, r2.Body)
		}
		if ev := s.newEvents(st); len(ev) != 1 || ev[0].Action != "token.revoke" {
			t.Fatalf("audit events = %+v, want one token.revoke", ev)
		}
		s.wantCode(text, "REVOKED")
	})
	t.Run("OKNoBody", func(t *testing.T) {
		id, _ := s.newToken("r")
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, nil), 200)
	})
	t.Run("ErrReasonTooLong", func(t *testing.T) {
		id, text := s.newToken("r")
		wantInvalid(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, map[string]any{"reason": strings.Repeat("r", 501)}), "/reason")
		s.wantCode(text, "VALID")
	})
	t.Run("ErrReasonNumber", func(t *testing.T) {
		id, text := s.newToken("r")
		wantInvalid(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, `{"reason":5}`), "/reason")
		s.wantCode(text, "VALID")
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		wantProblem(t, s.do("POST", "/v1/tokens/tok_nope/revoke", s.root, nil), 404, "not_found")
	})
}

func TestSuspendResume(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	t.Run("OK", func(t *testing.T) {
		id, text := s.newToken("s")
		r := s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, `{"reason":"investigating"}`)
		wantStatus(t, r, 200)
		m := r.object(t)
		if m["state"] != "suspended" || m["suspended_at"] == nil || m["suspend_reason"] != "investigating" {
			t.Fatalf("suspended token = %s", r.Body)
		}
		s.wantCode(text, "SUSPENDED")
		// Suspending again answers 200 unchanged.
		st := s.state()
		r2 := s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, nil)
		wantStatus(t, r2, 200)
		if r2.object(t)["suspended_at"] != m["suspended_at"] {
			t.Fatal("a second suspend changed suspended_at")
		}
		s.wantUnchanged(st)

		// A resumption's reason is the audit event's alone: the token's
		// suspend_reason is cleared (openapi.json's ReasonRequest says so).
		r = s.do("POST", "/v1/tokens/"+id+"/resume", s.root, `{"reason":"cleared"}`)
		wantStatus(t, r, 200)
		m = r.object(t)
		if m["state"] != "active" || m["suspended_at"] != nil || m["suspend_reason"] != "" {
			t.Fatalf("resumed token = %s", r.Body)
		}
		if ev := s.audit()[0]; ev.Action != "token.resume" || !strings.Contains(string(ev.Changes), `"reason":"cleared"`) {
			t.Fatalf("newest audit event = %s %s, want token.resume with its reason", ev.Action, ev.Changes)
		}
		s.wantCode(text, "VALID")
		// Resuming an active token answers 200 unchanged.
		st = s.state()
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/resume", s.root, nil), 200)
		s.wantUnchanged(st)
	})
	for _, op := range []string{"suspend", "resume"} {
		t.Run("ErrRevoked_"+op, func(t *testing.T) {
			id, text := s.newToken("s")
			wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, nil), 200)
			st := s.state()
			wantProblem(t, s.do("POST", "/v1/tokens/"+id+"/"+op, s.root, nil), 409, "conflict")
			s.wantUnchanged(st)
			s.wantCode(text, "REVOKED")
		})
	}
	t.Run("OKRevokeSuspended", func(t *testing.T) {
		id, text := s.newToken("s")
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, nil), 200)
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, nil), 200)
		if s.get(id)["state"] != "revoked" {
			t.Fatal("a revoked suspended token is not in state revoked")
		}
		s.wantCode(text, "REVOKED")
		wantProblem(t, s.do("POST", "/v1/tokens/"+id+"/resume", s.root, nil), 409, "conflict")
	})
}

// identifiedKeys are the keys a verify response has once the token is
// identified.
var identifiedKeys = []string{"token_id", "name", "subject", "scopes", "metadata", "expires_at"}

func TestVerify(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	verify := func(t *testing.T, body any) (*response, map[string]any) {
		t.Helper()
		r := s.do("POST", "/v1/verify", s.root, body)
		wantStatus(t, r, 200)
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type = %q", ct)
		}
		return r, r.object(t)
	}
	wantUnidentified := func(t *testing.T, m map[string]any, code string) {
		t.Helper()
		if m["code"] != code || m["valid"] != false {
			t.Fatalf("verify = %v, want %s", m, code)
		}
		for _, k := range append(identifiedKeys, "rate_limit", "quota") {
			if _, ok := m[k]; ok {
				t.Fatalf("%s answer has %q: %v", code, k, m)
			}
		}
	}
	wantIdentified := func(t *testing.T, m map[string]any, code, id string) {
		t.Helper()
		if m["code"] != code || m["valid"] != (code == "VALID") {
			t.Fatalf("verify = %v, want %s", m, code)
		}
		for _, k := range identifiedKeys {
			if _, ok := m[k]; !ok {
				t.Fatalf("%s answer lacks %q: %v", code, k, m)
			}
		}
		if m["token_id"] != id {
			t.Fatalf("token_id = %v, want %s", m["token_id"], id)
		}
	}

	t.Run("MALFORMED", func(t *testing.T) {
		_, m := verify(t, map[string]any{"token": "x"})
		wantUnidentified(t, m, "MALFORMED")
	})
	t.Run("MALFORMEDBadChecksum", func(t *testing.T) {
		_, text := s.newToken("v")
		last := text[len(text)-1]
		bad := text[:len(text)-1] + string(map[bool]byte{true: 'A', false: 'B'}[last != 'A'])
		_, m := verify(t, map[string]any{"token": bad})
		wantUnidentified(t, m, "MALFORMED")
	})
	t.Run("NOT_FOUND", func(t *testing.T) {
		_, m := verify(t, map[string]any{"token": unknownToken(t)})
		wantUnidentified(t, m, "NOT_FOUND")
	})
	t.Run("VALID", func(t *testing.T) {
		exp := s.clock.Now().Add(time.Hour).Truncate(time.Second).Format(time.RFC3339)
		c := s.create(map[string]any{"name": "v", "scopes": []string{"orders:read", "users:*"}, "subject": "cust-9", "metadata": map[string]any{"k": "v"}, "expires_at": exp})
		r, m := verify(t, map[string]any{"token": c["token"], "scopes": []string{"orders:read", "users:write"}})
		wantIdentified(t, m, "VALID", c["id"].(string))
		if m["name"] != "v" || m["subject"] != "cust-9" || m["expires_at"] != exp {
			t.Fatalf("verify = %s", r.Body)
		}
		if b, _ := json.Marshal(m["scopes"]); string(b) != `["orders:read","users:*"]` {
			t.Fatalf("scopes = %s", b)
		}
		if b, _ := json.Marshal(m["metadata"]); string(b) != `{"k":"v"}` {
			t.Fatalf("metadata = %s", b)
		}
		if _, ok := m["rate_limit"]; ok {
			t.Fatalf("a token without a rate limit has rate_limit: %s", r.Body)
		}
		if _, ok := m["quota"]; ok {
			t.Fatalf("a token without a quota has quota: %s", r.Body)
		}
	})
	t.Run("VALIDNullFields", func(t *testing.T) {
		id, text := s.newToken("v", "a")
		_, m := verify(t, map[string]any{"token": text})
		wantIdentified(t, m, "VALID", id)
		if m["metadata"] != nil || m["expires_at"] != nil || m["subject"] != "" {
			t.Fatalf("verify = %v, want null metadata and expires_at, empty subject", m)
		}
	})
	t.Run("INSUFFICIENT_SCOPE", func(t *testing.T) {
		id, text := s.newToken("v", "orders:*")
		_, m := verify(t, map[string]any{"token": text, "scopes": []string{"orders:read", "ordersx:read"}})
		wantIdentified(t, m, "INSUFFICIENT_SCOPE", id)
	})
	t.Run("REVOKED", func(t *testing.T) {
		id, text := s.newToken("v", "a")
		wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, nil), 200)
		_, m := verify(t, map[string]any{"token": text})
		wantIdentified(t, m, "REVOKED", id)
	})
	t.Run("EXPIRED", func(t *testing.T) {
		s := newStack(t)
		c := s.create(map[string]any{"name": "v", "expires_in": "1m", "scopes": []string{"a"}})
		s.clock.Advance(time.Minute + time.Second)
		m := s.verify(c["token"].(string))
		wantIdentified(t, m, "EXPIRED", c["id"].(string))
	})
	t.Run("IP", func(t *testing.T) {
		c := s.create(map[string]any{"name": "v", "allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/32"}, "scopes": []string{"a"}})
		for _, tt := range []struct{ ip, code string }{
			{"", "IP_NOT_ALLOWED"},
			{"203.0.113.200", "VALID"},
			{"::ffff:203.0.113.200", "VALID"},
			{"2001:db8::7", "VALID"},
			{"203.0.114.1", "IP_NOT_ALLOWED"},
			{"2001:db9::1", "IP_NOT_ALLOWED"},
		} {
			body := map[string]any{"token": c["token"]}
			if tt.ip != "" {
				body["ip"] = tt.ip
			}
			_, m := verify(t, body)
			if m["code"] != tt.code {
				t.Fatalf("verify from %q = %v, want %s", tt.ip, m["code"], tt.code)
			}
			wantIdentified(t, m, tt.code, c["id"].(string))
		}
	})
	// A client that always sends the field says "no ip" with "": that is no
	// ip, not a malformed request, so an allowlist still fails closed.
	t.Run("IPEmptyIsNoIP", func(t *testing.T) {
		listed := s.create(map[string]any{"name": "v", "allowed_cidrs": []string{"203.0.113.0/24"}, "scopes": []string{"a"}})
		open := s.create(map[string]any{"name": "v", "scopes": []string{"a"}})
		// The second body takes the general decoder (an escape), the first
		// the fast one.
		for _, body := range []string{`{"token":"%s","ip":""}`, `{"tok\u0065n":"%s","ip":""}`} {
			_, m := verify(t, fmt.Sprintf(body, listed["token"]))
			wantIdentified(t, m, "IP_NOT_ALLOWED", listed["id"].(string))
			_, m = verify(t, fmt.Sprintf(body, open["token"]))
			wantIdentified(t, m, "VALID", open["id"].(string))
		}
	})
	t.Run("RATE_LIMITED", func(t *testing.T) {
		c := s.create(map[string]any{"name": "v", "rate_limit": map[string]any{"limit": 2, "window": "1m"}, "scopes": []string{"a"}})
		text, id := c["token"].(string), c["id"].(string)
		for i, want := range []struct {
			code      string
			remaining float64
		}{{"VALID", 1}, {"VALID", 0}, {"RATE_LIMITED", 0}} {
			_, m := verify(t, map[string]any{"token": text})
			wantIdentified(t, m, want.code, id)
			rl, ok := m["rate_limit"].(map[string]any)
			if !ok {
				t.Fatalf("verify %d has no rate_limit: %v", i, m)
			}
			reset, _ := rl["reset"].(float64)
			if rl["limit"] != float64(2) || rl["remaining"] != want.remaining || reset < 1 || reset > 63 || reset != float64(int(reset)) {
				t.Fatalf("verify %d rate_limit = %v, want limit 2, remaining %v, reset whole seconds in 1…63", i, rl, want.remaining)
			}
		}
		// Only VALID consumes: a failing check leaves the window alone.
		c2 := s.create(map[string]any{"name": "v", "rate_limit": map[string]any{"limit": 1, "window": "1m"}, "scopes": []string{"a"}})
		for i := 0; i < 3; i++ {
			_, m := verify(t, map[string]any{"token": c2["token"], "scopes": []string{"b"}})
			if m["code"] != "INSUFFICIENT_SCOPE" {
				t.Fatalf("verify = %v", m["code"])
			}
		}
		if _, m := verify(t, map[string]any{"token": c2["token"]}); m["code"] != "VALID" {
			t.Fatalf("verify after failed checks = %v, want VALID", m["code"])
		}
	})
	t.Run("QUOTA_EXCEEDED", func(t *testing.T) {
		c := s.create(map[string]any{"name": "v", "quota": map[string]any{"limit": 1, "period": "none"}, "scopes": []string{"a"}})
		if _, m := verify(t, map[string]any{"token": c["token"]}); m["code"] != "VALID" {
			t.Fatalf("first verify = %v", m)
		}
		_, m := verify(t, map[string]any{"token": c["token"]})
		wantIdentified(t, m, "QUOTA_EXCEEDED", c["id"].(string))
		if q, _ := m["quota"].(map[string]any); q["limit"] != float64(1) || q["remaining"] != float64(0) {
			t.Fatalf("quota = %v", m["quota"])
		}
	})
	t.Run("OKManagementTokenVerifies", func(t *testing.T) {
		_, vt := s.newToken("verifier", "keyward:verify")
		id, text := s.newToken("v", "a")
		r := s.do("POST", "/v1/verify", vt, map[string]any{"token": text})
		wantStatus(t, r, 200)
		wantIdentified(t, r.object(t), "VALID", id)
	})

	bad := []struct{ name, body, pointer string }{
		{"ErrMissingToken", `{}`, "/token"},
		{"ErrTokenNumber", `{"token":5}`, "/token"},
		{"ErrInvalidIP", `{"token":"x","ip":"999.1.1.1"}`, "/ip"},
		{"ErrIPWithZone", `{"token":"x","ip":"fe80::1%eth0"}`, "/ip"},
		{"ErrIPCIDR", `{"token":"x","ip":"10.0.0.0/8"}`, "/ip"},
		{"ErrScope", `{"token":"x","scopes":["ok","Bad"]}`, "/scopes/1"},
		{"ErrScopesString", `{"token":"x","scopes":"a"}`, "/scopes"},
		{"ErrUnknownField", `{"token":"x","tokens":"y"}`, "/tokens"},
		{"ErrNotObject", `["x"]`, ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			wantInvalid(t, s.do("POST", "/v1/verify", s.root, tt.body), tt.pointer)
		})
	}
}

// TestVerifyTokenWithoutScopes checks that an identified token's verify
// answer has "scopes" even when the token holds none (docs/api.md: scopes
// appear once the token is identified).
// TestVerifyStrictBody checks that the verify API refuses what every other
// endpoint refuses: field names differing in case from the documented ones
// (unknown fields) and data after the object.
func TestVerifyStrictBody(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, tt := range []struct{ name, body, pointer string }{
		{"ErrFieldNameCase", `{"Token":"x"}`, "/Token"},
		{"ErrFieldNameCaseExtra", `{"token":"x","SCOPES":["a"]}`, "/SCOPES"},
		{"ErrTrailingBrace", `{"token":"x"}}`, ""},
		{"ErrTrailingObject", `{"token":"x"}{}`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantInvalid(t, s.do("POST", "/v1/verify", s.root, tt.body), tt.pointer)
		})
	}
}

func TestVerifyTokenWithoutScopes(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	validID, valid := s.newToken("no scopes")
	revokedID, revoked := s.newToken("no scopes, revoked")
	wantStatus(t, s.do("POST", "/v1/tokens/"+revokedID+"/revoke", s.root, nil), 200)
	for _, tt := range []struct{ name, id, text string }{
		{"VALID", validID, valid},
		{"REVOKED", revokedID, revoked},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := s.verify(tt.text)
			if m["code"] != tt.name || m["token_id"] != tt.id {
				t.Fatalf("verify = %v", m)
			}
			scopes, ok := m["scopes"]
			if !ok {
				t.Fatalf("verify answer of an identified token without scopes has no \"scopes\" key: %v", m)
			}
			if b, _ := json.Marshal(scopes); string(b) != "[]" {
				t.Fatalf("scopes = %s, want []", b)
			}
		})
	}
}

func TestIntrospect(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	basic := func(user, pw string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
	}
	exp := s.clock.Now().Add(time.Hour).Truncate(time.Second)
	active := s.create(map[string]any{"name": "intro", "scopes": []string{"orders:read", "orders:write"}, "subject": "cust-7", "expires_at": exp.Format(time.RFC3339), "allowed_cidrs": []string{"192.0.2.0/24"}})
	activeText := active["token"].(string)

	for _, tt := range []struct{ name, auth string }{
		{"OKBearer", "Bearer " + s.root},
		{"OKBasic", basic("client", s.root)},
		{"OKBasicEmptyUser", basic("", s.root)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := s.form("/oauth2/introspect", tt.auth, url.Values{"token": {activeText}})
			wantStatus(t, r, 200)
			if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
				t.Fatalf("Cache-Control = %q", cc)
			}
			m := r.object(t)
			if m["active"] != true || m["scope"] != "orders:read orders:write" || m["token_id"] != active["id"] ||
				m["token_type"] != "Bearer" || m["name"] != "intro" || m["sub"] != "cust-7" || m["exp"] != float64(exp.Unix()) {
				t.Fatalf("introspection = %s", r.Body)
			}
			created, _ := time.Parse(time.RFC3339Nano, active["created_at"].(string))
			if m["iat"] != float64(created.Unix()) {
				t.Fatalf("iat = %v, want %d", m["iat"], created.Unix())
			}
		})
	}
	t.Run("OKNoOptionalClaims", func(t *testing.T) {
		_, text := s.newToken("bare")
		r := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {text}})
		m := r.object(t)
		_, hasSub := m["sub"]
		_, hasExp := m["exp"]
		if m["active"] != true || hasSub || hasExp || m["scope"] != "" {
			t.Fatalf("introspection = %s, want active without sub and exp", r.Body)
		}
	})

	for _, tt := range []struct{ name, auth string }{
		{"ErrUnauthenticated", ""},
		{"ErrBadBearer", "Bearer " + unknownToken(t)},
		{"ErrBadBasic", basic("client", "garbage")},
		{"ErrBasicEmptyPassword", basic("client", "")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := s.form("/oauth2/introspect", tt.auth, url.Values{"token": {activeText}})
			wantStatus(t, r, 401)
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if strings.Contains(string(r.Body), "active") {
				t.Fatalf("401 body tells about the token: %s", r.Body)
			}
		})
	}
	t.Run("ErrNotVerifyScope", func(t *testing.T) {
		_, reader := s.newToken("reader", "keyward:tokens:read")
		wantStatus(t, s.form("/oauth2/introspect", "Bearer "+reader, url.Values{"token": {activeText}}), 403)
	})
	t.Run("ErrMissingToken", func(t *testing.T) {
		r := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{})
		wantStatus(t, r, 400)
		if m := r.object(t); m["error"] != "invalid_request" {
			t.Fatalf("body = %s, want error invalid_request", r.Body)
		}
	})
	t.Run("ErrJSONBody", func(t *testing.T) {
		r := s.do("POST", "/oauth2/introspect", s.root, map[string]any{"token": activeText})
		wantStatus(t, r, 400)
		if m := r.object(t); m["error"] != "invalid_request" {
			t.Fatalf("body = %s, want error invalid_request", r.Body)
		}
	})

	t.Run("Inactive", func(t *testing.T) {
		s := newStack(t)
		revokedID, revoked := s.newToken("revoked")
		wantStatus(t, s.do("POST", "/v1/tokens/"+revokedID+"/revoke", s.root, nil), 200)
		suspendedID, suspended := s.newToken("suspended")
		wantStatus(t, s.do("POST", "/v1/tokens/"+suspendedID+"/suspend", s.root, nil), 200)
		expiring := s.create(map[string]any{"name": "expiring", "expires_in": "1s"})["token"].(string)
		rotatedID, rotatedOld := s.newToken("rotated")
		wantStatus(t, s.do("POST", "/v1/tokens/"+rotatedID+"/rotate", s.root, nil), 200)
		ws := s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "other"})
		wantStatus(t, ws, 201)
		otherAdmin := ws.object(t)["token"].(string)
		s.clock.Advance(2 * time.Second)
		for _, tt := range []struct{ name, token string }{
			{"Unknown", unknownToken(t)},
			{"Malformed", "x"},
			{"BadChecksum", s.root[:len(s.root)-1] + map[bool]string{true: "A", false: "B"}[s.root[len(s.root)-1] != 'A']},
			{"Revoked", revoked},
			{"Suspended", suspended},
			{"Expired", expiring},
			{"RotatedAway", rotatedOld},
			{"OtherWorkspace", otherAdmin},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {tt.token}})
				wantStatus(t, r, 200)
				if string(r.Body) != `{"active":false}` {
					t.Fatalf("body = %q, want exactly {\"active\":false}", r.Body)
				}
				if ct := r.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type = %q", ct)
				}
			})
		}
	})

	t.Run("OKConsumesNothing", func(t *testing.T) {
		c := s.create(map[string]any{"name": "limited", "rate_limit": map[string]any{"limit": 1, "window": "1h"}, "quota": map[string]any{"limit": 1, "period": "none"}})
		for i := 0; i < 3; i++ {
			r := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {c["token"].(string)}})
			if m := r.object(t); m["active"] != true {
				t.Fatalf("introspection %d = %s", i, r.Body)
			}
		}
		s.wantCode(c["token"].(string), "VALID")
		s.wantCode(c["token"].(string), "RATE_LIMITED")
		// A token over its limit is still active.
		r := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {c["token"].(string)}})
		if m := r.object(t); m["active"] != true {
			t.Fatalf("introspection of a rate-limited token = %s, want active", r.Body)
		}
		if lu := s.get(c["id"].(string))["last_used_at"]; lu == nil {
			t.Fatal("last_used_at is null after a VALID verification")
		}
	})
	t.Run("OKLastUseInMicroseconds", func(t *testing.T) {
		// As every store keeps it (PostgreSQL to the microsecond), so
		// that the node that saw the use and any other show one time.
		id, text := s.newToken("used")
		for i := range 3 {
			s.wantCode(text, "VALID")
			lu, _ := s.get(id)["last_used_at"].(string)
			at, err := time.Parse(time.RFC3339Nano, lu)
			if err != nil || at.Nanosecond()%1000 != 0 {
				t.Fatalf("use %d: last_used_at %q (%v), want whole microseconds", i, lu, err)
			}
			s.clock.Advance(1234567 * time.Nanosecond)
		}
	})
	t.Run("OKLastUseFromIntrospection", func(t *testing.T) {
		// A resource server introspects the tokens clients hand it:
		// that is their use (TestIntrospectionIsAUse).
		id, text := s.newToken("unused")
		s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {text}})
		if lu := s.get(id)["last_used_at"]; lu == nil {
			t.Fatal("an active token's introspection recorded no use")
		}
	})
}

// TestOAuthRevokePastLookupBudget: made-up tokens have spent the node's
// lookup budget, and the token whose secret is revoked is not in the
// cache (written by another process): the 200 still means revoked.
func TestOAuthRevokePastLookupBudget(t *testing.T) {
	t.Parallel()
	// The engine's clock stands still, so that the spent budget does not
	// refill while the test runs (slowly, under the race detector), and
	// no poll of the change feed brings the token into the cache.
	var engNow frozenClock
	s := newStackWith(t, func(c *verify.Config) { c.Now, c.PollInterval = engNow.Now, time.Hour })
	ctx := context.Background()
	_, writer := s.newToken("writer", "keyward:tokens:write")
	other := &manage.Service{Store: s.db, Keys: s.svc.Keys, Now: s.clock.Now} // no engine: not cached
	tok, text, err := other.CreateToken(ctx, manage.SystemCaller(s.ws.ID), &keyward.Token{Name: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	for range 300 {
		s.engine.Verify(ctx, verify.Request{Token: unknownToken(t)})
	}
	wantStatus(t, s.form("/oauth2/revoke", "Bearer "+writer, url.Values{"token": {text}}), 200)
	if got := s.get(tok.ID)["state"]; got != "revoked" {
		t.Fatalf("state = %v after the revocation answered 200", got)
	}
}

// frozenClock is a time source that moves only when told to.
type frozenClock struct {
	mu  sync.Mutex
	off time.Duration
	at  time.Time
}

func (c *frozenClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		c.at = time.Now().UTC()
	}
	return c.at.Add(c.off)
}

func (c *frozenClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// TestAuthPastLookupBudget: while made-up tokens have spent the node's
// lookup budget, a management token not yet cached on the node is not
// told it is invalid (401) but to retry (503, Retry-After), and works once
// the budget refills.
func TestAuthPastLookupBudget(t *testing.T) {
	t.Parallel()
	// The engine's clock stands still, so that the spent budget does not
	// refill while the test runs (slowly, under the race detector), and
	// no poll of the change feed brings the token into the cache.
	var engNow frozenClock
	s := newStackWith(t, func(c *verify.Config) { c.Now, c.PollInterval = engNow.Now, time.Hour })
	ctx := context.Background()
	other := &manage.Service{Store: s.db, Keys: s.svc.Keys, Now: s.clock.Now} // no engine: not cached
	_, text, err := other.CreateToken(ctx, manage.SystemCaller(s.ws.ID), &keyward.Token{Name: "admin elsewhere", Scopes: []string{keyward.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	for range 300 {
		s.engine.Verify(ctx, verify.Request{Token: unknownToken(t)})
	}
	for _, tok := range []string{text, unknownToken(t)} {
		r := s.do("GET", "/v1/tokens", tok, nil)
		wantStatus(t, r, http.StatusServiceUnavailable)
		if got := r.Header.Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After = %q", got)
		}
		r = s.form("/oauth2/introspect", "Bearer "+tok, url.Values{"token": {text}})
		wantStatus(t, r, http.StatusServiceUnavailable)
		if m := r.object(t); m["error"] != "temporarily_unavailable" {
			t.Errorf("OAuth body %s", r.Body)
		}
	}
	engNow.Advance(time.Second) // the budget refills
	wantStatus(t, s.do("GET", "/v1/tokens", text, nil), http.StatusOK)
}

// TestOAuthRevokeRetiredSecretSuspended: a secret replaced for good does
// not revoke its token, suspended or not (a suspension can be undone, a
// revocation cannot).
func TestOAuthRevokeRetiredSecretSuspended(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id, old := s.newToken("rotated")
	wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"0s"}`), 200)
	wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, `{}`), 200)
	wantStatus(t, s.form("/oauth2/revoke", "Bearer "+s.root, url.Values{"token": {old}}), 200)
	if got := s.get(id)["state"]; got != "suspended" {
		t.Fatalf("state = %v, want suspended", got)
	}
}

// TestOAuthFormRules: what the OAuth endpoints take of a request, as RFC
// 6749 and RFC 9110 say: a media type in any case, parameters only in the
// body (a secret in a URL lands in logs), a repeated parameter refused
// without echoing an unknown name (it may be a secret), Basic credentials
// form-encoded or not, and Pragma: no-cache beside Cache-Control.
func TestOAuthFormRules(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	_, text := s.newToken("target", "orders:read")
	post := func(path, query, contentType, authorization, body string) *response {
		t.Helper()
		req, err := http.NewRequest("POST", s.srv.URL+path+query, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Authorization", authorization)
		return s.send(req)
	}
	const form = "application/x-www-form-urlencoded"
	bearer := "Bearer " + s.root
	body := url.Values{"token": {text}}.Encode()

	r := post("/oauth2/introspect", "", "Application/X-WWW-Form-URLEncoded; charset=UTF-8", bearer, body)
	wantStatus(t, r, 200)
	if r.object(t)["active"] != true {
		t.Errorf("media type in capitals: %s", r.Body)
	}
	if got := r.Header.Get("Pragma"); got != "no-cache" {
		t.Errorf("Pragma = %q, want no-cache", got)
	}

	for _, q := range []string{"?token=xx", "?token=" + url.QueryEscape(text), "?a=b"} {
		r = post("/oauth2/introspect", q, form, bearer, body)
		wantStatus(t, r, 400)
		if m := r.object(t); m["error"] != "invalid_request" {
			t.Errorf("query %q: body %s", q, r.Body)
		}
	}

	secretName := unknownToken(t)
	r = post("/oauth2/introspect", "", form, bearer, body+"&"+secretName+"=1&"+secretName+"=2")
	wantStatus(t, r, 400)
	if strings.Contains(string(r.Body), secretName) {
		t.Errorf("the error echoes a repeated parameter's name: %s", r.Body)
	}
	r = post("/oauth2/introspect", "", form, bearer, body+"&token_type_hint=a&token_type_hint=b")
	wantStatus(t, r, 400)
	if !strings.Contains(string(r.Body), "token_type_hint") {
		t.Errorf("a repeated known parameter is not named: %s", r.Body)
	}

	// A client that form-encodes the credentials first (RFC 6749 §2.3.1):
	// "_" as %5F.
	encoded := strings.ReplaceAll(s.root, "_", "%5F")
	r = post("/oauth2/introspect", "", form, "Basic "+base64.StdEncoding.EncodeToString([]byte("client:"+encoded)), body)
	wantStatus(t, r, 200)
	if r.object(t)["active"] != true {
		t.Errorf("Basic with form-encoded credentials: %s", r.Body)
	}
}

func TestOAuthRevoke(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	_, writer := s.newToken("writer", "keyward:tokens:write")
	_, verifier := s.newToken("verifier", "keyward:verify")

	t.Run("OKUnknown", func(t *testing.T) {
		st := s.state()
		r := s.form("/oauth2/revoke", "Bearer "+s.root, url.Values{"token": {unknownToken(t)}})
		wantStatus(t, r, 200)
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("Cache-Control = %q", cc)
		}
		s.wantUnchanged(st)
	})
	t.Run("OKMalformed", func(t *testing.T) {
		wantStatus(t, s.form("/oauth2/revoke", "Bearer "+s.root, url.Values{"token": {"x"}}), 200)
	})
	t.Run("OKValid", func(t *testing.T) {
		id, text := s.newToken("victim", "orders:read")
		st := s.state()
		wantStatus(t, s.form("/oauth2/revoke", "Bearer "+writer, url.Values{"token": {text}, "token_type_hint": {"access_token"}}), 200)
		s.wantCode(text, "REVOKED")
		if s.get(id)["state"] != "revoked" {
			t.Fatal("token is not revoked")
		}
		if ev := s.newEvents(st); len(ev) != 1 || ev[0].Action != "token.revoke" || ev[0].Target != id {
			t.Fatalf("audit events = %+v, want one token.revoke of %s", ev, id)
		}
		// Again: still 200.
		wantStatus(t, s.form("/oauth2/revoke", "Bearer "+writer, url.Values{"token": {text}}), 200)
	})
	t.Run("OKBasic", func(t *testing.T) {
		_, text := s.newToken("victim")
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("any:"+writer))
		wantStatus(t, s.form("/oauth2/revoke", auth, url.Values{"token": {text}}), 200)
		s.wantCode(text, "REVOKED")
	})
	t.Run("OKOldSecretInGrace", func(t *testing.T) {
		id, old := s.newToken("rotated")
		r := s.do("POST", "/v1/tokens/"+id+"/rotate", s.root, `{"grace_period":"1h"}`)
		wantStatus(t, r, 200)
		current := r.object(t)["token"].(string)
		wantStatus(t, s.form("/oauth2/revoke", "Bearer "+s.root, url.Values{"token": {old}}), 200)
		s.wantCode(current, "REVOKED")
		s.wantCode(old, "REVOKED")
	})
	t.Run("ErrUnauthenticated", func(t *testing.T) {
		_, text := s.newToken("victim")
		wantStatus(t, s.form("/oauth2/revoke", "", url.Values{"token": {text}}), 401)
		s.wantCode(text, "VALID")
	})
	t.Run("ErrVerifyOnly", func(t *testing.T) {
		_, text := s.newToken("victim")
		wantStatus(t, s.form("/oauth2/revoke", "Bearer "+verifier, url.Values{"token": {text}}), 403)
		s.wantCode(text, "VALID")
	})
	t.Run("ErrMissingToken", func(t *testing.T) {
		r := s.form("/oauth2/revoke", "Bearer "+s.root, url.Values{})
		wantStatus(t, r, 400)
		if m := r.object(t); m["error"] != "invalid_request" {
			t.Fatalf("body = %s", r.Body)
		}
	})
}

// TestOAuthRevokeInactiveToken checks that RFC 7009 revocation with the
// current secret of a suspended or expired token revokes the token. Both
// states are reversible (resume, PATCH expires_at), so a leaked secret that
// its holder revokes must not come back; revocation is the final state.
func TestOAuthRevokeInactiveToken(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, tt := range []struct {
		name string
		make func(t *testing.T, id string)
		undo func(t *testing.T, id string) *response
	}{
		{"Suspended",
			func(t *testing.T, id string) {
				wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, nil), 200)
			},
			func(t *testing.T, id string) *response { return s.do("POST", "/v1/tokens/"+id+"/resume", s.root, nil) }},
		{"Expired",
			func(t *testing.T, id string) {
				past := s.clock.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
				wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"expires_at": past.Format(time.RFC3339)}), 200)
				s.clock.Advance(3 * time.Second)
			},
			func(t *testing.T, id string) *response {
				return s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"expires_at": nil})
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, text := s.newToken("leaked", "orders:read")
			tt.make(t, id)
			wantStatus(t, s.form("/oauth2/revoke", "Bearer "+s.root, url.Values{"token": {text}}), 200)
			if st := s.get(id)["state"]; st != "revoked" {
				t.Fatalf("state = %v after /oauth2/revoke of its current secret, want revoked", st)
			}
			wantProblem(t, tt.undo(t, id), 409, "conflict")
			s.wantCode(text, "REVOKED")
		})
	}
}

func TestOperational(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	created := s.create(map[string]any{"name": "m", "scopes": []string{"a"}})
	text, id := created["token"].(string), created["id"].(string)
	s.wantCode(text, "VALID")

	t.Run("OKHealthz", func(t *testing.T) {
		r := s.do("GET", "/healthz", "", nil)
		wantStatus(t, r, 200)
		if r.Header.Get("X-Request-Id") == "" {
			t.Fatal("no X-Request-Id")
		}
	})
	t.Run("OKReadyz", func(t *testing.T) {
		wantStatus(t, s.do("GET", "/readyz", "", nil), 200)
	})
	t.Run("ErrReadyzStoreClosed", func(t *testing.T) {
		s := newStack(t)
		s.db.Close()
		wantStatus(t, s.do("GET", "/readyz", "", nil), 503)
		wantStatus(t, s.do("GET", "/healthz", "", nil), 200)
		if r := s.do("GET", "/metrics", "", nil); !strings.Contains(string(r.Body), `keyward_dependency_up{dependency="store"} 0`) {
			t.Errorf("metrics with the store closed lack the store down:\n%s", r.Body)
		}
	})
	t.Run("ErrOAuthStoreClosed", func(t *testing.T) {
		// A token that needs the store while it is down: OAuth's error,
		// with a Retry-After as every other 503.
		s := newStack(t)
		wantStatus(t, s.do("GET", "/v1/tokens", s.root, nil), 200) // the caller is cached
		s.db.Close()
		for _, path := range []string{"/oauth2/revoke", "/oauth2/introspect"} {
			r := s.form(path, "Bearer "+s.root, url.Values{"token": {unknownToken(t)}})
			wantStatus(t, r, http.StatusServiceUnavailable)
			if m := r.object(t); m["error"] != "temporarily_unavailable" || r.Header.Get("Retry-After") != "5" {
				t.Errorf("%s: Retry-After %q, body %s", path, r.Header.Get("Retry-After"), r.Body)
			}
			// A caller that is not cached: its own lookup fails, and the
			// answer is OAuth's all the same.
			r = s.form(path, "Bearer "+unknownToken(t), url.Values{"token": {unknownToken(t)}})
			wantStatus(t, r, http.StatusServiceUnavailable)
			if m := r.object(t); m["error"] != "temporarily_unavailable" || r.Header.Get("Retry-After") != "5" || r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s with an uncached caller: %s, Retry-After %q, body %s", path, r.Header.Get("Content-Type"), r.Header.Get("Retry-After"), r.Body)
			}
		}
	})
	t.Run("OKMetrics", func(t *testing.T) {
		r := s.do("GET", "/metrics", "", nil)
		wantStatus(t, r, 200)
		body := string(r.Body)
		for _, want := range []string{`keyward_verifications_total{outcome="VALID"}`, `keyward_verifications_total{outcome="MALFORMED"}`, `keyward_http_requests_total{code="201",route="POST /v1/tokens"} 1`,
			`keyward_dependency_up{dependency="store"} 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		for _, secretish := range []string{"tok_", id, s.rootID, text, s.root, serverSecret} {
			if strings.Contains(body, secretish) {
				t.Errorf("metrics contain %q", secretish)
			}
		}
	})
	t.Run("ErrUnknownPath", func(t *testing.T) {
		for _, path := range []string{"/nope", "/v1/nope", "/v1/tokens/" + id + "/explode"} {
			r := s.do("GET", path, s.root, nil)
			wantProblem(t, r, 404, "not_found")
		}
	})
	t.Run("ErrMethod", func(t *testing.T) {
		for _, tt := range []struct {
			method, path string
			allow        []string
		}{
			{"DELETE", "/v1/tokens/" + id, []string{"GET", "HEAD", "PATCH"}},
			{"PUT", "/v1/tokens", []string{"GET", "HEAD", "POST"}},
			{"GET", "/v1/tokens/" + id + "/rotate", []string{"POST"}},
			{"GET", "/v1/verify", []string{"POST"}},
			{"POST", "/healthz", []string{"GET", "HEAD"}},
		} {
			r := s.do(tt.method, tt.path, s.root, nil)
			wantProblem(t, r, 405, "method_not_allowed")
			var got []string
			for _, m := range strings.Split(r.Header.Get("Allow"), ",") {
				got = append(got, strings.TrimSpace(m))
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.allow) {
				t.Errorf("%s %s: Allow = %q, want %q", tt.method, tt.path, r.Header.Get("Allow"), tt.allow)
			}
		}
	})
	t.Run("OKHeadersOnEveryV1Response", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			req    *http.Request
			status int
		}{
			{"List", s.request("GET", "/v1/tokens", s.root, nil), 200},
			{"Get", s.request("GET", "/v1/tokens/"+id, s.root, nil), 200},
			{"Create", s.request("POST", "/v1/tokens", s.root, map[string]any{"name": "h"}), 201},
			{"Invalid", s.request("POST", "/v1/tokens", s.root, `{}`), 400},
			{"Unauthorized", s.request("GET", "/v1/tokens", "", nil), 401},
			{"Forbidden", s.request("GET", "/v1/workspaces", text, nil), 403},
			{"NotFound", s.request("GET", "/v1/tokens/tok_nope", s.root, nil), 404},
			{"NoRoute", s.request("GET", "/v1/nope", s.root, nil), 404},
			{"Method", s.request("DELETE", "/v1/tokens/"+id, s.root, nil), 405},
			{"Verify", s.request("POST", "/v1/verify", s.root, map[string]any{"token": text}), 200},
			{"Audit", s.request("GET", "/v1/audit", s.root, nil), 200},
		} {
			r := s.send(tt.req)
			if r.Status != tt.status {
				t.Errorf("%s: status %d, want %d", tt.name, r.Status, tt.status)
			}
			if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("%s: Cache-Control = %q, want no-store", tt.name, cc)
			}
			if rid := r.Header.Get("X-Request-Id"); !strings.HasPrefix(rid, "req_") {
				t.Errorf("%s: X-Request-Id = %q, want req_...", tt.name, rid)
			}
			if nos := r.Header.Get("X-Content-Type-Options"); nos != "nosniff" {
				t.Errorf("%s: X-Content-Type-Options = %q", tt.name, nos)
			}
		}
	})
	t.Run("OKRequestIDsDiffer", func(t *testing.T) {
		a := s.do("GET", "/healthz", "", nil).Header.Get("X-Request-Id")
		b := s.do("GET", "/healthz", "", nil).Header.Get("X-Request-Id")
		if a == b {
			t.Fatalf("two requests got the same id %q", a)
		}
	})
	t.Run("OKClientRequestIDEchoed", func(t *testing.T) {
		req := s.request("POST", "/v1/tokens", s.root, `{}`)
		req.Header.Set("X-Request-Id", "abc-123")
		r := s.send(req)
		if got := r.Header.Get("X-Request-Id"); got != "abc-123" {
			t.Fatalf("X-Request-Id = %q, want abc-123", got)
		}
		if p := wantProblem(t, r, 400, "invalid"); p["request_id"] != "abc-123" {
			t.Fatalf("problem request_id = %v", p["request_id"])
		}
	})
	for _, tt := range []struct{ name, id string }{
		{"ErrMaliciousRequestID", "a b\n"},
		{"ErrRequestIDWithSpace", "a b"},
		{"ErrRequestIDWithQuote", `a"b`},
		{"ErrRequestIDTooLong", strings.Repeat("a", 65)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Through the handler: an HTTP client refuses to send "\n".
			req := httptest.NewRequest("GET", "/v1/tokens/tok_nope", nil)
			req.Header.Set("Authorization", "Bearer "+s.root)
			req.Header["X-Request-Id"] = []string{tt.id}
			w := httptest.NewRecorder()
			s.h.ServeHTTP(w, req)
			got := w.Header().Get("X-Request-Id")
			if got == tt.id || !strings.HasPrefix(got, "req_") {
				t.Fatalf("X-Request-Id = %q, want a new req_ id in place of %q", got, tt.id)
			}
			if w.Code != 404 || strings.Contains(w.Body.String(), tt.id) {
				t.Fatalf("status %d, body %s", w.Code, w.Body)
			}
		})
	}
	t.Run("OKOpenAPI", func(t *testing.T) {
		r := s.do("GET", "/openapi.json", "", nil)
		wantStatus(t, r, 200)
		if m := r.object(t); !strings.HasPrefix(fmt.Sprint(m["openapi"]), "3.1") {
			t.Fatalf("openapi = %v", m["openapi"])
		}
	})
}

func TestAudit(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	callerID, caller := s.newToken("auditor", "keyward:admin")
	const ua = "keyward-test/1.0"

	var id string
	steps := []struct {
		action string
		do     func() *response
	}{
		{"token.create", func() *response {
			return s.do("POST", "/v1/tokens", caller, map[string]any{"name": "audited", "scopes": []string{"orders:read"}, "metadata": map[string]any{"k": "v"}})
		}},
		{"token.update", func() *response {
			return s.do("PATCH", "/v1/tokens/"+id, caller, map[string]any{"name": "renamed", "subject": "cust-3"})
		}},
		{"token.rotate", func() *response {
			return s.do("POST", "/v1/tokens/"+id+"/rotate", caller, map[string]any{"grace_period": "1h"})
		}},
		{"token.suspend", func() *response {
			return s.do("POST", "/v1/tokens/"+id+"/suspend", caller, map[string]any{"reason": "check"})
		}},
		{"token.resume", func() *response { return s.do("POST", "/v1/tokens/"+id+"/resume", caller, nil) }},
		{"token.revoke", func() *response {
			return s.do("POST", "/v1/tokens/"+id+"/revoke", caller, map[string]any{"reason": "done"})
		}},
	}
	var secrets []string
	for _, step := range steps {
		t.Run(step.action, func(t *testing.T) {
			st := s.state()
			r := step.do()
			if r.Status != 200 && r.Status != 201 {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			m := r.object(t)
			if tok, ok := m["token"].(string); ok {
				secrets = append(secrets, tok)
			}
			if id == "" {
				id = m["id"].(string)
			}
			ev := s.newEvents(st)
			if len(ev) != 1 {
				t.Fatalf("%d audit events added, want 1: %+v", len(ev), ev)
			}
			e := ev[0]
			if e.Action != step.action || e.Actor.Type != "token" || e.Actor.ID != callerID || e.Target != id {
				t.Fatalf("event = %+v, want %s by token %s on %s", e, step.action, callerID, id)
			}
			if e.RequestID == "" || e.RequestID != r.Header.Get("X-Request-Id") {
				t.Fatalf("event request_id = %q, response X-Request-Id = %q", e.RequestID, r.Header.Get("X-Request-Id"))
			}
			if e.IP != "127.0.0.1" {
				t.Fatalf("event ip = %q, want 127.0.0.1", e.IP)
			}
			if !strings.HasPrefix(e.ID, "evt_") || e.Time.IsZero() {
				t.Fatalf("event id %q, time %v", e.ID, e.Time)
			}
			if len(e.Changes) == 0 || string(e.Changes) == "null" {
				t.Fatalf("event has no changes")
			}
			for _, sec := range append(secrets, caller, s.root) {
				if strings.Contains(string(e.Changes), sec) || strings.Contains(string(e.Changes), sec[3:]) {
					t.Fatalf("event changes contain a secret: %s", e.Changes)
				}
			}
		})
	}
	t.Run("OKChangesDescribeUpdate", func(t *testing.T) {
		for _, e := range s.audit() {
			if e.Action != "token.update" || e.Target != id {
				continue
			}
			var ch map[string]map[string]any
			if err := json.Unmarshal(e.Changes, &ch); err != nil {
				t.Fatal(err)
			}
			if ch["name"]["from"] != "audited" || ch["name"]["to"] != "renamed" || ch["subject"]["to"] != "cust-3" {
				t.Fatalf("update changes = %s", e.Changes)
			}
			return
		}
		t.Fatal("no token.update event")
	})
	// The grace period is recorded as the API spells a duration, as it
	// was given ("1h"), not as Go prints it ("1h0m0s").
	t.Run("OKChangesDescribeRotate", func(t *testing.T) {
		for _, e := range s.audit() {
			if e.Action != "token.rotate" || e.Target != id {
				continue
			}
			var ch map[string]any
			if err := json.Unmarshal(e.Changes, &ch); err != nil {
				t.Fatal(err)
			}
			if ch["grace_period"] != "1h" {
				t.Fatalf("rotate changes = %s, want grace_period \"1h\"", e.Changes)
			}
			return
		}
		t.Fatal("no token.rotate event")
	})
	t.Run("OKUserAgent", func(t *testing.T) {
		st := s.state()
		req := s.request("POST", "/v1/tokens", caller, map[string]any{"name": "ua"})
		req.Header.Set("User-Agent", ua)
		wantStatus(t, s.send(req), 201)
		ev := s.newEvents(st)
		if len(ev) != 1 || ev[0].UserAgent != ua {
			t.Fatalf("events = %+v, want one with user_agent %q", ev, ua)
		}
	})
	t.Run("OKUserAgentSecretRedacted", func(t *testing.T) {
		// A client that puts its key in its User-Agent must not leave it in
		// the audit log, which cannot be changed later; a long one is cut.
		st := s.state()
		req := s.request("POST", "/v1/tokens", caller, map[string]any{"name": "ua secret"})
		req.Header.Set("User-Agent", "client/1.0 key="+caller+" "+strings.Repeat("é", 200))
		wantStatus(t, s.send(req), 201)
		ev := s.newEvents(st)
		if len(ev) != 1 {
			t.Fatalf("events = %+v, want one", ev)
		}
		got := ev[0].UserAgent
		if strings.Contains(got, caller[3:]) || !strings.HasPrefix(got, "client/1.0 key=kw_[redacted] éé") || len(got) > 300 || !utf8.ValidString(got) {
			t.Fatalf("user_agent = %q, want the secret redacted, at most 300 bytes of valid UTF-8", got)
		}
	})
	t.Run("OKNewestFirst", func(t *testing.T) {
		ev := s.audit()
		for i := 1; i < len(ev); i++ {
			if ev[i-1].ID < ev[i].ID {
				t.Fatalf("audit events not newest first: %s before %s", ev[i-1].ID, ev[i].ID)
			}
		}
	})
	t.Run("OKPaging", func(t *testing.T) {
		all := s.audit()
		var seen []string
		cursor := ""
		for i := 0; i < 100; i++ {
			path := "/v1/audit?limit=3"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := s.do("GET", path, s.root, nil)
			wantStatus(t, r, 200)
			var l struct {
				Items      []auditEvent `json:"items"`
				NextCursor string       `json:"next_cursor"`
			}
			json.Unmarshal(r.Body, &l)
			for _, e := range l.Items {
				seen = append(seen, e.ID)
			}
			if l.NextCursor == "" {
				break
			}
			cursor = l.NextCursor
		}
		var want []string
		for _, e := range all {
			want = append(want, e.ID)
		}
		if !slices.Equal(seen, want) {
			t.Fatalf("paged events %q, want %q", seen, want)
		}
	})
	t.Run("OKFilters", func(t *testing.T) {
		all := s.audit()
		var times []time.Time
		for _, e := range all {
			times = append(times, e.Time)
		}
		ids := func(path string) []string {
			t.Helper()
			r := s.do("GET", path, s.root, nil)
			wantStatus(t, r, 200)
			var l struct{ Items []auditEvent }
			json.Unmarshal(r.Body, &l)
			var out []string
			for _, e := range l.Items {
				out = append(out, e.ID)
			}
			return out
		}
		want := func(keep func(e auditEvent) bool) []string {
			var out []string
			for _, e := range all {
				if keep(e) {
					out = append(out, e.ID)
				}
			}
			return out
		}
		mid := times[len(times)/2]
		for _, tc := range []struct {
			name, query string
			keep        func(e auditEvent) bool
		}{
			{"Actor", "actor=" + callerID, func(e auditEvent) bool { return e.Actor.ID == callerID }},
			{"Action", "action=token.rotate", func(e auditEvent) bool { return e.Action == "token.rotate" }},
			{"ActionFamily", "action=token.*", func(e auditEvent) bool { return strings.HasPrefix(e.Action, "token.") }},
			{"Target", "target=" + id, func(e auditEvent) bool { return e.Target == id }},
			{"From", "from=" + url.QueryEscape(mid.Format(time.RFC3339Nano)), func(e auditEvent) bool { return !e.Time.Before(mid) }},
			{"To", "to=" + url.QueryEscape(mid.Format(time.RFC3339Nano)), func(e auditEvent) bool { return e.Time.Before(mid) }},
			{"Combined", "action=token.create&actor=" + callerID, func(e auditEvent) bool { return e.Action == "token.create" && e.Actor.ID == callerID }},
			{"NoMatch", "actor=tok_nobody", func(auditEvent) bool { return false }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, w := ids("/v1/audit?limit=500&"+tc.query), want(tc.keep)
				if !slices.Equal(got, w) {
					t.Fatalf("GET /v1/audit?%s = %q, want %q", tc.query, got, w)
				}
				if tc.name != "NoMatch" && len(w) == 0 {
					t.Fatalf("the test filters out every event")
				}
			})
		}
		t.Run("PagingKeepsFilters", func(t *testing.T) {
			r := s.do("GET", "/v1/audit?limit=1&target="+id, s.root, nil)
			wantStatus(t, r, 200)
			var l struct {
				NextCursor string `json:"next_cursor"`
			}
			json.Unmarshal(r.Body, &l)
			got := ids("/v1/audit?limit=500&target=" + id + "&cursor=" + l.NextCursor)
			w := want(func(e auditEvent) bool { return e.Target == id })
			if !slices.Equal(got, w[1:]) {
				t.Fatalf("second page = %q, want %q", got, w[1:])
			}
		})
	})
	t.Run("ErrBadFilters", func(t *testing.T) {
		for _, tc := range []struct{ query, pointer string }{
			{"from=yesterday", "/from"},
			{"to=2026-13-01T00:00:00Z", "/to"},
			{"from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "/to"},
		} {
			r := s.do("GET", "/v1/audit?"+tc.query, s.root, nil)
			wantStatus(t, r, 400)
			var p struct {
				Code   string `json:"code"`
				Errors []struct {
					Pointer string `json:"pointer"`
				} `json:"errors"`
			}
			json.Unmarshal(r.Body, &p)
			if p.Code != "invalid" || len(p.Errors) != 1 || p.Errors[0].Pointer != tc.pointer {
				t.Errorf("GET /v1/audit?%s = %s, want invalid at %s", tc.query, r.Body, tc.pointer)
			}
		}
	})
	t.Run("OKChainVerifies", func(t *testing.T) {
		// Every write through the API extends the workspace's chain.
		rep, err := audit.Verify(t.Context(), s.db, s.key, s.ws.ID)
		if err != nil || !rep.OK() || rep.Events != int64(len(s.audit())) {
			t.Fatalf("Verify = %+v, %v (problem %+v); want OK with every event", rep, err, rep.Problem)
		}
	})
	t.Run("ErrOtherWorkspaceInvisible", func(t *testing.T) {
		r := s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "other"})
		wantStatus(t, r, 201)
		other := r.object(t)["token"].(string)
		r = s.do("GET", "/v1/audit?limit=500", other, nil)
		wantStatus(t, r, 200)
		var l struct{ Items []auditEvent }
		json.Unmarshal(r.Body, &l)
		for _, e := range l.Items {
			if e.Target == id || e.Target == s.rootID {
				t.Fatalf("another workspace sees event %+v", e)
			}
		}
	})
}

// TestSecretInPlaceOfID: a token's secret given where its id belongs
// (keyward token revoke kw_...) is not found, and comes back neither in
// the answer nor in the access log.
func TestSecretInPlaceOfID(t *testing.T) {
	s := newStack(t)
	var logs syncBuffer
	h := api.New(api.Config{Service: s.svc, Engine: s.engine, Store: s.db, Now: s.clock.Now, Version: "test",
		Log: slog.New(slog.NewTextHandler(&logs, nil))}).Handler()
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, text := s.newToken("victim", "orders:read")
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/tokens/" + text},
		{"POST", "/v1/tokens/" + text + "/revoke"},
		{"PATCH", "/v1/tokens/" + text},
		{"POST", "/v1/tokens/" + text + "/rotate"},
		{"GET", "/v1/token/" + text}, // no such endpoint
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+s.root)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s: status %d, want 404: %s", tc.method, tc.path, res.StatusCode, body)
		}
		if strings.Contains(string(body), text[3:]) {
			t.Errorf("%s: the answer repeats the secret: %s", tc.method, body)
		}
	}
	// A secret sent as the method is as little kept.
	req, _ := http.NewRequest(text, srv.URL+"/v1/tokens", nil)
	req.Header.Set("Authorization", "Bearer "+s.root)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("secret as the method: status %d, want 405", res.StatusCode)
	}
	if l := logs.String(); strings.Contains(l, text[3:]) || !strings.Contains(l, "kw_[redacted]") || !strings.Contains(l, "method=kw_[redacted]") {
		t.Errorf("the access log holds the secret, or no redacted path or method:\n%s", l)
	}
	s.wantCode(text, "VALID") // nothing happened to it
}

// TestAccessLogEscapedPath: the access log writes the path as the request
// had it, escaped: an encoded "?" decoded would read as a query string,
// which access logs never hold (PRODUCT §7). A secret is redacted also
// where an escape hides it.
func TestAccessLogEscapedPath(t *testing.T) {
	s := newStack(t)
	var logs syncBuffer
	h := api.New(api.Config{Service: s.svc, Engine: s.engine, Store: s.db, Now: s.clock.Now, Version: "test",
		Log: slog.New(slog.NewTextHandler(&logs, nil))}).Handler()
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, text := s.newToken("victim", "orders:read")
	for _, path := range []string{"/v1/tokens/a%3Faccess_token=x", "/v1/tokens/kw%5F" + text[3:]} {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.root)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, res.StatusCode)
		}
	}
	l := logs.String()
	for _, want := range []string{`path="/v1/tokens/a%3Faccess_token=x"`, `path=/v1/tokens/kw%5F[redacted]`} {
		if !strings.Contains(l, want) {
			t.Errorf("the access log lacks %s:\n%s", want, l)
		}
	}
	if strings.Contains(l, "?access_token") || strings.Contains(l, text[3:]) {
		t.Errorf("the access log holds a decoded \"?\" or the secret:\n%s", l)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// TestReasonRefused: a reason with control or bidirectional marks is
// refused, and the token is left as it was.
func TestReasonRefused(t *testing.T) {
	s := newStack(t)
	id, text := s.newToken("t", "orders:read")
	for _, reason := range []string{"a\u0000b", "line\nbreak", "\u001b[31mred", "evil \u202egnp.exe", "c1\u0085next", "para\u2029graph"} {
		body := map[string]any{"reason": reason}
		wantInvalid(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, body), "/reason")
		wantInvalid(t, s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, body), "/reason")
	}
	// 500 characters, as the OpenAPI document's maxLength counts them, not
	// bytes: 1000 of them in UTF-8.
	wantInvalid(t, s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, map[string]any{"reason": strings.Repeat("é", 501)}), "/reason")
	s.wantCode(text, "VALID")
	wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/suspend", s.root, map[string]any{"reason": strings.Repeat("é", 500)}), http.StatusOK)
	wantStatus(t, s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, map[string]any{"reason": "leaked in a ticket — ünïcode is fine"}), http.StatusOK)
}

// TestAmbiguousCredentials: what one reader takes one way and another the
// other way is refused: two Authorization fields, an OAuth parameter given
// twice, a verify body whose token is null.
func TestAmbiguousCredentials(t *testing.T) {
	s := newStack(t)
	_, text := s.newToken("t", "orders:read")
	req := s.request("GET", "/v1/tokens", s.root, nil)
	req.Header.Add("Authorization", "Bearer "+text)
	r := s.send(req)
	wantProblem(t, r, http.StatusBadRequest, "invalid")
	if got, want := r.Header.Get("WWW-Authenticate"), `Bearer realm="keyward", error="invalid_request"`; got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}
	req = s.request("POST", "/oauth2/introspect", s.root, "token="+text)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Add("Authorization", "Bearer "+text)
	r = s.send(req)
	if r.Status != http.StatusBadRequest || r.object(t)["error"] != "invalid_request" {
		t.Errorf("introspect with two Authorization fields: %d %s, want OAuth's invalid_request", r.Status, r.Body)
	}
	r = s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {text, s.root}})
	if r.Status != http.StatusBadRequest || r.object(t)["error"] != "invalid_request" {
		t.Errorf("introspect with token twice: %d %s", r.Status, r.Body)
	}
	wantInvalid(t, s.do("POST", "/v1/verify", s.root, `{"token":null}`), "/token")
}

// TestPatchKeepsOldMetadata: metadata stored before the rule that now
// refuses it (a number beyond a float64) does not block a patch that
// leaves it alone; a patch that changes it must make it valid.
func TestPatchKeepsOldMetadata(t *testing.T) {
	s := newStack(t)
	id, _ := s.newToken("old", "orders:read")
	now := s.clock.Now()
	_, err := s.db.UpdateToken(context.Background(), s.ws.ID, id, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		t.Metadata = json.RawMessage(`{"n":1e400}`)
		return &keyward.TokenWrite{Event: &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, now), Time: now, Action: "token.update",
			Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: id}, Now: now}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"name":"renamed"}`), http.StatusOK)
	wantInvalid(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"metadata":{"a":1}}`), "/metadata")
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"metadata":{"n":1}}`), http.StatusOK)
}

// TestTokenNameWhiteSpace: a token's name with white space at either end
// is refused as a workspace's is, with the same message; a name stored
// before that was refused still lets the token's other fields change.
func TestTokenNameWhiteSpace(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id, _ := s.newToken("old", "orders:read")
	for _, name := range []string{" ci", "ci ", "ci\u00a0", "\u3000ci"} {
		for _, r := range []*response{
			s.do("POST", "/v1/tokens", s.root, `{"name":"`+name+`"}`),
			s.do("PATCH", "/v1/tokens/"+id, s.root, `{"name":"`+name+`"}`),
		} {
			p := wantInvalid(t, r, "/name")
			if errs, _ := p["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["detail"] != "name must not start or end with white space" {
				t.Errorf("name %q: errors = %v", name, p["errors"])
			}
		}
	}
	if got := s.get(id)["name"]; got != "old" {
		t.Fatalf("name = %v after the refused patch", got)
	}
	now := s.clock.Now()
	if _, err := s.db.UpdateToken(context.Background(), s.ws.ID, id, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		t.Name = " old "
		return &keyward.TokenWrite{Event: &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, now), Time: now, Action: "token.update",
			Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: id}, Now: now}, nil
	}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"subject":"customer-1"}`), http.StatusOK)
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, `{"name":"old"}`), http.StatusOK)
}

// TestErrorsRedactSecrets: a value an error quotes back (an unknown
// field's name, a scope, a CIDR) that is a token's secret pasted in the
// wrong place does not come back in the error body (PRODUCT §3).
func TestErrorsRedactSecrets(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	_, sec := s.newToken("pasted")
	for _, tt := range []struct{ name, path, body string }{
		{"UnknownField", "/v1/tokens", `{"name":"x","` + sec + `":1}`},
		{"Scope", "/v1/tokens", `{"name":"x","scopes":["` + sec + `"]}`},
		{"CIDR", "/v1/tokens", `{"name":"x","allowed_cidrs":["` + sec + `"]}`},
		{"VerifyScope", "/v1/verify", `{"token":"` + sec + `","scopes":["` + sec + `"]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do("POST", tt.path, s.root, tt.body)
			wantStatus(t, r, http.StatusBadRequest)
			if strings.Contains(string(r.Body), sec) || strings.Contains(string(r.Body), sec[3:]) {
				t.Fatalf("the error body repeats the secret: %s", r.Body)
			}
			if !strings.Contains(string(r.Body), "kw_[redacted]") {
				t.Fatalf("the error body does not say what was taken out: %s", r.Body)
			}
		})
	}
}

// TestUncleanPaths: a path with an empty, "." or ".." segment answers 404
// problem+json, not http.ServeMux's redirect, which repeated the path (a
// secret in it too) in Location and would be followed with the credential.
func TestUncleanPaths(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id, sec := s.newToken("target")
	for _, tt := range []struct{ method, path string }{
		{"GET", "/v1//tokens/" + sec},
		{"GET", "/v1/tokens//" + id},
		{"POST", "/v1/tokens/" + id + "//revoke"},
		{"GET", "/v1/./tokens"},
		{"GET", "/v1/x/../tokens"},
		{"POST", "/oauth2//introspect"},
	} {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			r := s.do(tt.method, tt.path, s.root, nil)
			wantProblem(t, r, http.StatusNotFound, keyward.ENOTFOUND)
			if loc := r.Header.Get("Location"); loc != "" {
				t.Errorf("Location: %s", loc)
			}
			if strings.Contains(string(r.Body), sec[3:]) {
				t.Errorf("the body repeats the secret: %s", r.Body)
			}
		})
	}
	if got := s.get(id)["state"]; got != "active" {
		t.Fatalf("state = %v after the unclean revoke, want active", got)
	}
}

// TestMetricsUnmatched: requests no route takes (unknown paths, methods a
// path does not take, unclean paths) are counted under route "unmatched",
// so that a scan shows in monitoring, and their paths are no labels.
func TestMetricsUnmatched(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for i := range 3 {
		wantStatus(t, s.do("GET", fmt.Sprintf("/v1/scan%d", i), s.root, nil), http.StatusNotFound)
	}
	wantStatus(t, s.do("DELETE", "/v1/tokens", s.root, nil), http.StatusMethodNotAllowed)
	wantStatus(t, s.do("GET", "/v1//tokens", s.root, nil), http.StatusNotFound)
	body := string(s.do("GET", "/metrics", "", nil).Body)
	for _, want := range []string{
		`keyward_http_requests_total{code="404",route="unmatched"} 4`,
		`keyward_http_requests_total{code="405",route="unmatched"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, "scan") {
		t.Error("a scanned path became a label")
	}
}

// TestNoSecretsInStoredFields: a token's secret pasted as a name or a
// subject is refused, since both are stored, listed and audited in plain
// text; nothing is written.
func TestNoSecretsInStoredFields(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id, sec := s.newToken("target")
	wantInvalid(t, s.do("POST", "/v1/tokens", s.root, map[string]any{"name": "copied " + sec}), "/name")
	wantInvalid(t, s.do("POST", "/v1/tokens", s.root, map[string]any{"name": "x", "subject": sec}), "/subject")
	wantInvalid(t, s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"name": sec}), "/name")
	r := s.do("GET", "/v1/audit?limit=500", s.root, nil)
	wantStatus(t, r, http.StatusOK)
	if strings.Contains(string(r.Body), sec[3:]) {
		t.Fatal("the audit log holds the secret")
	}
	if got := s.get(id)["name"]; got != "target" {
		t.Fatalf("name = %v after the refused patch", got)
	}
	// A reason naming the leaked secret does not stop the revocation; the
	// secret is cut from what is stored.
	r = s.do("POST", "/v1/tokens/"+id+"/revoke", s.root, map[string]any{"reason": "leaked: " + sec})
	wantStatus(t, r, http.StatusOK)
	if m := s.get(id); m["state"] != "revoked" || m["revoke_reason"] != "leaked: kw_[redacted]" {
		t.Fatalf("after the revocation: state %v, reason %v", m["state"], m["revoke_reason"])
	}
	if r := s.do("GET", "/v1/audit?limit=500", s.root, nil); strings.Contains(string(r.Body), sec[3:]) {
		t.Fatal("the audit log holds the secret of the reason")
	}
}

// TestNoSecretsInMetadataAndNames: a token's secret in a token's
// metadata (a key or a string value, however nested, however escaped), in
// a workspace's name, or pasted without its prefix (which its checksum
// tells from a long word) is refused as in a name: 400, pointing at the
// field (a key at the object that holds it, since a pointer names its
// keys), never repeating the secret; nothing is written.
func TestNoSecretsInMetadataAndNames(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id, sec := s.newToken("target")
	body := sec[len("kw_"):]
	escaped := `\u006b` + sec[1:] // "kw_..." with its k escaped
	for _, tt := range []struct {
		name, method, path, body string
		pointers                 []string
	}{
		{"MetadataValue", "POST", "/v1/tokens", `{"name":"x","metadata":{"team":"a","ci":{"env":["ok","` + sec + `"]}}}`, []string{"/metadata/ci/env/1"}},
		{"MetadataEscaped", "POST", "/v1/tokens", `{"name":"x","metadata":{"k":"` + escaped + `"}}`, []string{"/metadata/k"}},
		{"MetadataBareBody", "POST", "/v1/tokens", `{"name":"x","metadata":{"k":"key=` + body + `"}}`, []string{"/metadata/k"}},
		{"MetadataKey", "POST", "/v1/tokens", `{"name":"x","metadata":{"` + sec + `":1}}`, []string{"/metadata"}},
		{"MetadataNestedKey", "POST", "/v1/tokens", `{"name":"x","metadata":{"a":{"` + sec + `":{"b":"` + sec + `"}},"c":"` + body + `"}}`, []string{"/metadata/a", "/metadata/c"}},
		{"MetadataPatch", "PATCH", "/v1/tokens/" + id, `{"metadata":{"k":"` + sec + `"}}`, []string{"/metadata/k"}},
		{"NameBareBody", "POST", "/v1/tokens", `{"name":"copied ` + body + `"}`, []string{"/name"}},
		{"NameAndSubjectBareBody", "POST", "/v1/tokens", `{"name":"` + body + `","subject":"` + body + `"}`, []string{"/name", "/subject"}},
		{"NamePatchBareBody", "PATCH", "/v1/tokens/" + id, `{"name":"` + body + `"}`, []string{"/name"}},
		{"WorkspaceName", "POST", "/v1/workspaces", `{"name":"ws ` + sec + `"}`, []string{"/name"}},
		{"WorkspaceNameBareBody", "POST", "/v1/workspaces", `{"name":"` + body + `"}`, []string{"/name"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := s.state()
			r := s.do(tt.method, tt.path, s.root, tt.body)
			p := wantInvalid(t, r, tt.pointers[0])
			if ps := pointersOf(t, p); !slices.Equal(ps, tt.pointers) {
				t.Errorf("pointers = %q, want %q", ps, tt.pointers)
			}
			if strings.Contains(string(r.Body), body) {
				t.Errorf("the error body repeats the secret: %s", r.Body)
			}
			s.wantUnchanged(before)
		})
	}
	if got := s.get(id)["metadata"]; got != nil {
		t.Fatalf("metadata = %v after the refused patch", got)
	}
	// A long word, or a secret's body of a prefix no workspace here has,
	// is no secret.
	other, err := secret.Generate("zz")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{strings.Repeat("A", 38), other[len("zz_"):], "tok_01jd8x4p0a6d4vqk3m2n5r7s9t"} {
		wantStatus(t, s.do("POST", "/v1/tokens", s.root, map[string]any{"name": name, "metadata": map[string]any{name: name}}), http.StatusCreated)
	}
}

// TestMetadataShapedLikeASecret: metadata is machine-written data, where a
// '_' then 38 letters and digits at the end of a run is common (base64url:
// JWTs, JWK thumbprints; snake_case ids): only a checksum that matches,
// or a known prefix before it, makes it a secret there. A secret of
// another prefix, and one of this workspace's mistyped, are still refused.
func TestMetadataShapedLikeASecret(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, v := range []string{
		"Hp_eZ1dcKq67HQULP2C0nYPwMgU2QEtLXfA2SemOu-8", // a JWK thumbprint
		"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.ijV0_9E796qRf9pB9FYYPy1GpE22lYTLf8f96Qv9Km7BAEQ_TZv5fcAWbG0e32jw71o7unnBWcmQPUdIoPtxkA",
		"order_e0298726bb00303d4f29368cc9b38181d16ffb",
	} {
		r := s.do("POST", "/v1/tokens", s.root, map[string]any{"name": "x", "metadata": map[string]any{"v": v, v: 1}})
		wantStatus(t, r, http.StatusCreated)
	}
	other, err := secret.Generate("zz")
	if err != nil {
		t.Fatal(err)
	}
	_, sec := s.newToken("target")
	c := "a"
	if sec[len(sec)-1] == 'a' {
		c = "b"
	}
	typo := sec[:len(sec)-1] + c // its checksum no longer matches
	for _, v := range []string{other, "id:" + typo} {
		wantInvalid(t, s.do("POST", "/v1/tokens", s.root, map[string]any{"name": "x", "metadata": map[string]any{"v": v}}), "/metadata/v")
	}
}

// TestCreateLocation: a created token's 201 names it in Location, relative
// to the request, and that URL reads it.
func TestCreateLocation(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r := s.do("POST", "/v1/tokens", s.root, map[string]any{"name": "located"})
	wantStatus(t, r, http.StatusCreated)
	id, _ := r.object(t)["id"].(string)
	base, _ := url.Parse(s.srv.URL + "/v1/tokens")
	ref, err := url.Parse(r.Header.Get("Location"))
	if err != nil || r.Header.Get("Location") == "" {
		t.Fatalf("Location %q: %v", r.Header.Get("Location"), err)
	}
	if got := base.ResolveReference(ref).Path; got != "/v1/tokens/"+id {
		t.Fatalf("Location resolves to %s, want /v1/tokens/%s", got, id)
	}
	wantStatus(t, s.do("GET", base.ResolveReference(ref).Path, s.root, nil), http.StatusOK)
}

// TestEveryInvalidField: a request with several invalid fields learns of
// each in one answer, whether a field failed to decode or to validate.
func TestEveryInvalidField(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	pointers := func(p map[string]any) []string {
		var out []string
		errs, _ := p["errors"].([]any)
		for _, e := range errs {
			out = append(out, e.(map[string]any)["pointer"].(string))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		body string
		want []string
	}{
		{"EmptyNameBadDuration", `{"name":"","expires_in":"5d"}`, []string{"/expires_in", "/name"}},
		{"UnknownFieldBadSubject", `{"name":"x","subject":" a","bogus":1}`, []string{"/bogus", "/subject"}},
		{"WrongTypeBadSubject", `{"name":5,"subject":" a"}`, []string{"/name", "/subject"}},
		{"BadWindowBadLimitEmptyName", `{"name":"","rate_limit":{"limit":0,"window":"x"}}`, []string{"/name", "/rate_limit/limit", "/rate_limit/window"}},
		{"BadScopeBadWindow", `{"name":"x","scopes":["BAD"],"rate_limit":{"limit":1,"window":"x"}}`, []string{"/rate_limit/window", "/scopes/0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do("POST", "/v1/tokens", s.root, json.RawMessage(tc.body))
			p := wantProblem(t, r, http.StatusBadRequest, "invalid")
			if got := pointers(p); !slices.Equal(got, tc.want) {
				t.Errorf("pointers %v, want %v; body %s", got, tc.want, r.Body)
			}
		})
	}
	t.Run("Patch", func(t *testing.T) {
		// A patch that fails to decode learns of the other problems of
		// the values it gives too, but not of the fields it leaves to the
		// stored token (the window of a limit); one that decodes learns
		// of every problem against the stored token.
		id, sec := s.newToken("patched")
		for _, tc := range []struct {
			name string
			body string
			want []string
		}{
			{"EmptyNameBadDuration", `{"name":"","expires_in":"5d"}`, []string{"/expires_in", "/name"}},
			{"UnknownFieldBadSubject", `{"subject":" a","bogus":1}`, []string{"/bogus", "/subject"}},
			{"WrongTypeBadSubject", `{"name":5,"subject":" a"}`, []string{"/name", "/subject"}},
			{"BadWindowBadLimitEmptyName", `{"name":"","rate_limit":{"limit":0,"window":"x"}}`, []string{"/name", "/rate_limit/limit", "/rate_limit/window"}},
			{"BadScopeBadWindow", `{"scopes":["BAD"],"rate_limit":{"limit":1,"window":"x"}}`, []string{"/rate_limit/window", "/scopes/0"}},
			{"UnknownFieldBadLimitNoWindow", `{"rate_limit":{"limit":0},"bogus":1}`, []string{"/bogus", "/rate_limit/limit"}},
			{"UnknownFieldPastExpiry", `{"expires_at":"2000-01-01T00:00:00Z","bogus":1}`, []string{"/bogus", "/expires_at"}},
			{"SecretNameBadScope", `{"name":"` + sec + `","scopes":["BAD"]}`, []string{"/name", "/scopes/0"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := s.do("PATCH", "/v1/tokens/"+id, s.root, json.RawMessage(tc.body))
				p := wantProblem(t, r, http.StatusBadRequest, "invalid")
				if got := pointers(p); !slices.Equal(got, tc.want) {
					t.Errorf("pointers %v, want %v; body %s", got, tc.want, r.Body)
				}
			})
		}
		if got := s.get(id)["name"]; got != "patched" {
			t.Fatalf("name = %v after the refused patches", got)
		}
		// POST too learns of a secret in a name with the other problems.
		r := s.do("POST", "/v1/tokens", s.root, json.RawMessage(`{"name":"`+sec+`","scopes":["BAD"]}`))
		if got, want := pointers(wantProblem(t, r, http.StatusBadRequest, "invalid")), []string{"/name", "/scopes/0"}; !slices.Equal(got, want) {
			t.Errorf("POST: pointers %v, want %v", got, want)
		}
	})
	t.Run("PatchExpiredToken", func(t *testing.T) {
		// The stored expiry, now past, is not the patch's problem: only
		// the field the patch gives is reported.
		s := newStack(t)
		id, _ := s.create(map[string]any{"name": "old", "expires_in": "1h"})["id"].(string)
		s.clock.Advance(2 * time.Hour)
		r := s.do("PATCH", "/v1/tokens/"+id, s.root, json.RawMessage(`{"scopes":["BAD"]}`))
		p := wantProblem(t, r, http.StatusBadRequest, "invalid")
		if got, want := pointers(p), []string{"/scopes/0"}; !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v; body %s", got, want, r.Body)
		}
	})
	t.Run("ExpiresInPointed", func(t *testing.T) {
		// An expiry given as expires_in is pointed at as such, with other
		// errors or not; one given as expires_at (expires_in null) is not.
		for body, want := range map[string][]string{
			`{"name":"x","expires_in":"2000000h","bogus":1}`:                     {"/bogus", "/expires_in"},
			`{"name":"x","expires_in":null,"expires_at":"2300-01-01T00:00:00Z"}`: {"/expires_at"},
		} {
			p := wantProblem(t, s.do("POST", "/v1/tokens", s.root, json.RawMessage(body)), http.StatusBadRequest, "invalid")
			if got := pointers(p); !slices.Equal(got, want) {
				t.Errorf("%s: pointers %v, want %v", body, got, want)
			}
		}
		id, _ := s.newToken("far")
		p := wantProblem(t, s.do("PATCH", "/v1/tokens/"+id, s.root, json.RawMessage(`{"expires_in":"2000000h"}`)), http.StatusBadRequest, "invalid")
		if got := pointers(p); !slices.Equal(got, []string{"/expires_in"}) {
			t.Errorf("PATCH: pointers %v, want [/expires_in]", got)
		}
		// The detail names the expiry expires_in gives, not a field the
		// client did not send.
		if d, _ := p["detail"].(string); !strings.HasPrefix(d, "the expires_at that expires_in gives must be before 2200-01-01T00:00:00Z") {
			t.Errorf("PATCH: detail %q", d)
		}
	})
	t.Run("ListQuery", func(t *testing.T) {
		r := s.do("GET", "/v1/tokens?limit=0&state=zz&cursor=bad", s.root, nil)
		p := wantProblem(t, r, http.StatusBadRequest, "invalid")
		if got, want := pointers(p), []string{"/limit", "/cursor", "/state"}; !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
	})
	t.Run("WorkspaceListQuery", func(t *testing.T) {
		r := s.do("GET", "/v1/workspaces?limit=0&cursor=bad", s.root, nil)
		p := wantProblem(t, r, http.StatusBadRequest, "invalid")
		if got, want := pointers(p), []string{"/limit", "/cursor"}; !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
	})
	t.Run("AuditListQuery", func(t *testing.T) {
		// Every bad parameter in one answer, as the usage events give them.
		r := s.do("GET", "/v1/audit?limit=0&cursor=bad&from=yesterday", s.root, nil)
		p := wantProblem(t, r, http.StatusBadRequest, "invalid")
		if got, want := pointers(p), []string{"/limit", "/cursor", "/from"}; !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
	})
}

// fullStore is a store whose usage writes fail while full is set, as
// SQLite's do when its disk is full; reads go on.
type fullStore struct {
	keyward.Store
	full atomic.Bool
}

func (f *fullStore) FlushUsage(ctx context.Context, id keyward.FlushID, batch []keyward.UsageFlush) error {
	if f.full.Load() {
		return keyward.Errorf(keyward.EUNAVAILABLE, "the store's disk is full; try again once space is freed")
	}
	return f.Store.FlushUsage(ctx, id, batch)
}

// TestReadyzWritesFailing: a store that answers but refused the last
// usage write makes /readyz answer 200 degraded, "store": "writes
// failing", until a write succeeds again; /readyz itself writes nothing.
func TestReadyzWritesFailing(t *testing.T) {
	fs := &fullStore{}
	s := newStackWith(t, func(c *verify.Config) {
		fs.Store = c.Store
		c.Store = fs
	})
	_, text := s.newToken("used")
	ready := func() (int, string) {
		r := s.do("GET", "/readyz", "", nil)
		return r.Status, string(r.Body)
	}
	if code, body := ready(); code != 200 || body != `{"cache":"ok","status":"ok","store":"ok"}`+"\n" {
		t.Fatalf("before: %d %s", code, body)
	}
	fs.full.Store(true)
	s.wantCode(text, "VALID")
	if err := s.engine.Flush(context.Background()); err == nil {
		t.Fatal("the flush to a full store succeeded")
	}
	if code, body := ready(); code != 200 || body != `{"cache":"ok","status":"degraded","store":"writes failing"}`+"\n" {
		t.Errorf("writes failing: %d %s", code, body)
	}
	fs.full.Store(false)
	if err := s.engine.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := ready(); code != 200 || body != `{"cache":"ok","status":"ok","store":"ok"}`+"\n" {
		t.Errorf("after: %d %s", code, body)
	}
}

// hangingPing is a store whose Ping hangs (a server that accepts
// connections and never answers) until its context ends, or answers after
// 10 s when nothing ends it.
type hangingPing struct{ keyward.Store }

func (h hangingPing) Ping(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return nil
	}
}

// TestReadyzStoreHangs: /readyz answers that the store is unreachable
// while it hangs, rather than wait for it as long as the request may last.
func TestReadyzStoreHangs(t *testing.T) {
	s := newStack(t)
	h := api.New(api.Config{Service: s.svc, Engine: s.engine, Store: hangingPing{s.db}, Now: s.clock.Now, Version: "test"}).Handler()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	if w.Code != http.StatusServiceUnavailable || w.Body.String() != `{"cache":"ok","status":"unavailable","store":"unreachable"}`+"\n" {
		t.Fatalf("/readyz while the store hangs: %d %s", w.Code, w.Body)
	}
}

// TestMetricsIntrospectionNotVerification: an introspection, which
// consumes nothing, is not counted in keyward_verifications_total (only
// the caller's own authentication is), but in
// keyward_verify_duration_seconds{source="introspect"}, as the README
// and the metric's help say.
func TestMetricsIntrospectionNotVerification(t *testing.T) {
	s := newStack(t)
	_, text := s.newToken("introspected")
	metric := func(name string) string {
		t.Helper()
		for line := range strings.Lines(string(s.do("GET", "/metrics", "", nil).Body)) {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return strings.TrimSpace(v)
			}
		}
		return "none"
	}
	wantStatus(t, s.do("GET", "/v1/tokens", s.root, nil), 200) // the caller is cached
	valid, introspect := `keyward_verifications_total{outcome="VALID"}`, `keyward_verify_duration_seconds_count{source="introspect"}`
	before := metric(valid)
	for range 3 {
		r := s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {text}})
		wantStatus(t, r, 200)
		if r.object(t)["active"] != true {
			t.Fatalf("introspection: %s", r.Body)
		}
	}
	n, _ := strconv.Atoi(before)
	if got, want := metric(valid), strconv.Itoa(n+3); got != want { // the three callers' authentications
		t.Errorf("%s = %s after three introspections, want %s (was %s)", valid, got, want, before)
	}
	if got := metric(introspect); got != "3" {
		t.Errorf("%s = %s, want 3", introspect, got)
	}
}

// TestMetricsGatewayHTTP2Errors: the HTTP/2 errors the gateway reports are
// counted by net/http's name for them.
func TestMetricsGatewayHTTP2Errors(t *testing.T) {
	s := newStack(t)
	a := api.New(api.Config{Service: s.svc, Engine: s.engine, Store: s.db, Now: s.clock.Now, Version: "test"})
	a.ObserveGatewayHTTP2Error("stream_REFUSED_STREAM_over_max_streams")
	a.ObserveGatewayHTTP2Error("stream_REFUSED_STREAM_over_max_streams")
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := `keyward_gateway_http2_errors_total{type="stream_REFUSED_STREAM_over_max_streams"} 2`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// TestErrorsRedactBareBodies: a secret pasted without its prefix (its 38
// characters alone) where an error quotes the value back (a CIDR, a
// scope, an unknown field's name, a metadata key given twice) does not
// come back either, for the caller's workspace's prefix and the default
// one: its checksum tells it from a long word, which comes back as it is.
func TestErrorsRedactBareBodies(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r := s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "acme", "token_prefix": "acme"})
	wantStatus(t, r, http.StatusCreated)
	acme, _ := r.object(t)["token"].(string)
	_, kw := s.newToken("pasted")
	word := strings.Repeat("Ab1", 12) + "Zz" // 38 base62 characters, no secret
	type fieldError struct{ Pointer, Detail string }
	for _, caller := range []struct{ name, token, body string }{
		{"Default", s.root, kw[len("kw_"):]},
		{"WorkspacePrefix", acme, acme[len("acme_"):]},
		{"DefaultInOtherWorkspace", acme, kw[len("kw_"):]},
		{"LongWord", acme, word},
	} {
		want := secret.Redacted
		if caller.body == word {
			want = word
		}
		for _, tt := range []struct {
			name, body string
			errs       []fieldError
		}{
			{"CIDR", `{"name":"x","allowed_cidrs":["` + caller.body + `"]}`,
				[]fieldError{{"/allowed_cidrs/0", `"` + want + `" is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32`}}},
			{"Scope", `{"name":"x","scopes":["` + caller.body + `"]}`,
				[]fieldError{{"/scopes/0", `scope "` + want + `": segments use only a-z 0-9 _ . -`}}},
			{"UnknownField", `{"name":"x","` + caller.body + `":1}`,
				[]fieldError{{"/" + want, `unknown field "` + want + `"`}}},
			{"DuplicateMetadataKey", `{"name":"x","metadata":{"` + caller.body + `":1,"` + caller.body + `":2}}`,
				[]fieldError{{"/metadata", `the request body must not hold the name "` + want + `" twice in one object: parsers read it differently`}}},
		} {
			t.Run(caller.name+"/"+tt.name, func(t *testing.T) {
				r := s.do("POST", "/v1/tokens", caller.token, tt.body)
				wantProblem(t, r, http.StatusBadRequest, keyward.EINVALID)
				var p struct {
					Detail string
					Errors []fieldError
				}
				if err := json.Unmarshal(r.Body, &p); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(p.Errors, tt.errs) {
					t.Errorf("errors = %q, want %q", p.Errors, tt.errs)
				}
				if want == secret.Redacted && strings.Contains(string(r.Body), caller.body) {
					t.Errorf("the error body repeats the secret: %s", r.Body)
				}
			})
		}
	}
}

// TestReasonRedactsBareBodies: a secret pasted into a suspension's,
// resumption's or revocation's reason without its prefix (its 38
// characters alone) is cut from what is stored on the token and in the
// audit event, as one with its prefix is, for the token's workspace's
// prefix and the default one; a long word stays.
func TestReasonRedactsBareBodies(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r := s.do("POST", "/v1/workspaces", s.root, map[string]any{"name": "acme", "token_prefix": "acme"})
	wantStatus(t, r, http.StatusCreated)
	acme, _ := r.object(t)["token"].(string)
	_, kw := s.newToken("pasted")
	word := strings.Repeat("Ab1", 12) + "Zz" // 38 base62 characters, no secret
	for _, tc := range []struct{ name, pasted, want string }{
		{"Prefixed", acme, "acme_" + secret.Redacted},
		{"WorkspaceBody", acme[len("acme_"):], secret.Redacted},
		{"DefaultBody", kw[len("kw_"):], secret.Redacted},
		{"LongWord", word, word},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do("POST", "/v1/tokens", acme, map[string]any{"name": "t"})
			wantStatus(t, r, http.StatusCreated)
			id, _ := r.object(t)["id"].(string)
			for _, op := range []struct{ action, field string }{{"suspend", "suspend_reason"}, {"resume", ""}, {"revoke", "revoke_reason"}} {
				r := s.do("POST", "/v1/tokens/"+id+"/"+op.action, acme, map[string]any{"reason": "leaked: " + tc.pasted})
				wantStatus(t, r, http.StatusOK)
				want := "leaked: " + tc.want
				if got := r.object(t)[op.field]; op.field != "" && got != want {
					t.Errorf("%s: %s = %q, want %q", op.action, op.field, got, want)
				}
				r = s.do("GET", "/v1/audit?limit=1", acme, nil)
				wantStatus(t, r, http.StatusOK)
				var l struct{ Items []auditEvent }
				if err := json.Unmarshal(r.Body, &l); err != nil {
					t.Fatal(err)
				}
				var changes struct{ Reason string }
				if len(l.Items) != 1 || l.Items[0].Action != "token."+op.action || json.Unmarshal(l.Items[0].Changes, &changes) != nil || changes.Reason != want {
					t.Errorf("%s: newest audit event %s, want token.%s with the reason %q", op.action, r.Body, op.action, want)
				}
			}
			r = s.do("GET", "/v1/tokens/"+id, acme, nil)
			wantStatus(t, r, http.StatusOK)
			if tc.want != word && strings.Contains(string(r.Body), tc.pasted) {
				t.Errorf("the token holds the secret: %s", r.Body)
			}
		})
	}
}

// TestAuditTamperedChanges: empty changes, which keyward never stores,
// written straight into the database past its checks, list as none,
// which the audit chain cannot tell them from, rather than failing the
// whole page.
func TestAuditTamperedChanges(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, tc := range []struct{ name, changes, want string }{
		{"Empty", "", `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := sql.Open("sqlite", s.path+"?_pragma=busy_timeout(5000)&_pragma=ignore_check_constraints(1)")
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.Exec(`UPDATE audit_events SET changes = ? WHERE action = 'token.create'`, tc.changes); err != nil {
				t.Fatal(err)
			}
			r := s.do("GET", "/v1/audit?action=token.create", s.root, nil)
			wantStatus(t, r, 200)
			var l struct {
				Items []struct {
					Changes json.RawMessage `json:"changes"`
				} `json:"items"`
			}
			if err := json.Unmarshal(r.Body, &l); err != nil || len(l.Items) != 1 {
				t.Fatalf("body %s: %v", r.Body, err)
			}
			if string(l.Items[0].Changes) != tc.want {
				t.Errorf("changes = %s, want %s", l.Items[0].Changes, tc.want)
			}
		})
	}
}

// TestBearerNotSetOffBySpace: RFC 6750 §2.1 sets the token off from
// "Bearer" with spaces only. A management token set off by a tab is a
// credential presented but unusable: 401 with PRODUCT §5's challenge, told
// apart from no credential in the problem's detail and counted as a
// MALFORMED verification, and never admitted.
func TestBearerNotSetOffBySpace(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, tt := range []struct {
		name, auth, detail string
	}{
		{"ErrTab", "Bearer\t" + s.root, "the token is not valid"},
		{"ErrTabAfterSpace", "Bearer \t" + s.root, "the token is not valid"},
		{"ErrNoBreakSpace", "Bearer \u00a0" + s.root, "the token is not valid"},
		{"OKSpaces", "Bearer  " + s.root + " \t", ""},
		{"NoToken", "Bearer", "this endpoint needs a management token: Authorization: Bearer <token>"},
		{"OtherScheme", "Token " + s.root, "this endpoint needs a management token: Authorization: Bearer <token>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := s.request("GET", "/v1/tokens", "", nil)
			req.Header.Set("Authorization", tt.auth)
			r := s.send(req)
			if tt.detail == "" {
				// Spaces set it off, spaces and tabs may end the field:
				// admitted.
				wantStatus(t, r, http.StatusOK)
				return
			}
			p := wantProblem(t, r, http.StatusUnauthorized, keyward.EUNAUTHORIZED)
			if got := r.Header.Get("WWW-Authenticate"); got != `Bearer realm="keyward"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
			if p["detail"] != tt.detail {
				t.Errorf("detail %q, want %q", p["detail"], tt.detail)
			}
		})
	}
	if body := string(s.do("GET", "/metrics", "", nil).Body); !strings.Contains(body, `keyward_verifications_total{outcome="MALFORMED"} 3`+"\n") {
		t.Errorf("metrics lack the three MALFORMED verifications:\n%s", body)
	}
}
