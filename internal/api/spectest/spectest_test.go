package spectest

import (
	"net/http"
	"strings"
	"testing"
)

// TestCheckDetectsDrift makes sure that the check catches what it is
// for.
func TestCheckDetectsDrift(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://x/v1/tokens/tok_1", nil)
	js := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
	problem := http.Header{"Content-Type": {"application/problem+json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
	for _, tc := range []struct {
		name   string
		status int
		header http.Header
		body   string
		want   string
	}{
		{"undocumented status", 418, problem, `{}`, "status 418 is not documented"},
		{"wrong type", 200, js, `{"id": 5}`, "does not match"},
		{"unknown state", 200, js, `{"id": "tok_1", "name": "n", "state": "sleeping"}`, "does not match"},
		{"bad date-time", 404, problem, `{"type": "about:blank", "title": "Not Found", "status": "404", "code": "not_found"}`, "does not match"},
		{"media type", 200, http.Header{"Content-Type": {"text/html"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}, `<p>`, "media type text/html is not documented"},
	} {
		if err := Check(req, tc.status, tc.header, []byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// TestCheckHeadersDrift makes sure that a header a client acts on is held
// to the document: carried only where documented, present where required,
// and of the documented form.
func TestCheckHeadersDrift(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://x/v1/tokens", nil)
	problem := func(kv ...string) http.Header {
		h := http.Header{"Content-Type": {"application/problem+json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	body := []byte(`{"type": "about:blank", "title": "Too Many Requests", "status": 429, "code": "rate_limited"}`)
	if err := Check(req, 429, problem("Retry-After", "3"), body); err != nil {
		t.Fatalf("a documented 429 fails: %v", err)
	}
	for _, tc := range []struct {
		name   string
		header http.Header
		want   string
	}{
		{"undocumented header", problem("Retry-After", "3", "Location", "tokens/tok_1"), "the header Location"},
		{"required header missing", problem(), "the required header Retry-After is missing"},
		{"header of the wrong form", problem("Retry-After", "soon"), "the header Retry-After: \"soon\" does not match"},
		{"no request id", http.Header{"Content-Type": {"application/problem+json"}, "Cache-Control": {"no-store"}, "Retry-After": {"3"}}, "the required header X-Request-Id is missing"},
	} {
		if err := Check(req, 429, tc.header, body); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// TestCheckRequestBodyDrift makes sure that a request body the server took
// is held to the operation's request schema, and that one it refused is
// not.
func TestCheckRequestBodyDrift(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
	verify := func(body string) *http.Request {
		req, _ := http.NewRequest("POST", "http://x/v1/verify", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	ok := []byte(`{"valid": false, "code": "MALFORMED"}`)
	if err := Check(verify(`{"token": "kw_x", "scopes": ["a:b"]}`), 200, h, ok); err != nil {
		t.Fatalf("a documented request fails: %v", err)
	}
	if err := Check(verify(`{"token": "kw_x", "scope": "a:b"}`), 200, h, ok); err == nil || !strings.Contains(err.Error(), "the server took a request body that does not match the document") {
		t.Errorf("an undocumented field taken: %v, want an error", err)
	}
	problem := http.Header{"Content-Type": {"application/problem+json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
	refused := []byte(`{"type": "about:blank", "title": "Bad Request", "status": 400, "code": "invalid"}`)
	if err := Check(verify(`{"token": "kw_x", "scope": "a:b"}`), 400, problem, refused); err != nil {
		t.Errorf("a refused request is judged: %v", err)
	}
	form, _ := http.NewRequest("POST", "http://x/oauth2/revoke", strings.NewReader("token_type_hint=access_token"))
	form.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if err := Check(form, 200, http.Header{"X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}, nil); err == nil || !strings.Contains(err.Error(), "does not match the document") {
		t.Errorf("a form without token taken: %v, want an error", err)
	}
}

// TestCheckQueryDrift makes sure that the query parameters of a request
// the server took are held to the operation's parameters.
func TestCheckQueryDrift(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
	list := []byte(`{"items": []}`)
	for _, tc := range []struct {
		query string
		want  string // "" for no error
	}{
		{"state=active&limit=10&name=x", ""},
		{"state=", ""},
		{"colour=red", `the server took the query parameter "colour", which the document does not give`},
		{"state=sleeping", `the server took the query parameter state="sleeping", which does not match the document`},
		{"limit=0", `the server took the query parameter limit="0", which does not match the document`},
	} {
		req, _ := http.NewRequest("GET", "http://x/v1/tokens?"+tc.query, nil)
		err := Check(req, 200, h, list)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("?%s: %v, want %q", tc.query, err, tc.want)
		}
	}
	// Refused, or on a public route (which reads no query): not judged.
	req, _ := http.NewRequest("GET", "http://x/v1/tokens?colour=red", nil)
	problem := http.Header{"Content-Type": {"application/problem+json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
	if err := Check(req, 400, problem, []byte(`{"type": "about:blank", "title": "Bad Request", "status": 400, "code": "invalid"}`)); err != nil {
		t.Errorf("a refused request is judged: %v", err)
	}
	req, _ = http.NewRequest("GET", "http://x/healthz?probe=1", nil)
	if err := Check(req, 200, http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_1"}}, []byte(`{"status": "ok"}`)); err != nil {
		t.Errorf("a public route's query is judged: %v", err)
	}
}

// TestCheckUndocumentedField makes sure that a member of a body that the
// document does not name fails, at any depth and through allOf, while the
// members a schema leaves open (a map of counts, say) do not.
func TestCheckUndocumentedField(t *testing.T) {
	js := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
	token := `"id": "tok_1", "name": "n", "hint": "kw_…x9Qa", "state": "active", "scopes": [], "expires_at": null,
		"allowed_cidrs": [], "rate_limit": null, "quota": null, "subject": "", "metadata": {"any": "key"},
		"created_by": "tok_0", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
		"rotated_at": null, "revoked_at": null, "revoke_reason": "", "suspended_at": null, "suspend_reason": "",
		"last_used_at": null, "last_used_ip": ""`
	get, _ := http.NewRequest("GET", "http://x/v1/tokens/tok_1", nil)
	list, _ := http.NewRequest("GET", "http://x/v1/tokens", nil)
	create, _ := http.NewRequest("POST", "http://x/v1/tokens", strings.NewReader(`{"name": "n"}`))
	created := js.Clone()
	created.Set("Location", "tokens/tok_1")
	for _, tc := range []struct {
		name   string
		req    *http.Request
		status int
		header http.Header
		body   string
		want   string // "" for no error
	}{
		{"documented", get, 200, js, `{` + token + `}`, ""},
		{"top level", get, 200, js, `{` + token + `, "colour": "red"}`, "fields the document does not give: /colour"},
		{"nested", get, 200, js, `{` + strings.Replace(token, `"rate_limit": null`, `"rate_limit": {"limit": 1, "window": "1m0s", "burst": 2}`, 1) + `}`, "/rate_limit/burst"},
		{"in a list", list, 200, js, `{"items": [{` + token + `, "secret": "x"}]}`, "/items/0/secret"},
		{"through allOf", create, 201, created, `{` + token + `, "token": "kw_x", "colour": "red"}`, "/colour"},
		{"allOf documented", create, 201, created, `{` + token + `, "token": "kw_x"}`, ""},
	} {
		err := Check(tc.req, tc.status, tc.header, []byte(tc.body))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestCheckMethodNotAllowed makes sure that a method a documented path
// does not take is held to the document's 405: that status, an Allow
// that lists exactly the path's operations, and a problem body.
func TestCheckMethodNotAllowed(t *testing.T) {
	problem := func(allow string) http.Header {
		h := http.Header{"Content-Type": {"application/problem+json"}, "X-Request-Id": {"req_1"}, "Cache-Control": {"no-store"}}
		if allow != "" {
			h.Set("Allow", allow)
		}
		return h
	}
	body := `{"type": "about:blank", "title": "Method Not Allowed", "status": 405, "code": "method_not_allowed"}`
	for _, tc := range []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		want               string // "" for no error
	}{
		{"documented", "DELETE", "/v1/tokens/tok_1", 405, problem("GET, HEAD, PATCH"), body, ""},
		{"literal path first", "PUT", "/v1/usage/events", 405, problem("GET, HEAD"), body, ""},
		{"no Allow", "DELETE", "/v1/tokens/tok_1", 405, problem(""), body, `Allow is ""`},
		{"Allow lacks a method", "DELETE", "/v1/tokens/tok_1", 405, problem("GET, PATCH"), body, "the document gives the path GET, HEAD, PATCH"},
		{"Allow has an extra method", "PUT", "/v1/tokens", 405, problem("GET, HEAD, POST, PUT"), body, "Allow is"},
		{"another status", "DELETE", "/v1/tokens/tok_1", 404, problem(""), body, "a method the path does not take answered 404, not 405"},
		{"body", "DELETE", "/v1/tokens/tok_1", 405, problem("GET, HEAD, PATCH"), `{"status": 405}`, "does not match"},
		{"path not documented", "DELETE", "/v1/nothing", 404, problem(""), body, ""},
	} {
		req, _ := http.NewRequest(tc.method, "http://x"+tc.path, nil)
		err := Check(req, tc.status, tc.header, []byte(tc.body))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
