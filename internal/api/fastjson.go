package api

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/verify"
)

// The verify endpoint is the hot path of the API; encoding/json's
// reflection costs it more than verification itself. fastVerifyBody and
// appendVerify handle its one request and one response shape by hand.
// fastVerifyBody accepts only plain input and leaves everything else to
// parseVerify's general decoder, so errors are reported the same way;
// FuzzFastVerifyBody and TestAppendVerify hold both to encoding/json.

// fastVerifyBody parses a verify body made only of the keys "token",
// "scopes" and "ip", each once, with string values free of escapes and of
// non-ASCII bytes. It reports false for anything else, valid or not.
func fastVerifyBody(b []byte) (req verify.Request, ok bool) {
	p := fastParser{b: b}
	if !p.byte('{') {
		return req, false
	}
	var seenToken, seenScopes, seenIP bool
	if p.peek('}') {
		return req, false // token is required
	}
	for {
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return req, false
		}
		switch key {
		case "token":
			if seenToken {
				return req, false
			}
			seenToken = true
			if req.Token, ok = p.str(); !ok {
				return req, false
			}
		case "ip":
			if seenIP {
				return req, false
			}
			seenIP = true
			s, ok := p.str()
			if !ok {
				return req, false
			}
			if s != "" { // "" is no ip, as parseVerify reads it
				a, err := netip.ParseAddr(s)
				if err != nil || a.Zone() != "" {
					return req, false
				}
				req.IP = a
			}
		case "scopes":
			if seenScopes || !p.byte('[') {
				return req, false
			}
			seenScopes = true
			req.Scopes = []string{}
			if !p.peek(']') {
				for {
					s, ok := p.str()
					if !ok || keyward.ValidateScope(s) != nil {
						return req, false
					}
					req.Scopes = append(req.Scopes, s)
					if p.peek(']') {
						break
					}
					if !p.byte(',') {
						return req, false
					}
				}
			}
		default:
			return req, false
		}
		if p.peek('}') {
			break
		}
		if !p.byte(',') {
			return req, false
		}
	}
	p.space()
	return req, seenToken && p.i == len(p.b)
}

type fastParser struct {
	b []byte
	i int
}

func (p *fastParser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

// byte consumes c after white space.
func (p *fastParser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// peek consumes c after white space if it is next, and reports whether it was.
func (p *fastParser) peek(c byte) bool { return p.byte(c) }

// str consumes a string of printable ASCII without escapes.
func (p *fastParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", false
		}
		p.i++
	}
	return "", false
}

// appendVerify appends the JSON of a verify response, as encoding/json
// would write verifyView(res).
func appendVerify(b []byte, res verify.Result) []byte {
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, res.Outcome == keyward.Valid)
	b = append(b, `,"code":"`...)
	b = append(b, res.Outcome.String()...)
	b = append(b, '"')
	t := res.Token
	if !res.Outcome.Identified() || t == nil {
		return append(b, '}')
	}
	b = append(b, `,"token_id":`...)
	b = appendString(b, t.ID)
	b = append(b, `,"name":`...)
	b = appendString(b, t.Name)
	b = append(b, `,"subject":`...)
	b = appendString(b, t.Subject)
	b = append(b, `,"scopes":[`...)
	for i, s := range t.Scopes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	b = append(b, `],"metadata":`...)
	if t.Metadata == nil {
		b = append(b, "null"...)
	} else {
		b = appendCompact(b, t.Metadata)
	}
	b = append(b, `,"expires_at":`...)
	if exp, ok := res.Expiry(); !ok {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = exp.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if res.Rate.Set {
		b = append(b, `,"rate_limit":`...)
		b = appendLimit(b, res.Rate)
	}
	if res.Quota.Set {
		b = append(b, `,"quota":`...)
		b = appendLimit(b, res.Quota)
	}
	return append(b, '}')
}

func appendLimit(b []byte, l verify.Limit) []byte {
	b = append(b, `{"limit":`...)
	b = strconv.AppendInt(b, l.Limit, 10)
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, l.Remaining, 10)
	b = append(b, `,"reset":`...)
	b = strconv.AppendInt(b, verify.Seconds(l.Reset), 10)
	return append(b, '}')
}

// appendCompact appends valid JSON without insignificant white space and
// with <, >, &, U+2028 and U+2029 escaped in strings, as encoding/json
// writes a json.RawMessage.
func appendCompact(b, src []byte) []byte {
	inString, escaped := false, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString && (c == '<' || c == '>' || c == '&'):
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			continue
		case inString && c == 0xE2 && i+2 < len(src) && src[i+1] == 0x80 && (src[i+2] == 0xA8 || src[i+2] == 0xA9):
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[src[i+2]&0xF])
			i += 2
			continue
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			continue
		}
		b = append(b, c)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json does:
// control characters, quotes, backslashes, <, > and & (HTML-safe), U+2028
// and U+2029, and invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
