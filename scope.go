package keyward

import (
	"fmt"
	"strings"
)

// Management scopes, in the reserved "keyward:" namespace.
const (
	ScopeAdmin       = "keyward:admin"        // every keyward: scope of its workspace but ScopeInstance
	ScopeInstance    = "keyward:instance"     // create and list workspaces
	ScopeTokensRead  = "keyward:tokens:read"  // list and read tokens
	ScopeTokensWrite = "keyward:tokens:write" // create, update, rotate, revoke tokens
	ScopeVerify      = "keyward:verify"       // verify and introspect tokens
	ScopeAuditRead   = "keyward:audit:read"   // read the audit log
)

// ManagementPrefix is the reserved scope namespace of management tokens.
const ManagementPrefix = "keyward:"

// ManagementScopes lists every scope of the reserved namespace. A token may
// hold no other keyward: scope.
var ManagementScopes = []string{ScopeAdmin, ScopeInstance, ScopeTokensRead, ScopeTokensWrite, ScopeVerify, ScopeAuditRead}

// MaxScopeLen bounds the length of one scope.
const MaxScopeLen = 200

// ValidateScope checks the syntax of a scope: segments of [a-z0-9_.-]+
// separated by ':', where the final segment may be '*' after at least one
// other segment. In the keyward: namespace only ManagementScopes are allowed
// (no wildcards), so that no scope can grant more than it names.
func ValidateScope(s string) error {
	if s == "" {
		return fmt.Errorf("scope must not be empty")
	}
	if len(s) > MaxScopeLen {
		return fmt.Errorf("scope must be at most %d characters", MaxScopeLen)
	}
	segs := strings.Split(s, ":")
	for i, seg := range segs {
		if seg == "*" && i == len(segs)-1 {
			if i == 0 {
				return fmt.Errorf("scope %q: a wildcard needs a prefix, such as \"orders:*\"", s)
			}
			continue
		}
		if seg == "" {
			return fmt.Errorf("scope %q has an empty segment", s)
		}
		for j := 0; j < len(seg); j++ {
			if !isScopeByte(seg[j]) {
				return fmt.Errorf("scope %q: segments use only a-z 0-9 _ . -", s)
			}
		}
	}
	if strings.HasPrefix(s, ManagementPrefix) && !IsManagementScope(s) {
		return fmt.Errorf("scope %q is not a keyward management scope (one of %s)", s, strings.Join(ManagementScopes, ", "))
	}
	return nil
}

func isScopeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// IsManagementScope reports whether s is one of ManagementScopes.
func IsManagementScope(s string) bool {
	for _, m := range ManagementScopes {
		if s == m {
			return true
		}
	}
	return false
}

// HasManagementScope reports whether any of scopes is in the keyward:
// namespace, which makes a token a management token.
func HasManagementScope(scopes []string) bool {
	for _, s := range scopes {
		if strings.HasPrefix(s, ManagementPrefix) {
			return true
		}
	}
	return false
}

// Grants reports whether the granted scopes include want: an exact match, a
// wildcard "a:b:*" for any want starting with "a:b:", or ScopeAdmin for any
// keyward: scope but ScopeInstance. Wildcards never grant keyward: scopes.
// It does not allocate.
func Grants(granted []string, want string) bool {
	mgmt := strings.HasPrefix(want, ManagementPrefix)
	for _, g := range granted {
		if g == want {
			return true
		}
		if mgmt {
			if g == ScopeAdmin && want != ScopeInstance {
				return true
			}
			continue
		}
		if n := len(g); n >= 2 && g[n-1] == '*' && g[n-2] == ':' && strings.HasPrefix(want, g[:n-1]) {
			return true
		}
	}
	return false
}

// GrantsAll reports whether granted includes every scope of want.
func GrantsAll(granted, want []string) bool {
	for _, w := range want {
		if !Grants(granted, w) {
			return false
		}
	}
	return true
}

// MissingScope returns the first scope of want that granted does not include,
// or "" when it includes them all.
func MissingScope(granted, want []string) string {
	for _, w := range want {
		if !Grants(granted, w) {
			return w
		}
	}
	return ""
}

// MissingManagementScope is MissingScope for the keyward: scopes of want
// alone: the first that granted does not include, or "". A caller may give
// or change a token only when this is "" for the caller's scopes.
func MissingManagementScope(granted, want []string) string {
	for _, w := range want {
		if IsManagementScope(w) && !Grants(granted, w) {
			return w
		}
	}
	return ""
}
