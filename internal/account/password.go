// Package account holds what dashboard accounts need besides storage:
// password hashing (argon2id) and the policy on passwords, TOTP codes
// (RFC 6238), recovery codes, sealing of second-factor secrets under a key
// the database does not hold, and the creation of users, shared by the
// CLI ("keyward user create") and the dashboard.
package account

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/keyward/keyward"
	"golang.org/x/crypto/argon2"
)

// Password limits. There are no composition rules (NIST SP 800-63B): length
// and the list of common passwords do the work.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 256 // bounds the hashing work a request can ask for
)

// Params are argon2id's cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// DefaultParams are OWASP's recommended minimum for argon2id: 19 MiB,
// two passes, one thread.
var DefaultParams = Params{Memory: 19 * 1024, Time: 2, Threads: 1}

// TestParams are cheap parameters for tests; never use them to store a
// real password.
var TestParams = Params{Memory: 64, Time: 1, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
)

//go:embed common-passwords.txt
var commonList []byte

var common = sync.OnceValue(func() map[string]struct{} {
	m := map[string]struct{}{}
	sc := bufio.NewScanner(bytes.NewReader(commonList))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			m[l] = struct{}{}
		}
	}
	return m
})

// CheckPassword returns an EINVALID error with the reason a password is
// refused: too short, too long, or on the list of common and breached
// passwords (compared without regard to case). email, when given, is
// refused as a password too.
func CheckPassword(pw, email string) error {
	bad := func(msg string) error {
		return keyward.Invalid(keyward.FieldError{Pointer: "/password", Detail: msg})
	}
	n := utf8.RuneCountInString(pw)
	switch {
	case n < MinPasswordLen:
		return bad(fmt.Sprintf("use at least %d characters; a few unrelated words make a long password that is easy to remember", MinPasswordLen))
	case len(pw) > MaxPasswordLen:
		return bad(fmt.Sprintf("use at most %d bytes", MaxPasswordLen))
	}
	low := strings.ToLower(pw)
	if _, ok := common()[low]; ok {
		return bad("this password is on a list of common or breached passwords; choose another")
	}
	if email != "" && (low == strings.ToLower(email) || low == strings.ToLower(strings.SplitN(email, "@", 2)[0])) {
		return bad("do not use your email address as the password")
	}
	if allSame(low) {
		return bad("this password is one character repeated; choose another")
	}
	return nil
}

// allSame reports whether s is one character (not byte) repeated: é
// twelve times is as weak as z twelve times.
func allSame(s string) bool {
	first, n := utf8.DecodeRuneInString(s)
	return s == strings.Repeat(string(first), len(s)/max(n, 1))
}

// HashPassword returns the argon2id hash of pw as a PHC string
// ($argon2id$v=19$m=...,t=...,p=...$salt$hash), with a random salt.
func HashPassword(pw string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// ErrBadHash reports a stored hash that is not one HashPassword made.
var ErrBadHash = errors.New("account: malformed password hash")

// VerifyPassword reports whether pw matches the hash, comparing in
// constant time. It fails only for a malformed hash.
func VerifyPassword(pw, hash string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, ErrBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, ErrBadHash
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil || p.Time == 0 || p.Threads == 0 {
		return false, ErrBadHash
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	want, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false, ErrBadHash
	}
	if len(pw) > MaxPasswordLen {
		return false, nil
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummyHash is verified against when an email is unknown, so that a
// sign-in takes as long whether or not the account exists.
var dummyHash = sync.OnceValues(func() (string, error) { return HashPassword("not a real password at all", DefaultParams) })

// DummyHash returns a hash with the given parameters that no password a
// person would type matches.
func DummyHash(p Params) string {
	if p == DefaultParams {
		h, _ := dummyHash()
		return h
	}
	h, _ := HashPassword("not a real password at all", p)
	return h
}
