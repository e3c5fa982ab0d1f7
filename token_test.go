package keyward_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

var now = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// validToken returns a token with every client-settable field set to a
// valid value.
func validToken() *keyward.Token {
	exp := now.Add(time.Hour)
	return &keyward.Token{
		Name:         "ci deploy",
		Scopes:       []string{"orders:read", "orders:*", keyward.ScopeVerify},
		ExpiresAt:    &exp,
		AllowedCIDRs: []string{"203.0.113.0/24", "2001:db8::/32", "198.51.100.7"},
		RateLimit:    &keyward.RateLimit{Limit: 100, Window: keyward.Duration(time.Minute)},
		Quota:        &keyward.Quota{Limit: 10000, Period: keyward.PeriodMonth},
		Subject:      "customer-42",
		Metadata:     json.RawMessage(`{"team":"payments"}`),
	}
}

// pointers returns the pointers of err's field errors, failing the test
// when err is not an EINVALID *keyward.Error.
func pointers(t *testing.T, err error) []string {
	t.Helper()
	var e *keyward.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *keyward.Error", err, err)
	}
	if e.Code != keyward.EINVALID {
		t.Fatalf("error code = %q, want %q", e.Code, keyward.EINVALID)
	}
	var ps []string
	for _, f := range e.Fields {
		if f.Detail == "" {
			t.Errorf("field error %q has no detail", f.Pointer)
		}
		ps = append(ps, f.Pointer)
	}
	return ps
}

func TestTokenValidate(t *testing.T) {
	many := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	tests := []struct {
		name   string
		change func(tok *keyward.Token)
		want   []string // pointers, in order; nil for a valid token
	}{
		{"OK", func(tok *keyward.Token) {}, nil},
		{"OKMinimal", func(tok *keyward.Token) { *tok = keyward.Token{Name: "x"} }, nil},
		{"OKName200", func(tok *keyward.Token) { tok.Name = strings.Repeat("n", 200) }, nil},
		{"OKNoExpiry", func(tok *keyward.Token) { tok.ExpiresAt = nil }, nil},
		{"OKExpiresJustAfterNow", func(tok *keyward.Token) { e := now.Add(time.Nanosecond); tok.ExpiresAt = &e }, nil},
		{"OKWindow1s", func(tok *keyward.Token) { tok.RateLimit.Window = keyward.Duration(time.Second) }, nil},
		{"OKWindow744h", func(tok *keyward.Token) { tok.RateLimit.Window = keyward.Duration(744 * time.Hour) }, nil},
		{"OKQuotaDay", func(tok *keyward.Token) { tok.Quota.Period = keyward.PeriodDay }, nil},
		{"OKQuotaNone", func(tok *keyward.Token) { tok.Quota.Period = keyward.PeriodNone }, nil},
		{"OKMaxScopes", func(tok *keyward.Token) {
			tok.Scopes = many(keyward.MaxScopes, func(i int) string { return fmt.Sprintf("s%d", i) })
		}, nil},
		{"OKMaxCIDRs", func(tok *keyward.Token) {
			tok.AllowedCIDRs = many(keyward.MaxCIDRs, func(i int) string { return fmt.Sprintf("10.0.%d.0/24", i) })
		}, nil},
		{"OKEmptyMetadataObject", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`{}`) }, nil},
		{"OKMetadataAtLimit", func(tok *keyward.Token) {
			tok.Metadata = json.RawMessage(`{"a":"` + strings.Repeat("x", keyward.MaxMetadataSize-8) + `"}`)
		}, nil},

		{"ErrNameRequired", func(tok *keyward.Token) { tok.Name = "" }, []string{"/name"}},
		{"ErrNameBlank", func(tok *keyward.Token) { tok.Name = "  \t" }, []string{"/name"}},
		{"ErrNameTooLong", func(tok *keyward.Token) { tok.Name = strings.Repeat("n", 201) }, []string{"/name"}},
		{"ErrNameControl", func(tok *keyward.Token) { tok.Name = "a\x00b" }, []string{"/name"}},
		{"ErrNameNewline", func(tok *keyward.Token) { tok.Name = "a\nb" }, []string{"/name"}},
		{"ErrNameDEL", func(tok *keyward.Token) { tok.Name = "a\x7f" }, []string{"/name"}},
		{"ErrTooManyScopes", func(tok *keyward.Token) {
			tok.Scopes = many(keyward.MaxScopes+1, func(i int) string { return fmt.Sprintf("s%d", i) })
		}, []string{"/scopes"}},
		// Beyond the most a token holds, elements are not looked at: an
		// answer would otherwise name each element of a huge list.
		{"ErrTooManyBadScopes", func(tok *keyward.Token) {
			tok.Scopes = many(keyward.MaxScopes+50, func(i int) string { return "Bad" })
		}, append([]string{"/scopes"}, many(keyward.MaxScopes, func(i int) string { return fmt.Sprintf("/scopes/%d", i) })...)},
		{"ErrTooManyBadCIDRs", func(tok *keyward.Token) {
			tok.AllowedCIDRs = many(keyward.MaxCIDRs+50, func(i int) string { return "bad" })
		}, append([]string{"/allowed_cidrs"}, many(keyward.MaxCIDRs, func(i int) string { return fmt.Sprintf("/allowed_cidrs/%d", i) })...)},
		{"ErrScope", func(tok *keyward.Token) { tok.Scopes = []string{"orders:read", "Orders"} }, []string{"/scopes/1"}},
		{"ErrManagementScope", func(tok *keyward.Token) { tok.Scopes = []string{"keyward:bogus"} }, []string{"/scopes/0"}},
		{"ErrExpiresNow", func(tok *keyward.Token) { e := now; tok.ExpiresAt = &e }, []string{"/expires_at"}},
		{"ErrExpiresPast", func(tok *keyward.Token) { e := now.Add(-time.Hour); tok.ExpiresAt = &e }, []string{"/expires_at"}},
		{"ErrTooManyCIDRs", func(tok *keyward.Token) {
			tok.AllowedCIDRs = many(keyward.MaxCIDRs+1, func(i int) string { return fmt.Sprintf("10.0.%d.0/24", i) })
		}, []string{"/allowed_cidrs"}},
		{"ErrCIDR", func(tok *keyward.Token) { tok.AllowedCIDRs = []string{"10.0.0.0/8", "10.0.0.0/33"} }, []string{"/allowed_cidrs/1"}},
		{"ErrRateLimitZero", func(tok *keyward.Token) { tok.RateLimit.Limit = 0 }, []string{"/rate_limit/limit"}},
		{"ErrRateLimitNegative", func(tok *keyward.Token) { tok.RateLimit.Limit = -1 }, []string{"/rate_limit/limit"}},
		{"ErrWindowZero", func(tok *keyward.Token) { tok.RateLimit.Window = 0 }, []string{"/rate_limit/window"}},
		{"ErrWindowSubSecond", func(tok *keyward.Token) { tok.RateLimit.Window = keyward.Duration(999 * time.Millisecond) }, []string{"/rate_limit/window"}},
		{"ErrWindowTooLong", func(tok *keyward.Token) { tok.RateLimit.Window = keyward.Duration(744*time.Hour + time.Second) }, []string{"/rate_limit/window"}},
		{"ErrQuotaZero", func(tok *keyward.Token) { tok.Quota.Limit = 0 }, []string{"/quota/limit"}},
		{"ErrQuotaWeek", func(tok *keyward.Token) { tok.Quota.Period = "week" }, []string{"/quota/period"}},
		{"ErrQuotaNoPeriod", func(tok *keyward.Token) { tok.Quota.Period = "" }, []string{"/quota/period"}},
		{"ErrSubjectTrailingSpace", func(tok *keyward.Token) { tok.Subject = "customer-42 " }, []string{"/subject"}},
		{"ErrSubjectTooLong", func(tok *keyward.Token) { tok.Subject = strings.Repeat("s", 201) }, []string{"/subject"}},
		{"ErrMetadataArray", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`[1]`) }, []string{"/metadata"}},
		{"ErrNameBidi", func(tok *keyward.Token) { tok.Name = "invoice\u202efdp.exe" }, []string{"/name"}},
		{"ErrNameZeroWidth", func(tok *keyward.Token) { tok.Name = "ci\u200bdeploy" }, []string{"/name"}},
		{"ErrNameC1", func(tok *keyward.Token) { tok.Name = "ci\u0085deploy" }, []string{"/name"}},
		{"OKNameEmojiJoiner", func(tok *keyward.Token) { tok.Name = "family \U0001F468\u200d\U0001F469 key" }, nil},
		// What one parser reads differently from another.
		{"ErrMetadataDuplicateName", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`{"role":"user","role":"admin"}`) }, []string{"/metadata"}},
		{"ErrMetadataDuplicateNameNested", func(tok *keyward.Token) {
			tok.Metadata = json.RawMessage(`{"a":[{"x":1},{"y":{"z":1,"z":2}}]}`)
		}, []string{"/metadata"}},
		{"ErrMetadataDuplicateEscapedName", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`{"a":1,"\u0061":2}`) }, []string{"/metadata"}},
		{"ErrMetadataHugeNumber", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`{"n":[1e400]}`) }, []string{"/metadata"}},
		{"ErrMetadataLoneSurrogate", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`{"s":"\ud800"}`) }, []string{"/metadata"}},
		{"ErrMetadataLoneLowSurrogate", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`{"s":"a\udc00"}`) }, []string{"/metadata"}},
		{"ErrMetadataNotUTF8", func(tok *keyward.Token) { tok.Metadata = json.RawMessage("{\"s\":\"caf\xe9\"}") }, []string{"/metadata"}},
		{"ErrMetadataSurrogateInName", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`{"\ud83d":1}`) }, []string{"/metadata"}},
		{"OKMetadataSurrogatePair", func(tok *keyward.Token) {
			tok.Metadata = json.RawMessage(`{"s":"\ud83d\ude00 \\ud800","t":"\\","u":"\u00e9"}`)
		}, nil},
		{"OKMetadataSameNameApart", func(tok *keyward.Token) {
			tok.Metadata = json.RawMessage(`{"a":{"id":1},"b":{"id":2},"c":[{"id":3},{"id":4}],"id":5,"n":[-1.5e300,0,1e-400]}`)
		}, nil},
		{"ErrMetadataNull", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`null`) }, []string{"/metadata"}},
		{"ErrMetadataString", func(tok *keyward.Token) { tok.Metadata = json.RawMessage(`"a"`) }, []string{"/metadata"}},
		{"ErrMetadataTooLarge", func(tok *keyward.Token) {
			tok.Metadata = json.RawMessage(`{"a":"` + strings.Repeat("x", keyward.MaxMetadataSize) + `"}`)
		}, []string{"/metadata"}},
		{"ErrSeveral", func(tok *keyward.Token) {
			tok.Name = ""
			tok.Scopes = []string{"ok", "*", "Bad"}
			tok.RateLimit = &keyward.RateLimit{}
			tok.Quota.Period = "year"
			tok.Subject = " x"
		}, []string{"/name", "/scopes/1", "/scopes/2", "/rate_limit/limit", "/rate_limit/window", "/quota/period", "/subject"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := validToken()
			tt.change(tok)
			err := tok.Validate(now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want errors at %q", tt.want)
			}
			if got := pointers(t, err); !slices.Equal(got, tt.want) {
				t.Fatalf("Validate pointers = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTokenValidateNameCharacters checks that the name limit counts
// characters, as PRODUCT §5 and docs/api.md say ("≤ 200 characters"), not
// bytes.
func TestTokenValidateNameCharacters(t *testing.T) {
	tests := []struct {
		name string
		tok  string
		ok   bool
	}{
		{"OK200TwoByteChars", strings.Repeat("é", 200), true},
		{"OK200ThreeByteChars", strings.Repeat("€", 200), true},
		{"ErrNameTooLong201Chars", strings.Repeat("é", 201), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&keyward.Token{Name: tt.tok}).Validate(now)
			if tt.ok && err != nil {
				t.Fatalf("Validate(name of %d characters, %d bytes) = %v, want nil", len([]rune(tt.tok)), len(tt.tok), err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("Validate(name of %d characters) = nil, want an error", len([]rune(tt.tok)))
			}
		})
	}
}

func TestTokenState(t *testing.T) {
	past, future := now.Add(-time.Second), now.Add(time.Second)
	at := now
	tests := []struct {
		name string
		tok  keyward.Token
		want string
	}{
		{"Active", keyward.Token{}, keyward.StateActive},
		{"ActiveBeforeExpiry", keyward.Token{ExpiresAt: &future}, keyward.StateActive},
		{"ExpiredAtExpiry", keyward.Token{ExpiresAt: &at}, keyward.StateExpired},
		{"Expired", keyward.Token{ExpiresAt: &past}, keyward.StateExpired},
		{"Suspended", keyward.Token{Suspended: true}, keyward.StateSuspended},
		{"SuspendedWinsOverExpired", keyward.Token{Suspended: true, ExpiresAt: &past}, keyward.StateSuspended},
		{"Revoked", keyward.Token{Revoked: true}, keyward.StateRevoked},
		{"RevokedWinsOverSuspended", keyward.Token{Revoked: true, Suspended: true}, keyward.StateRevoked},
		{"RevokedWinsOverAll", keyward.Token{Revoked: true, Suspended: true, ExpiresAt: &past}, keyward.StateRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.State(now); got != tt.want {
				t.Fatalf("State = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTokenClone(t *testing.T) {
	orig := validToken()
	c := orig.Clone()
	c.Scopes[0] = "changed"
	c.AllowedCIDRs[0] = "changed"
	c.Metadata[2] = 'X'
	c.RateLimit.Limit = 1
	c.Quota.Limit = 1
	want := validToken()
	if orig.Scopes[0] != want.Scopes[0] || orig.AllowedCIDRs[0] != want.AllowedCIDRs[0] ||
		string(orig.Metadata) != string(want.Metadata) || orig.RateLimit.Limit != want.RateLimit.Limit || orig.Quota.Limit != want.Quota.Limit {
		t.Fatalf("changing a clone changed the original: %+v", orig)
	}
}

func TestQuotaPeriod(t *testing.T) {
	plus5 := time.FixedZone("+05", 5*3600)
	tests := []struct {
		name    string
		period  string
		at      time.Time
		wantKey string
		wantEnd time.Time
	}{
		{"Day", keyward.PeriodDay, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "2026-11-23", time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)},
		{"DayStart", keyward.PeriodDay, time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), "2026-11-23", time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)},
		{"DayMonthRollover", keyward.PeriodDay, time.Date(2026, 1, 31, 23, 59, 59, 999999999, time.UTC), "2026-01-31", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)},
		{"DayYearRollover", keyward.PeriodDay, time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), "2026-12-31", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"DayLeap", keyward.PeriodDay, time.Date(2028, 2, 28, 12, 0, 0, 0, time.UTC), "2028-02-28", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"DayInUTCNotLocal", keyward.PeriodDay, time.Date(2026, 1, 1, 2, 0, 0, 0, plus5), "2025-12-31", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"Month", keyward.PeriodMonth, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "2026-11", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"MonthYearRollover", keyward.PeriodMonth, time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), "2026-12", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"MonthFromDay31", keyward.PeriodMonth, time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC), "2026-01", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)},
		{"MonthInUTCNotLocal", keyward.PeriodMonth, time.Date(2026, 1, 1, 2, 0, 0, 0, plus5), "2025-12", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"None", keyward.PeriodNone, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "total", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &keyward.Quota{Limit: 1, Period: tt.period}
			if got := q.PeriodKey(tt.at); got != tt.wantKey {
				t.Errorf("PeriodKey(%v) = %q, want %q", tt.at, got, tt.wantKey)
			}
			got := q.PeriodEnd(tt.at)
			if !got.Equal(tt.wantEnd) || got.IsZero() != tt.wantEnd.IsZero() {
				t.Errorf("PeriodEnd(%v) = %v, want %v", tt.at, got, tt.wantEnd)
			}
			if !tt.wantEnd.IsZero() && got.Location() != time.UTC {
				t.Errorf("PeriodEnd location = %v, want UTC", got.Location())
			}
		})
	}
}

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" for an error
	}{
		{"OKIPv4", "203.0.113.0/24", "203.0.113.0/24"},
		{"OKIPv4Masked", "203.0.113.7/24", "203.0.113.0/24"},
		{"OKIPv4Host", "203.0.113.7/32", "203.0.113.7/32"},
		{"OKIPv4Bare", "203.0.113.7", "203.0.113.7/32"},
		{"OKIPv4All", "0.0.0.0/0", "0.0.0.0/0"},
		{"OKIPv6", "2001:db8::/32", "2001:db8::/32"},
		{"OKIPv6Masked", "2001:db8:1:2::5/32", "2001:db8::/32"},
		{"OKIPv6Bare", "2001:db8::1", "2001:db8::1/128"},
		{"OKIPv4MappedBareIsUnmapped", "::ffff:203.0.113.7", "203.0.113.7/32"},
		{"ErrEmpty", "", ""},
		{"ErrGarbage", "not-an-ip", ""},
		{"ErrIPv4BitsTooMany", "10.0.0.0/33", ""},
		{"ErrIPv6BitsTooMany", "2001:db8::/129", ""},
		{"ErrNoBits", "10.0.0.0/", ""},
		{"ErrIPv4Octet", "256.0.0.1", ""},
		{"ErrIPv4MappedPrefix", "::ffff:203.0.113.0/120", ""},
		{"ErrZoneBare", "fe80::1%eth0", ""},
		{"ErrZonePrefix", "fe80::1%eth0/64", ""},
		{"ErrSpace", " 10.0.0.0/8", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := keyward.ParseCIDR(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseCIDR(%q) = %v, want an error", tt.in, p)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCIDR(%q) = %v", tt.in, err)
			}
			if p.String() != tt.want {
				t.Fatalf("ParseCIDR(%q) = %v, want %s", tt.in, p, tt.want)
			}
		})
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		ok     bool
	}{
		{"OK", "kw", true},
		{"OKWord", "acme", true},
		{"OKDigits", "a1", true},
		{"OKUnderscore", "my_co", true},
		{"OKTrailingUnderscore", "ab_", true},
		{"OK16", strings.Repeat("a", 16), true},
		{"ErrEmpty", "", false},
		{"ErrOneChar", "k", false},
		{"Err17", strings.Repeat("a", 17), false},
		{"ErrLeadingDigit", "1a", false},
		{"ErrLeadingUnderscore", "_a", false},
		{"ErrUppercase", "Kw", false},
		{"ErrUppercaseLater", "kW", false},
		{"ErrDash", "k-w", false},
		{"ErrSpace", "k w", false},
		{"ErrNonASCII", "kö", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := keyward.ValidatePrefix(tt.prefix)
			if tt.ok && err != nil {
				t.Fatalf("ValidatePrefix(%q) = %v, want nil", tt.prefix, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("ValidatePrefix(%q) = nil, want an error", tt.prefix)
			}
		})
	}
}

func TestWorkspaceValidate(t *testing.T) {
	tests := []struct {
		name string
		ws   keyward.Workspace
		want []string
	}{
		{"OK", keyward.Workspace{Name: "acme", TokenPrefix: "acme"}, nil},
		{"ErrNameRequired", keyward.Workspace{TokenPrefix: "kw"}, []string{"/name"}},
		{"ErrNameTooLong", keyward.Workspace{Name: strings.Repeat("n", 201), TokenPrefix: "kw"}, []string{"/name"}},
		{"OKName200MultibyteChars", keyward.Workspace{Name: strings.Repeat("é", 200), TokenPrefix: "kw"}, nil},
		{"ErrNameZeroWidth", keyward.Workspace{Name: "acme\u200b", TokenPrefix: "kw"}, []string{"/name"}},
		{"ErrNameBidi", keyward.Workspace{Name: "a\u202eb", TokenPrefix: "kw"}, []string{"/name"}},
		{"ErrNameNEL", keyward.Workspace{Name: "a\u0085b", TokenPrefix: "kw"}, []string{"/name"}},
		{"ErrName201MultibyteChars", keyward.Workspace{Name: strings.Repeat("é", 201), TokenPrefix: "kw"}, []string{"/name"}},
		{"ErrPrefix", keyward.Workspace{Name: "acme", TokenPrefix: "A"}, []string{"/token_prefix"}},
		{"ErrBoth", keyward.Workspace{Name: " ", TokenPrefix: ""}, []string{"/name", "/token_prefix"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ws.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if got := pointers(t, err); !slices.Equal(got, tt.want) {
				t.Fatalf("Validate pointers = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateSubject(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		ok      bool
	}{
		{"OKEmpty", "", true},
		{"OK", "customer-42", true},
		{"OKInnerSpace", "a b", true},
		{"OKPunctuation", "user@example.com/~!", true},
		{"OK200", strings.Repeat("s", 200), true},
		{"ErrTooLong", strings.Repeat("s", 201), false},
		{"ErrLeadingSpace", " a", false},
		{"ErrTrailingSpace", "a ", false},
		{"ErrOnlySpace", " ", false},
		{"ErrTab", "a\tb", false},
		{"ErrNewline", "a\nb", false},
		{"ErrNUL", "a\x00", false},
		{"ErrDEL", "a\x7f", false},
		{"ErrNonASCII", "müller", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := keyward.ValidateSubject(tt.subject)
			if tt.ok && err != nil {
				t.Fatalf("ValidateSubject(%q) = %v, want nil", tt.subject, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("ValidateSubject(%q) = nil, want an error", tt.subject)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	t.Run("OKMarshal", func(t *testing.T) {
		for d, want := range map[time.Duration]string{
			time.Minute:                 `"1m"`,
			24 * time.Hour:              `"24h"`,
			90 * time.Minute:            `"1h30m"`,
			time.Hour + time.Second:     `"1h0m1s"`,
			1500 * time.Millisecond:     `"1.5s"`,
			time.Millisecond:            `"1ms"`,
			0:                           `"0s"`,
			744*time.Hour + time.Second: `"744h0m1s"`,
		} {
			b, err := json.Marshal(keyward.Duration(d))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != want {
				t.Errorf("Marshal(%v) = %s, want %s", d, b, want)
			}
		}
	})
	t.Run("OKRoundTrip", func(t *testing.T) {
		in := keyward.RateLimit{Limit: 7, Window: keyward.Duration(90 * time.Second)}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != `{"limit":7,"window":"1m30s"}` {
			t.Fatalf("Marshal = %s", b)
		}
		var out keyward.RateLimit
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		if out != in {
			t.Fatalf("round trip = %+v, want %+v", out, in)
		}
	})
	tests := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"OKMinute", `"1m"`, time.Minute, true},
		{"OKHours", `"24h"`, 24 * time.Hour, true},
		{"OKCompound", `"1h30m"`, 90 * time.Minute, true},
		{"OKFraction", `"1.5s"`, 1500 * time.Millisecond, true},
		{"ErrNumber", `60`, 0, false},
		{"ErrBool", `true`, 0, false},
		{"ErrEmptyString", `""`, 0, false},
		{"ErrNoUnit", `"60"`, 0, false},
		{"ErrUnknownUnit", `"1x"`, 0, false},
		{"ErrDays", `"1d"`, 0, false},
		{"ErrObject", `{}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := keyward.Duration(42)
			err := json.Unmarshal([]byte(tt.in), &d)
			if !tt.ok {
				if err == nil {
					t.Fatalf("Unmarshal(%s) = %v, want an error", tt.in, time.Duration(d))
				}
				if d != 42 {
					t.Fatalf("Unmarshal(%s) failed but changed the value to %v", tt.in, time.Duration(d))
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal(%s) = %v", tt.in, err)
			}
			if time.Duration(d) != tt.want {
				t.Fatalf("Unmarshal(%s) = %v, want %v", tt.in, time.Duration(d), tt.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	inv := keyward.Invalid(keyward.FieldError{Pointer: "/name", Detail: "name is required"})
	wrapped := fmt.Errorf("context: %w", keyward.Errorf(keyward.ENOTFOUND, "token %s not found", "tok_x"))
	tests := []struct {
		name    string
		err     error
		code    string
		message string
	}{
		{"Nil", nil, "", "internal error"},
		{"InvalidOneField", inv, keyward.EINVALID, "name is required"},
		{"InvalidManyFields", keyward.Invalid(keyward.FieldError{Pointer: "/a", Detail: "x"}, keyward.FieldError{Pointer: "/b", Detail: "y"}), keyward.EINVALID, "the request is invalid"},
		{"Wrapped", wrapped, keyward.ENOTFOUND, "token tok_x not found"},
		{"Internal", errors.New("disk on fire"), keyward.EINTERNAL, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keyward.ErrorCode(tt.err); got != tt.code {
				t.Errorf("ErrorCode = %q, want %q", got, tt.code)
			}
			if tt.err == nil {
				return
			}
			if got := keyward.ErrorMessage(tt.err); got != tt.message {
				t.Errorf("ErrorMessage = %q, want %q", got, tt.message)
			}
		})
	}
}

func TestCIDRsWithin(t *testing.T) {
	for _, tc := range []struct {
		inner, outer []string
		want         bool
	}{
		{[]string{"10.1.0.0/16", "10.2.3.4"}, []string{"10.0.0.0/8"}, true},
		{[]string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}, true},
		{[]string{"10.0.0.0/7"}, []string{"10.0.0.0/8"}, false},
		{[]string{"10.0.0.0/8", "192.0.2.1"}, []string{"10.0.0.0/8"}, false},
		{[]string{"192.0.2.0/25"}, []string{"10.0.0.0/8", "192.0.2.0/24"}, true},
		{[]string{"2001:db8::1"}, []string{"0.0.0.0/0"}, false},
		{[]string{"nonsense"}, []string{"0.0.0.0/0"}, false},
		{nil, []string{"10.0.0.0/8"}, true},
	} {
		if got := keyward.CIDRsWithin(tc.inner, tc.outer); got != tc.want {
			t.Errorf("CIDRsWithin(%v, %v) = %v, want %v", tc.inner, tc.outer, got, tc.want)
		}
	}
}
