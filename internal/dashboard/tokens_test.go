package dashboard

import (
	"context"
	"fmt"
	"html"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
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

// TestTokenListPages pages through the token list, newest first, both ways.
func TestTokenListPages(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	var ids []string
	for i := range 2 * pageSize {
		tok, _, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Token{Name: fmt.Sprintf("t%03d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tok.ID)
	}
	slices.Sort(ids)
	slices.Reverse(ids) // newest first, as listed
	first, second := ids[:pageSize], ids[pageSize:]

	rowRE := regexp.MustCompile(`<td[^>]*><a href="/tokens/(tok_[0-9a-z]+)">`)
	// list gets a page and returns its tokens and its links by id.
	list := func(path string) (rows []string, links map[string]string) {
		t.Helper()
		status, page := b.get(path)
		if status != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200", path, status)
		}
		for _, m := range rowRE.FindAllStringSubmatch(page, -1) {
			rows = append(rows, m[1])
		}
		links = map[string]string{}
		for _, m := range regexp.MustCompile(`<a href="([^"]*)"[^>]* id="(newer|older|first)">`).FindAllStringSubmatch(page, -1) {
			links[m[2]] = html.UnescapeString(m[1])
		}
		return rows, links
	}
	check := func(name string, rows []string, links map[string]string, want []string, wantLinks ...string) {
		t.Helper()
		if !slices.Equal(rows, want) {
			t.Errorf("%s: rows = %v, want %v", name, rows, want)
		}
		if got := slices.Sorted(maps.Keys(links)); !slices.Equal(got, wantLinks) {
			t.Errorf("%s: links = %v, want %v", name, links, wantLinks)
		}
	}

	rows, links := list("/tokens")
	check("first page", rows, links, first, "older")
	rows, links = list(links["older"])
	check("second page", rows, links, second, "first", "newer") // no link to an empty third page
	rows, links = list(links["newer"])
	check("back to the first", rows, links, first, "older")

	// A page in the middle: newer and older both ways.
	rows, links = list("/tokens?before=" + ids[9])
	check("from the tenth", rows, links, ids[10:10+pageSize], "first", "newer", "older")
	rows, links = list(links["newer"])
	check("newer than the eleventh", rows, links, ids[:10], "older")

	// Past the end, as when the tokens beyond the cursor went.
	rows, links = list("/tokens?before=" + ids[len(ids)-1])
	check("past the end", rows, links, nil, "first")
	if links["first"] != "/tokens?q=&state=" {
		t.Errorf("first page link = %q", links["first"])
	}

	// Cursors beyond either end, or garbage: no link to an empty page.
	rows, links = list("/tokens?before=zzzz")
	check("before garbage past the newest", rows, links, first, "older")
	rows, links = list("/tokens?after=aaaa")
	check("after garbage before the oldest", rows, links, ids[pageSize:], "first", "newer")
	rows, links = list("/tokens?after=" + ids[0])
	check("after the newest", rows, links, nil, "first")

	// The filters stay with the links.
	rows, links = list("/tokens?q=t0&state=active")
	if len(rows) != pageSize || !strings.Contains(links["older"], "q=t0&state=active") {
		t.Errorf("filtered: %d rows, older link %q", len(rows), links["older"])
	}
}

// busyAudit fails every audit read as a store held by another's lock.
type busyAudit struct{ keyward.Store }

func (busyAudit) FindAuditEvents(context.Context, keyward.AuditFilter) ([]*keyward.AuditEvent, error) {
	return nil, fmt.Errorf("sqlite: find audit events: busy: %w", keyward.Errorf(keyward.EUNAVAILABLE, "the store is busy; try again shortly"))
}

// TestStoreBusyLogged: a page the store could not serve in time answers
// 503, and the log says why.
func TestStoreBusyLogged(t *testing.T) {
	e := newEnvWith(t, "", func(s keyward.Store) keyward.Store { return busyAudit{s} })
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.get("/signin")
	b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {goodPassword}})
	status, body := b.get("/audit")
	wantStatus(t, status, http.StatusServiceUnavailable, body)
	if l := e.log.String(); !strings.Contains(l, "store unavailable") || !strings.Contains(l, "find audit events: busy") {
		t.Errorf("the log does not say why:\n%s", l)
	}
}

// TestAuditPages pages through the audit log: an older page while there
// is one, and the newest from a page past it.
func TestAuditPages(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.signIn("ann@example.com")
	for i := range auditPage + 20 {
		if _, _, err := e.svc.CreateToken(context.Background(), manage.SystemCaller(e.ws.ID), &keyward.Token{Name: fmt.Sprintf("t%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	linkRE := regexp.MustCompile(`<a href="([^"]*)"[^>]* id="(older|first)">`)
	page := func(path string) (rows int, links map[string]string) {
		t.Helper()
		status, body := b.get(path)
		wantStatus(t, status, http.StatusOK, body)
		links = map[string]string{}
		for _, m := range linkRE.FindAllStringSubmatch(body, -1) {
			links[m[2]] = html.UnescapeString(m[1])
		}
		return strings.Count(body, "<td>token.create</td>"), links
	}
	rows, links := page("/audit?action=token.create")
	if rows != auditPage || links["older"] == "" || links["first"] != "" {
		t.Fatalf("first page: %d events, links %v", rows, links)
	}
	rows, links = page(links["older"])
	if rows != 20 || links["older"] != "" || links["first"] == "" || !strings.Contains(links["first"], "action=token.create") {
		t.Fatalf("second page: %d events, links %v", rows, links)
	}
}

// TestTokenMadeByToken: the page of a token a management token made, and
// the token list, name and link that token, not its bare id.
func TestTokenMadeByToken(t *testing.T) {
	e := newEnv(t)
	e.user("owner@example.com", keyward.RoleOwner)
	ctx := context.Background()
	mgmt, _, err := e.svc.CreateToken(ctx, manage.SystemCaller(e.ws.ID), &keyward.Token{Name: "ci <deploy>", Scopes: []string{keyward.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	minted, _, err := e.svc.CreateToken(ctx, manage.TokenCaller(mgmt), &keyward.Token{Name: "nightly", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("owner@example.com")
	status, page := b.get("/tokens/" + minted.ID)
	wantStatus(t, status, http.StatusOK, page)
	// Escaped: the name is the token maker's to choose.
	if want := `by the token <a href="/tokens/` + mgmt.ID + `" id="maker-link">ci &lt;deploy&gt;</a>`; !strings.Contains(page, want) {
		t.Errorf("page lacks %q:\n%s", want, page)
	}
	// So does the list, which reads each maker once.
	status, page = b.get("/tokens")
	wantStatus(t, status, http.StatusOK, page)
	if want := `<td>token <a href="/tokens/` + mgmt.ID + `">ci &lt;deploy&gt;</a></td>`; !strings.Contains(page, want) {
		t.Errorf("list lacks %q:\n%s", want, page)
	}
	// A token made by the system (init) names no token.
	status, page = b.get("/tokens/" + mgmt.ID)
	wantStatus(t, status, http.StatusOK, page)
	if strings.Contains(page, `id="maker-link"`) {
		t.Errorf("a token the system made links a maker:\n%s", page)
	}
}
