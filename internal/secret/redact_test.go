package secret

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tok, err := Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	long, err := Generate("acme_corp")
	if err != nil {
		t.Fatal(err)
	}
	// The same shape with a wrong checksum: a mistyped secret.
	typo := tok[:len(tok)-1] + string("0123456789"[(strings.IndexByte(Alphabet, tok[len(tok)-1])+1)%10])
	for _, tc := range []struct{ in, want string }{
		{"/v1/tokens/" + tok + "/revoke", "/v1/tokens/kw_" + Redacted + "/revoke"},
		{"/orders/" + long, "/orders/acme_corp_" + Redacted},
		{"/a/" + typo + "/b", "/a/kw_" + Redacted + "/b"},
		{tok + "," + tok, "kw_" + Redacted + ",kw_" + Redacted},
		{"/v1/tokens/tok_01kkntq1th8v9w1613jwgfct5a/revoke", "/v1/tokens/tok_01kkntq1th8v9w1613jwgfct5a/revoke"},
		{"/x/" + tok + "abc", "/x/kw_" + Redacted + "abc"}, // its checksum tells it
		{"/x/" + tok + "0", "/x/kw_" + Redacted + "0"},
		{"/x/" + long + "x", "/x/acme_corp_" + Redacted + "x"},
		{"/x/" + typo + "a", "/x/" + typo + "a"}, // 39 characters after '_', no checksum: a long word
		{"/files/api_key_for_customer_" + tok, "/files/api_key_for_customer_kw_" + Redacted},
		{"/x/" + tok + "_v2", "/x/kw_" + Redacted + "_v2"},
		{"/x/" + tok + "_" + long, "/x/kw_" + Redacted + "_acme_corp_" + Redacted},
		{"/x/" + tok[1:], "/x/" + tok[1:]}, // "w_..." is a prefix too short
		{"/orders", "/orders"},
		{"", ""},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Redact("/orders/ord_123/items_and_more_things_here_1234567890") }); n != 0 {
		t.Errorf("Redact of a path without a token allocates %v times", n)
	}
}

func TestRedactPath(t *testing.T) {
	tok, err := Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	body := tok[3:]
	esc := func(c byte) string { return fmt.Sprintf("%%%02X", c) }
	for _, tc := range []struct{ name, target, want string }{
		{"OKPlain", "/orders/1", "/orders/1"},
		{"OKEscapedQuestionMark", "/a%3Faccess_token=x", "/a%3Faccess_token=x"},
		{"OKEscapedSlash", "/a%2Fb/c%20d", "/a%2Fb/c%20d"},
		{"OKLowerCaseEscape", "/a%3fb", "/a%3fb"},
		{"OKQueryLeftOut", "/a?access_token=x", "/a"},
		{"OKSecret", "/v1/tokens/" + tok + "/revoke", "/v1/tokens/kw_" + Redacted + "/revoke"},
		{"OKSecretBesideEscape", "/a%3F/" + tok, "/a%3F/kw_" + Redacted},
		{"OKSecretEscapedUnderscore", "/x/kw%5F" + body + "/y%2Fz", "/x/kw%5F" + Redacted + "/y%2Fz"},
		{"OKSecretEscapedInBody", "/x/kw_" + body[:5] + esc(body[5]) + body[6:] + "%3F", "/x/kw_" + Redacted + "%3F"},
		{"OKSecretEscapedAtEnd", "/x/kw_" + body[:len(body)-1] + esc(body[len(body)-1]) + "/y", "/x/kw_" + Redacted + "/y"},
		{"OKSecretAllEscaped", "/x/" + escapeAll(tok), "/x/" + escapeAll("kw_") + Redacted},
		{"OKTwoSecrets", "/x/kw%5F" + body + "/" + tok, "/x/kw%5F" + Redacted + "/kw_" + Redacted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.ParseRequestURI(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if got := RedactPath(u); got != tc.want {
				t.Errorf("RedactPath(%q) = %q, want %q", tc.target, got, tc.want)
			}
		})
	}
	u, _ := url.ParseRequestURI("/orders/ord_123/items_and_more_things_here_1234567890")
	if n := testing.AllocsPerRun(100, func() { RedactPath(u) }); n != 0 {
		t.Errorf("RedactPath of a path without a token or escape allocates %v times", n)
	}
	// An escaped path that cannot hold a secret costs no more than
	// escaping it: it is not decoded again.
	for _, target := range []string{"/search/caf%C3%A9%20au%20lait%20and%20more%20words%20here", "/a%20b", "/a%3Fb/" + strings.Repeat("x", 50)} {
		u, _ := url.ParseRequestURI(target)
		esc := testing.AllocsPerRun(100, func() { u.EscapedPath() })
		if n := testing.AllocsPerRun(100, func() { RedactPath(u) }); n != esc {
			t.Errorf("RedactPath(%q) allocates %v times, EscapedPath %v", target, n, esc)
		}
	}
}

// escapeAll writes every byte of s as %XX.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func TestUserAgent(t *testing.T) {
	tok, err := Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"OKPlain", "curl/8.5.0", "curl/8.5.0"},
		{"OKSecret", "app/1 (key " + tok + ")", "app/1 (key kw_" + Redacted + ")"},
		{"OKInvalidUTF8", "app/\xff1", "app/\uFFFD1"},
		{"OKCut", strings.Repeat("a", 400), strings.Repeat("a", MaxUserAgent)},
		{"OKCutOnCharacter", "a" + strings.Repeat("é", 200), "a" + strings.Repeat("é", (MaxUserAgent-1)/2)},
		{"OKSecretAtTheCut", strings.Repeat("a ", 140) + tok, strings.Repeat("a ", 140) + "kw_" + Redacted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := UserAgent(tc.in); got != tc.want {
				t.Errorf("UserAgent(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestHasBody: a secret's body without its prefix is found, for the
// prefixes given only, alone or within a longer run; a long word is not.
func TestHasBody(t *testing.T) {
	tok, err := Generate("acme_corp")
	if err != nil {
		t.Fatal(err)
	}
	body := tok[len("acme_corp_"):]
	for _, tt := range []struct {
		s        string
		prefixes []string
		want     bool
	}{
		{body, []string{"acme_corp"}, true},
		{"key=" + body + ".", []string{"kw", "acme_corp"}, true},
		{"x" + body + "y", []string{"acme_corp"}, true},
		{body, []string{"kw"}, false},
		{body, nil, false},
		{body[:BodyLen-1], []string{"acme_corp"}, false},
		{body[:10] + "-" + body[10:], []string{"acme_corp"}, false},
		{strings.Repeat("A", 200), []string{"acme_corp", "kw"}, false},
		{body, []string{strings.Repeat("p", 40)}, false}, // no such prefix
	} {
		if got := HasBody(tt.s, tt.prefixes...); got != tt.want {
			t.Errorf("HasBody(%q, %q) = %v, want %v", tt.s, tt.prefixes, got, tt.want)
		}
	}
}

// TestHolds: a text holds a secret when Redact would take one out, or
// when it holds the body of one of the prefixes' secrets; otherwise not.
func TestHolds(t *testing.T) {
	tok, err := Generate("acme_corp")
	if err != nil {
		t.Fatal(err)
	}
	body := tok[len("acme_corp_"):]
	for _, tt := range []struct {
		s        string
		prefixes []string
		want     bool
	}{
		{"leaked: " + tok, nil, true},
		{"leaked: " + body, []string{"acme_corp"}, true},
		{"leaked: " + body, []string{"kw"}, false},
		{"deploy bot", []string{"acme_corp", "kw"}, false},
		{"", nil, false},
	} {
		if got := Holds(tt.s, tt.prefixes...); got != tt.want {
			t.Errorf("Holds(%q, %q) = %v, want %v", tt.s, tt.prefixes, got, tt.want)
		}
	}
}

// TestInData: in machine-written data a secret is one whose checksum
// matches (any prefix, with it or, for the prefixes given, without), or
// one of the prefixes given with a body that does not match (mistyped);
// Redact's shape alone, common in base64url, is not one.
func TestInData(t *testing.T) {
	tok, err := Generate("acme_corp")
	if err != nil {
		t.Fatal(err)
	}
	body := tok[len("acme_corp_"):]
	c := "a"
	if body[BodyLen-1] == 'a' {
		c = "b"
	}
	typo := body[:BodyLen-1] + c
	for _, tt := range []struct {
		s        string
		prefixes []string
		want     bool
	}{
		{tok, nil, true},
		{"x=" + tok + "_v2", nil, true},
		{"key_" + tok, nil, true},
		{body, []string{"acme_corp"}, true},
		{"acme_corp_" + typo, []string{"acme_corp"}, true},
		{"key_acme_corp_" + typo + "-x", []string{"acme_corp"}, true},
		{"acme_corp_" + typo, []string{"kw"}, false},
		{"xacme_corp_" + typo, []string{"acme_corp"}, false},
		{"Hp_eZ1dcKq67HQULP2C0nYPwMgU2QEtLXfA2SemOu-8", []string{"kw"}, false},
		{"order_e0298726bb00303d4f29368cc9b38181d16ffb", []string{"kw"}, false},
		{strings.Repeat("A", 200), []string{"kw"}, false},
	} {
		if got := InData(tt.s, tt.prefixes...); got != tt.want {
			t.Errorf("InData(%q, %q) = %v, want %v", tt.s, tt.prefixes, got, tt.want)
		}
	}
}

// TestRedactBodies: each body HasBody finds is replaced, alone, within a
// longer run or twice; what holds none comes back as it is.
func TestRedactBodies(t *testing.T) {
	tok, err := Generate("acme_corp")
	if err != nil {
		t.Fatal(err)
	}
	body := tok[len("acme_corp_"):]
	long := strings.Repeat("A", 200)
	for _, tt := range []struct {
		s, want  string
		prefixes []string
	}{
		{body, Redacted, []string{"acme_corp"}},
		{`"` + body + `" is not a CIDR`, `"` + Redacted + `" is not a CIDR`, []string{"kw", "acme_corp"}},
		{"x" + body + "y " + body, "x" + Redacted + "y " + Redacted, []string{"acme_corp"}},
		{body, body, []string{"kw"}},
		{body, body, nil},
		{long, long, []string{"acme_corp", "kw"}},
		{"short", "short", []string{"acme_corp"}},
	} {
		if got := RedactBodies(tt.s, tt.prefixes...); got != tt.want {
			t.Errorf("RedactBodies(%q, %q) = %q, want %q", tt.s, tt.prefixes, got, tt.want)
		}
	}
}

// TestRedactBodiesCost: error answers run RedactBodies over what a
// request quoted back, up to the API's body limit (1 MiB): a string
// that holds no body comes back without an allocation, however many
// places in it are looked at (every place used to allocate its text for
// the checksum, and compute it whole).
func TestRedactBodiesCost(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts do not hold under the race detector")
	}
	for _, s := range []string{strings.Repeat("Ab1x", 1000), strings.Repeat("0", 4000), `unknown field "` + strings.Repeat("A", 500) + `"`} {
		if n := testing.AllocsPerRun(10, func() { RedactBodies(s, "acme_corp", "kw") }); n != 0 {
			t.Errorf("RedactBodies(%.10q...) allocates %v times", s, n)
		}
	}
}

// TestNextBodyAsChecksum: nextBody, which rolls the CRC from place to
// place, finds what checking each place's Checksum whole finds: bodies
// of the prefixes given, planted anywhere in runs of any length, and
// nothing in the runs around them.
func TestNextBodyAsChecksum(t *testing.T) {
	whole := func(s string, from int, prefixes []string) int {
		for p := from; p+BodyLen <= len(s); p++ {
			if !base62(s[p : p+BodyLen]) {
				continue
			}
			for _, prefix := range prefixes {
				if len(prefix) > MaxTokenLen-BodyLen-1 {
					continue
				}
				if c := Checksum(prefix + "_" + s[p:p+RandomLen]); string(c[:]) == s[p+RandomLen:p+BodyLen] {
					return p
				}
			}
		}
		return -1
	}
	rng := rand.New(rand.NewPCG(1, 2))
	filler := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = Alphabet[rng.IntN(len(Alphabet))]
		}
		return string(b)
	}
	prefixes := []string{"kw", "acme_corp", "p" + strings.Repeat("x", 15)}
	for n := range 2000 {
		prefix := prefixes[rng.IntN(len(prefixes))]
		tok, err := Generate(prefix)
		if err != nil {
			t.Fatal(err)
		}
		body := tok[len(prefix)+1:]
		seps := []string{"", " ", "-", `"`}
		s := filler(rng.IntN(60)) + seps[rng.IntN(len(seps))] + filler(rng.IntN(5)) + body + filler(rng.IntN(5)) + seps[rng.IntN(len(seps))] + filler(rng.IntN(60))
		given := prefixes
		if n%3 == 0 {
			given = []string{"other"}
		}
		for _, from := range []int{0, rng.IntN(len(s))} {
			if got, want := nextBody(s, from, given), whole(s, from, given); got != want {
				t.Fatalf("nextBody(%q, %d, %q) = %d, want %d", s, from, given, got, want)
			}
		}
	}
}
