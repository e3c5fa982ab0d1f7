package keyward_test

import (
	"strings"
	"testing"

	"github.com/keyward/keyward"
)

func TestValidateScope(t *testing.T) {
	tests := []struct {
		name  string
		scope string
		ok    bool
	}{
		{"OK", "orders:read", true},
		{"OKOneSegment", "orders", true},
		{"OKDeep", "orders:items:write", true},
		{"OKAllByteClasses", "a.b-c_d:0z9", true},
		{"OKWildcard", "orders:*", true},
		{"OKDeepWildcard", "orders:items:*", true},
		{"OKMaxLen", strings.Repeat("a", keyward.MaxScopeLen), true},
		{"OKOtherNamespaceLookalike", "keywardx:read", true},
		{"ErrEmpty", "", false},
		{"ErrTooLong", strings.Repeat("a", keyward.MaxScopeLen+1), false},
		{"ErrBareWildcard", "*", false},
		{"ErrWildcardNotLast", "orders:*:read", false},
		{"ErrWildcardInSegment", "orders:re*", false},
		{"ErrWildcardGlued", "orders*", false},
		{"ErrDoubleWildcard", "orders:**", false},
		{"ErrEmptyLastSegment", "orders:", false},
		{"ErrEmptyFirstSegment", ":orders", false},
		{"ErrEmptyMiddleSegment", "orders::read", false},
		{"ErrUppercase", "Orders:read", false},
		{"ErrUppercaseLast", "orders:READ", false},
		{"ErrSpace", "orders: read", false},
		{"ErrTrailingSpace", "orders:read ", false},
		{"ErrNonASCII", "ördersx:read", false},
		{"ErrSlash", "orders/read", false},
		{"ErrManagementUnknown", "keyward:bogus", false},
		{"ErrManagementWildcard", "keyward:*", false},
		{"ErrManagementSubWildcard", "keyward:tokens:*", false},
		{"ErrManagementExtended", "keyward:admin:x", false},
		{"ErrManagementEmpty", "keyward:", false},
	}
	for _, s := range keyward.ManagementScopes {
		tests = append(tests, struct {
			name  string
			scope string
			ok    bool
		}{"OKManagement_" + s, s, true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := keyward.ValidateScope(tt.scope)
			if tt.ok && err != nil {
				t.Fatalf("ValidateScope(%q) = %v, want nil", tt.scope, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("ValidateScope(%q) = nil, want an error", tt.scope)
			}
		})
	}
}

func TestManagementScopes(t *testing.T) {
	want := []string{"keyward:admin", "keyward:instance", "keyward:tokens:read", "keyward:tokens:write", "keyward:verify", "keyward:audit:read"}
	if len(keyward.ManagementScopes) != len(want) {
		t.Fatalf("ManagementScopes = %q, want %q", keyward.ManagementScopes, want)
	}
	for _, s := range want {
		if !keyward.IsManagementScope(s) {
			t.Errorf("IsManagementScope(%q) = false, want true", s)
		}
	}
	for _, s := range []string{"keyward:bogus", "orders:read", "keyward", ""} {
		if keyward.IsManagementScope(s) {
			t.Errorf("IsManagementScope(%q) = true, want false", s)
		}
	}
	if !keyward.HasManagementScope([]string{"orders:read", "keyward:verify"}) {
		t.Error("HasManagementScope with keyward:verify = false, want true")
	}
	if keyward.HasManagementScope([]string{"orders:read", "keywardx:read"}) {
		t.Error("HasManagementScope without keyward: scopes = true, want false")
	}
}

func TestGrants(t *testing.T) {
	tests := []struct {
		name    string
		granted []string
		want    string
		ok      bool
	}{
		{"OKExact", []string{"orders:read"}, "orders:read", true},
		{"OKExactAmongOthers", []string{"a", "orders:read", "b"}, "orders:read", true},
		{"ErrNone", nil, "orders:read", false},
		{"ErrOtherScope", []string{"orders:write"}, "orders:read", false},
		{"ErrPrefixIsNotWildcard", []string{"orders"}, "orders:read", false},
		{"ErrLongerScope", []string{"orders:read:all"}, "orders:read", false},
		{"OKWildcardChild", []string{"orders:*"}, "orders:read", true},
		{"OKWildcardGrandchild", []string{"orders:*"}, "orders:items:write", true},
		{"ErrWildcardParent", []string{"orders:*"}, "orders", false},
		{"ErrWildcardLookalike", []string{"orders:*"}, "ordersx:read", false},
		{"ErrWildcardSibling", []string{"orders:items:*"}, "orders:read", false},
		{"OKDeepWildcard", []string{"orders:items:*"}, "orders:items:write", true},
		{"ErrDeepWildcardParent", []string{"orders:items:*"}, "orders:items", false},
		{"OKAdminGrantsTokensRead", []string{keyward.ScopeAdmin}, keyward.ScopeTokensRead, true},
		{"OKAdminGrantsTokensWrite", []string{keyward.ScopeAdmin}, keyward.ScopeTokensWrite, true},
		{"OKAdminGrantsVerify", []string{keyward.ScopeAdmin}, keyward.ScopeVerify, true},
		{"OKAdminGrantsAuditRead", []string{keyward.ScopeAdmin}, keyward.ScopeAuditRead, true},
		{"OKAdminGrantsAdmin", []string{keyward.ScopeAdmin}, keyward.ScopeAdmin, true},
		{"ErrAdminInstance", []string{keyward.ScopeAdmin}, keyward.ScopeInstance, false},
		{"OKInstanceExact", []string{keyward.ScopeInstance}, keyward.ScopeInstance, true},
		{"ErrInstanceGrantsNoAdmin", []string{keyward.ScopeInstance}, keyward.ScopeTokensRead, false},
		{"ErrAdminGrantsNoPlainScope", []string{keyward.ScopeAdmin}, "orders:read", false},
		{"ErrTokensWriteGrantsNoRead", []string{keyward.ScopeTokensWrite}, keyward.ScopeTokensRead, false},
		{"ErrWildcardNeverGrantsManagement", []string{"keyward:*"}, keyward.ScopeVerify, false},
		{"ErrWildcardNeverGrantsManagementDeep", []string{"keyward:tokens:*"}, keyward.ScopeTokensRead, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keyward.Grants(tt.granted, tt.want); got != tt.ok {
				t.Fatalf("Grants(%q, %q) = %v, want %v", tt.granted, tt.want, got, tt.ok)
			}
		})
	}
}

func TestGrantsAll(t *testing.T) {
	granted := []string{"orders:*", "users:read", keyward.ScopeAdmin}
	tests := []struct {
		name    string
		want    []string
		ok      bool
		missing string
	}{
		{"OKNone", nil, true, ""},
		{"OKAll", []string{"orders:read", "users:read", keyward.ScopeVerify}, true, ""},
		{"ErrOneMissing", []string{"orders:read", "users:write", "billing:read"}, false, "users:write"},
		{"ErrInstance", []string{"orders:read", keyward.ScopeInstance}, false, keyward.ScopeInstance},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keyward.GrantsAll(granted, tt.want); got != tt.ok {
				t.Errorf("GrantsAll(%q, %q) = %v, want %v", granted, tt.want, got, tt.ok)
			}
			if got := keyward.MissingScope(granted, tt.want); got != tt.missing {
				t.Errorf("MissingScope(%q, %q) = %q, want %q", granted, tt.want, got, tt.missing)
			}
		})
	}
}

func TestMissingManagementScope(t *testing.T) {
	for _, tc := range []struct {
		granted, want []string
		missing       string
	}{
		{nil, []string{"orders:read", "orders:*"}, ""},
		{nil, []string{"orders:read", "keyward:tokens:read"}, "keyward:tokens:read"},
		{[]string{"keyward:admin"}, []string{"keyward:tokens:write", "keyward:audit:read"}, ""},
		{[]string{"keyward:admin"}, []string{"keyward:instance"}, "keyward:instance"},
		{[]string{"keyward:tokens:read"}, []string{"keyward:tokens:read", "keyward:tokens:write"}, "keyward:tokens:write"},
	} {
		if got := keyward.MissingManagementScope(tc.granted, tc.want); got != tc.missing {
			t.Errorf("MissingManagementScope(%q, %q) = %q, want %q", tc.granted, tc.want, got, tc.missing)
		}
	}
}
