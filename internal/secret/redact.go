package secret

import (
	"strings"
	"unicode/utf8"
)

// Redacted replaces what Redact takes out of a token.
const Redacted = "[redacted]"

// Redact returns s with the secret part of everything shaped like a
// token replaced with Redacted, so that a secret pasted where an id
// belongs (keyward token revoke kw_...) or into a URL reaches no log or
// usage event. In a run of letters, digits and '_', that is a '_' with at
// least two characters before it, then 38 base62 characters that end the
// run or come before another '_' (kw_<38>, acme_corp_<38>, key_kw_<38>_v2):
// the checksum is not asked for there, since a mistyped secret still gives
// most of one away. When more letters or digits follow (kw_<38>abc), the
// checksum tells a token from a long word. Ids (tok_ and 26 characters)
// are not touched. s is returned as it is, without allocating, when it
// holds none.
func Redact(s string) string {
	if len(s) < 2+1+BodyLen || !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	done := 0 // s[:done] is in b
	for i := 0; i < len(s); {
		if !tokenChar(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && tokenChar(s[j]) {
			j++
		}
		// s[i:j] is a run: look for the secrets in it.
		for p := i + 2; p+1+BodyLen <= j; p++ {
			end := p + 1 + BodyLen
			if s[p] != '_' || !base62(s[p+1:end]) || end < j && s[end] != '_' && !checksummed(s[i:end], p-i) {
				continue
			}
			b.WriteString(s[done : p+1])
			b.WriteString(Redacted)
			done = end
			p = end - 1
		}
		i = j
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

// checksummed reports whether run, whose '_' before the last BodyLen
// characters is at u, ends in a token whose checksum matches for some
// prefix of 2 to 16 characters before u: a secret run into more word
// characters (kw_...abc), told from a word that is merely long by the
// checksum, which a word matches once in 2^32.
func checksummed(run string, u int) bool {
	want := run[len(run)-ChecksumLen:]
	for n := 2; n <= 16 && n <= u; n++ {
		sum := Checksum(run[u-n : len(run)-ChecksumLen])
		if string(sum[:]) == want {
			return true
		}
	}
	return false
}

func tokenChar(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func base62(s string) bool {
	for i := 0; i < len(s); i++ {
		if digits[s[i]] < 0 {
			return false
		}
	}
	return true
}

// MaxUserAgent is the most of a client's User-Agent that is kept, in bytes.
const MaxUserAgent = 300

// UserAgent returns a client's User-Agent as it may be stored in an audit
// event or a session: with secrets redacted (a client library may put its
// key there, and an audit event cannot be changed later), as valid UTF-8,
// and cut to at most MaxUserAgent bytes on a character boundary.
func UserAgent(ua string) string {
	ua = strings.ToValidUTF8(Redact(ua), "\uFFFD")
	if len(ua) <= MaxUserAgent {
		return ua
	}
	n := MaxUserAgent
	for n > 0 && !utf8.RuneStart(ua[n]) {
		n--
	}
	return ua[:n]
}
