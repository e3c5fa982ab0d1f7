package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

func (s *suite) testPing(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		if err := f.s.Ping(f.ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

func (s *suite) testCreateWorkspace(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		want := &keyward.Workspace{
			ID:          f.id(keyward.PrefixWorkspace),
			Name:        "acme",
			TokenPrefix: "acme_live",
			CreatedAt:   t0.In(time.FixedZone("CET", 3600)).Add(123456 * time.Microsecond),
		}
		ev := f.event("", "workspace.create", want.ID)
		if err := f.s.CreateWorkspace(f.ctx, want, nil, nil, ev); err != nil {
			t.Fatalf("CreateWorkspace: %v", err)
		}
		got, err := f.s.FindWorkspace(f.ctx, want.ID)
		if err != nil {
			t.Fatalf("FindWorkspace: %v", err)
		}
		assertWorkspace(t, got, want)
		evs := f.events(want.ID)
		if len(evs) != 1 {
			t.Fatalf("%d audit events, want 1", len(evs))
		}
		ev.WorkspaceID = want.ID // an event without a workspace is the new one's
		assertEvent(t, evs[0], ev)
		if cs := f.changes(); len(cs) != 0 {
			t.Errorf("changes = %v, want none (no token was written)", cs)
		}
	})

	t.Run("OKWithAdminToken", func(t *testing.T) {
		f := s.fixture(t)
		ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: "acme", TokenPrefix: "kw", CreatedAt: t0}
		admin := f.newToken(ws.ID, "admin")
		admin.Scopes = []string{keyward.ScopeAdmin}
		sec := newSecret(admin.ID, t0)
		evs := []*keyward.AuditEvent{
			f.event(ws.ID, "workspace.create", ws.ID),
			f.event(ws.ID, "token.create", admin.ID),
		}
		if err := f.s.CreateWorkspace(f.ctx, ws, admin, sec, evs...); err != nil {
			t.Fatalf("CreateWorkspace: %v", err)
		}
		assertToken(t, f.find(ws.ID, admin.ID), admin)
		gotSec, gotTok, err := f.s.LookupSecret(f.ctx, sec.Digest)
		if err != nil {
			t.Fatalf("LookupSecret: %v", err)
		}
		assertSecret(t, gotSec, sec)
		assertToken(t, gotTok, admin)
		if got, want := eventIDs(f.events(ws.ID)), []string{evs[1].ID, evs[0].ID}; !slices.Equal(got, want) {
			t.Errorf("audit events = %v, want %v", got, want)
		}
		cs := f.changes()
		if len(cs) != 1 || cs[0].TokenID != admin.ID {
			t.Errorf("changes = %v, want one of token %s", cs, admin.ID)
		}
	})

	t.Run("ErrConflictName", func(t *testing.T) {
		f := s.fixture(t)
		first := f.workspace("acme")
		ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: "acme", TokenPrefix: "kw", CreatedAt: t0}
		admin := f.newToken(ws.ID, "admin")
		sec := newSecret(admin.ID, t0)
		ev := f.event(ws.ID, "workspace.create", ws.ID)
		wantCode(t, f.s.CreateWorkspace(f.ctx, ws, admin, sec, ev), keyward.ECONFLICT)

		// Nothing of the refused workspace was written.
		_, err := f.s.FindWorkspace(f.ctx, ws.ID)
		wantCode(t, err, keyward.ENOTFOUND)
		_, _, err = f.s.LookupSecret(f.ctx, sec.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
		if evs := f.events(ws.ID); len(evs) != 0 {
			t.Errorf("audit events = %v, want none", eventIDs(evs))
		}
		if cs := f.changes(); len(cs) != 0 {
			t.Errorf("changes = %v, want none", cs)
		}
		got, err := f.s.FindWorkspaceByName(f.ctx, "acme")
		if err != nil {
			t.Fatalf("FindWorkspaceByName: %v", err)
		}
		assertWorkspace(t, got, first)
	})

	t.Run("ErrConflictNameCase", func(t *testing.T) {
		f := s.fixture(t)
		first := f.workspace("Acme")
		for _, name := range []string{"acme", "ACME", "aCmE"} {
			ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: name, TokenPrefix: "kw", CreatedAt: t0}
			wantCode(t, f.s.CreateWorkspace(f.ctx, ws, nil, nil), keyward.ECONFLICT)
			_, err := f.s.FindWorkspace(f.ctx, ws.ID)
			wantCode(t, err, keyward.ENOTFOUND)
		}
		// A rune whose case orbit has three members (k, K, Kelvin sign).
		f.workspace("kilo")
		ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: "\u212Ailo", TokenPrefix: "kw", CreatedAt: t0}
		wantCode(t, f.s.CreateWorkspace(f.ctx, ws, nil, nil), keyward.ECONFLICT)
		got, err := f.s.FindWorkspaceByName(f.ctx, "Acme")
		if err != nil {
			t.Fatalf("FindWorkspaceByName: %v", err)
		}
		assertWorkspace(t, got, first)

		// Created at once, from many connections (nodes): one wins.
		const n = 8
		errs := make(chan error, n)
		for i := range n {
			name := []string{"beta", "BETA", "Beta", "bEtA"}[i%4]
			ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: name, TokenPrefix: "kw", CreatedAt: t0}
			go func() { errs <- f.s.CreateWorkspace(f.ctx, ws, nil, nil) }()
		}
		made := 0
		for range n {
			err := <-errs
			if err == nil {
				made++
				continue
			}
			wantCode(t, err, keyward.ECONFLICT)
		}
		if made != 1 {
			t.Fatalf("%d workspaces named beta in some case were made, want 1", made)
		}
	})

	t.Run("ErrConflictID", func(t *testing.T) {
		f := s.fixture(t)
		first := f.workspace("acme")
		ws := &keyward.Workspace{ID: first.ID, Name: "other", TokenPrefix: "kw", CreatedAt: t0}
		wantCode(t, f.s.CreateWorkspace(f.ctx, ws, nil, nil), keyward.ECONFLICT)
		_, err := f.s.FindWorkspaceByName(f.ctx, "other")
		wantCode(t, err, keyward.ENOTFOUND)
	})

	t.Run("ErrConflictAdminDigest", func(t *testing.T) {
		f := s.fixture(t)
		ws1 := f.workspace("one")
		_, sec1 := f.create(f.newToken(ws1.ID, "t"))
		ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: "two", TokenPrefix: "kw", CreatedAt: t0}
		admin := f.newToken(ws.ID, "admin")
		sec := newSecret(admin.ID, t0)
		sec.Digest = sec1.Digest
		before := f.changes()
		wantCode(t, f.s.CreateWorkspace(f.ctx, ws, admin, sec, f.event(ws.ID, "workspace.create", ws.ID)), keyward.ECONFLICT)
		// The workspace is not half-created.
		_, err := f.s.FindWorkspace(f.ctx, ws.ID)
		wantCode(t, err, keyward.ENOTFOUND)
		if evs := f.events(ws.ID); len(evs) != 0 {
			t.Errorf("audit events = %v, want none", eventIDs(evs))
		}
		if cs := f.changes(); len(cs) != len(before) {
			t.Errorf("changes = %v, want %v", cs, before)
		}
	})
}

func (s *suite) testFindWorkspace(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		want := f.workspace("acme")
		f.workspace("other")
		got, err := f.s.FindWorkspace(f.ctx, want.ID)
		if err != nil {
			t.Fatalf("FindWorkspace: %v", err)
		}
		assertWorkspace(t, got, want)
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		f.workspace("acme")
		_, err := f.s.FindWorkspace(f.ctx, f.id(keyward.PrefixWorkspace))
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testFindWorkspaceByName(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		f.workspace("other")
		want := f.workspace("acme")
		got, err := f.s.FindWorkspaceByName(f.ctx, "acme")
		if err != nil {
			t.Fatalf("FindWorkspaceByName: %v", err)
		}
		assertWorkspace(t, got, want)
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		f.workspace("acme")
		_, err := f.s.FindWorkspaceByName(f.ctx, "acm")
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testFindWorkspaces(t *testing.T) {
	t.Run("OKEmpty", func(t *testing.T) {
		f := s.fixture(t)
		got, err := f.s.FindWorkspaces(f.ctx, keyward.WorkspaceFilter{Limit: 10})
		if err != nil {
			t.Fatalf("FindWorkspaces: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("got %d workspaces, want none", len(got))
		}
	})
	t.Run("OKPaging", func(t *testing.T) {
		f := s.fixture(t)
		var want []string
		for _, name := range []string{"e", "d", "c", "b", "a"} {
			want = append(want, f.workspace(name).ID)
		}
		all, err := f.s.FindWorkspaces(f.ctx, keyward.WorkspaceFilter{})
		if err != nil {
			t.Fatalf("FindWorkspaces: %v", err)
		}
		if got := workspaceIDs(all); !slices.Equal(got, want) {
			t.Fatalf("all workspaces = %v, want %v (ordered by id)", got, want)
		}
		var got []string
		after := ""
		for page := 0; ; page++ {
			wss, err := f.s.FindWorkspaces(f.ctx, keyward.WorkspaceFilter{After: after, Limit: 2})
			if err != nil {
				t.Fatalf("FindWorkspaces: %v", err)
			}
			if len(wss) > 2 {
				t.Fatalf("page %d has %d workspaces, want at most 2", page, len(wss))
			}
			if len(wss) == 0 {
				break
			}
			got = append(got, workspaceIDs(wss)...)
			after = wss[len(wss)-1].ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("paged workspaces = %v, want %v", got, want)
		}
	})
}

func workspaceIDs(wss []*keyward.Workspace) []string {
	ids := make([]string, len(wss))
	for i, ws := range wss {
		ids[i] = ws.ID
	}
	return ids
}

func assertWorkspace(t *testing.T, got, want *keyward.Workspace) {
	t.Helper()
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("Name", got.Name, want.Name)
	d.str("TokenPrefix", got.TokenPrefix, want.TokenPrefix)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.report(t, "workspace "+want.ID)
}
