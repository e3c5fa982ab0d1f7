package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/verify"
)

// isoStack is a real API over a real SQLite store, with two workspaces.
type isoStack struct {
	srv    *Server
	url    string
	engine *verify.Engine
	svc    *manage.Service
	adminA string // keyward:admin of workspace A
	adminB string // keyward:admin of workspace B
	tokB   *keyward.Token
	textB  string // secret of tokB
	usage  *usage.Recorder
}

func newIsoStack(t *testing.T) *isoStack {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.NewKeyring(strings.Repeat("k", 64))
	if err != nil {
		t.Fatal(err)
	}
	eng := verify.New(verify.Config{Store: db, Keys: keys})
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	svc := &manage.Service{Store: db, Keys: keys, Engine: eng}
	st := &isoStack{engine: eng, svc: svc, usage: usage.New(usage.Config{Store: db, SampleEvery: 1})}
	st.srv = New(Config{Service: svc, Engine: eng, Store: db, Usage: st.usage})
	hs := httptest.NewServer(st.srv.Handler())
	st.url = hs.URL
	t.Cleanup(func() {
		hs.Close()
		eng.Close(ctx)
		db.Close()
	})
	sys := manage.SystemCaller("")
	_, adminA, err := svc.CreateWorkspace(ctx, sys, &keyward.Workspace{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	wsB, adminB, err := svc.CreateWorkspace(ctx, sys, &keyward.Workspace{Name: "b", TokenPrefix: "bee"})
	if err != nil {
		t.Fatal(err)
	}
	st.adminA, st.adminB = adminA, adminB
	st.tokB, st.textB, err = svc.CreateToken(ctx, manage.SystemCaller(wsB.ID), &keyward.Token{Name: "b's token", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// usedByB verifies B's token as B, and writes the usage.
func (st *isoStack) usedByB(t *testing.T) {
	t.Helper()
	if code, body := st.do(t, "POST", "/v1/verify", st.adminB, "application/json", `{"token":"`+st.textB+`"}`); code != 200 {
		t.Fatalf("B verifying its token: %d %s", code, body)
	}
	if err := st.usage.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// do sends one request and returns the status and body.
func (st *isoStack) do(t *testing.T, method, path, token, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, st.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCrossWorkspace calls every route of the API with workspace A's
// admin token on workspace B's objects. It is generated from routes(): a
// route with an {id} must answer 404, and every other route must have a
// check here, so that a new route cannot skip isolation.
func TestCrossWorkspace(t *testing.T) {
	st := newIsoStack(t)
	form := "application/x-www-form-urlencoded"
	tokenForm := url.Values{"token": {st.textB}}.Encode()

	// stillValid fails unless B's token verifies, unchanged, for B.
	stillValid := func(t *testing.T) {
		t.Helper()
		code, body := st.do(t, "POST", "/v1/verify", st.adminB, "application/json", `{"token":"`+st.textB+`"}`)
		if code != 200 || !strings.Contains(body, `"code":"VALID"`) {
			t.Fatalf("B's token after A's call: %d %s", code, body)
		}
	}
	// Routes without an object id: what A sees or does must not touch B.
	checks := map[string]func(t *testing.T){
		"POST /v1/tokens": func(t *testing.T) {
			code, body := st.do(t, "POST", "/v1/tokens", st.adminA, "application/json", `{"name":"mine"}`)
			var v struct{ ID string }
			json.Unmarshal([]byte(body), &v)
			if code != 201 {
				t.Fatalf("%d %s", code, body)
			}
			if _, err := st.svc.Store.FindToken(context.Background(), st.tokB.WorkspaceID, v.ID); keyward.ErrorCode(err) != keyward.ENOTFOUND {
				t.Fatalf("A's new token landed in B: %v", err)
			}
		},
		"GET /v1/tokens": func(t *testing.T) {
			code, body := st.do(t, "GET", "/v1/tokens?limit=500", st.adminA, "", "")
			if code != 200 || strings.Contains(body, st.tokB.ID) || strings.Contains(body, "b's token") {
				t.Fatalf("A's list shows B's token: %d %s", code, body)
			}
		},
		"GET /v1/reports/dormant": func(t *testing.T) {
			code, body := st.do(t, "GET", "/v1/reports/dormant?days=1&limit=500", st.adminA, "", "")
			if code != 200 || strings.Contains(body, st.tokB.ID) || strings.Contains(body, "b's token") {
				t.Fatalf("A's dormant report shows B's token: %d %s", code, body)
			}
		},
		"GET /v1/reports/tokens": func(t *testing.T) {
			for _, q := range []string{"?limit=500", "?format=csv"} {
				code, body := st.do(t, "GET", "/v1/reports/tokens"+q, st.adminA, "", "")
				if code != 200 || strings.Contains(body, st.tokB.ID) || strings.Contains(body, "b's token") {
					t.Fatalf("A's inventory%s shows B's token: %d %s", q, code, body)
				}
				if !strings.Contains(body, "tok_") {
					t.Fatalf("A's inventory%s lists none of A's tokens: %s", q, body)
				}
			}
		},
		"POST /v1/verify": func(t *testing.T) {
			code, body := st.do(t, "POST", "/v1/verify", st.adminA, "application/json", `{"token":"`+st.textB+`"}`)
			if code != 200 || body != `{"valid":false,"code":"NOT_FOUND"}`+"\n" {
				t.Fatalf("A verifying B's token: %d %s", code, body)
			}
		},
		"GET /v1/usage": func(t *testing.T) {
			st.usedByB(t)
			if code, body := st.do(t, "GET", "/v1/usage", st.adminB, "", ""); code != 200 || !strings.Contains(body, st.tokB.ID) {
				t.Fatalf("B's usage does not show B's token: %d %s", code, body)
			}
			code, body := st.do(t, "GET", "/v1/usage", st.adminA, "", "")
			if code != 200 || strings.Contains(body, st.tokB.ID) || strings.Contains(body, `"VALID"`) {
				t.Fatalf("A's usage shows B's: %d %s", code, body)
			}
		},
		"GET /v1/usage/events": func(t *testing.T) {
			st.usedByB(t)
			if code, body := st.do(t, "GET", "/v1/usage/events", st.adminB, "", ""); code != 200 || !strings.Contains(body, st.tokB.ID) {
				t.Fatalf("B's usage events do not show B's token: %d %s", code, body)
			}
			for _, q := range []string{"", "?token_id=" + st.tokB.ID} {
				code, body := st.do(t, "GET", "/v1/usage/events"+q, st.adminA, "", "")
				if code != 200 || strings.Contains(body, st.tokB.ID) {
					t.Fatalf("A's usage events%s show B's: %d %s", q, code, body)
				}
			}
		},
		"GET /v1/audit": func(t *testing.T) {
			code, body := st.do(t, "GET", "/v1/audit?limit=500", st.adminA, "", "")
			if code != 200 || strings.Contains(body, st.tokB.ID) {
				t.Fatalf("A's audit log shows B's events: %d %s", code, body)
			}
		},
		"POST /v1/workspaces": func(t *testing.T) {
			if code, body := st.do(t, "POST", "/v1/workspaces", st.adminA, "application/json", `{"name":"c"}`); code != 403 {
				t.Fatalf("A's admin created a workspace: %d %s", code, body)
			}
		},
		"GET /v1/workspaces": func(t *testing.T) {
			if code, body := st.do(t, "GET", "/v1/workspaces", st.adminA, "", ""); code != 403 {
				t.Fatalf("A's admin listed workspaces: %d %s", code, body)
			}
		},
		"POST /oauth2/introspect": func(t *testing.T) {
			code, body := st.do(t, "POST", "/oauth2/introspect", st.adminA, form, tokenForm)
			if code != 200 || body != `{"active":false}` {
				t.Fatalf("A introspecting B's token: %d %s", code, body)
			}
		},
		"POST /oauth2/revoke": func(t *testing.T) {
			if code, body := st.do(t, "POST", "/oauth2/revoke", st.adminA, form, tokenForm); code != 200 {
				t.Fatalf("A revoking B's token: %d %s", code, body)
			}
			stillValid(t)
		},
	}
	public := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true, "GET /openapi.json": true}

	for _, rt := range st.srv.routes() {
		name := rt.Method + " " + rt.Path
		t.Run(name, func(t *testing.T) {
			switch {
			case strings.Contains(rt.Path, "{id}"):
				path := strings.Replace(rt.Path, "{id}", st.tokB.ID, 1)
				body := ""
				if rt.Method != "GET" {
					body = `{}`
				}
				code, resp := st.do(t, rt.Method, path, st.adminA, "application/json", body)
				if code != http.StatusNotFound {
					t.Fatalf("A on B's token: %d %s, want 404", code, resp)
				}
				if !strings.Contains(resp, `"code":"not_found"`) {
					t.Fatalf("body %s", resp)
				}
				stillValid(t)
			case checks[name] != nil:
				checks[name](t)
			case public[name]:
				if rt.Scope != "" {
					t.Fatalf("%s is listed as public but needs %s", name, rt.Scope)
				}
			default:
				t.Fatalf("route %s has no cross-workspace check: add one to TestCrossWorkspace", name)
			}
		})
	}
	// B's token must not have been changed by anything A did.
	got, err := st.svc.Store.FindToken(context.Background(), st.tokB.WorkspaceID, st.tokB.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Revoked || got.Suspended || !got.UpdatedAt.Equal(st.tokB.UpdatedAt) || got.Hint != st.tokB.Hint {
		t.Fatalf("B's token changed: %+v", got)
	}
}
