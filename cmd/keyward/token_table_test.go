package main

import (
	"strings"
	"testing"

	"github.com/keyward/keyward/client"
)

// TestPrintTokensCutsLongNames: a long name is cut in the table, with an
// ellipsis, so that it does not widen every row; shorter ones are whole.
func TestPrintTokensCutsLongNames(t *testing.T) {
	long := strings.Repeat("é", 30) + strings.Repeat("n", 170) // 200 characters
	var b strings.Builder
	err := printTokens(&b, []client.Token{
		{ID: "tok_1", Name: long, Hint: "kw_…aaaa", State: "active"},
		{ID: "tok_2", Name: strings.Repeat("m", maxNameCell), Hint: "kw_…bbbb", State: "active"},
		{ID: "tok_3", Name: "short", Hint: "kw_…cccc", State: "active"},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("table:\n%s", b.String())
	}
	want := strings.Repeat("é", 30) + strings.Repeat("n", maxNameCell-31) + "…"
	if f := strings.Fields(lines[1]); len(f) < 2 || f[1] != want {
		t.Errorf("long name cell = %q, want %q", f[1], want)
	}
	if f := strings.Fields(lines[2]); len(f) < 2 || f[1] != strings.Repeat("m", maxNameCell) {
		t.Errorf("a name of %d characters is cut: %q", maxNameCell, f[1])
	}
	// The HINT column starts where the longest shown name ends.
	for _, l := range lines {
		if i := strings.Index(l, "kw_"); i >= 0 && len([]rune(l[:i])) != len("tok_1  ")+maxNameCell+2 {
			t.Errorf("HINT at column %d: %q", len([]rune(l[:i])), l)
		}
	}
}
