package secret

import (
	"hash/crc32"
	"math"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/keyward/keyward"
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

// RedactPath returns the path of u, a request's URL, for a log: escaped
// as the request had it (u.EscapedPath), since decoded an encoded "?"
// (/a%3Faccess_token=x) would read as a query string, and with what Redact
// takes out of it taken out, also of a secret that escapes hide
// (kw%5F..., or a character of its body written %XX): Redact finds it in
// the decoded path, and the escaped bytes it came from are cut.
func RedactPath(u *url.URL) string { return RedactEscapedPath(u.EscapedPath()) }

// RedactEscapedPath is RedactPath of a path already escaped as the request
// had it (url.URL.EscapedPath).
func RedactEscapedPath(esc string) string {
	if strings.IndexByte(esc, '%') < 0 {
		// Nothing is escaped: esc is the decoded path.
		return Redact(esc)
	}
	if len(esc) < 2+1+BodyLen || strings.IndexByte(esc, '_') < 0 && !strings.Contains(esc, "%5F") && !strings.Contains(esc, "%5f") {
		// Too short for a secret, decoded or not, or without a '_'
		// either way: nothing to take out, and nothing to decode on
		// each request that escapes its path.
		return esc
	}
	// The decoded path, and where in esc each of its bytes came from.
	dec := make([]byte, 0, len(esc))
	from := make([]int, 0, len(esc)+1)
	for i := 0; i < len(esc); {
		from = append(from, i)
		if esc[i] == '%' && i+2 < len(esc) && unhex(esc[i+1]) >= 0 && unhex(esc[i+2]) >= 0 {
			dec = append(dec, byte(unhex(esc[i+1])<<4|unhex(esc[i+2])))
			i += 3
			continue
		}
		dec = append(dec, esc[i])
		i++
	}
	from = append(from, len(esc))
	d := string(dec)
	r := Redact(d)
	if r == d {
		return Redact(esc)
	}
	// Redact replaced each secret's body, BodyLen base62 bytes, with
	// Redacted, whose '[' no body holds: the first byte where r and d
	// differ is where a body begins.
	var b strings.Builder
	done := 0 // esc[:done] is in b
	for i, k := 0, 0; i < len(d); {
		if k < len(r) && r[k] == d[i] {
			i, k = i+1, k+1
			continue
		}
		if i+BodyLen > len(d) || !strings.HasPrefix(r[k:], Redacted) {
			// Not Redact's doing, as this reads it: the decoded path,
			// redacted, escaped anew.
			return (&url.URL{Path: r}).EscapedPath()
		}
		b.WriteString(esc[done:from[i]])
		b.WriteString(Redacted)
		done = from[i+BodyLen]
		i, k = i+BodyLen, k+len(Redacted)
	}
	b.WriteString(esc[done:])
	return Redact(b.String())
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// HasBody reports whether s holds the body of a secret of one of
// prefixes without its prefix: BodyLen base62 characters, within a run of
// them, whose last ChecksumLen are the checksum of the prefix, '_' and the
// first RandomLen (as Parse checks it). What Redact finds needs no prefix
// known; this finds a secret pasted without its "kw_", which only the
// checksum tells from a long word or id, once in 62^6 (5.7·10^10) for
// each prefix and place. Token ids (26 characters) are too short.
func HasBody(s string, prefixes ...string) bool {
	return len(s) >= BodyLen && nextBody(s, 0, prefixes) >= 0
}

// Holds reports whether s holds a token's secret that RedactAll would
// take out: one Redact finds, or the body of one of prefixes' secrets
// pasted without its prefix (HasBody). A text that is stored where no
// secret may be (a name, a description in the audit log) is refused when
// it holds one.
func Holds(s string, prefixes ...string) bool {
	return Redact(s) != s || HasBody(s, prefixes...)
}

// RedactAll returns s with what Redact takes out taken out, and each
// body of one of prefixes' secrets pasted without its prefix
// (RedactBodies): what an answer or a stored text that quotes a caller's
// input must not carry.
func RedactAll(s string, prefixes ...string) string {
	return RedactBodies(Redact(s), prefixes...)
}

// Prefixes returns the prefixes whose secrets' bodies are looked for
// without their prefix on behalf of a workspace whose token prefix is
// prefix ("" when not known): its own and the default one. The slice
// may be shared: read it, do not change it.
func Prefixes(prefix string) []string {
	if prefix == "" || prefix == keyward.DefaultTokenPrefix {
		return defaultPrefixes
	}
	return []string{prefix, keyward.DefaultTokenPrefix}
}

var defaultPrefixes = []string{keyward.DefaultTokenPrefix}

// RedactBodies returns s with each body HasBody finds in it replaced
// with Redacted: a secret of one of prefixes pasted without its prefix,
// which Redact, knowing no prefix, leaves. Only a checksum that matches
// makes one, so a long word or id is left as it is. s is returned as it
// is, without allocating, when it holds none.
func RedactBodies(s string, prefixes ...string) string {
	if len(s) < BodyLen {
		return s
	}
	var b strings.Builder
	done := 0 // s[:done] is in b
	for {
		p := nextBody(s, done, prefixes)
		if p < 0 {
			break
		}
		b.WriteString(s[done:p])
		b.WriteString(Redacted)
		done = p + BodyLen
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

// nextBody returns where in s, from from on, the first body HasBody
// finds begins, or -1. Error answers run it over whatever a request
// quoted back, up to the API's body limit, so it costs a few operations
// a place and allocates nothing: the CRC of the RandomLen characters at
// each place is rolled on from the place before (rollCRC), carried on
// from the prefix's, and compared with the checksum's digits decoded, as
// Parse does.
func nextBody(s string, from int, prefixes []string) int {
	if len(s)-from < BodyLen {
		return -1
	}
	// heads[k]: the raw CRC state after prefixes[k], '_' and RandomLen
	// zero bytes; the state after the prefix, '_' and the random part is
	// heads[k] ^ the random part's own (linear) share.
	var stack [2]uint32
	heads := stack[:0]
	for _, prefix := range prefixes {
		st := ^crc32.Update(crc(prefix), crc32.IEEETable, underscore)
		for range RandomLen {
			st = crc32.IEEETable[byte(st)] ^ st>>8
		}
		heads = append(heads, st)
	}
	for i := from; i < len(s); {
		if digits[s[i]] < 0 {
			i++
			continue
		}
		j := i
		for j < len(s) && digits[s[j]] >= 0 {
			j++
		}
		if j-i < BodyLen {
			i = j
			continue
		}
		var share uint32 // of s[p:p+RandomLen], from a zero state
		for _, c := range []byte(s[i : i+RandomLen]) {
			share = crc32.IEEETable[byte(share)^c] ^ share>>8
		}
		for p := i; ; p++ {
			var sum uint64
			for _, c := range []byte(s[p+RandomLen : p+BodyLen]) {
				sum = sum*62 + uint64(digits[c])
			}
			if sum <= math.MaxUint32 {
				for k, prefix := range prefixes {
					if len(prefix) <= MaxTokenLen-BodyLen-1 && ^(heads[k]^share) == uint32(sum) {
						return p
					}
				}
			}
			if p+BodyLen == j {
				break
			}
			c := s[p+RandomLen]
			share = crc32.IEEETable[byte(share)^c] ^ share>>8 ^ rollCRC[s[p]]
		}
		i = j
	}
	return -1
}

var underscore = []byte{'_'}

// rollCRC[b] is the share of byte b in the raw CRC-32 (IEEE) state of
// the RandomLen+1 bytes it begins: XORed into the state of those bytes,
// it leaves that of the last RandomLen, a window moved on by one.
var rollCRC = func() (t [256]uint32) {
	for b := range t {
		st := crc32.IEEETable[b]
		for range RandomLen {
			st = crc32.IEEETable[byte(st)] ^ st>>8
		}
		t[b] = st
	}
	return t
}()

// InData reports whether s, a value of machine-written data such as a
// token's metadata, holds a token's secret: one of any prefix whose
// checksum matches, the body of one of prefixes' secrets without its
// prefix (see HasBody), or one of prefixes followed by '_' and a body as
// Redact finds it without the checksum (a mistyped secret of a known
// prefix still gives most of it away). Redact's shape alone, a '_' then
// BodyLen base62 characters that end a run, is not enough here: base64url
// (JWTs, key thumbprints) and snake_case ids hold it often, once in a
// hundred 43-character thumbprints.
func InData(s string, prefixes ...string) bool {
	if len(s) < BodyLen {
		return false
	}
	if HasBody(s, prefixes...) {
		return true
	}
	if len(s) < 2+1+BodyLen || !strings.Contains(s, "_") {
		return false
	}
	for i := 0; i < len(s); {
		if !tokenChar(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && tokenChar(s[j]) {
			j++
		}
		for p := i + 2; p+1+BodyLen <= j; p++ {
			end := p + 1 + BodyLen
			if s[p] != '_' || !base62(s[p+1:end]) {
				continue
			}
			if checksummed(s[i:end], p-i) {
				return true
			}
			if end < j && s[end] != '_' {
				continue
			}
			for _, prefix := range prefixes {
				k := p - len(prefix)
				if k >= i && s[k:p] == prefix && (k == i || s[k-1] == '_') {
					return true
				}
			}
		}
		i = j
	}
	return false
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
