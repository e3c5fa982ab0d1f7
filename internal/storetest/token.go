package storetest

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// fullToken returns an unsaved token with every field set, times to the
// microsecond and one of them outside UTC.
func (f *fixture) fullToken(wsID string) *keyward.Token {
	at := func(d time.Duration) *time.Time { return ptr(t0.Add(d)) }
	return &keyward.Token{
		ID:           f.id(keyward.PrefixToken),
		WorkspaceID:  wsID,
		Name:         "CI deploy — prod ✓",
		Hint:         "kw_…x9Qa",
		Scopes:       []string{"orders:read", "orders:items:*", keyward.ScopeVerify},
		ExpiresAt:    ptr(t0.Add(30*24*time.Hour + 123456*time.Microsecond).In(time.FixedZone("PST", -8*3600))),
		AllowedCIDRs: []string{"203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"},
		RateLimit:    &keyward.RateLimit{Limit: 100, Window: keyward.Duration(90 * time.Second)},
		Quota:        &keyward.Quota{Limit: 10000, Period: keyward.PeriodMonth},
		Subject:      "cust_42@example.com",
		Metadata:     json.RawMessage(`{"team": "payments", "nested": {"n": 1.5, "list": [1, "two", null, true]}, "unicode": "é✓\"\\"}`),

		Revoked:       true,
		RevokedAt:     at(5 * time.Hour),
		RevokeReason:  "leaked in a CI log",
		Suspended:     true,
		SuspendedAt:   at(4 * time.Hour),
		SuspendReason: "under investigation",

		CreatedBy:  "tok_0123456789abcdefghjkmnpqrs",
		CreatedAt:  t0.Add(1 * time.Microsecond),
		UpdatedAt:  t0.Add(3 * time.Hour),
		RotatedAt:  at(2 * time.Hour),
		LastUsedAt: at(time.Hour + 999999*time.Microsecond),
		LastUsedIP: "2001:db8::1",
	}
}

func (s *suite) testCreateToken(t *testing.T) {
	t.Run("OKMinimal", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		want := &keyward.Token{ID: f.id(keyward.PrefixToken), WorkspaceID: ws.ID, Name: "minimal", CreatedAt: t0, UpdatedAt: t0}
		sec := newSecret(want.ID, t0)
		if err := f.s.CreateToken(f.ctx, want, sec, f.event(ws.ID, "token.create", want.ID)); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		assertToken(t, f.find(ws.ID, want.ID), want)
	})

	t.Run("OKEveryField", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		want, sec := f.create(f.fullToken(ws.ID))
		assertToken(t, f.find(ws.ID, want.ID), want)
		gotSec, gotTok, err := f.s.LookupSecret(f.ctx, sec.Digest)
		if err != nil {
			t.Fatalf("LookupSecret: %v", err)
		}
		assertSecret(t, gotSec, sec)
		assertToken(t, gotTok, want)
	})

	t.Run("OKEmptyValues", func(t *testing.T) {
		// Set but empty values are not confused with nil ones.
		f := s.fixture(t)
		ws := f.workspace("acme")
		want, _ := f.create(f.newToken(ws.ID, "empty"), func(t *keyward.Token) {
			t.Scopes = []string{}
			t.AllowedCIDRs = []string{}
			t.Metadata = json.RawMessage(`{}`)
			t.ExpiresAt = ptr(t0.Add(time.Hour))
		})
		got := f.find(ws.ID, want.ID)
		assertToken(t, got, want)
		if got.Metadata == nil {
			t.Errorf("Metadata = nil, want {}")
		}
	})

	t.Run("OKChangeAndEvent", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok := f.newToken(ws.ID, "t")
		ev := f.event("", "token.create", tok.ID)
		ev.Actor = keyward.Actor{Type: keyward.ActorToken, ID: "tok_creator"}
		ev.IP = "203.0.113.9"
		ev.UserAgent = "keyward-cli/1.0"
		ev.RequestID = "req_1"
		ev.Changes = json.RawMessage(`{"name": {"from": null, "to": "t"}}`)
		if err := f.s.CreateToken(f.ctx, tok, newSecret(tok.ID, t0), ev); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		cs := f.changes()
		if len(cs) != 1 || cs[0].TokenID != tok.ID {
			t.Errorf("changes = %v, want one of token %s", cs, tok.ID)
		}
		evs := f.events(ws.ID)
		if len(evs) != 1 {
			t.Fatalf("%d audit events, want 1", len(evs))
		}
		ev.WorkspaceID = ws.ID // an event without a workspace is the token's
		assertEvent(t, evs[0], ev)
	})

	t.Run("ErrNotFoundWorkspace", func(t *testing.T) {
		f := s.fixture(t)
		f.workspace("acme")
		wsID := f.id(keyward.PrefixWorkspace)
		tok := f.newToken(wsID, "t")
		sec := newSecret(tok.ID, t0)
		wantCode(t, f.s.CreateToken(f.ctx, tok, sec, f.event(wsID, "token.create", tok.ID)), keyward.ENOTFOUND)
		if cs := f.changes(); len(cs) != 0 {
			t.Errorf("changes = %v, want none", cs)
		}
		if evs := f.events(wsID); len(evs) != 0 {
			t.Errorf("audit events = %v, want none", eventIDs(evs))
		}
	})

	t.Run("ErrConflictID", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		first, _ := f.create(f.newToken(ws.ID, "first"))
		before := f.snapshot(ws.ID, first.ID)
		dup := f.newToken(ws.ID, "second")
		dup.ID = first.ID
		sec := newSecret(dup.ID, t0)
		wantCode(t, f.s.CreateToken(f.ctx, dup, sec, f.event(ws.ID, "token.create", dup.ID)), keyward.ECONFLICT)
		f.unchanged(before)
		_, _, err := f.s.LookupSecret(f.ctx, sec.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
	})

	t.Run("ErrConflictDigest", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		first, sec1 := f.create(f.newToken(ws.ID, "first"))
		before := f.snapshot(ws.ID, first.ID)
		tok := f.newToken(ws.ID, "second")
		sec := newSecret(tok.ID, t0)
		sec.Digest = sec1.Digest
		wantCode(t, f.s.CreateToken(f.ctx, tok, sec, f.event(ws.ID, "token.create", tok.ID)), keyward.ECONFLICT)
		f.unchanged(before)
		_, err := f.s.FindToken(f.ctx, ws.ID, tok.ID)
		wantCode(t, err, keyward.ENOTFOUND)
	})

	t.Run("ErrConflictEventID", func(t *testing.T) {
		// The token is not written without its audit event.
		f := s.fixture(t)
		ws := f.workspace("acme")
		first, _ := f.create(f.newToken(ws.ID, "first"))
		before := f.snapshot(ws.ID, first.ID)
		tok := f.newToken(ws.ID, "second")
		ev := f.event(ws.ID, "token.create", tok.ID)
		ev.ID = before.events[0].ID
		wantCode(t, f.s.CreateToken(f.ctx, tok, newSecret(tok.ID, t0), ev), keyward.ECONFLICT)
		f.unchanged(before)
		_, err := f.s.FindToken(f.ctx, ws.ID, tok.ID)
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testCreateRootToken(t *testing.T) {
	root := func(f *fixture, wsID string) (*keyward.Token, *keyward.Secret, *keyward.AuditEvent) {
		tok := f.newToken(wsID, "root")
		tok.Scopes = []string{keyward.ScopeAdmin, keyward.ScopeInstance}
		return tok, newSecret(tok.ID, t0), f.event(wsID, "token.create", tok.ID)
	}

	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace(keyward.DefaultWorkspace)
		// An ordinary token does not count as a root token.
		f.create(f.newToken(ws.ID, "ordinary"))
		tok, sec, ev := root(f, ws.ID)
		if err := f.s.CreateRootToken(f.ctx, tok, sec, ev, false); err != nil {
			t.Fatalf("CreateRootToken: %v", err)
		}
		assertToken(t, f.find(ws.ID, tok.ID), tok)
		if _, _, err := f.s.LookupSecret(f.ctx, sec.Digest); err != nil {
			t.Errorf("LookupSecret: %v", err)
		}
		if evs := f.events(ws.ID); len(evs) != 2 || evs[0].ID != ev.ID {
			t.Errorf("audit events = %v, want %s first of 2", eventIDs(evs), ev.ID)
		}
		if cs := f.changes(); len(cs) != 2 || cs[1].TokenID != tok.ID {
			t.Errorf("changes = %v, want the root token's last of 2", cs)
		}
	})

	t.Run("ErrConflictIssued", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace(keyward.DefaultWorkspace)
		first, sec, ev := root(f, ws.ID)
		if err := f.s.CreateRootToken(f.ctx, first, sec, ev, false); err != nil {
			t.Fatalf("CreateRootToken: %v", err)
		}
		before := f.snapshot(ws.ID, first.ID)
		tok, sec, ev := root(f, ws.ID)
		err := f.s.CreateRootToken(f.ctx, tok, sec, ev, false)
		wantCode(t, err, keyward.ECONFLICT)
		f.unchanged(before)
		_, err = f.s.FindToken(f.ctx, ws.ID, tok.ID)
		wantCode(t, err, keyward.ENOTFOUND)
		_, _, err = f.s.LookupSecret(f.ctx, sec.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
	})

	t.Run("OKAgain", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace(keyward.DefaultWorkspace)
		for i := range 3 {
			tok, sec, ev := root(f, ws.ID)
			if err := f.s.CreateRootToken(f.ctx, tok, sec, ev, i > 0); err != nil {
				t.Fatalf("CreateRootToken #%d: %v", i+1, err)
			}
			assertToken(t, f.find(ws.ID, tok.ID), tok)
		}
		// again does not lift the rule for the next call without it.
		tok, sec, ev := root(f, ws.ID)
		wantCode(t, f.s.CreateRootToken(f.ctx, tok, sec, ev, false), keyward.ECONFLICT)
	})

	t.Run("OKAgainFirst", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace(keyward.DefaultWorkspace)
		tok, sec, ev := root(f, ws.ID)
		if err := f.s.CreateRootToken(f.ctx, tok, sec, ev, true); err != nil {
			t.Fatalf("CreateRootToken: %v", err)
		}
		tok, sec, ev = root(f, ws.ID)
		wantCode(t, f.s.CreateRootToken(f.ctx, tok, sec, ev, false), keyward.ECONFLICT)
	})

	t.Run("OKFlagNotSetOnFailure", func(t *testing.T) {
		// A root token that failed to be written does not count as issued.
		f := s.fixture(t)
		ws := f.workspace(keyward.DefaultWorkspace)
		tok, sec, ev := root(f, ws.ID)
		tok.WorkspaceID = f.id(keyward.PrefixWorkspace)
		wantCode(t, f.s.CreateRootToken(f.ctx, tok, sec, ev, false), keyward.ENOTFOUND)
		tok, sec, ev = root(f, ws.ID)
		if err := f.s.CreateRootToken(f.ctx, tok, sec, ev, false); err != nil {
			t.Fatalf("CreateRootToken after a failed one: %v", err)
		}
	})
}

func (s *suite) testFindToken(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		want, _ := f.create(f.newToken(ws.ID, "t"))
		f.create(f.newToken(ws.ID, "other"))
		got, err := f.s.FindToken(f.ctx, ws.ID, want.ID)
		if err != nil {
			t.Fatalf("FindToken: %v", err)
		}
		assertToken(t, got, want)
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		f.create(f.newToken(ws.ID, "t"))
		_, err := f.s.FindToken(f.ctx, ws.ID, f.id(keyward.PrefixToken))
		wantCode(t, err, keyward.ENOTFOUND)
	})
	t.Run("ErrNotFoundOtherWorkspace", func(t *testing.T) {
		f := s.fixture(t)
		ws1 := f.workspace("one")
		ws2 := f.workspace("two")
		tok, _ := f.create(f.newToken(ws1.ID, "t"))
		_, err := f.s.FindToken(f.ctx, ws2.ID, tok.ID)
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testTokenByID(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		f.workspace("one")
		ws := f.workspace("two")
		want, _ := f.create(f.fullToken(ws.ID))
		got, err := f.s.TokenByID(f.ctx, want.ID)
		if err != nil {
			t.Fatalf("TokenByID: %v", err)
		}
		assertToken(t, got, want)
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		f.create(f.newToken(ws.ID, "t"))
		_, err := f.s.TokenByID(f.ctx, f.id(keyward.PrefixToken))
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testFindTokens(t *testing.T) {
	f := s.fixture(t)
	now := t0.Add(24 * time.Hour)
	ws := f.workspace("acme")
	other := f.workspace("other")
	mk := func(wsID, name string, mod func(*keyward.Token)) string {
		tok, _ := f.create(f.newToken(wsID, name), mod)
		return tok.ID
	}
	a := mk(ws.ID, "Orders Reader", func(t *keyward.Token) {
		t.Scopes, t.Subject = []string{"orders:read"}, "cust_1"
	})
	b := mk(ws.ID, "CRM sync", func(t *keyward.Token) {
		t.Scopes, t.Subject = []string{"orders:read", "orders:write"}, "cust_2"
		t.ExpiresAt = ptr(now.Add(-time.Hour))
	})
	c := mk(ws.ID, "Old 100% key", func(t *keyward.Token) {
		t.Scopes = []string{"billing:read"}
		t.Revoked, t.RevokedAt = true, ptr(t0)
		t.Suspended, t.SuspendedAt = true, ptr(t0)
		t.ExpiresAt = ptr(now.Add(-time.Hour))
	})
	d := mk(ws.ID, "under_score", func(t *keyward.Token) {
		t.Scopes = nil
		t.Suspended, t.SuspendedAt = true, ptr(t0)
		t.ExpiresAt = ptr(now.Add(-time.Hour))
	})
	e := mk(ws.ID, "orders_writer", func(t *keyward.Token) {
		t.Scopes, t.Subject = []string{"orders:*"}, "cust_1"
		t.ExpiresAt = ptr(now.Add(time.Hour))
	})
	g := mk(ws.ID, "Boundary", func(t *keyward.Token) {
		t.Scopes = []string{"reports:read"}
		t.ExpiresAt = ptr(now) // expired at the very instant
	})
	x := mk(other.ID, "Orders", func(t *keyward.Token) {
		t.Scopes, t.Subject = []string{"orders:read"}, "cust_1"
	})

	tests := []struct {
		name string
		f    keyward.TokenFilter
		want []string
	}{
		{"OKAll", keyward.TokenFilter{}, []string{a, b, c, d, e, g}},
		{"OKStateActive", keyward.TokenFilter{State: keyward.StateActive}, []string{a, e}},
		{"OKStateExpired", keyward.TokenFilter{State: keyward.StateExpired}, []string{b, g}},
		{"OKStateRevoked", keyward.TokenFilter{State: keyward.StateRevoked}, []string{c}},
		{"OKStateSuspended", keyward.TokenFilter{State: keyward.StateSuspended}, []string{d}},
		{"OKStatePendingApproval", keyward.TokenFilter{State: keyward.StatePendingApproval}, nil},
		{"OKSubject", keyward.TokenFilter{Subject: "cust_1"}, []string{a, e}},
		{"OKSubjectExact", keyward.TokenFilter{Subject: "cust"}, nil},
		{"OKScope", keyward.TokenFilter{Scope: "orders:read"}, []string{a, b}},
		{"OKScopeWildcardIsLiteral", keyward.TokenFilter{Scope: "orders:*"}, []string{e}},
		{"OKScopePrefixNoMatch", keyward.TokenFilter{Scope: "orders"}, nil},
		{"OKScopeJSONNoMatch", keyward.TokenFilter{Scope: `orders:read","orders:write`}, nil},
		{"OKScopePatternNoMatch", keyward.TokenFilter{Scope: "orders:%"}, nil},
		{"OKNameCaseInsensitive", keyward.TokenFilter{Name: "ORDERS"}, []string{a, e}},
		{"OKNameSubstring", keyward.TokenFilter{Name: "m SY"}, []string{b}},
		{"OKNamePercentIsLiteral", keyward.TokenFilter{Name: "%"}, []string{c}},
		{"OKNameUnderscoreIsLiteral", keyward.TokenFilter{Name: "_"}, []string{d, e}},
		{"OKNameNoMatch", keyward.TokenFilter{Name: "zzz"}, nil},
		{"OKCombined", keyward.TokenFilter{State: keyward.StateActive, Subject: "cust_1", Scope: "orders:read"}, []string{a}},
		{"OKAfter", keyward.TokenFilter{After: c}, []string{d, e, g}},
		{"OKAfterLast", keyward.TokenFilter{After: g}, nil},
		{"OKLimit", keyward.TokenFilter{Limit: 2}, []string{a, b}},
		{"OKAfterAndLimit", keyward.TokenFilter{After: a, Limit: 2, State: keyward.StateExpired}, []string{b, g}},
		{"OKNewest", keyward.TokenFilter{Newest: true}, []string{g, e, d, c, b, a}},
		{"OKNewestLimit", keyward.TokenFilter{Newest: true, Limit: 2}, []string{g, e}},
		{"OKBefore", keyward.TokenFilter{Before: d}, []string{a, b, c}},
		{"OKBeforeFirst", keyward.TokenFilter{Before: a}, nil},
		{"OKNewestBefore", keyward.TokenFilter{Newest: true, Before: e, Limit: 2}, []string{d, c}},
		{"OKNewestBeforeState", keyward.TokenFilter{Newest: true, Before: g, State: keyward.StateActive}, []string{e, a}},
		{"OKAfterAndBefore", keyward.TokenFilter{After: a, Before: e}, []string{b, c, d}},
		{"OKBeforeNUL", keyward.TokenFilter{Before: "tok_\x00"}, nil},
		{"OKOtherWorkspace", keyward.TokenFilter{WorkspaceID: other.ID}, []string{x}},
		{"OKUnknownWorkspace", keyward.TokenFilter{WorkspaceID: f.id(keyward.PrefixWorkspace)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			filter := tt.f
			if filter.WorkspaceID == "" {
				filter.WorkspaceID = ws.ID
			}
			filter.Now = now
			got, err := f.s.FindTokens(f.ctx, filter)
			if err != nil {
				t.Fatalf("FindTokens: %v", err)
			}
			if ids := tokenIDs(got); !slices.Equal(ids, tt.want) {
				t.Errorf("FindTokens = %v, want %v", ids, tt.want)
			}
		})
	}

	t.Run("OKFullTokens", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		want, _ := f.create(f.fullToken(ws.ID))
		got, err := f.s.FindTokens(f.ctx, keyward.TokenFilter{WorkspaceID: ws.ID, Now: now})
		if err != nil {
			t.Fatalf("FindTokens: %v", err)
		}
		if len(got) != 1 {
			t.Fatalf("FindTokens returned %d tokens, want 1", len(got))
		}
		assertToken(t, got[0], want)
	})

	t.Run("OKPaging", func(t *testing.T) {
		var got []string
		after := ""
		for page := 0; ; page++ {
			ts, err := f.s.FindTokens(f.ctx, keyward.TokenFilter{WorkspaceID: ws.ID, After: after, Limit: 4, Now: now})
			if err != nil {
				t.Fatalf("FindTokens: %v", err)
			}
			if len(ts) > 4 {
				t.Fatalf("page %d has %d tokens, want at most 4", page, len(ts))
			}
			if len(ts) == 0 {
				break
			}
			got = append(got, tokenIDs(ts)...)
			after = ts[len(ts)-1].ID
		}
		if want := []string{a, b, c, d, e, g}; !slices.Equal(got, want) {
			t.Errorf("paged tokens = %v, want %v", got, want)
		}
	})

	t.Run("UnusedSince", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		other := f.workspace("other")
		since := now.Add(-90 * 24 * time.Hour)
		used := func(at time.Time) func(*keyward.Token) {
			return func(t *keyward.Token) { t.LastUsedAt, t.LastUsedIP = ptr(at), "192.0.2.1" }
		}
		mk := func(wsID, name string, mods ...func(*keyward.Token)) string {
			tok, _ := f.create(f.newToken(wsID, name), mods...)
			return tok.ID
		}
		never := mk(ws.ID, "never used")
		before := mk(ws.ID, "used before", used(since.Add(-time.Microsecond)))
		at := mk(ws.ID, "used at the instant", used(since))
		after := mk(ws.ID, "used after", used(since.Add(time.Hour)))
		revoked := mk(ws.ID, "revoked, never used", func(t *keyward.Token) {
			t.Revoked, t.RevokedAt = true, ptr(t0)
		})
		expired := mk(ws.ID, "expired, used before", used(since.Add(-time.Hour)), func(t *keyward.Token) {
			t.ExpiresAt = ptr(now.Add(-time.Hour))
		})
		mk(other.ID, "other, never used")

		tests := []struct {
			name string
			f    keyward.TokenFilter
			want []string
		}{
			{"OKNeverUsedIncluded", keyward.TokenFilter{}, []string{never, before, revoked, expired}},
			{"OKStateActive", keyward.TokenFilter{State: keyward.StateActive}, []string{never, before}},
			{"OKStateRevoked", keyward.TokenFilter{State: keyward.StateRevoked}, []string{revoked}},
			{"OKAfterAndLimit", keyward.TokenFilter{State: keyward.StateActive, After: never, Limit: 1}, []string{before}},
			{"OKUnset", keyward.TokenFilter{UnusedSince: time.Time{}}, []string{never, before, at, after, revoked, expired}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				filter := tt.f
				filter.WorkspaceID, filter.Now = ws.ID, now
				if tt.name != "OKUnset" {
					filter.UnusedSince = since
				}
				got, err := f.s.FindTokens(f.ctx, filter)
				if err != nil {
					t.Fatalf("FindTokens: %v", err)
				}
				if ids := tokenIDs(got); !slices.Equal(ids, tt.want) {
					t.Errorf("FindTokens = %v, want %v", ids, tt.want)
				}
			})
		}

		t.Run("OKAfterFlush", func(t *testing.T) {
			// A flushed use after since takes the token out; one before it
			// does not.
			if err := f.s.FlushUsage(f.ctx, keyward.FlushID{}, []keyward.UsageFlush{
				{TokenID: never, LastUsedAt: since.Add(time.Minute), LastUsedIP: "192.0.2.9"},
				{TokenID: before, LastUsedAt: since.Add(-time.Minute), LastUsedIP: "192.0.2.9"},
			}); err != nil {
				t.Fatalf("FlushUsage: %v", err)
			}
			got, err := f.s.FindTokens(f.ctx, keyward.TokenFilter{WorkspaceID: ws.ID, State: keyward.StateActive, UnusedSince: since, Now: now})
			if err != nil {
				t.Fatalf("FindTokens: %v", err)
			}
			if ids, want := tokenIDs(got), []string{before}; !slices.Equal(ids, want) {
				t.Errorf("FindTokens = %v, want %v", ids, want)
			}
		})
	})

	t.Run("ErrInvalidState", func(t *testing.T) {
		_, err := f.s.FindTokens(f.ctx, keyward.TokenFilter{WorkspaceID: ws.ID, State: "bogus", Now: now})
		wantCode(t, err, keyward.EINVALID)
	})
}

func (s *suite) testUpdateToken(t *testing.T) {
	t1 := t0.Add(time.Hour)

	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "before"))
		before := f.changes()
		ev := f.event("", "token.update", tok.ID)
		ev.Time = t1
		got, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Name = "after"
			t.Scopes = append(t.Scopes, "orders:write")
			t.UpdatedAt = t1
			return &keyward.TokenWrite{Event: ev, Now: t1}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		want := tok.Clone()
		want.Name = "after"
		want.Scopes = []string{"orders:read", "orders:write"}
		want.UpdatedAt = t1
		assertToken(t, got, want)
		assertToken(t, f.find(ws.ID, tok.ID), want)

		cs := f.changes()
		if len(cs) != len(before)+1 || cs[len(cs)-1].TokenID != tok.ID {
			t.Errorf("changes = %v, want %v and one of token %s", cs, before, tok.ID)
		}
		evs := f.events(ws.ID)
		if len(evs) != 2 {
			t.Fatalf("%d audit events, want 2", len(evs))
		}
		ev.WorkspaceID = ws.ID // an event without a workspace is the token's
		assertEvent(t, evs[0], ev)
	})

	t.Run("OKEveryField", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.fullToken(ws.ID))
		want := f.newToken(ws.ID, "plain") // every field changed, pointers to nil
		want.ID = tok.ID
		want.Scopes = nil
		want.CreatedBy = "system2"
		want.CreatedAt = t1
		want.UpdatedAt = t1
		got, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			*t = *want.Clone()
			return &keyward.TokenWrite{Event: f.event(ws.ID, "token.update", tok.ID), Now: t1}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		assertToken(t, got, want)
		assertToken(t, f.find(ws.ID, tok.ID), want)

		// And back: every field set again.
		full := f.fullToken(ws.ID)
		full.ID = tok.ID
		got, err = f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			*t = *full.Clone()
			return &keyward.TokenWrite{Event: f.event(ws.ID, "token.update", tok.ID), Now: t1}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		assertToken(t, got, full)
		assertToken(t, f.find(ws.ID, tok.ID), full)
	})

	t.Run("OKRevokeSuspend", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		got, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Suspended, t.SuspendedAt, t.SuspendReason = true, ptr(t1), "why"
			return &keyward.TokenWrite{Event: f.event(ws.ID, "token.suspend", tok.ID), Now: t1}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		if got.State(t1) != keyward.StateSuspended || got.SuspendReason != "why" {
			t.Errorf("state %s, reason %q; want suspended, %q", got.State(t1), got.SuspendReason, "why")
		}
		got, err = f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Revoked, t.RevokedAt, t.RevokeReason = true, ptr(t1), "leaked"
			return &keyward.TokenWrite{Event: f.event(ws.ID, "token.revoke", tok.ID), Now: t1}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		if got.State(t1) != keyward.StateRevoked || !got.RevokedAt.Equal(t1) {
			t.Errorf("state %s, revoked at %v; want revoked at %v", got.State(t1), got.RevokedAt, t1)
		}
		if cs := f.changes(); len(cs) != 3 {
			t.Errorf("changes = %v, want 3 (create, suspend, revoke)", cs)
		}
	})

	t.Run("OKNoWrite", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.fullToken(ws.ID))
		before := f.snapshot(ws.ID, tok.ID)
		got, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			// Changes to the copy are dropped with a nil write.
			t.Name = "changed"
			t.Scopes[0] = "changed:scope"
			t.RateLimit.Limit = 1
			t.Metadata[2] = 'X'
			return nil, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		assertToken(t, got, tok)
		f.unchanged(before)
	})

	t.Run("ErrCallback", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		before := f.snapshot(ws.ID, tok.ID)
		got, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Name = "changed"
			return &keyward.TokenWrite{Event: f.event(ws.ID, "token.update", tok.ID), Now: t1}, errFn
		})
		if !errors.Is(err, errFn) {
			t.Fatalf("UpdateToken error = %v, want the callback's", err)
		}
		if got != nil {
			t.Errorf("UpdateToken returned a token with an error")
		}
		f.unchanged(before)
	})

	t.Run("ErrCallbackKeywardError", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		before := f.snapshot(ws.ID, tok.ID)
		_, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			return nil, keyward.Errorf(keyward.ECONFLICT, "the token is revoked")
		})
		wantCode(t, err, keyward.ECONFLICT)
		if msg := keyward.ErrorMessage(err); msg != "the token is revoked" {
			t.Errorf("error message = %q, want the callback's", msg)
		}
		f.unchanged(before)
	})

	t.Run("ErrNoEvent", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		before := f.snapshot(ws.ID, tok.ID)
		_, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Name = "changed"
			return &keyward.TokenWrite{Now: t1}, nil
		})
		if err == nil {
			t.Fatalf("UpdateToken without an event succeeded")
		}
		f.unchanged(before)
	})

	t.Run("ErrConflictEventID", func(t *testing.T) {
		// The change is not written without its audit event.
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		before := f.snapshot(ws.ID, tok.ID)
		_, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Name = "changed"
			ev := f.event(ws.ID, "token.update", tok.ID)
			ev.ID = before.events[0].ID
			return &keyward.TokenWrite{Event: ev, Now: t1}, nil
		})
		wantCode(t, err, keyward.ECONFLICT)
		f.unchanged(before)
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		f.create(f.newToken(ws.ID, "t"))
		called := false
		_, err := f.s.UpdateToken(f.ctx, ws.ID, f.id(keyward.PrefixToken), func(t *keyward.Token) (*keyward.TokenWrite, error) {
			called = true
			return nil, nil
		})
		wantCode(t, err, keyward.ENOTFOUND)
		if called {
			t.Errorf("the callback was called for a missing token")
		}
	})

	t.Run("ErrNotFoundOtherWorkspace", func(t *testing.T) {
		f := s.fixture(t)
		ws1 := f.workspace("one")
		ws2 := f.workspace("two")
		tok, _ := f.create(f.newToken(ws1.ID, "t"))
		before := f.snapshot(ws1.ID, tok.ID)
		called := false
		_, err := f.s.UpdateToken(f.ctx, ws2.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			called = true
			t.Revoked = true
			return &keyward.TokenWrite{Event: f.event(ws2.ID, "token.revoke", tok.ID), Now: t1}, nil
		})
		wantCode(t, err, keyward.ENOTFOUND)
		if called {
			t.Errorf("the callback was called for another workspace's token")
		}
		f.unchanged(before)
		if evs := f.events(ws2.ID); len(evs) != 0 {
			t.Errorf("audit events of workspace two = %v, want none", eventIDs(evs))
		}
	})

	t.Run("OKKeepsIDAndWorkspace", func(t *testing.T) {
		// A callback cannot move a token to another workspace or rename it.
		f := s.fixture(t)
		ws1 := f.workspace("one")
		ws2 := f.workspace("two")
		tok, _ := f.create(f.newToken(ws1.ID, "t"))
		got, err := f.s.UpdateToken(f.ctx, ws1.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.ID = f.id(keyward.PrefixToken)
			t.WorkspaceID = ws2.ID
			t.Name = "renamed"
			return &keyward.TokenWrite{Event: f.event(ws1.ID, "token.update", tok.ID), Now: t1}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		if got.ID != tok.ID || got.WorkspaceID != ws1.ID || got.Name != "renamed" {
			t.Errorf("UpdateToken = %s in %s named %q, want %s in %s named %q",
				got.ID, got.WorkspaceID, got.Name, tok.ID, ws1.ID, "renamed")
		}
		_, err = f.s.FindToken(f.ctx, ws2.ID, tok.ID)
		wantCode(t, err, keyward.ENOTFOUND)
		if ts, err := f.s.FindTokens(f.ctx, keyward.TokenFilter{WorkspaceID: ws2.ID}); err != nil || len(ts) != 0 {
			t.Errorf("FindTokens(two) = %v, %v; want none", tokenIDs(ts), err)
		}
	})
}
