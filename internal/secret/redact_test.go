package secret

import (
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
