package account

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// TOTP parameters (RFC 6238 defaults, what every authenticator app reads):
// HMAC-SHA-1, 6 digits, 30-second steps; one step of clock drift either way
// is accepted.
const (
	TOTPDigits    = 6
	TOTPPeriod    = 30 * time.Second
	TOTPSkew      = 1
	totpSecretLen = 20 // 160 bits, as RFC 4226 recommends
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewTOTPSecret returns a random TOTP secret.
func NewTOTPSecret() ([]byte, error) {
	s := make([]byte, totpSecretLen)
	_, err := rand.Read(s)
	return s, err
}

// TOTPSecretText returns the secret as people type it into an app: base32
// in groups of four.
func TOTPSecretText(secret []byte) string {
	s := b32.EncodeToString(secret)
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// ParseTOTPSecretText reverses TOTPSecretText, ignoring spaces and case.
func ParseTOTPSecretText(s string) ([]byte, error) {
	s = strings.ToUpper(strings.ReplaceAll(s, " ", ""))
	return b32.DecodeString(s)
}

// TOTPURI returns the otpauth:// URI that authenticator apps read from a
// QR code.
func TOTPURI(secret []byte, issuer, account string) string {
	label := url.PathEscape(issuer + ":" + account)
	q := url.Values{}
	q.Set("secret", b32.EncodeToString(secret))
	q.Set("issuer", issuer)
	q.Set("algorithm", "SHA1")
	q.Set("digits", fmt.Sprint(TOTPDigits))
	q.Set("period", fmt.Sprint(int(TOTPPeriod/time.Second)))
	return "otpauth://totp/" + label + "?" + q.Encode()
}

// TOTPStep returns the time step that contains t.
func TOTPStep(t time.Time) int64 {
	return t.Unix() / int64(TOTPPeriod/time.Second)
}

// TOTPCode returns the code of the given step (RFC 4226 HOTP of the step).
func TOTPCode(secret []byte, step int64) string {
	m := hmac.New(sha1.New, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(step))
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
	return fmt.Sprintf("%0*d", TOTPDigits, v%1_000_000)
}

// CheckTOTP returns the step whose code matches code at time now, within
// TOTPSkew steps, and that is later than lastStep, so that a code accepted
// once is never accepted again; ok is false when there is none. The caller
// stores the step as the new lastStep.
func CheckTOTP(secret []byte, code string, now time.Time, lastStep int64) (step int64, ok bool) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != TOTPDigits {
		return 0, false
	}
	cur := TOTPStep(now)
	found := int64(0)
	for s := cur - TOTPSkew; s <= cur+TOTPSkew; s++ {
		// Compare every candidate, in constant time, whatever matched.
		if hmac.Equal([]byte(TOTPCode(secret, s)), []byte(code)) && s > lastStep && found == 0 {
			found = s
		}
	}
	return found, found != 0
}
