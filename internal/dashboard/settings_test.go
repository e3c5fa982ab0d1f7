package dashboard

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/keyward/keyward"
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
