package dashboard

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

func TestCatalogChanges(t *testing.T) {
	read := keyward.ScopeInfo{Name: "orders:read", Description: "Read orders"}
	write := keyward.ScopeInfo{Name: "orders:write", Description: "Write orders"}
	pay := keyward.ScopeInfo{Name: "payouts:write", Privileged: true}
	for _, tc := range []struct {
		name       string
		prev, next []keyward.ScopeInfo
		want       string // JSON, "" for nil
	}{
		{"OKSame", []keyward.ScopeInfo{read, write}, []keyward.ScopeInfo{read, write}, ""},
		{"OKBothEmpty", nil, []keyward.ScopeInfo{}, ""},
		{"OKAdded", []keyward.ScopeInfo{read}, []keyward.ScopeInfo{read, pay}, `{"added":[{"name":"payouts:write","privileged":true}]}`},
		{"OKRemoved", []keyward.ScopeInfo{write, read, pay}, []keyward.ScopeInfo{read}, `{"removed":["orders:write","payouts:write"]}`},
		{"OKPrivilegeDropped", []keyward.ScopeInfo{pay}, []keyward.ScopeInfo{{Name: "payouts:write"}},
			`{"changed":[{"name":"payouts:write","privileged":{"from":true,"to":false}}]}`},
		{"OKDescription", []keyward.ScopeInfo{read}, []keyward.ScopeInfo{{Name: "orders:read", Description: "Read"}},
			`{"changed":[{"description":{"from":"Read orders","to":"Read"},"name":"orders:read"}]}`},
		{"OKAll", []keyward.ScopeInfo{read, pay}, []keyward.ScopeInfo{{Name: "orders:read", Privileged: true, Description: "Read orders"}, write},
			`{"added":[{"name":"orders:write","description":"Write orders"}],"changed":[{"name":"orders:read","privileged":{"from":false,"to":true}}],"removed":["payouts:write"]}`},
		{"OKReordered", []keyward.ScopeInfo{read, write}, []keyward.ScopeInfo{write, read}, `{"reordered":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := catalogChanges(tc.prev, tc.next)
			if tc.want == "" {
				if got != nil {
					t.Fatalf("catalogChanges = %v, want nil", got)
				}
				return
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("catalogChanges = %s\nwant %s", b, tc.want)
			}
		})
	}
}

func TestChangeLines(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want []string
	}{
		{`{"name":{"from":"a","to":"b"},"subject":{"to":"cust-1"}}`, []string{"name: a → b", "subject: cust-1"}},
		{`{"name":{"from":"soft"}}`, []string{"name: was soft"}},
		{`{"sessions_ended":2,"after":"mfa.totp_enable"}`, []string{"after: mfa.totp_enable", "sessions_ended: 2"}},
		{`{"scopes":{"added":[{"name":"users:admin","privileged":true}],"removed":["orders:write","x:y"],"changed":[{"name":"orders:read","privileged":{"from":false,"to":true}}]}}`,
			[]string{"scopes added: users:admin (privileged true)", "scopes changed: orders:read (privileged false → true)", "scopes removed: orders:write, x:y"}},
		{`{"expires_at":{"from":null,"to":"2030-01-01T00:00:00Z"},"scopes":{"from":[],"to":["a"]}}`, []string{"expires_at: none → 2030-01-01T00:00:00Z", "scopes: none → a"}},
		{`{"max_token_lifetime":{"from":"0s","to":"720h0m0s"},"rate":{"from":1.5,"to":100000000000}}`, []string{"max_token_lifetime: 0s → 720h0m0s", "rate: 1.5 → 100000000000"}},
		{`{"metadata":{"to":{"name":"billing","team":"a"}}}`, []string{"metadata: (name billing; team a)"}},
		{`[1,2]`, []string{`[1,2]`}},
		{`{"a":"\u003cb\u003e"}`, []string{"a: <b>"}},
	} {
		got := changeLines([]byte(tc.raw))
		if !slices.Equal(got, tc.want) {
			t.Errorf("changeLines(%s) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

// TestSettingsAbsentFieldsKept: a settings form without a field (a page
// from before the field existed, a script that changes one setting) keeps
// that setting; a field sent empty clears it, as the page's form does.
func TestSettingsAbsentFieldsKept(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	o := e.browser()
	o.signIn("owner@example.com")
	enrolTOTP(t, o)
	full := &keyward.WorkspaceSettings{WorkspaceID: e.ws.ID, MFARequired: true, ExpiryRequired: true, MaxTokenLifetime: 30 * day,
		Scopes: []keyward.ScopeInfo{{Name: "orders:read", Description: "Read orders"}}}
	put := func() {
		t.Helper()
		if err := e.store.PutWorkspaceSettings(ctx, full); err != nil {
			t.Fatal(err)
		}
	}
	got := func() *keyward.WorkspaceSettings {
		t.Helper()
		set, err := e.store.FindWorkspaceSettings(ctx, e.ws.ID)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	for _, tt := range []struct {
		name string
		form url.Values
		want keyward.WorkspaceSettings
	}{
		{"OKNothing", url.Values{}, *full},
		{"OKOneField", url.Values{"max_days": {"7"}}, keyward.WorkspaceSettings{MFARequired: true, ExpiryRequired: true, MaxTokenLifetime: 7 * day, Scopes: full.Scopes}},
		{"OKEmptied", url.Values{"mfa_required": {"off"}, "expiry_required": {"off"}, "max_days": {""}, "catalog": {""}}, keyward.WorkspaceSettings{}},
		{"OKTicked", url.Values{"mfa_required": {"off", "on"}, "expiry_required": {"off"}}, keyward.WorkspaceSettings{MFARequired: true, MaxTokenLifetime: 30 * day, Scopes: full.Scopes}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			put()
			o.get("/settings")
			status, body := o.post("/settings", tt.form)
			wantStatus(t, status, http.StatusOK, body)
			if o.path() != "/settings" || !strings.Contains(body, "Saved.") {
				t.Fatalf("at %s, not saved:\n%s", o.path(), body)
			}
			s := got()
			if s.MFARequired != tt.want.MFARequired || s.ExpiryRequired != tt.want.ExpiryRequired || s.MaxTokenLifetime != tt.want.MaxTokenLifetime || !slices.Equal(s.Scopes, tt.want.Scopes) {
				t.Errorf("settings = %+v, want %+v", s, tt.want)
			}
		})
	}
	t.Run("OKStoredCatalogKept", func(t *testing.T) {
		// Without the catalog field, the stored scopes stay exactly as
		// they are, even those the catalog's text could not say again
		// (a "|" in a description) or that its rules now refuse.
		odd := *full
		odd.Scopes = []keyward.ScopeInfo{{Name: "orders:read", Description: "Read | list orders", Privileged: true}, {Name: "keyward:legacy", Description: "old"}}
		if err := e.store.PutWorkspaceSettings(ctx, &odd); err != nil {
			t.Fatal(err)
		}
		o.get("/settings")
		status, body := o.post("/settings", url.Values{"max_days": {"7"}})
		wantStatus(t, status, http.StatusOK, body)
		if o.path() != "/settings" || !strings.Contains(body, "Saved.") {
			t.Fatalf("at %s, not saved:\n%s", o.path(), body)
		}
		if s := got(); s.MaxTokenLifetime != 7*day || !slices.Equal(s.Scopes, odd.Scopes) {
			t.Errorf("settings = %+v, want 7 days and the scopes %+v", s, odd.Scopes)
		}
		e.dash.Wait()
		evs, err := e.store.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "workspace.settings_update"})
		if err != nil || len(evs) == 0 {
			t.Fatalf("FindAuditEvents = %d, %v", len(evs), err)
		}
		if want := `{"max_token_lifetime":{"from":"720h","to":"168h"}}`; string(evs[0].Changes) != want {
			t.Errorf("changes %s, want %s", evs[0].Changes, want)
		}
	})
	t.Run("ErrKeptShown", func(t *testing.T) {
		// A refused form shows the settings it would have kept.
		put()
		o.get("/settings")
		status, body := o.post("/settings", url.Values{"max_days": {"0"}})
		wantStatus(t, status, http.StatusBadRequest, body)
		wantText(t, body, `name="mfa_required" id="mfa_required" checked`, `name="expiry_required" id="expiry_required" checked`, "orders:read | Read orders")
	})
	t.Run("PageMarksCheckboxes", func(t *testing.T) {
		// The page's own form sends each checkbox, ticked or not.
		_, body := o.get("/settings")
		wantText(t, body, `<input type="hidden" name="mfa_required" value="off">`, `<input type="hidden" name="expiry_required" value="off">`)
	})
}

// TestSettingsCatalogSecretRefused: a scope description is recorded in
// the audit log, so one that holds a token's secret, whole or without its
// prefix, is refused, and nothing is saved or recorded.
func TestSettingsCatalogSecretRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	o := e.browser()
	o.signIn("owner@example.com")
	tok, err := secret.Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, desc string }{
		{"ErrSecret", "key " + tok},
		{"ErrBody", "key " + strings.TrimPrefix(tok, "kw_")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o.get("/settings")
			status, body := o.post("/settings", url.Values{"catalog": {"orders:read | Read orders\norders:write | " + tt.desc}})
			wantStatus(t, status, http.StatusBadRequest, body)
			wantText(t, body, "Line 2: the description holds a token's secret; a secret is never stored in plain text.")
			set, err := e.store.FindWorkspaceSettings(ctx, e.ws.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Scopes) != 0 {
				t.Errorf("scopes = %+v, want none saved", set.Scopes)
			}
			e.dash.Wait()
			evs, err := e.store.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: e.ws.ID, Action: "workspace.settings_update"})
			if err != nil || len(evs) != 0 {
				t.Errorf("FindAuditEvents = %d, %v; want none", len(evs), err)
			}
		})
	}
}
