package secret

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

type vectors struct {
	Valid []struct {
		Prefix, Random, Checksum, Token string
		CRC32                           uint32 `json:"crc32"`
	}
	Malformed []struct{ Token, Why string }
}

func loadVectors(t testing.TB) vectors {
	t.Helper()
	b, err := os.ReadFile("../../testdata/token-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Valid) == 0 || len(v.Malformed) == 0 {
		t.Fatal("no vectors")
	}
	return v
}

func TestParseVectors(t *testing.T) {
	v := loadVectors(t)
	for _, tc := range v.Valid {
		t.Run("OK/"+tc.Token, func(t *testing.T) {
			p, err := Parse(tc.Token)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if p.Prefix != tc.Prefix || p.Random != tc.Random {
				t.Fatalf("got prefix %q random %q", p.Prefix, p.Random)
			}
			c := Checksum(tc.Prefix + "_" + tc.Random)
			if string(c[:]) != tc.Checksum {
				t.Fatalf("checksum %q, want %q", c, tc.Checksum)
			}
		})
	}
	for _, tc := range v.Malformed {
		t.Run("ErrMalformed/"+tc.Why, func(t *testing.T) {
			if _, err := Parse(tc.Token); err != ErrMalformed {
				t.Fatalf("Parse(%q) = %v, want ErrMalformed (%s)", tc.Token, err, tc.Why)
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for _, prefix := range []string{"kw", "acme_live", "aaaaaaaaaaaaaaaa"} {
		for i := 0; i < 200; i++ {
			tok, err := Generate(prefix)
			if err != nil {
				t.Fatal(err)
			}
			if len(tok) != len(prefix)+1+BodyLen {
				t.Fatalf("length %d", len(tok))
			}
			p, err := Parse(tok)
			if err != nil || p.Prefix != prefix {
				t.Fatalf("Parse(%q) = %+v, %v", tok, p, err)
			}
			if seen[tok] {
				t.Fatalf("duplicate token %q", tok)
			}
			seen[tok] = true
		}
	}
	if _, err := Generate("K"); err == nil {
		t.Fatal("Generate accepted an invalid prefix")
	}
}

func TestGenerateUniform(t *testing.T) {
	// Every base62 digit must appear; a biased generator (c % 62 over 256)
	// would still pass this, but a broken alphabet or a stuck byte would not.
	counts := map[rune]int{}
	for i := 0; i < 300; i++ {
		tok, _ := Generate("kw")
		for _, r := range tok[3 : 3+RandomLen] {
			counts[r]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("saw %d distinct digits, want 62", len(counts))
	}
}

func TestHint(t *testing.T) {
	for in, want := range map[string]string{
		"kw_AbCdEfGhIjKlMnOpQrStUvWxYz0123452ZGy5c":        "kw_…Gy5c",
		"acme_live_q8J2mXn4Lp0RtY7vW3sZ9cB1dF6gH5kE1vCeGQ": "acme_live_…CeGQ",
	} {
		if got := Hint(in); got != want {
			t.Errorf("Hint(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(Hint(in), in[len(in)-20:len(in)-8]) {
			t.Errorf("hint reveals the random part")
		}
	}
}

func TestParseAllocs(t *testing.T) {
	tok := "acme_live_q8J2mXn4Lp0RtY7vW3sZ9cB1dF6gH5kE1vCeGQ"
	if n := testing.AllocsPerRun(100, func() { Parse(tok) }); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}

func FuzzParse(f *testing.F) {
	v := loadVectors(f)
	for _, tc := range v.Valid {
		f.Add(tc.Token)
	}
	for _, tc := range v.Malformed {
		f.Add(tc.Token)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must be exactly prefix_random+checksum, and
		// re-encoding its parts must give the same text.
		c := Checksum(p.Prefix + "_" + p.Random)
		if p.Prefix+"_"+p.Random+string(c[:]) != s {
			t.Fatalf("Parse(%q) accepted text that does not re-encode: %+v", s, p)
		}
		if len(p.Random) != RandomLen {
			t.Fatalf("random part of %d characters", len(p.Random))
		}
	})
}

func TestBearer(t *testing.T) {
	for _, tt := range []struct {
		name, h, token string
		ok             bool
	}{
		{"OK", "Bearer kw_x", "kw_x", true},
		{"OKCase", "bearer kw_x", "kw_x", true},
		{"OKSpaces", "Bearer   kw_x  ", "kw_x", true},
		{"TabKept", "Bearer\tkw_x", "\tkw_x", true},
		{"TabsKept", "Bearer\t \tkw_x\t", "\t \tkw_x", true},
		{"TabAfterSpaceKept", "Bearer \tkw_x", "\tkw_x", true},
		{"OtherSpaceKept", "Bearer \u00a0kw_x\u0085", "\u00a0kw_x\u0085", true},
		{"ControlKept", "Bearer kw_x\v", "kw_x\v", true},
		{"EmptySpaceTab", "Bearer \t ", "", true},
		{"Empty", "Bearer", "", true},
		{"EmptySpace", "Bearer ", "", true},
		{"EmptyTab", "Bearer\t", "", true},
		{"OtherScheme", "Basic a2V5", "", false},
		{"LongerScheme", "Bearerx kw_x", "", false},
		{"None", "", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tok, ok := Bearer(tt.h); tok != tt.token || ok != tt.ok {
				t.Errorf("Bearer(%q) = %q, %v; want %q, %v", tt.h, tok, ok, tt.token, tt.ok)
			}
		})
	}
}
