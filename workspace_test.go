package keyward

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestNameKey: two names share a key exactly when strings.EqualFold holds,
// also for runes whose case orbit has more than two members (k, K and the
// Kelvin sign; s, S and the long s; the three sigmas).
func TestNameKey(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"acme", "ACME", true},
		{"Acme Corp", "aCME cORP", true},
		{"kelvin", "\u212Aelvin", true}, // Kelvin sign folds to k
		{"\u017Fun", "SUN", true},       // long s folds to s
		{"\u03A3\u03C3\u03C2", "\u03C3\u03C3\u03C3", true},
		{"straße", "STRASSE", false}, // full folding is not EqualFold's
		{"acme", "acme ", false},
		{"a\xffb", "A\xffB", true},
		{"a\xffb", "a\uFFFDb", true}, // as EqualFold reads bytes that are not UTF-8
	} {
		if got := NameKey(tc.a) == NameKey(tc.b); got != tc.same || strings.EqualFold(tc.a, tc.b) != tc.same {
			t.Errorf("NameKey(%q) == NameKey(%q): %v, EqualFold %v; want %v", tc.a, tc.b, got, strings.EqualFold(tc.a, tc.b), tc.same)
		}
	}
	runes := []rune("aAkK\u212AsS\u017F\u03A3\u03C3\u03C2iI\u0130\u0131\u00DF\u1E9E\u01C4\u01C5\u01C6 -é")
	rnd := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		r := make([]rune, 1+rnd.IntN(3))
		for i := range r {
			r[i] = runes[rnd.IntN(len(runes))]
		}
		return string(r)
	}
	for range 20000 {
		a, b := word(), word()
		if (NameKey(a) == NameKey(b)) != strings.EqualFold(a, b) {
			t.Fatalf("NameKey(%q) = %q, NameKey(%q) = %q; EqualFold = %v", a, NameKey(a), b, NameKey(b), strings.EqualFold(a, b))
		}
	}
}

// TestNameKeys: names that already differ only in case keep a key each,
// the first made the plain one.
func TestNameKeys(t *testing.T) {
	keys := NameKeys([]Workspace{{ID: "ws_1", Name: "Acme"}, {ID: "ws_2", Name: "beta"}, {ID: "ws_3", Name: "ACME"}}, nil)
	if keys["ws_1"] != NameKey("acme") || keys["ws_2"] != NameKey("beta") || keys["ws_3"] != NameKey("acme")+"\nws_3" {
		t.Fatalf("keys = %q", keys)
	}
}
