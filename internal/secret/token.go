// Package secret handles token text and server keys: generating tokens from
// crypto/rand, the base62 CRC-32 checksum that rejects garbled tokens
// offline, parsing, keyed digests for storage, display hints and the server
// secret file.
package secret

import (
	"crypto/rand"
	"errors"
	"hash/crc32"
	"strings"
	"unsafe"

	"github.com/keyward/keyward"
)

const (
	// Alphabet is the base62 alphabet, in the order of its digit values.
	Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// RandomLen is the number of random base62 characters (≥ 190 bits).
	RandomLen = 32
	// ChecksumLen is the length of the base62 CRC-32 checksum.
	ChecksumLen = 6
	// BodyLen is the length of what follows the last '_'.
	BodyLen = RandomLen + ChecksumLen
	// MaxTokenLen is the length of a token with the longest prefix.
	MaxTokenLen = 16 + 1 + BodyLen
)

// ErrMalformed is returned for text that is not a well-formed token.
var ErrMalformed = errors.New("malformed token")

// Parsed is a well-formed token text split into its parts. Its strings
// share the memory of the parsed text.
type Parsed struct {
	Text   string
	Prefix string
	Random string
}

// Parse checks that s is a well-formed token: a valid prefix, '_', 32 base62
// characters and their matching checksum. It reads s from its end, so a
// prefix may contain '_'. It does not allocate and touches no store.
func Parse(s string) (Parsed, error) {
	n := len(s)
	if n < 2+1+BodyLen || n > MaxTokenLen || s[n-BodyLen-1] != '_' {
		return Parsed{}, ErrMalformed
	}
	prefix := s[:n-BodyLen-1]
	if keyward.ValidatePrefix(prefix) != nil {
		return Parsed{}, ErrMalformed
	}
	body := s[n-BodyLen:]
	for i := 0; i < RandomLen; i++ {
		if digits[body[i]] < 0 {
			return Parsed{}, ErrMalformed
		}
	}
	// Decoding the checksum digits (multiply-add) is cheaper than encoding
	// the CRC (divisions); 62^6 > 2^32, so the value must also fit 32 bits.
	var sum uint64
	for i := RandomLen; i < BodyLen; i++ {
		d := digits[body[i]]
		if d < 0 {
			return Parsed{}, ErrMalformed
		}
		sum = sum*62 + uint64(d)
	}
	if sum != uint64(crc(s[:n-ChecksumLen])) {
		return Parsed{}, ErrMalformed
	}
	return Parsed{Text: s, Prefix: prefix, Random: body[:RandomLen]}, nil
}

// Checksum returns the base62 CRC-32 (IEEE) of text, most significant digit
// first, zero-padded to 6 digits.
func Checksum(text string) [ChecksumLen]byte {
	v := crc(text)
	var out [ChecksumLen]byte
	for i := ChecksumLen - 1; i >= 0; i-- {
		out[i] = Alphabet[v%62]
		v /= 62
	}
	return out
}

// crc returns the CRC-32 (IEEE) of text. It only reads the bytes; viewing
// the string as a slice keeps Parse free of allocations.
func crc(text string) uint32 {
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(text), len(text)))
}

// digits maps a byte to its base62 value, or -1.
var digits = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(Alphabet); i++ {
		t[Alphabet[i]] = int8(i)
	}
	return t
}()

// Generate returns a new token text with the given prefix, its random part
// read from crypto/rand. It fails only for an invalid prefix.
func Generate(prefix string) (string, error) {
	if err := keyward.ValidatePrefix(prefix); err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(prefix) + 1 + BodyLen)
	b.WriteString(prefix)
	b.WriteByte('_')
	// Rejection sampling keeps every base62 digit uniform: 248 = 4·62.
	var buf [64]byte
	for n := 0; n < RandomLen; {
		rand.Read(buf[:])
		for _, c := range buf {
			if c < 248 && n < RandomLen {
				b.WriteByte(Alphabet[c%62])
				n++
			}
		}
	}
	c := Checksum(b.String())
	b.Write(c[:])
	return b.String(), nil
}

// Hint returns the display hint of a token text: its prefix and its last
// four characters, which identify it to a person but are useless to guess it.
func Hint(text string) string {
	i := strings.LastIndexByte(text, '_')
	if i < 0 || len(text) < 4 {
		return ""
	}
	return text[:i+1] + "…" + text[len(text)-4:]
}

// Bearer returns the token text that an Authorization field value of the
// Bearer scheme presents, and reports whether the value is of that
// scheme: "Bearer" in any case, then whitespace or nothing. RFC 6750 §2.1
// (and RFC 9110 §11.4) sets the token off with spaces only (1*SP): the
// spaces are dropped, and whatever follows them is the token, up to the
// spaces and tabs that may end a field value (OWS). Anything else that
// sets the token off (a tab, a space of Unicode's such as U+00A0) or ends
// it (a control character) is returned with it, so that it verifies as
// MALFORMED, a credential presented but unusable, rather than reading as
// no credential at all (which would pass an optional route and change the
// challenge) or as a different, valid one. A value with nothing but
// whitespace after the scheme presents no token ("", true).
func Bearer(h string) (token string, ok bool) {
	const scheme = "Bearer"
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	rest := h[len(scheme):]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return "", false // another scheme ("Bearerx")
	}
	return strings.TrimRight(strings.TrimLeft(rest, " "), " \t"), true
}
