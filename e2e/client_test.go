package e2e

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
)

// TestClientSurface drives the client's reports, audit filters, paging
// iterators, error types and zero-config path against a real server, as an
// API provider integrating keyward would.
func TestClientSurface(t *testing.T) {
	st := sqliteStore(t)
	srv := startServer(t, st)
	ctx := ctxT(t)
	root := initRoot(t, st)
	admin := newClient(t, srv.URL, root)

	var ids []string
	for i := range 5 {
		tok, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: fmt.Sprintf("=cust-%d", i), Subject: "customer-42"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tok.ID)
	}
	if _, err := admin.RevokeToken(ctx, ids[0], ""); err != nil {
		t.Fatal(err)
	}

	t.Run("DormantTokensWalksEveryPage", func(t *testing.T) {
		var got []string
		for tok, err := range admin.DormantTokens(ctx, client.DormantFilter{Days: 1, ListOptions: client.ListOptions{Limit: 2}}) {
			if err != nil {
				t.Fatal(err)
			}
			if tok.Subject == "customer-42" {
				got = append(got, tok.ID)
			}
		}
		if want := ids[1:]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("dormant = %v, want %v (the revoked one left out)", got, want)
		}
	})

	t.Run("TokenReport", func(t *testing.T) {
		var n, revoked int
		for it, err := range admin.TokenReport(ctx, client.ListOptions{Limit: 2}) {
			if err != nil {
				t.Fatal(err)
			}
			n++
			if it.State == client.StateRevoked {
				revoked++
			}
			if it.CreatedAt.IsZero() || it.CreatedBy == "" {
				t.Errorf("item %+v lacks its creation", it)
			}
		}
		if n != 6 || revoked != 1 { // the root token and the five
			t.Errorf("report: %d items, %d revoked; want 6 and 1", n, revoked)
		}
		var b bytes.Buffer
		if err := admin.WriteTokenReportCSV(ctx, &b); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(&b).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 7 || rows[0][0] != "id" || rows[2][1] != "'=cust-0" {
			t.Errorf("CSV rows = %q", rows)
		}
	})

	t.Run("AuditFilters", func(t *testing.T) {
		var got []string
		f := client.AuditFilter{Action: "token.revoke", Target: ids[0], From: time.Now().Add(-time.Hour), ListOptions: client.ListOptions{Limit: 1}}
		for ev, err := range admin.AuditEvents(ctx, f) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ev.Action+" "+ev.Target)
		}
		if len(got) != 1 || got[0] != "token.revoke "+ids[0] {
			t.Errorf("events = %q, want the one revocation", got)
		}
		var creates int
		for _, err := range admin.AuditEvents(ctx, client.AuditFilter{Action: "token.*", ListOptions: client.ListOptions{Limit: 2}}) {
			if err != nil {
				t.Fatal(err)
			}
			creates++
		}
		if creates != 7 { // init's root token, the five, the revocation
			t.Errorf("token.* events = %d, want 7", creates)
		}
		_, err := admin.ListAuditEvents(ctx, client.AuditFilter{From: time.Now(), To: time.Now().Add(-time.Hour)})
		var e *client.Error
		if !client.IsInvalid(err) || !errors.As(err, &e) || len(e.Errors) != 1 || e.Errors[0].Pointer != "/to" {
			t.Errorf("to before from: %#v", err)
		}
	})

	t.Run("ErrRateLimitedHasRetryAfter", func(t *testing.T) {
		mt, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "limited", Scopes: []string{"keyward:tokens:read"},
			RateLimit: &client.RateLimit{Limit: 1, Window: client.Duration(time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, srv.URL, mt.Secret)
		if _, err := c.ListTokens(ctx, client.TokenFilter{Limit: 1}); err != nil {
			t.Fatal(err)
		}
		_, err = c.ListTokens(ctx, client.TokenFilter{Limit: 1})
		if !client.IsRateLimited(err) || client.RetryAfter(err) <= 0 || client.RetryAfter(err) > time.Hour {
			t.Errorf("over the limit: %v, Retry-After %v", err, client.RetryAfter(err))
		}
		if strings.Contains(err.Error(), mt.Secret) {
			t.Errorf("error names the secret")
		}
	})

	t.Run("ErrOAuthInvalidClient", func(t *testing.T) {
		c := newClient(t, srv.URL, "kw_nope")
		_, err := c.Introspect(ctx, root)
		var e *client.Error
		if !client.IsUnauthorized(err) || !errors.As(err, &e) || e.Code != client.CodeUnauthorized {
			t.Errorf("introspect with a bad credential: %#v", err)
		}
	})

	t.Run("NewFromEnv", func(t *testing.T) {
		t.Setenv("KEYWARD_SERVER", srv.URL)
		t.Setenv("KEYWARD_TOKEN", root+"\n")
		t.Setenv("KEYWARD_TOKEN_FILE", "")
		c, err := client.NewFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetToken(ctx, ids[1]); err != nil {
			t.Errorf("GetToken: %v", err)
		}
	})
}
