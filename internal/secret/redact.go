package secret

import "strings"

// Redacted replaces what Redact takes out of a token.
const Redacted = "[redacted]"

// Redact returns s with every run of characters shaped like a token (a
// prefix, '_', 38 base62 characters, with no letter, digit or '_' on
// either side) cut down to its prefix and Redacted: a secret pasted where
// an id belongs (keyward token revoke kw_...) or into a URL must not reach
// a log or a usage event. The checksum is not checked: a mistyped secret
// still gives most of one away. Ids (tok_ and 26 characters) are not
// touched. s is returned as it is, without allocating, when it holds none.
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
		// s[i:j] is a run; a token fills one whole.
		if n := j - i; n >= 2+1+BodyLen && n <= MaxTokenLen && s[j-BodyLen-1] == '_' && base62(s[j-BodyLen:j]) {
			cut := j - BodyLen
			b.WriteString(s[done:cut])
			b.WriteString(Redacted)
			done = j
		}
		i = j
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
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
