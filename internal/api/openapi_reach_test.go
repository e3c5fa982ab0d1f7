package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/verify"
)

// documentedStatuses lists every response status the document gives, as
// "METHOD path status", sorted.
func documentedStatuses(tb testing.TB) []string {
	tb.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		tb.Fatal(err)
	}
	var out []string
	for path, item := range doc.Paths {
		for method, raw := range item {
			var op struct{ Responses map[string]json.RawMessage }
			if method == "parameters" || json.Unmarshal(raw, &op) != nil {
				continue
			}
			for status := range op.Responses {
				out = append(out, strings.ToUpper(method)+" "+path+" "+status)
			}
		}
	}
	sort.Strings(out)
	return out
}

// reachCall is one request for a documented status: the path with its
// parameters filled in, the credential and the body (a JSON value, or a
// url.Values for the OAuth forms).
type reachCall struct {
	path, token string
	body        any
}

// TestOpenAPIStatusesReached sends, for every status that openapi.json
// documents for an operation, a request that the server answers with that
// status, through the stack's check of every response against the
// document. A status that the document gives and the server never
// answers misleads a client as much as one it answers undocumented: a
// documented status with no request here fails, and so does a request
// that does not get its status.
func TestOpenAPIStatusesReached(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id, _ := s.newToken("target")
	revokedID, _ := s.newToken("revoked")
	wantStatus(t, s.do("POST", "/v1/tokens/"+revokedID+"/revoke", s.root, nil), http.StatusOK)
	_, plain := s.newToken("no scopes")
	unknownID := keyward.PrefixToken + strings.Repeat("0", 26)
	big := strings.Repeat("x", api.DefaultMaxBody)

	// A management token with every scope and a rate limit of one call:
	// its second call is over the limit.
	limited := func() string {
		m := s.create(map[string]any{"name": "limited", "scopes": []string{keyward.ScopeAdmin, keyward.ScopeInstance},
			"rate_limit": map[string]any{"limit": 1, "window": "1h"}})
		return m["token"].(string)
	}

	// A second stack whose node has spent its lookup budget on made-up
	// tokens, its clock standing still so that the budget does not
	// refill: a credential it has not cached answers 503.
	var engNow frozenClock
	spent := newStackWith(t, func(c *verify.Config) { c.Now, c.PollInterval = engNow.Now, time.Hour })
	for range 300 {
		spent.engine.Verify(context.Background(), verify.Request{Token: unknownToken(t)})
	}
	// A third whose store is closed: not ready.
	down := newStack(t)
	down.db.Close()

	// ok is the request for each operation's success, and for the
	// statuses that depend on the operation; the others are made alike
	// for every operation below.
	ok := map[string]reachCall{
		"POST /v1/tokens":                  {"/v1/tokens", s.root, map[string]any{"name": "new"}},
		"GET /v1/tokens":                   {"/v1/tokens", s.root, nil},
		"GET /v1/tokens/{id}":              {"/v1/tokens/" + id, s.root, nil},
		"PATCH /v1/tokens/{id}":            {"/v1/tokens/" + id, s.root, map[string]any{}},
		"POST /v1/tokens/{id}/rotate":      {"/v1/tokens/" + id + "/rotate", s.root, nil},
		"POST /v1/tokens/{id}/revoke":      {"/v1/tokens/" + revokedID + "/revoke", s.root, nil},
		"POST /v1/tokens/{id}/suspend":     {"/v1/tokens/" + id + "/suspend", s.root, nil},
		"POST /v1/tokens/{id}/resume":      {"/v1/tokens/" + id + "/resume", s.root, nil},
		"GET /v1/tokens/{id}/usage":        {"/v1/tokens/" + id + "/usage", s.root, nil},
		"GET /v1/usage":                    {"/v1/usage", s.root, nil},
		"GET /v1/usage/events":             {"/v1/usage/events", s.root, nil},
		"GET /v1/reports/dormant":          {"/v1/reports/dormant", s.root, nil},
		"GET /v1/reports/tokens":           {"/v1/reports/tokens", s.root, nil},
		"POST /v1/verify":                  {"/v1/verify", s.root, map[string]any{"token": plain}},
		"POST /v1/workspaces":              {"/v1/workspaces", s.root, map[string]any{"name": "reached"}},
		"GET /v1/workspaces":               {"/v1/workspaces", s.root, nil},
		"GET /v1/audit":                    {"/v1/audit", s.root, nil},
		"POST /oauth2/introspect":          {"/oauth2/introspect", s.root, url.Values{"token": {plain}}},
		"POST /oauth2/revoke":              {"/oauth2/revoke", s.root, url.Values{"token": {unknownToken(t)}}},
		"GET /healthz":                     {"/healthz", "", nil},
		"GET /readyz":                      {"/readyz", "", nil},
		"GET /metrics":                     {"/metrics", "", nil},
		"GET /openapi.json":                {"/openapi.json", "", nil},
		"PATCH /v1/tokens/{id} 409":        {"/v1/tokens/" + revokedID, s.root, map[string]any{"name": "n"}},
		"POST /v1/tokens/{id}/rotate 409":  {"/v1/tokens/" + revokedID + "/rotate", s.root, nil},
		"POST /v1/tokens/{id}/suspend 409": {"/v1/tokens/" + revokedID + "/suspend", s.root, nil},
		"POST /v1/tokens/{id}/resume 409":  {"/v1/tokens/" + revokedID + "/resume", s.root, nil},
		"POST /v1/workspaces 409":          {"/v1/workspaces", s.root, map[string]any{"name": "DEFAULT"}},
	}

	send := func(st *stack, method string, c reachCall) *response {
		t.Helper()
		if form, isForm := c.body.(url.Values); isForm {
			auth := ""
			if c.token != "" {
				auth = "Bearer " + c.token
			}
			req, err := http.NewRequest(method, st.srv.URL+c.path, strings.NewReader(form.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			return st.send(req)
		}
		return st.do(method, c.path, c.token, c.body)
	}

	for _, entry := range documentedStatuses(t) {
		op, code, _ := strings.Cut(entry[strings.Index(entry, " ")+1:], " ")
		method, _, _ := strings.Cut(entry, " ")
		op = method + " " + op
		want, err := strconv.Atoi(code)
		if err != nil {
			t.Errorf("%s: the status %q is no number", entry, code)
			continue
		}
		if want == http.StatusInternalServerError {
			// A bug's answer, which every operation documents and no
			// request here should get; TestPanicSeen makes one.
			continue
		}
		t.Run(entry, func(t *testing.T) {
			base, found := ok[op]
			if method == http.MethodHead {
				// HEAD is sent as its GET is, and answered alike.
				base, found = ok["GET"+strings.TrimPrefix(op, "HEAD")]
			}
			if !found {
				t.Fatalf("no request for %s: add one to this test", op)
			}
			oauth := strings.HasPrefix(base.path, "/oauth2/")
			st, c := s, base
			switch {
			case want < 300:
			case want == 400 && oauth:
				c.body = url.Values{}
			case want == 400:
				c.path += "?limit=1&limit=2"
			case want == 401:
				c.token = ""
			case want == 403:
				c.token = plain
			case want == 404 && strings.Contains(op, "{id}"):
				rest := strings.TrimPrefix(c.path, "/v1/tokens/")
				_, after, _ := strings.Cut(rest, "/")
				c.path = strings.TrimSuffix("/v1/tokens/"+unknownID+"/"+after, "/")
			case want == 409:
				if c, found = ok[entry]; !found {
					t.Fatalf("no request for %s: add one to this test", entry)
				}
			case want == 413 && oauth:
				c.body = url.Values{"token": {big}}
			case want == 413:
				c.body = map[string]any{"name": big}
			case want == 429:
				c.token = limited()
				send(s, method, c) // the one call its limit admits
			case want == 503 && c.token == "":
				st = down
			case want == 503:
				st, c.token = spent, unknownToken(t)
			default:
				t.Fatalf("the document gives %d for %s, which no request here makes: add one, or take the status out of the document if the server never answers it", want, op)
			}
			if r := send(st, method, c); r.Status != want {
				t.Fatalf("%s %s: status %d, want the documented %d; body: %s", method, c.path, r.Status, want, r.Body)
			}
		})
	}

	// Each request above for a status is for a documented one: one left
	// here for a status the document lost would go unnoticed.
	documented := documentedStatuses(t)
	for key := range ok {
		if strings.Count(key, " ") == 2 && !slices.Contains(documented, key) {
			t.Errorf("there is a request for %s, which the document does not give", key)
		}
	}
}

// TestOpenAPIMethodNotAllowed sends to every path of openapi.json each
// method it does not document, with a credential: the answer is the
// document's 405, whose Allow lists exactly the path's operations (the
// stack's check holds it to the document).
func TestOpenAPIMethodNotAllowed(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	var doc struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	for path, item := range doc.Paths {
		for _, m := range []string{"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"} {
			if _, documented := item[strings.ToLower(m)]; documented {
				continue
			}
			p := strings.ReplaceAll(path, "{id}", "tok_x")
			t.Run(m+" "+path, func(t *testing.T) {
				r := s.do(m, p, s.root, nil)
				if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") == "" {
					t.Errorf("%s %s: status %d, Allow %q; want 405 with Allow", m, p, r.Status, r.Header.Get("Allow"))
				}
			})
		}
	}
}
