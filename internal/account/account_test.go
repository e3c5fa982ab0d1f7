package account

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

func TestCheckPassword(t *testing.T) {
	tests := []struct {
		name, pw, email, want string // want: substring of the reason, "" for accepted
	}{
		{"OK", "correct horse battery staple", "", ""},
		{"OKUnicode", "ümlaut wörter sind gut", "", ""},
		{"OKPasteLong", strings.Repeat("ab", 100), "", ""},
		{"ErrShort", "short pass1", "", "at least 12 characters"},
		{"ErrTooLong", strings.Repeat("x", 300), "", "at most 256"},
		{"ErrCommon", "password1234", "", "list of common or breached passwords"},
		{"ErrCommonCase", "Password1234", "", "list of common or breached passwords"},
		{"ErrCommonWalk", "qwertyuiop123", "", "list of common or breached passwords"},
		{"ErrDigits", "123456789012", "", "list of common or breached passwords"},
		{"ErrRepeated", "zzzzzzzzzzzzzz", "", "one character repeated"},
		{"ErrRepeatedNonASCII", "éééééééééééé", "", "one character repeated"},
		{"OKTwoNonASCII", "éééééééééééè", "", ""},
		{"ErrEmail", "ann.long.name@example.com", "ann.long.name@example.com", "email address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPassword(tt.pw, tt.email)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckPassword = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(keyward.ErrorMessage(err), tt.want) {
				t.Fatalf("CheckPassword = %v, want a reason with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), tt.pw) {
				t.Errorf("the error shows the password")
			}
		})
	}
	if n := len(common()); n < 5000 {
		t.Errorf("the common list has %d entries, want thousands", n)
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse battery staple", TestParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("hash = %q", h)
	}
	h2, _ := HashPassword("correct horse battery staple", TestParams)
	if h == h2 {
		t.Errorf("two hashes of one password are equal: the salt is not random")
	}
	for _, tt := range []struct {
		pw   string
		want bool
	}{{"correct horse battery staple", true}, {"correct horse battery stapler", false}, {"", false}} {
		if ok, err := VerifyPassword(tt.pw, h); err != nil || ok != tt.want {
			t.Errorf("VerifyPassword(%q) = %v, %v; want %v", tt.pw, ok, err, tt.want)
		}
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$AAAA$AAAA", "$argon2id$v=19$m=64,t=0,p=1$AAAA$AAAA", "$argon2id$v=19$m=64,t=1,p=1$!!$AAAA"} {
		if _, err := VerifyPassword("x", bad); err != ErrBadHash {
			t.Errorf("VerifyPassword(hash %q) err = %v, want ErrBadHash", bad, err)
		}
	}
	if ok, _ := VerifyPassword("not a real password at all!", DummyHash(TestParams)); ok {
		t.Error("the dummy hash matched")
	}
}

// TestTOTPVectors checks the RFC 6238 appendix B vectors for SHA-1 (the
// last six digits of the eight-digit codes given there).
func TestTOTPVectors(t *testing.T) {
	key := []byte("12345678901234567890")
	for _, v := range []struct {
		unix int64
		code string
	}{
		{59, "287082"}, {1111111109, "081804"}, {1111111111, "050471"},
		{1234567890, "005924"}, {2000000000, "279037"}, {20000000000, "353130"},
	} {
		if got := TOTPCode(key, TOTPStep(time.Unix(v.unix, 0))); got != v.code {
			t.Errorf("TOTP at %d = %s, want %s", v.unix, got, v.code)
		}
	}
}

func TestCheckTOTP(t *testing.T) {
	key := []byte("12345678901234567890")
	now := time.Unix(1234567890, 0)
	step := TOTPStep(now)
	code := func(s int64) string { return TOTPCode(key, s) }
	tests := []struct {
		name     string
		code     string
		lastStep int64
		want     int64 // 0: refused
	}{
		{"OKNow", code(step), 0, step},
		{"OKPreviousStep", code(step - 1), 0, step - 1},
		{"OKNextStep", code(step + 1), 0, step + 1},
		{"OKSpaces", " " + code(step)[:3] + " " + code(step)[3:], 0, step},
		{"ErrTwoStepsAgo", code(step - 2), 0, 0},
		{"ErrTwoStepsAhead", code(step + 2), 0, 0},
		{"ErrReplay", code(step), step, 0},
		{"ErrOlderThanLastUsed", code(step - 1), step, 0},
		{"ErrWrong", "000000", 0, 0},
		{"ErrShort", "12345", 0, 0},
		{"ErrLetters", "abcdef", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := CheckTOTP(key, tt.code, now, tt.lastStep)
			if ok != (tt.want != 0) || got != tt.want {
				t.Fatalf("CheckTOTP = %d, %v; want %d", got, ok, tt.want)
			}
		})
	}
	if s, err := ParseTOTPSecretText(TOTPSecretText(key)); err != nil || string(s) != string(key) {
		t.Errorf("secret text round trip = %q, %v", s, err)
	}
	if uri := TOTPURI(key, "keyward", "ann@example.com"); !strings.HasPrefix(uri, "otpauth://totp/keyward:ann@example.com?") || !strings.Contains(uri, "secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ") {
		t.Errorf("URI = %s", uri)
	}
}

func TestSealer(t *testing.T) {
	old, _ := secret.NewKeyring(strings.Repeat("a", 64))
	rotated, _ := secret.NewKeyring(strings.Repeat("b", 64), strings.Repeat("a", 64))
	other, _ := secret.NewKeyring(strings.Repeat("c", 64))
	sealed, err := NewSealer(old).Seal([]byte("totp secret"), "usr_1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "totp secret") {
		t.Fatal("sealed text holds the plaintext")
	}
	for name, s := range map[string]*Sealer{"Same": NewSealer(old), "Rotated": NewSealer(rotated)} {
		if p, err := s.Open(sealed, "usr_1"); err != nil || string(p) != "totp secret" {
			t.Errorf("%s: Open = %q, %v", name, p, err)
		}
	}
	if _, err := NewSealer(old).Open(sealed, "usr_2"); err != ErrUnseal {
		t.Errorf("Open for another user: %v, want ErrUnseal", err)
	}
	if _, err := NewSealer(other).Open(sealed, "usr_1"); err != ErrUnseal {
		t.Errorf("Open under another secret: %v, want ErrUnseal", err)
	}
	codes, digests, err := NewSealer(old).NewRecoveryCodes("usr_1")
	if err != nil || len(codes) != RecoveryCodes || len(digests) != RecoveryCodes {
		t.Fatalf("NewRecoveryCodes = %d codes, %v", len(codes), err)
	}
	typed := strings.ToUpper(strings.ReplaceAll(codes[0], "-", " "))
	if string(NewSealer(old).RecoveryDigest("usr_1", typed)) != string(digests[0]) {
		t.Errorf("a code typed in upper case with a space does not match its digest")
	}
	if ds := NewSealer(rotated).RecoveryDigests("usr_1", codes[0]); len(ds) != 2 || string(ds[1]) != string(digests[0]) {
		t.Errorf("after a rotation of the server secret, no digest matches a code made before it")
	}
	if string(NewSealer(old).RecoveryDigest("usr_2", codes[0])) == string(digests[0]) {
		t.Errorf("a code's digest does not depend on the user")
	}
}
