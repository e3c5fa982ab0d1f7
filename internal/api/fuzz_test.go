package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/secret"
)

// FuzzCreateTokenRequest posts arbitrary bodies to POST /v1/tokens. Whatever
// the body, the answer is 201, 400 or 413 (never a 500), its body is JSON,
// and a 400 is a problem+json "invalid".
func FuzzCreateTokenRequest(f *testing.F) {
	for _, seed := range []string{
		`{"name":"ci"}`,
		`{"name":"ci deploy","scopes":["orders:read","orders:*"],"expires_in":"720h","allowed_cidrs":["203.0.113.0/24","2001:db8::1"],"rate_limit":{"limit":100,"window":"1m"},"quota":{"limit":10000,"period":"month"},"subject":"customer-42","metadata":{"team":"payments","n":[1,2,{"x":null}]}}`,
		`{"name":"at","expires_at":"2099-12-31T23:59:59Z"}`,
		`{"name":"nulls","scopes":null,"metadata":null,"rate_limit":null,"quota":null,"subject":null}`,
		`{"name":"mgmt","scopes":["keyward:verify","keyward:tokens:read"]}`,
		``,
		`{`,
		`null`,
		`[]`,
		`"name"`,
		`{"name":5}`,
		`{"name":"a","bogus":true}`,
		`{"name":"a","scopes":"orders:read"}`,
		`{"name":"a","scopes":["*"]}`,
		`{"name":"a","allowed_cidrs":["::ffff:1.2.3.4/120","fe80::1%eth0"]}`,
		`{"name":"a","rate_limit":{"limit":1.5,"window":"1m"}}`,
		`{"name":"a","rate_limit":{"limit":"5","window":0}}`,
		`{"name":"a","rate_limit":{"limit":9223372036854775807,"window":"744h"}}`,
		`{"name":"a","quota":{"limit":-1,"period":"week"}}`,
		`{"name":"a","expires_in":"1h","expires_at":"2099-01-01T00:00:00Z"}`,
		`{"name":"a","expires_in":"-5s"}`,
		`{"name":"a","expires_at":"0001-01-01T00:00:00Z"}`,
		`{"name":"a","metadata":[1]}`,
		`{"name":"a","metadata":{"k":"\ud800"}}`,
		`{"name":"a","subject":"x "}`,
		`{"name":"\u0000"}`,
		`{"name":"a"} {"name":"b"}`,
		`{"name":"a","name":"b"}`,
		`{"name":"a","rate_limit":{"limit":1,"window":"1m","x":{}}}`,
		`{"name":"` + strings.Repeat("é", 150) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	s := newStack(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/tokens", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.root)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		s.h.ServeHTTP(w, req)

		out := w.Body.Bytes()
		if !json.Valid(out) {
			t.Fatalf("status %d: body is not JSON: %q", w.Code, out)
		}
		switch w.Code {
		case http.StatusCreated:
			var v struct {
				ID    string `json:"id"`
				Token string `json:"token"`
				State string `json:"state"`
			}
			if err := json.Unmarshal(out, &v); err != nil {
				t.Fatalf("201 body: %v", err)
			}
			if !strings.HasPrefix(v.ID, "tok_") || v.State != "active" {
				t.Fatalf("201 body: %s", out)
			}
			if _, err := secret.Parse(v.Token); err != nil {
				t.Fatalf("201 token %q does not parse: %v", v.Token, err)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("status %d: Content-Type %q, want application/problem+json", w.Code, ct)
			}
			var p struct {
				Code   string `json:"code"`
				Status int    `json:"status"`
			}
			if err := json.Unmarshal(out, &p); err != nil {
				t.Fatalf("problem body: %v", err)
			}
			want := "invalid"
			if w.Code == http.StatusRequestEntityTooLarge {
				want = "too_large"
			}
			if p.Code != want || p.Status != w.Code {
				t.Fatalf("status %d: problem code %q status %d, want %q", w.Code, p.Code, p.Status, want)
			}
		default:
			t.Fatalf("status %d for body %q: %s", w.Code, body, out)
		}
	})
}
