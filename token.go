package keyward

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Token states as reported by the API. Expired is derived from ExpiresAt and
// the clock; the others are stored.
const (
	StateActive          = "active"
	StateExpired         = "expired"
	StateRevoked         = "revoked"
	StateSuspended       = "suspended"
	StatePendingApproval = "pending_approval"
)

// Limits on token fields.
const (
	MaxNameLen      = 200
	MaxSubjectLen   = 200
	MaxScopes       = 100
	MaxCIDRs        = 100
	MaxMetadataSize = 8 << 10
	// MaxMetadataDepth bounds the nesting of metadata objects and arrays.
	MaxMetadataDepth = 32
	MaxReasonLen     = 500
)

// Quota periods.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
	PeriodNone  = "none"
)

// Token is an API token without its secret. The secret exists only as
// digests (see Secret) and, once, in the response that issued it.
type Token struct {
	ID           string
	WorkspaceID  string
	Name         string
	Hint         string // prefix and last four characters, e.g. "kw_…x9Qa"
	Scopes       []string
	ExpiresAt    *time.Time
	AllowedCIDRs []string
	RateLimit    *RateLimit
	Quota        *Quota
	Subject      string
	Metadata     json.RawMessage // a JSON object, or nil

	Revoked       bool
	RevokedAt     *time.Time
	RevokeReason  string
	Suspended     bool
	SuspendedAt   *time.Time
	SuspendReason string

	CreatedBy  string // actor id: a token id or "system"
	CreatedAt  time.Time
	UpdatedAt  time.Time
	RotatedAt  *time.Time
	LastUsedAt *time.Time
	LastUsedIP string
}

// State reports the token's state at time now.
func (t *Token) State(now time.Time) string {
	switch {
	case t.Revoked:
		return StateRevoked
	case t.Suspended:
		return StateSuspended
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return StateExpired
	}
	return StateActive
}

// Clone returns a deep copy of t, so that a caller may modify it freely.
func (t *Token) Clone() *Token {
	c := *t
	c.Scopes = append([]string(nil), t.Scopes...)
	c.AllowedCIDRs = append([]string(nil), t.AllowedCIDRs...)
	if t.Metadata != nil {
		c.Metadata = append(json.RawMessage(nil), t.Metadata...)
	}
	if t.RateLimit != nil {
		r := *t.RateLimit
		c.RateLimit = &r
	}
	if t.Quota != nil {
		q := *t.Quota
		c.Quota = &q
	}
	return &c
}

// RateLimit admits at most Limit VALID verifications in any window of
// length Window.
type RateLimit struct {
	Limit  int64    `json:"limit"`
	Window Duration `json:"window"`
}

// Quota admits at most Limit VALID verifications per calendar Period in UTC
// (PeriodDay, PeriodMonth) or in total (PeriodNone).
type Quota struct {
	Limit  int64  `json:"limit"`
	Period string `json:"period"`
}

// PeriodKey returns the key of the quota period that contains t, such as
// "2026-11-23" for a daily quota.
func (q *Quota) PeriodKey(t time.Time) string {
	t = t.UTC()
	switch q.Period {
	case PeriodDay:
		return t.Format("2006-01-02")
	case PeriodMonth:
		return t.Format("2006-01")
	}
	return "total"
}

// PeriodEnd returns when the quota period that contains t ends, or the zero
// time for PeriodNone.
func (q *Quota) PeriodEnd(t time.Time) time.Time {
	t = t.UTC()
	switch q.Period {
	case PeriodDay:
		return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
	case PeriodMonth:
		return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string such as "1m" or "24h".
type Duration time.Duration

// MarshalJSON implements json.Marshaler. It writes the duration as people
// write it, without zero minutes or seconds after a larger unit ("1m",
// "24h", "1h30m", not "1m0s"), so that a window given as "1m" reads back
// as "1m"; time.ParseDuration reads it back to the same value.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// String returns d as the API writes it: "1m", "24h", "1h30m", "1m30s".
// Messages and audit records that name a duration use it too, so that
// they spell it as the request and the answer do.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("must be a duration string such as \"1m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("must be a duration string such as \"1m\"")
	}
	*d = Duration(v)
	return nil
}

// MaxExpiresAt bounds a token's expiry: times are kept and compared in
// nanoseconds since 1970, which end in 2262, and JSON times end with the
// year 9999 (a "never" such as 9999-12-31T23:59:59-05:00 is past it in
// UTC). A token that should not expire has no expiry.
var MaxExpiresAt = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// Validate checks every field a client may set and returns an EINVALID
// *Error listing each invalid field, or nil. The pointers are those of the
// API's JSON fields.
func (t *Token) Validate(now time.Time) error {
	var errs []FieldError
	add := func(p, format string, args ...any) {
		errs = append(errs, FieldError{Pointer: p, Detail: fmt.Sprintf(format, args...)})
	}
	switch {
	case strings.TrimSpace(t.Name) == "":
		add("/name", "name is required")
	case utf8.RuneCountInString(t.Name) > MaxNameLen:
		add("/name", "name must be at most %d characters", MaxNameLen)
	case strings.ContainsFunc(t.Name, isControl):
		add("/name", "name must not contain control characters")
	case strings.ContainsFunc(t.Name, isHidden):
		add("/name", "name must not contain bidirectional controls or invisible characters")
	case t.Name != strings.TrimSpace(t.Name):
		add("/name", "name must not start or end with white space")
	}
	if len(t.Scopes) > MaxScopes {
		add("/scopes", "at most %d scopes", MaxScopes)
	}
	// Elements past the most a token holds are not looked at: the list
	// must be cut anyway, and an answer naming each of a huge list's
	// elements would be as large as the list.
	for i, s := range t.Scopes[:min(len(t.Scopes), MaxScopes)] {
		if err := ValidateScope(s); err != nil {
			add(fmt.Sprintf("/scopes/%d", i), "%v", err)
		}
	}
	switch {
	case t.ExpiresAt != nil && !t.ExpiresAt.After(now):
		add("/expires_at", "expires_at must be in the future")
	case t.ExpiresAt != nil && !t.ExpiresAt.Before(MaxExpiresAt):
		add("/expires_at", "expires_at must be before %s (leave it out for a token that does not expire)", MaxExpiresAt.Format(time.RFC3339))
	}
	if len(t.AllowedCIDRs) > MaxCIDRs {
		add("/allowed_cidrs", "at most %d CIDRs", MaxCIDRs)
	}
	for i, c := range t.AllowedCIDRs[:min(len(t.AllowedCIDRs), MaxCIDRs)] {
		if _, err := ParseCIDR(c); err != nil {
			add(fmt.Sprintf("/allowed_cidrs/%d", i), "%q is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32", c)
		}
	}
	if r := t.RateLimit; r != nil {
		if r.Limit <= 0 {
			add("/rate_limit/limit", "limit must be a positive number")
		}
		if time.Duration(r.Window) < time.Second || time.Duration(r.Window) > 31*24*time.Hour {
			add("/rate_limit/window", "window must be between 1s and 744h")
		}
	}
	if q := t.Quota; q != nil {
		if q.Limit <= 0 {
			add("/quota/limit", "limit must be a positive number")
		}
		if q.Period != PeriodDay && q.Period != PeriodMonth && q.Period != PeriodNone {
			add("/quota/period", "period must be one of day, month, none")
		}
	}
	if err := ValidateSubject(t.Subject); err != nil {
		add("/subject", "%v", err)
	}
	if t.Metadata != nil {
		if len(t.Metadata) > MaxMetadataSize {
			add("/metadata", "metadata must be at most %d bytes", MaxMetadataSize)
		} else if !isJSONObject(t.Metadata) {
			add("/metadata", "metadata must be a JSON object")
		} else if jsonDepth(t.Metadata) > MaxMetadataDepth {
			add("/metadata", "metadata must nest at most %d levels", MaxMetadataDepth)
		} else if p := AmbiguousJSON(t.Metadata); p != "" {
			add("/metadata", "metadata must not hold %s: parsers read it differently", p)
		}
	}
	if len(errs) > 0 {
		return Invalid(errs...)
	}
	return nil
}

// Tidy puts t's valid lists in one form: each scope once, in the order
// given, and each CIDR written as the prefix it means (10.0.0.1/8 is
// 10.0.0.0/8; a bare address is its /32 or /128), once. It changes no
// meaning; call it after Validate.
func (t *Token) Tidy() {
	t.Scopes = uniq(t.Scopes)
	if len(t.AllowedCIDRs) > 0 {
		cidrs := make([]string, 0, len(t.AllowedCIDRs))
		for _, c := range t.AllowedCIDRs {
			if p, err := ParseCIDR(c); err == nil {
				c = p.String()
			}
			cidrs = append(cidrs, c)
		}
		t.AllowedCIDRs = uniq(cidrs)
	}
}

// uniq returns ss without repeats, in first-seen order (ss itself when it
// has none).
func uniq(ss []string) []string {
	for i := 1; i < len(ss); i++ {
		if slices.Contains(ss[:i], ss[i]) {
			out := slices.Clone(ss[:i])
			for _, s := range ss[i+1:] {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
			return out
		}
	}
	return ss
}

// ValidateSubject checks a token subject: printable ASCII without spaces at
// the ends, at most MaxSubjectLen characters (it travels in a header).
func ValidateSubject(s string) error {
	if len(s) > MaxSubjectLen {
		return fmt.Errorf("subject must be at most %d characters", MaxSubjectLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("subject must be printable ASCII")
		}
	}
	if s != strings.TrimSpace(s) {
		return fmt.Errorf("subject must not start or end with a space")
	}
	return nil
}

// ParseCIDR parses an allowlist entry. A bare address is taken as a
// single-host prefix. The prefix is returned masked.
func ParseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: IPv4-mapped prefixes are not supported", s)
	}
	return p.Masked(), nil
}

// CIDRsWithin reports whether every CIDR of inner lies within one of the
// CIDRs of outer (entries that do not parse lie within nothing).
func CIDRsWithin(inner, outer []string) bool {
	for _, s := range inner {
		p, err := ParseCIDR(s)
		if err != nil {
			return false
		}
		if !slices.ContainsFunc(outer, func(o string) bool {
			q, err := ParseCIDR(o)
			return err == nil && q.Bits() <= p.Bits() && q.Contains(p.Addr())
		}) {
			return false
		}
	}
	return true
}

// isControl reports the control characters (C0, DEL, C1) and the line and
// paragraph separators: none belongs in a one-line name or reason.
func isControl(r rune) bool { return unicode.IsControl(r) || r == 0x2028 || r == 0x2029 }

// ValidateReason checks the reason given for a revocation, suspension or
// resumption: at most MaxReasonLen characters, no control characters (it is
// shown in tables and logs, and kept in the audit log), no marks that
// reorder the text around them.
func ValidateReason(reason string) error {
	switch {
	case utf8.RuneCountInString(reason) > MaxReasonLen:
		return fmt.Errorf("reason must be at most %d characters", MaxReasonLen)
	case strings.ContainsFunc(reason, isControl):
		return fmt.Errorf("reason must not contain control characters")
	case strings.ContainsFunc(reason, isBidiControl):
		return fmt.Errorf("reason must not contain bidirectional control characters")
	}
	return nil
}

// isHidden reports what makes a name look like another: the marks that
// reorder text, and characters that show nothing (zero-width space, word
// joiner, byte order mark, soft hyphen). The zero-width joiners that emoji
// sequences and some scripts need stay allowed.
func isHidden(r rune) bool {
	return isBidiControl(r) || r == 0x200B || r == 0x2060 || r == 0xFEFF || r == 0x00AD
}

// isBidiControl reports the Unicode marks that reorder the text around
// them (a "Trojan Source" reason would read otherwise in a table).
func isBidiControl(r rune) bool {
	return r >= 0x202A && r <= 0x202E || r >= 0x2066 && r <= 0x2069 || r == 0x200E || r == 0x200F || r == 0x061C
}

// jsonDepth returns the deepest nesting of objects and arrays in valid JSON.
func jsonDepth(b json.RawMessage) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// AmbiguousJSON names what in the valid JSON text b one parser reads
// differently from another, or is "": a name given twice in one object
// (the first wins in some, the last in others), a number beyond a 64-bit
// float (an error in many, infinity in others), a UTF-16 surrogate escape
// without its pair (refused, or replaced with U+FFFD), bytes that are not
// UTF-8 (the same; RFC 8259 §8.1 asks for UTF-8). Metadata is handed on as
// it was stored, to every SDK and verifier; a request body may have passed
// a proxy that read it otherwise.
func AmbiguousJSON(b []byte) string {
	if !utf8.Valid(b) {
		return "bytes that are not UTF-8"
	}
	// One pass over the bytes, as every request body takes it: a string
	// followed by ':' is a name of the innermost open object; a number
	// can pass a float64 only with an exponent or over 300 digits.
	var objects []nameSet // the names of each open object, innermost last
	depth := 0
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '{':
			if depth < len(objects) {
				objects[depth].reset()
			} else {
				objects = append(objects, nameSet{})
			}
			depth++
		case c == '}':
			depth--
		case c == '"':
			j, escaped := i+1, false
			for ; b[j] != '"'; j++ {
				if b[j] != '\\' {
					continue
				}
				escaped = true
				n := surrogateEscape(b, j)
				if n < 0 {
					return "a \\u escape of half a UTF-16 surrogate pair"
				}
				j += n - 1
			}
			k := j + 1
			for k < len(b) && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
				k++
			}
			if k < len(b) && b[k] == ':' && depth > 0 {
				name := b[i+1 : j]
				if escaped {
					var n string
					json.Unmarshal(b[i:j+1], &n) // valid JSON: cannot fail
					name = []byte(n)
				}
				if !objects[depth-1].add(name) {
					return fmt.Sprintf("the name %q twice in one object", name)
				}
			}
			i = j
		case c == '-' || '0' <= c && c <= '9':
			j, exp := i, false
			for j < len(b) && strings.IndexByte("+-.0123456789eE", b[j]) >= 0 {
				exp = exp || b[j] == 'e' || b[j] == 'E'
				j++
			}
			if exp || j-i > 300 {
				if _, err := strconv.ParseFloat(string(b[i:j]), 64); err != nil {
					return fmt.Sprintf("the number %.20s beyond the range of a 64-bit float", b[i:j])
				}
			}
			i = j - 1
		}
	}
	return ""
}

// nameSet holds the names of one JSON object: a list while it is short,
// a map beyond.
type nameSet struct {
	list [][]byte
	set  map[string]struct{}
}

func (n *nameSet) reset() {
	n.list = n.list[:0]
	n.set = nil
}

// add reports whether name is new to n, and adds it.
func (n *nameSet) add(name []byte) bool {
	if n.set != nil {
		if _, ok := n.set[string(name)]; ok {
			return false
		}
		n.set[string(name)] = struct{}{}
		return true
	}
	for _, s := range n.list {
		if bytes.Equal(s, name) {
			return false
		}
	}
	n.list = append(n.list, name)
	if len(n.list) > 16 {
		n.set = make(map[string]struct{}, 2*len(n.list))
		for _, s := range n.list {
			n.set[string(s)] = struct{}{}
		}
	}
	return true
}

// surrogateEscape returns the length of the escape at b[i] (a '\\' in a
// string of valid JSON), a surrogate pair's two \\u escapes as one, or -1
// for a \\u escape of a surrogate without its pair.
func surrogateEscape(b []byte, i int) int {
	hex4 := func(i int) int {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return -1
		}
		v, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
		if err != nil {
			return -1
		}
		return int(v)
	}
	switch v := hex4(i); {
	case v < 0:
		return 2 // a two-character escape
	case v >= 0xD800 && v < 0xDC00:
		if w := hex4(i + 6); w < 0xDC00 || w >= 0xE000 {
			return -1
		}
		return 12
	case v >= 0xDC00 && v < 0xE000:
		return -1
	}
	return 6
}

func isJSONObject(b json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// Secret is one stored digest of a token's secret. A token has one current
// secret (ExpiresAt nil) and, after a rotation, the secrets it replaced, each
// valid until its ExpiresAt (the end of its grace period).
type Secret struct {
	Digest    []byte // keyed HMAC-SHA-256 of the token text
	KeyID     string // id of the server key that made Digest
	TokenID   string
	CreatedAt time.Time
	ExpiresAt *time.Time
}

// TokenFilter selects tokens of one workspace. Results are ordered by id,
// ascending (oldest first), or descending with Newest.
type TokenFilter struct {
	WorkspaceID string
	State       string // one of the State* constants, or ""
	Subject     string // exact match
	Scope       string // tokens holding exactly this scope
	Name        string // substring, case-insensitive
	CreatedBy   string // exact match: the actor id that created the token
	// UnusedSince, when set, selects only tokens last used before it or
	// never used, as the store knows it: uses not yet flushed do not count.
	UnusedSince time.Time
	After       string // id cursor: only ids greater than this
	Before      string // id cursor: only ids less than this
	Newest      bool   // newest first: ids in descending order
	Limit       int
	Now         time.Time // for the expired state
}
