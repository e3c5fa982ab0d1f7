package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// listIDs pages through a list endpoint with the given query (without
// limit and cursor) and page size, and returns every item's id.
func (s *stack) listIDs(path string, limit int) []string {
	s.tb.Helper()
	var ids []string
	cursor := ""
	for range 100 {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		q := fmt.Sprintf("%s%slimit=%d", path, sep, limit)
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		r := s.do("GET", q, s.root, nil)
		wantStatus(s.tb, r, http.StatusOK)
		var l struct {
			Items      []struct{ ID string }
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(r.Body, &l); err != nil {
			s.tb.Fatal(err)
		}
		if len(l.Items) > limit {
			s.tb.Fatalf("page of %d items, limit %d", len(l.Items), limit)
		}
		for _, it := range l.Items {
			ids = append(ids, it.ID)
		}
		if l.NextCursor == "" {
			return ids
		}
		cursor = l.NextCursor
	}
	s.tb.Fatal("paging does not end")
	return nil
}

func TestReportDormant(t *testing.T) {
	s := newStack(t)
	s.tick()
	unused, _ := s.newToken("never used")
	s.tick()
	used, usedText := s.newToken("used long ago")
	recent, recentText := s.newToken("used just now")
	expiring := s.create(map[string]any{"name": "expires", "expires_in": "24h"})["id"].(string)
	revoked, _ := s.newToken("revoked")
	wantStatus(t, s.do("POST", "/v1/tokens/"+revoked+"/revoke", s.root, nil), http.StatusOK)

	s.wantCode(usedText, "VALID")
	s.clock.Advance(91 * 24 * time.Hour)
	s.wantCode(recentText, "VALID")

	// The root token authenticates every call, so this node has seen it
	// used just now: it is never dormant here.
	want := []string{unused, used}
	for _, tc := range []struct {
		name, query string
		limit       int
		want        []string
	}{
		{"OKDefaultDays", "/v1/reports/dormant", 50, want},
		{"OKDays90", "/v1/reports/dormant?days=90", 50, want},
		{"OKEmptyDays", "/v1/reports/dormant?days=", 50, want},
		{"OKPaged", "/v1/reports/dormant?days=90", 1, want},
		{"OKDays92", "/v1/reports/dormant?days=92", 50, []string{unused}},
		{"OKDays3650", "/v1/reports/dormant?days=3650", 50, []string{unused}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.listIDs(tc.query, tc.limit); !slices.Equal(got, tc.want) {
				t.Errorf("dormant = %q, want %q (recent %s, expired %s, revoked %s)", got, tc.want, recent, expiring, revoked)
			}
		})
	}

	t.Run("OKTokenObjects", func(t *testing.T) {
		r := s.do("GET", "/v1/reports/dormant", s.root, nil)
		wantStatus(t, r, http.StatusOK)
		var l struct{ Items []map[string]any }
		if err := json.Unmarshal(r.Body, &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Items) != 2 || l.Items[0]["name"] != "never used" || l.Items[0]["state"] != "active" || l.Items[0]["last_used_at"] != nil {
			t.Fatalf("items = %v", l.Items)
		}
		if l.Items[1]["last_used_at"] == nil {
			t.Fatalf("the token used long ago shows no last use: %v", l.Items[1])
		}
	})

	t.Run("OKAfterFlush", func(t *testing.T) {
		// Once flushed, the store alone knows the recent use.
		if err := s.engine.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := s.listIDs("/v1/reports/dormant", 50); !slices.Equal(got, want) {
			t.Errorf("dormant after flush = %q, want %q", got, want)
		}
	})

	for _, q := range []string{"days=0", "days=abc", "days=3651", "days=-1", "days=1.5"} {
		t.Run("ErrInvalid "+q, func(t *testing.T) {
			wantInvalid(t, s.do("GET", "/v1/reports/dormant?"+q, s.root, nil), "/days")
		})
	}
	t.Run("ErrInvalidLimit", func(t *testing.T) {
		wantInvalid(t, s.do("GET", "/v1/reports/dormant?limit=0", s.root, nil), "/limit")
	})
	t.Run("ErrForbidden", func(t *testing.T) {
		_, verifier := s.newToken("verifier", keyward.ScopeVerify)
		wantProblem(t, s.do("GET", "/v1/reports/dormant", verifier, nil), http.StatusForbidden, "forbidden")
	})
}

// inventoryColumns is the header of the CSV inventory.
var inventoryColumns = []string{"id", "name", "state", "subject", "scopes", "created_at", "created_by", "age_days", "expires_at", "last_used_at", "last_used_ip"}

func TestReportTokens(t *testing.T) {
	s := newStack(t)
	tick := s.tick
	tick()
	quoted := s.create(map[string]any{"name": `Acme, "prod" key`, "scopes": []string{"orders:read", "orders:write"}, "subject": "cust_42"})["id"].(string)
	tick()
	formula := s.create(map[string]any{"name": "=HYPERLINK(\"http://evil\")", "subject": "@cmd"})["id"].(string)
	tick()
	plus, plusText := s.newToken("+1 token")
	tick()
	minus, _ := s.newToken("-minus")
	wantStatus(t, s.do("POST", "/v1/tokens/"+minus+"/revoke", s.root, nil), http.StatusOK)
	r := s.do("POST", "/v1/verify", s.root, map[string]any{"token": plusText, "ip": "203.0.113.7"})
	if wantStatus(t, r, http.StatusOK); r.object(t)["code"] != "VALID" {
		t.Fatalf("verify: %s", r.Body)
	}
	s.clock.Advance(3*24*time.Hour + time.Hour)
	all := []string{s.rootID, quoted, formula, plus, minus}

	t.Run("OKJSON", func(t *testing.T) {
		for _, q := range []string{"", "?format=json"} {
			r := s.do("GET", "/v1/reports/tokens"+q, s.root, nil)
			wantStatus(t, r, http.StatusOK)
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type = %q", ct)
			}
			var l struct{ Items []map[string]any }
			if err := json.Unmarshal(r.Body, &l); err != nil {
				t.Fatal(err)
			}
			if len(l.Items) != len(all) {
				t.Fatalf("%d items, want %d: %s", len(l.Items), len(all), r.Body)
			}
			for i, it := range l.Items {
				var keys []string
				for k := range it {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				want := slices.Sorted(slices.Values(inventoryColumns))
				if !slices.Equal(keys, want) {
					t.Fatalf("item keys = %q, want %q", keys, want)
				}
				if it["id"] != all[i] {
					t.Fatalf("item %d id = %v, want %s", i, it["id"], all[i])
				}
				if it["age_days"] != float64(3) {
					t.Fatalf("age_days = %v, want 3", it["age_days"])
				}
			}
			q := l.Items[1]
			if q["name"] != `Acme, "prod" key` || q["subject"] != "cust_42" || q["state"] != "active" ||
				fmt.Sprint(q["scopes"]) != "[orders:read orders:write]" || q["created_by"] != s.rootID ||
				q["expires_at"] != nil || q["last_used_at"] != nil || q["last_used_ip"] != "" {
				t.Fatalf("item = %v", q)
			}
			if l.Items[3]["last_used_at"] == nil || l.Items[3]["last_used_ip"] != "203.0.113.7" {
				t.Fatalf("used token = %v", l.Items[3])
			}
			if l.Items[4]["state"] != "revoked" {
				t.Fatalf("revoked token = %v", l.Items[4])
			}
		}
	})

	t.Run("OKJSONPaged", func(t *testing.T) {
		if got := s.listIDs("/v1/reports/tokens", 2); !slices.Equal(got, all) {
			t.Errorf("paged inventory = %q, want %q", got, all)
		}
	})

	t.Run("OKCSV", func(t *testing.T) {
		r := s.do("GET", "/v1/reports/tokens?format=csv", s.root, nil)
		wantStatus(t, r, http.StatusOK)
		if ct := r.Header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
			t.Errorf("Content-Type = %q", ct)
		}
		if cd := r.Header.Get("Content-Disposition"); cd != `attachment; filename="keyward-tokens.csv"` {
			t.Errorf("Content-Disposition = %q", cd)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q", cc)
		}
		if !bytes.Contains(r.Body, []byte(`,"Acme, ""prod"" key",active,cust_42,orders:read orders:write,`)) {
			t.Errorf("CSV does not quote the name as RFC 4180 asks:\n%s", r.Body)
		}
		rows, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll()
		if err != nil {
			t.Fatalf("CSV does not parse: %v\n%s", err, r.Body)
		}
		if !slices.Equal(rows[0], inventoryColumns) {
			t.Fatalf("header = %q, want %q", rows[0], inventoryColumns)
		}
		if len(rows) != 1+len(all) {
			t.Fatalf("%d rows, want a header and %d tokens:\n%s", len(rows), len(all), r.Body)
		}
		byID := map[string][]string{}
		for i, row := range rows[1:] {
			if row[0] != all[i] {
				t.Fatalf("row %d id = %s, want %s", i, row[0], all[i])
			}
			byID[row[0]] = row
		}
		if got := byID[quoted]; got[1] != `Acme, "prod" key` || got[4] != "orders:read orders:write" || got[7] != "3" || got[8] != "" || got[9] != "" {
			t.Errorf("row = %q", got)
		}
		if _, err := time.Parse(time.RFC3339Nano, byID[quoted][5]); err != nil {
			t.Errorf("created_at %q: %v", byID[quoted][5], err)
		}
		if got := byID[formula]; got[1] != `'=HYPERLINK("http://evil")` || got[3] != "'@cmd" {
			t.Errorf("formula cells not guarded: %q", got)
		}
		if got := byID[plus]; got[1] != "'+1 token" || got[9] == "" || got[10] != "203.0.113.7" {
			t.Errorf("row = %q", got)
		}
		if got := byID[minus]; got[1] != "'-minus" || got[2] != "revoked" {
			t.Errorf("row = %q", got)
		}
	})

	t.Run("OKCSVManyPages", func(t *testing.T) {
		s := newStack(t)
		loader, ok := any(s.db).(keyward.BulkLoader)
		if !ok {
			t.Skip("store is not a BulkLoader")
		}
		const n = 1203
		now := s.clock.Now()
		tokens := make([]*keyward.Token, n)
		secrets := make([]*keyward.Secret, n)
		for i := range tokens {
			tokens[i] = &keyward.Token{
				ID: keyward.NewID(keyward.PrefixToken, now), WorkspaceID: s.ws.ID, Name: fmt.Sprintf("bulk %d", i),
				Hint: "kw_…abcd", CreatedBy: keyward.ActorSystem, CreatedAt: now, UpdatedAt: now,
			}
			secrets[i] = &keyward.Secret{Digest: []byte(fmt.Sprintf("digest-%032d", i)), KeyID: "k"}
		}
		if err := loader.InsertTokens(context.Background(), tokens, secrets); err != nil {
			t.Fatal(err)
		}
		r := s.do("GET", "/v1/reports/tokens?format=csv", s.root, nil)
		wantStatus(t, r, http.StatusOK)
		rows, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1+n+1 { // the header, the bulk and the root token
			t.Fatalf("%d rows, want %d", len(rows), n+2)
		}
		seen := map[string]bool{}
		for _, row := range rows[1:] {
			if seen[row[0]] {
				t.Fatalf("token %s listed twice", row[0])
			}
			seen[row[0]] = true
		}
	})

	for _, tc := range []struct{ query, pointer string }{
		{"format=xml", "/format"},
		{"format=CSV", "/format"},
		{"format=csv&limit=10", "/limit"},
		{"format=csv&cursor=tok_x", "/cursor"},
		{"limit=501", "/limit"},
	} {
		t.Run("ErrInvalid "+tc.query, func(t *testing.T) {
			wantInvalid(t, s.do("GET", "/v1/reports/tokens?"+tc.query, s.root, nil), tc.pointer)
		})
	}
	t.Run("ErrForbidden", func(t *testing.T) {
		_, verifier := s.newToken("verifier", keyward.ScopeVerify)
		wantProblem(t, s.do("GET", "/v1/reports/tokens?format=csv", verifier, nil), http.StatusForbidden, "forbidden")
	})
	t.Run("ErrLimitAndCursor", func(t *testing.T) {
		// Both in one answer, as the token list gives them.
		p := wantProblem(t, s.do("GET", "/v1/reports/tokens?limit=0&cursor=bad", s.root, nil), http.StatusBadRequest, "invalid")
		if got, want := pointersOf(t, p), []string{"/limit", "/cursor"}; !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
	})
	t.Run("ErrCSVLimitAndCursor", func(t *testing.T) {
		// Both refused in one answer, as the JSON pages name both.
		p := wantProblem(t, s.do("GET", "/v1/reports/tokens?format=csv&limit=5&cursor=x", s.root, nil), http.StatusBadRequest, "invalid")
		if got, want := pointersOf(t, p), []string{"/limit", "/cursor"}; !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
	})
	t.Run("OKCSVEmptyLimit", func(t *testing.T) {
		// An empty parameter is absent, as everywhere else.
		if r := s.do("GET", "/v1/reports/tokens?format=csv&limit=&cursor=", s.root, nil); r.Status != http.StatusOK {
			t.Errorf("status %d, want 200: %s", r.Status, r.Body)
		}
	})
}

// TestIntrospectionIsAUse: a resource server that introspects the tokens
// it is handed (RFC 7662) uses them: an active token's introspection sets
// its last use (keeping the last address known: none is given), so the
// dormant report does not list it; a revoked token's does not.
func TestIntrospectionIsAUse(t *testing.T) {
	s := newStack(t)
	s.tick()
	introspected, text := s.newToken("introspected only", "orders:read")
	bound := s.create(map[string]any{"name": "bound", "allowed_cidrs": []string{"10.0.0.0/8"}})
	revoked, revokedText := s.newToken("revoked")
	wantStatus(t, s.do("POST", "/v1/tokens/"+revoked+"/revoke", s.root, nil), http.StatusOK)
	unused, _ := s.newToken("unused")
	s.clock.Advance(91 * 24 * time.Hour)
	for _, tok := range []string{text, bound["token"].(string), revokedText} {
		wantStatus(t, s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {tok}}), http.StatusOK)
	}
	// The 91-day jump may make the engine start its cache over at its next
	// poll (a gap that long in the change feed), at any moment: a GET then
	// sees only what was flushed. The uses are flushed, so that what is
	// read does not depend on when that poll comes.
	if err := s.engine.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{introspected: true, bound["id"].(string): true, revoked: false, unused: false} {
		got := s.get(id)
		if (got["last_used_at"] != nil) != want {
			t.Errorf("%s: last_used_at %v, want set: %v", got["name"], got["last_used_at"], want)
		}
		if ip, _ := got["last_used_ip"].(string); ip != "" {
			t.Errorf("%s: last_used_ip %q, want none", got["name"], ip)
		}
	}
	// A use with an address, then an introspection: the address stays.
	id, tok := s.newToken("verified, then introspected")
	wantStatus(t, s.do("POST", "/v1/verify", s.root, map[string]any{"token": tok, "ip": "198.51.100.7"}), http.StatusOK)
	s.tick()
	wantStatus(t, s.form("/oauth2/introspect", "Bearer "+s.root, url.Values{"token": {tok}}), http.StatusOK)
	if got := s.get(id); got["last_used_ip"] != "198.51.100.7" {
		t.Errorf("after an introspection, last_used_ip %v, want the verification's", got["last_used_ip"])
	}
	if got := s.listIDs("/v1/reports/dormant", 50); !slices.Contains(got, unused) || slices.Contains(got, introspected) || slices.Contains(got, bound["id"].(string)) {
		t.Errorf("dormant = %v, want %s and not the introspected tokens", got, unused)
	}
}
