package dashboard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
)

func TestRecommendations(t *testing.T) {
	now := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { v := now.Add(-d); return &v }
	later := now.Add(30 * day)
	priv := map[string]bool{"billing:write": true, "payouts:*": true}
	base := func(mod func(*keyward.Token)) *keyward.Token {
		t := &keyward.Token{Scopes: []string{"orders:read"}, ExpiresAt: &later, CreatedAt: now.Add(-day), LastUsedAt: ago(time.Hour)}
		mod(t)
		return t
	}
	tests := []struct {
		name string
		tok  *keyward.Token
		want []string // substrings, in order
	}{
		{"OKNone", base(func(*keyward.Token) {}), nil},
		{"NoExpiry", base(func(t *keyward.Token) { t.ExpiresAt = nil }), []string{"never expires"}},
		{"PrivilegedWithoutAllowlist", base(func(t *keyward.Token) { t.Scopes = []string{"billing:write"} }), []string{"privileged scope (billing:write)"}},
		{"WildcardGrantsPrivileged", base(func(t *keyward.Token) { t.Scopes = []string{"billing:*"} }), []string{"privileged scope (billing:*)"}},
		{"UnderPrivilegedWildcard", base(func(t *keyward.Token) { t.Scopes = []string{"payouts:read"} }), []string{"privileged scope (payouts:read)"}},
		{"OKOtherWildcard", base(func(t *keyward.Token) { t.Scopes = []string{"orders:*"} }), nil},
		{"ManagementWithoutAllowlist", base(func(t *keyward.Token) { t.Scopes = []string{keyward.ScopeAdmin} }), []string{"privileged scope (keyward:admin)"}},
		{"OKPrivilegedWithAllowlist", base(func(t *keyward.Token) { t.Scopes, t.AllowedCIDRs = []string{"billing:write"}, []string{"10.0.0.0/8"} }), nil},
		{"UnusedFor90Days", base(func(t *keyward.Token) { t.CreatedAt, t.LastUsedAt = now.Add(-200*day), ago(91*day) }), []string{"not been used for 90 days"}},
		{"NeverUsedIn90Days", base(func(t *keyward.Token) { t.CreatedAt, t.LastUsedAt = now.Add(-91*day), nil }), []string{"not been used for 90 days"}},
		{"OKNewAndUnused", base(func(t *keyward.Token) { t.LastUsedAt = nil }), nil},
		{"OlderThanAYear", base(func(t *keyward.Token) { t.CreatedAt = now.Add(-366 * day) }), []string{"more than 365 days old"}},
		{"OKRotatedRecently", base(func(t *keyward.Token) { t.CreatedAt, t.RotatedAt = now.Add(-400*day), ago(day) }), nil},
		{"OKRevoked", base(func(t *keyward.Token) { t.ExpiresAt, t.Revoked = nil, true }), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := recommendations(tt.tok, priv, now)
			if len(got) != len(tt.want) {
				t.Fatalf("recommendations = %q, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("recommendation %d = %q, want %q", i, got[i], w)
				}
			}
		})
	}
}

func TestJSONText(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"\u003cb\u003e \u0026"}`: `{"a":"<b> &"}`,
		`{"a":"\\u003c"}`:              `{"a":"\\u003c"}`, // an escaped backslash, then text
		`{"a":"\"\u00e9\n"}`:           `{"a":"\"\u00e9\n"}`,
		`{"a":"x\`:                     `{"a":"x\`,
	} {
		if got := jsonText([]byte(in)); got != want {
			t.Errorf("jsonText(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestWaitText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "1 second", 1500 * time.Millisecond: "2 seconds", 59 * time.Second: "59 seconds",
		time.Minute: "60 seconds", 64 * time.Second: "64 seconds", 2 * time.Minute: "120 seconds",
		121 * time.Second: "3 minutes", 15 * time.Minute: "15 minutes",
	} {
		if got := waitText(d); got != want {
			t.Errorf("waitText(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestSuspendReasonShown: a suspended token's page gives the reason, as a
// revoked one's does.
func TestSuspendReasonShown(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	tok, _, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Token{Name: "held"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SuspendToken(context.Background(), manage.SystemCaller(e.ws.ID), tok.ID, "investigating"); err != nil {
		t.Fatal(err)
	}
	_, page := b.get("/tokens/" + tok.ID)
	wantText(t, page, "suspended</span> (investigating)")
}
