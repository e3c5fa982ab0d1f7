package dashboard

import (
	"encoding/json"
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
