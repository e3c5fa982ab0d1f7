package api

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/verify"
)

// The reference encoding of a verify response, through encoding/json:
// appendVerify must write the same bytes.

type limitView struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	Reset     int64 `json:"reset"`
}

type verifyResponse struct {
	Valid     bool            `json:"valid"`
	Code      string          `json:"code"`
	TokenID   string          `json:"token_id,omitempty"`
	Name      *string         `json:"name,omitempty"`
	Subject   *string         `json:"subject,omitempty"`
	Scopes    *[]string       `json:"scopes,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	ExpiresAt **time.Time     `json:"expires_at,omitempty"`
	RateLimit *limitView      `json:"rate_limit,omitempty"`
	Quota     *limitView      `json:"quota,omitempty"`
}

func verifyView(res verify.Result) verifyResponse {
	v := verifyResponse{Valid: res.Outcome == keyward.Valid, Code: res.Outcome.String()}
	if !res.Outcome.Identified() || res.Token == nil {
		return v
	}
	t := res.Token
	v.TokenID, v.Name, v.Subject = t.ID, &t.Name, &t.Subject
	scopes := t.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	v.Scopes = &scopes
	v.Metadata = t.Metadata
	if v.Metadata == nil {
		v.Metadata = json.RawMessage("null")
	}
	var exp *time.Time
	if e, ok := res.Expiry(); ok {
		exp = &e
	}
	v.ExpiresAt = &exp
	if res.Rate.Set {
		v.RateLimit = &limitView{Limit: res.Rate.Limit, Remaining: res.Rate.Remaining, Reset: verify.Seconds(res.Rate.Reset)}
	}
	if res.Quota.Set {
		v.Quota = &limitView{Limit: res.Quota.Limit, Remaining: res.Quota.Remaining, Reset: verify.Seconds(res.Quota.Reset)}
	}
	return v
}

func TestAppendVerify(t *testing.T) {
	exp := time.Date(2026, 12, 24, 10, 30, 0, 123456789, time.UTC)
	tok := &keyward.Token{
		ID: "tok_1", Name: "a \"quoted\" <name> & \u2028 \x01 é \xff", Subject: "sub/ject",
		Scopes:    []string{"orders:read", "billing:*"},
		Metadata:  json.RawMessage(`{ "team" : "pay<ments>", "n": [1, 2.5, {"x": "\u2029"}], "e": "a\"b" }`),
		ExpiresAt: &exp,
	}
	bare := &keyward.Token{ID: "tok_2", Name: "bare"}
	for name, res := range map[string]verify.Result{
		"Malformed":        {Outcome: keyward.Malformed},
		"NotFound":         {Outcome: keyward.NotFound},
		"ValidFull":        {Outcome: keyward.Valid, Token: tok, Rate: verify.Limit{Set: true, Limit: 10, Remaining: 3, Reset: 1500 * time.Millisecond}, Quota: verify.Limit{Set: true, Limit: 100, Remaining: 0, Reset: 36 * time.Hour}},
		"RevokedBare":      {Outcome: keyward.Revoked, Token: bare},
		"RateLimitedRate":  {Outcome: keyward.RateLimited, Token: bare, Rate: verify.Limit{Set: true, Limit: 1}},
		"InsufficientFull": {Outcome: keyward.InsufficientScope, Token: tok},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(verifyView(res))
			if err != nil {
				t.Fatal(err)
			}
			if got := appendVerify(nil, res); string(got) != string(want) {
				t.Fatalf("appendVerify:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\<>&", "\u2028\u2029", "\x00\x1f\x7f", "é\xff\xfe", "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

// FuzzFastVerifyBody holds the fast verify decoder to the general one:
// whatever the fast path accepts, the general decoder accepts too, with the
// same result.
func FuzzFastVerifyBody(f *testing.F) {
	for _, s := range []string{
		`{"token":"kw_x"}`,
		`{"token":"kw_x","scopes":["a:b","c"],"ip":"127.0.0.1"}`,
		` { "scopes" : [ ] , "token" : "" } `,
		`{"token":"a","token":"b"}`,
		`{"Token":"a"}`,
		`{"token":"a"}}`,
		`{"token":"a","ip":"::1%eth0"}`,
		`{"token":"a","ip":""}`,
		`{"token":"a","ip":" "}`,
		`{"token":"a","ip":null}`,
		`{"token":"a","ip":1}`,
		`{"token":"a","ip":"1.2.3.4","ip":""}`,
		`{"token":"a","ip":"::ffff:1.2.3.4"}`,
		`{"token":"a\u0041"}`,
		`{"token":null}`,
		`{"token":"a","scopes":["BAD"]}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := fastVerifyBody(body)
		if !ok {
			return
		}
		slow, err := decodeVerify(body)
		if err != nil {
			t.Fatalf("fast path accepted %q, the general decoder refused it: %v", body, err)
		}
		if fast.Token != slow.Token || fast.IP != slow.IP || len(fast.Scopes) != len(slow.Scopes) || (len(fast.Scopes) > 0 && !reflect.DeepEqual(fast.Scopes, slow.Scopes)) {
			t.Fatalf("%q: fast %+v, general %+v", body, fast, slow)
		}
	})
}

// TestVerifyIP reads each form of "ip" through both decoders: "" and null
// are no ip, and the fast path takes "" itself rather than leave the
// common body of a client that always writes the field to the slow one.
func TestVerifyIP(t *testing.T) {
	for _, tt := range []struct {
		ip   string // the JSON value of "ip"
		want string // the address, "" for none, "error" for a 400
		fast bool   // the fast path takes it
	}{
		{`""`, "", true},
		{`null`, "", false},
		{`"203.0.113.7"`, "203.0.113.7", true},
		{`"2001:db8::1"`, "2001:db8::1", true},
		{`"\u0032\u0030\u0033.0.113.7"`, "203.0.113.7", false},
		{`" "`, "error", false},
		{`" 203.0.113.7"`, "error", false},
		{`"203.0.113.7 "`, "error", false},
		{`"\u0000"`, "error", false},
		{`"fe80::1%eth0"`, "error", false},
		{`"10.0.0.0/8"`, "error", false},
		{`0`, "error", false},
		{`false`, "error", false},
		{`[]`, "error", false},
		{`{}`, "error", false},
	} {
		t.Run(tt.ip, func(t *testing.T) {
			body := []byte(`{"token":"kw_x","ip":` + tt.ip + `}`)
			if _, ok := fastVerifyBody(body); ok != tt.fast {
				t.Errorf("fast path took it: %v, want %v", ok, tt.fast)
			}
			for name, decode := range map[string]func([]byte) (verify.Request, error){"parseVerify": parseVerify, "decodeVerify": decodeVerify} {
				req, err := decode(body)
				switch {
				case tt.want == "error":
					if err == nil || fieldPointer(err) != "/ip" {
						t.Errorf("%s: ip %v, err %v; want an error at /ip", name, req.IP, err)
					}
				case err != nil:
					t.Errorf("%s: %v", name, err)
				case tt.want == "" && req.IP.IsValid():
					t.Errorf("%s: ip %v, want none", name, req.IP)
				case tt.want != "" && req.IP != netip.MustParseAddr(tt.want):
					t.Errorf("%s: ip %v, want %s", name, req.IP, tt.want)
				}
			}
		})
	}
}

// fieldPointer returns the pointer of err's only field error, or "".
func fieldPointer(err error) string {
	var e *keyward.Error
	if !errors.As(err, &e) || len(e.Fields) != 1 {
		return ""
	}
	return e.Fields[0].Pointer
}
