package main

import (
	"fmt"
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

// TestPrintTokensWideCharacters: CJK and emoji take two columns on a
// terminal; names are cut, and the columns after them start, by the
// columns a name takes, not by its characters, so that every row lines
// up. Combining marks and zero-width characters take none.
func TestPrintTokensWideCharacters(t *testing.T) {
	var b strings.Builder
	err := printTokens(&b, []client.Token{
		{ID: "tok_1", Name: strings.Repeat("支", 30), Hint: "kw_…aaaa", State: "active"},
		{ID: "tok_2", Name: "deploy 🚀", Hint: "kw_…bbbb", State: "active"},
		{ID: "tok_3", Name: "cafe\u0301\u200b", Hint: "kw_…cccc", State: "active"},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("table:\n%s", b.String())
	}
	// 19 wide characters and the ellipsis: 39 columns, since a 20th
	// would make 41.
	want := strings.Repeat("支", 19) + "…"
	if f := strings.Fields(lines[1]); len(f) < 2 || f[1] != want {
		t.Errorf("long name cell = %q, want %q", f[1], want)
	}
	// The HINT column starts at the same terminal column on every row:
	// after "tok_1  ", the widest name (39 columns) and two spaces.
	for _, l := range lines {
		i := strings.Index(l, "HINT")
		if i < 0 {
			i = strings.Index(l, "kw_")
		}
		if got := textWidth(l[:i]); got != len("tok_1  ")+39+2 {
			t.Errorf("HINT at column %d, want %d: %q", got, len("tok_1  ")+39+2, l)
		}
	}
}

// TestPrintTokensCutsScopes: many scopes do not widen every row: the
// SCOPES cell holds the first scopes that fit in maxScopesCell columns
// and how many more there are; a few scopes are shown whole.
func TestPrintTokensCutsScopes(t *testing.T) {
	many := make([]string, 100)
	for i := range many {
		many[i] = fmt.Sprintf("orders%d:read", i)
	}
	long := "a:" + strings.Repeat("b", 100)
	for _, tt := range []struct {
		scopes []string
		want   string
	}{
		{nil, "-"},
		{[]string{"orders:read", "orders:write"}, "orders:read,orders:write"},
		{many, "orders0:read,orders1:read +98 more"},
		{[]string{long}, long[:maxScopesCell-1] + "…"},
		{[]string{long, "x:y"}, long[:maxScopesCell-len(" +1 more")-1] + "… +1 more"},
	} {
		var b strings.Builder
		if err := printTokens(&b, []client.Token{{ID: "tok_1", Name: "n", Hint: "kw_…aaaa", State: "active", Scopes: tt.scopes}}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
		start := strings.Index(lines[0], "SCOPES")
		end := strings.Index(lines[0], "EXPIRES")
		// Every character here takes one column: count runes.
		if got := strings.TrimRight(string([]rune(lines[1])[start:end]), " "); got != tt.want {
			t.Errorf("%d scopes: SCOPES cell = %q, want %q", len(tt.scopes), got, tt.want)
		}
		if w := textWidth(tt.want); w > maxScopesCell {
			t.Errorf("%q is %d columns wide, more than %d", tt.want, w, maxScopesCell)
		}
	}
}
