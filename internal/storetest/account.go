package storetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// The account tests run on stores that implement keyward.AccountStore;
// the suite skips them for others. Besides what the interface says, they
// pin down that every account write with events links them into their
// workspace's chain in its transaction, and that a write that fails leaves
// no event.

func (f *fixture) accounts() keyward.AccountStore {
	f.t.Helper()
	a, ok := f.s.(keyward.AccountStore)
	if !ok {
		f.t.Skip("the store does not implement keyward.AccountStore")
	}
	return a
}

// user creates a user with the given email and role in ws.
func (f *fixture) user(a keyward.AccountStore, ws *keyward.Workspace, email, role string) *keyward.User {
	f.t.Helper()
	u := &keyward.User{ID: f.id(keyward.PrefixUser), Email: email, PasswordHash: "$argon2id$test", CreatedAt: t0, UpdatedAt: t0}
	if err := a.CreateUser(f.ctx, u, []*keyward.Member{{WorkspaceID: ws.ID, Role: role, CreatedAt: t0}},
		f.event(ws.ID, "user.create", u.ID)); err != nil {
		f.t.Fatalf("CreateUser(%s): %v", email, err)
	}
	return u
}

func (s *suite) testAccounts(t *testing.T) {
	t.Run("Users", s.testUsers)
	t.Run("Members", s.testMembers)
	t.Run("RoleChanges", s.testRoleChanges)
	t.Run("Sessions", s.testSessions)
	t.Run("SessionEpoch", s.testSessionEpoch)
	t.Run("RecoveryCodes", s.testRecoveryCodes)
	t.Run("EnableTOTP", s.testEnableTOTP)
	t.Run("AccountEvents", s.testAccountEvents)
	t.Run("WorkspaceSettings", s.testWorkspaceSettings)
	t.Run("TokensCreatedBy", s.testTokensCreatedBy)
	t.Run("Invites", s.testInvites)
	t.Run("Passkeys", s.testPasskeys)
	t.Run("LastFactor", s.testLastFactor)
	t.Run("Challenges", s.testChallenges)
}

func (s *suite) testUsers(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	if ok, err := a.HasOwner(f.ctx); err != nil || ok {
		t.Fatalf("HasOwner on an empty store = %v, %v; want false", ok, err)
	}
	u := f.user(a, ws, "ann@example.com", keyward.RoleOwner)
	if ok, err := a.HasOwner(f.ctx); err != nil || !ok {
		t.Fatalf("HasOwner = %v, %v; want true", ok, err)
	}
	got, err := a.FindUserByEmail(f.ctx, "ann@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID || got.PasswordHash != u.PasswordHash || !got.CreatedAt.Equal(t0) || got.TOTPSecret != nil || got.CreatedAt.Location() != time.UTC {
		t.Errorf("FindUserByEmail = %+v", got)
	}
	if evs := f.events(ws.ID); len(evs) != 1 || evs[0].Action != "user.create" || evs[0].Target != u.ID {
		t.Errorf("events = %v, want one user.create", eventIDs(evs))
	}
	f.assertChain(ws.ID)

	t.Run("ErrEmailTaken", func(t *testing.T) {
		dup := &keyward.User{ID: f.id(keyward.PrefixUser), Email: "ann@example.com", PasswordHash: "x", CreatedAt: t0, UpdatedAt: t0}
		wantCode(t, a.CreateUser(f.ctx, dup, nil, f.event(ws.ID, "user.create", dup.ID)), keyward.ECONFLICT)
		if evs := f.events(ws.ID); len(evs) != 1 {
			t.Errorf("a failed CreateUser left %d events, want 1", len(evs))
		}
	})
	t.Run("ErrUnknownWorkspace", func(t *testing.T) {
		nu := &keyward.User{ID: f.id(keyward.PrefixUser), Email: "bob@example.com", PasswordHash: "x", CreatedAt: t0, UpdatedAt: t0}
		wantCode(t, a.CreateUser(f.ctx, nu, []*keyward.Member{{WorkspaceID: "ws_nope", Role: keyward.RoleMember, CreatedAt: t0}}), keyward.ENOTFOUND)
		_, err := a.FindUserByEmail(f.ctx, "bob@example.com")
		wantCode(t, err, keyward.ENOTFOUND)
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		_, err := a.FindUser(f.ctx, "usr_nope")
		wantCode(t, err, keyward.ENOTFOUND)
		_, err = a.FindUserByEmail(f.ctx, "nobody@example.com")
		wantCode(t, err, keyward.ENOTFOUND)
		_, err = a.UpdateUser(f.ctx, "usr_nope", func(*keyward.User) ([]*keyward.AuditEvent, error) { return nil, nil })
		wantCode(t, err, keyward.ENOTFOUND)
	})
	t.Run("Update", func(t *testing.T) {
		t1 := t0.Add(time.Minute)
		got, err := a.UpdateUser(f.ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
			u.TOTPSecret, u.TOTPLastStep, u.UpdatedAt = []byte("sealed"), 42, t1
			return []*keyward.AuditEvent{f.event(ws.ID, "mfa.totp_enable", u.ID)}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.TOTPSecret, []byte("sealed")) || got.TOTPLastStep != 42 || !got.UpdatedAt.Equal(t1) || !got.HasMFA() {
			t.Errorf("UpdateUser = %+v", got)
		}
		if evs := f.events(ws.ID); evs[0].Action != "mfa.totp_enable" {
			t.Errorf("newest event = %s, want mfa.totp_enable", evs[0].Action)
		}
		f.assertChain(ws.ID)
	})
	t.Run("ErrUpdateCallback", func(t *testing.T) {
		before := len(f.events(ws.ID))
		_, err := a.UpdateUser(f.ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
			u.TOTPLastStep = 99
			return nil, keyward.Errorf(keyward.ECONFLICT, "code used")
		})
		wantCode(t, err, keyward.ECONFLICT)
		got, _ := a.FindUser(f.ctx, u.ID)
		if got.TOTPLastStep != 42 || len(f.events(ws.ID)) != before {
			t.Errorf("a failed UpdateUser wrote: step %d, %d events (want 42, %d)", got.TOTPLastStep, len(f.events(ws.ID)), before)
		}
	})
	t.Run("AppendAudit", func(t *testing.T) {
		if err := f.s.AppendAudit(f.ctx, f.event(ws.ID, "session.signin_failed", "")); err != nil {
			t.Fatal(err)
		}
		if evs := f.events(ws.ID); evs[0].Action != "session.signin_failed" {
			t.Errorf("newest event = %s", evs[0].Action)
		}
		f.assertChain(ws.ID)
	})
}

func (s *suite) testMembers(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	other := f.workspace("other")
	owner := f.user(a, ws, "owner@example.com", keyward.RoleOwner)
	bob := f.user(a, ws, "bob@example.com", keyward.RoleMember)
	if err := a.PutMember(f.ctx, &keyward.Member{WorkspaceID: other.ID, UserID: bob.ID, Role: keyward.RoleViewer, CreatedAt: t0},
		f.event(other.ID, "member.add", bob.ID)); err != nil {
		t.Fatal(err)
	}
	m, err := a.FindMember(f.ctx, ws.ID, bob.ID)
	if err != nil || m.Role != keyward.RoleMember || m.Email != "bob@example.com" || !m.CreatedAt.Equal(t0) {
		t.Fatalf("FindMember = %+v, %v", m, err)
	}
	ms, err := a.FindMembers(f.ctx, ws.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := memberEmails(ms); !slices.Equal(got, []string{"bob@example.com", "owner@example.com"}) {
		t.Errorf("FindMembers(ws) = %v", got)
	}
	ms, _ = a.FindMembers(f.ctx, "", bob.ID)
	if len(ms) != 2 {
		t.Errorf("FindMembers(user) = %d memberships, want 2", len(ms))
	}
	t.Run("RoleChange", func(t *testing.T) {
		if err := a.PutMember(f.ctx, &keyward.Member{WorkspaceID: ws.ID, UserID: bob.ID, Role: keyward.RoleAdmin, CreatedAt: t0.Add(time.Hour)},
			f.event(ws.ID, "member.role_change", bob.ID)); err != nil {
			t.Fatal(err)
		}
		m, _ := a.FindMember(f.ctx, ws.ID, bob.ID)
		if m.Role != keyward.RoleAdmin || !m.CreatedAt.Equal(t0) {
			t.Errorf("after role change: %+v (want admin, created unchanged)", m)
		}
		f.assertChain(ws.ID)
	})
	t.Run("ErrInvalidRole", func(t *testing.T) {
		wantCode(t, a.PutMember(f.ctx, &keyward.Member{WorkspaceID: ws.ID, UserID: bob.ID, Role: "god", CreatedAt: t0}), keyward.EINVALID)
	})
	t.Run("ErrUnknownUser", func(t *testing.T) {
		wantCode(t, a.PutMember(f.ctx, &keyward.Member{WorkspaceID: ws.ID, UserID: "usr_nope", Role: keyward.RoleViewer, CreatedAt: t0}), keyward.ENOTFOUND)
	})
	t.Run("RemoveEndsSessions", func(t *testing.T) {
		inWS := f.session(a, bob, ws.ID)
		inOther := f.session(a, bob, other.ID)
		ownerSes := f.session(a, owner, ws.ID)
		if err := a.RemoveMember(f.ctx, ws.ID, bob.ID, f.event(ws.ID, "member.remove", bob.ID)); err != nil {
			t.Fatal(err)
		}
		_, err := a.FindMember(f.ctx, ws.ID, bob.ID)
		wantCode(t, err, keyward.ENOTFOUND)
		_, err = a.FindSession(f.ctx, inWS.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
		for _, s := range []*keyward.Session{inOther, ownerSes} {
			if _, err := a.FindSession(f.ctx, s.Digest); err != nil {
				t.Errorf("session %s: %v; want it kept", s.ID, err)
			}
		}
		wantCode(t, a.RemoveMember(f.ctx, ws.ID, bob.ID, f.event(ws.ID, "member.remove", bob.ID)), keyward.ENOTFOUND)
		if evs := f.events(ws.ID); evs[0].Action != "member.remove" || len(evs) != 4 {
			t.Errorf("events = %d, newest %s; want 4, member.remove once", len(evs), evs[0].Action)
		}
	})
}

func (s *suite) testRoleChanges(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	other := f.workspace("other")
	ann := f.user(a, ws, "ann@example.com", keyward.RoleOwner)
	bob := f.user(a, ws, "bob@example.com", keyward.RoleOwner)
	cat := f.user(a, ws, "cat@example.com", keyward.RoleAdmin)
	if err := a.PutMember(f.ctx, &keyward.Member{WorkspaceID: other.ID, UserID: cat.ID, Role: keyward.RoleOwner, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	t.Run("EndsSessionsInWorkspace", func(t *testing.T) {
		inWS := f.session(a, cat, ws.ID)
		inOther := f.session(a, cat, other.ID)
		if err := a.ChangeRole(f.ctx, ws.ID, cat.ID, keyward.RoleAdmin, keyward.RoleViewer, f.event(ws.ID, "member.role_change", cat.ID)); err != nil {
			t.Fatal(err)
		}
		if m, _ := a.FindMember(f.ctx, ws.ID, cat.ID); m.Role != keyward.RoleViewer {
			t.Errorf("role = %s, want viewer", m.Role)
		}
		_, err := a.FindSession(f.ctx, inWS.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
		if _, err := a.FindSession(f.ctx, inOther.Digest); err != nil {
			t.Errorf("the session in another workspace ended: %v", err)
		}
		if evs := f.events(ws.ID); evs[0].Action != "member.role_change" {
			t.Errorf("newest event %s, want member.role_change", evs[0].Action)
		}
		f.assertChain(ws.ID)
	})
	t.Run("ErrStaleRole", func(t *testing.T) {
		wantCode(t, a.ChangeRole(f.ctx, ws.ID, cat.ID, keyward.RoleAdmin, keyward.RoleMember), keyward.ECONFLICT)
	})
	t.Run("ErrNotMember", func(t *testing.T) {
		// A role change must not bring back a member removed meanwhile.
		dan := f.user(a, ws, "dan@example.com", keyward.RoleMember)
		if err := a.RemoveMember(f.ctx, ws.ID, dan.ID); err != nil {
			t.Fatal(err)
		}
		wantCode(t, a.ChangeRole(f.ctx, ws.ID, dan.ID, keyward.RoleMember, keyward.RoleAdmin), keyward.ENOTFOUND)
		_, err := a.FindMember(f.ctx, ws.ID, dan.ID)
		wantCode(t, err, keyward.ENOTFOUND)
	})
	t.Run("ErrInvalidRole", func(t *testing.T) {
		wantCode(t, a.ChangeRole(f.ctx, ws.ID, cat.ID, keyward.RoleViewer, "god"), keyward.EINVALID)
	})
	t.Run("ErrLastOwnerConcurrent", func(t *testing.T) {
		// Two owners demote each other at once: one of them stays owner.
		errs := make(chan error, 2)
		start := make(chan struct{})
		for _, u := range []*keyward.User{ann, bob} {
			ev := f.event(ws.ID, "member.role_change", u.ID)
			go func() {
				<-start
				errs <- a.ChangeRole(f.ctx, ws.ID, u.ID, keyward.RoleOwner, keyward.RoleAdmin, ev)
			}()
		}
		close(start)
		var failed int
		for range 2 {
			if err := <-errs; err != nil {
				if keyward.ErrorCode(err) != keyward.ECONFLICT {
					t.Fatalf("ChangeRole = %v, want nil or ECONFLICT", err)
				}
				failed++
			}
		}
		ms, _ := a.FindMembers(f.ctx, ws.ID, "")
		var owners int
		for _, m := range ms {
			if m.Role == keyward.RoleOwner {
				owners++
			}
		}
		if owners != 1 || failed != 1 {
			t.Errorf("%d owners left, %d demotions refused; want 1 and 1", owners, failed)
		}
		f.assertChain(ws.ID)
	})
	t.Run("ErrRemoveLastOwner", func(t *testing.T) {
		var owner *keyward.User
		for _, u := range []*keyward.User{ann, bob} {
			if m, _ := a.FindMember(f.ctx, ws.ID, u.ID); m.Role == keyward.RoleOwner {
				owner = u
			}
		}
		wantCode(t, a.RemoveMember(f.ctx, ws.ID, owner.ID, f.event(ws.ID, "member.remove", owner.ID)), keyward.ECONFLICT)
		wantCode(t, a.ChangeRole(f.ctx, ws.ID, owner.ID, keyward.RoleOwner, keyward.RoleViewer), keyward.ECONFLICT)
		if m, err := a.FindMember(f.ctx, ws.ID, owner.ID); err != nil || m.Role != keyward.RoleOwner {
			t.Errorf("the last owner is now %+v, %v", m, err)
		}
	})
}

// testSessionEpoch checks the credential epoch: ending all of a user's
// sessions but one bumps it in the same step and moves the one kept to
// it, and a session made for an epoch that is no longer the user's (a
// sign-in that read the user before) is refused, so that it cannot
// outlive the ending.
func (s *suite) testSessionEpoch(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	u := f.user(a, ws, "ann@example.com", keyward.RoleOwner)
	epoch := func() int64 {
		t.Helper()
		got, err := a.FindUser(f.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.CredentialEpoch
	}
	if e := epoch(); e != 0 {
		t.Fatalf("a new user's epoch = %d, want 0", e)
	}
	// A credential changed alone does not bump it: the ending after does.
	if got, err := a.UpdateUser(f.ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
		u.PasswordHash = "$argon2id$new"
		return nil, nil
	}); err != nil || got.CredentialEpoch != 0 {
		t.Fatalf("UpdateUser = %+v, %v; want epoch 0", got, err)
	}
	keep := f.session(a, u, ws.ID)
	other := f.session(a, u, ws.ID)
	n, err := a.DeleteSessions(f.ctx, u.ID, "", keep.ID)
	if err != nil || n != 1 {
		t.Fatalf("DeleteSessions(all but) = %d, %v; want 1", n, err)
	}
	if e := epoch(); e != 1 {
		t.Errorf("epoch after ending the others = %d, want 1", e)
	}
	if got, err := a.FindSession(f.ctx, keep.Digest); err != nil || got.Epoch != 1 {
		t.Errorf("the session kept = %+v, %v; want it at epoch 1", got, err)
	}
	_, err = a.FindSession(f.ctx, other.Digest)
	wantCode(t, err, keyward.ENOTFOUND)
	t.Run("ErrStale", func(t *testing.T) {
		// A sign-in that read the epoch before the ending.
		late := &keyward.Session{ID: f.id(keyward.PrefixSession), Digest: newSecret("", t0).Digest, UserID: u.ID, WorkspaceID: ws.ID,
			Verified: true, CreatedAt: t0, LastSeenAt: t0, Epoch: 0}
		before := len(f.events(ws.ID))
		wantCode(t, a.CreateSession(f.ctx, late, f.event(ws.ID, "session.signin", late.ID)), keyward.ECONFLICT)
		_, err := a.FindSession(f.ctx, late.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
		if n := len(f.events(ws.ID)) - before; n != 0 {
			t.Errorf("a refused session recorded %d events", n)
		}
		// Ahead is no better than behind.
		late.Epoch = 2
		wantCode(t, a.CreateSession(f.ctx, late), keyward.ECONFLICT)
		late.Epoch = 1
		if err := a.CreateSession(f.ctx, late); err != nil {
			t.Fatalf("CreateSession at the current epoch: %v", err)
		}
		if got, err := a.FindSession(f.ctx, late.Digest); err != nil || got.Epoch != 1 {
			t.Errorf("FindSession = %+v, %v; want epoch 1", got, err)
		}
	})
	t.Run("SignOutEverywhere", func(t *testing.T) {
		e := epoch()
		if _, err := a.DeleteSessions(f.ctx, u.ID, "", ""); err != nil {
			t.Fatal(err)
		}
		if got := epoch(); got != e+1 {
			t.Errorf("epoch after ending every session = %d, want %d", got, e+1)
		}
		ss, err := a.FindSessions(f.ctx, u.ID)
		if err != nil || len(ss) != 0 {
			t.Errorf("sessions left: %d, %v", len(ss), err)
		}
		// Even with none to end: a sign-in under way is refused after.
		if _, err := a.DeleteSessions(f.ctx, u.ID, "", ""); err != nil {
			t.Fatal(err)
		}
		if got := epoch(); got != e+2 {
			t.Errorf("epoch after ending no session = %d, want %d", got, e+2)
		}
	})
	t.Run("EndOneKeepsEpoch", func(t *testing.T) {
		ses := f.session(a, u, ws.ID)
		e := epoch()
		if n, err := a.DeleteSessions(f.ctx, u.ID, ses.ID, ""); err != nil || n != 1 {
			t.Fatalf("DeleteSessions(one) = %d, %v", n, err)
		}
		if got := epoch(); got != e {
			t.Errorf("epoch after ending one session = %d, want %d", got, e)
		}
	})
}

func memberEmails(ms []*keyward.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Email)
	}
	return out
}

// session creates a verified session of u in the workspace, at u's
// current credential epoch.
func (f *fixture) session(a keyward.AccountStore, u *keyward.User, wsID string) *keyward.Session {
	f.t.Helper()
	cur, err := a.FindUser(f.ctx, u.ID)
	if err != nil {
		f.t.Fatalf("FindUser: %v", err)
	}
	s := &keyward.Session{ID: f.id(keyward.PrefixSession), Digest: newSecret("", t0).Digest, UserID: u.ID, WorkspaceID: wsID,
		Verified: true, CreatedAt: t0, LastSeenAt: t0, IP: "192.0.2.1", UserAgent: "test", Epoch: cur.CredentialEpoch}
	if err := a.CreateSession(f.ctx, s); err != nil {
		f.t.Fatalf("CreateSession: %v", err)
	}
	return s
}

func (s *suite) testSessions(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	u := f.user(a, ws, "ann@example.com", keyward.RoleOwner)
	ses := &keyward.Session{ID: f.id(keyward.PrefixSession), Digest: newSecret("", t0).Digest, UserID: u.ID, WorkspaceID: ws.ID,
		CreatedAt: t0, LastSeenAt: t0, IP: "192.0.2.1", UserAgent: "Firefox"}
	if err := a.CreateSession(f.ctx, ses, f.event(ws.ID, "session.signin", u.ID)); err != nil {
		t.Fatal(err)
	}
	got, err := a.FindSession(f.ctx, ses.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ses.ID || got.UserID != u.ID || got.Verified || !got.ReauthAt.IsZero() || !got.CreatedAt.Equal(t0) ||
		!got.LastSeenAt.Equal(t0) || got.IP != "192.0.2.1" || got.UserAgent != "Firefox" || got.WorkspaceID != ws.ID {
		t.Errorf("FindSession = %+v", got)
	}
	t.Run("ErrDigestTaken", func(t *testing.T) {
		dup := *ses
		dup.ID = f.id(keyward.PrefixSession)
		wantCode(t, a.CreateSession(f.ctx, &dup, f.event(ws.ID, "session.signin", u.ID)), keyward.ECONFLICT)
	})
	t.Run("ErrUnknownUser", func(t *testing.T) {
		bad := &keyward.Session{ID: f.id(keyward.PrefixSession), Digest: newSecret("", t0).Digest, UserID: "usr_nope", WorkspaceID: ws.ID, CreatedAt: t0, LastSeenAt: t0}
		wantCode(t, a.CreateSession(f.ctx, bad), keyward.ENOTFOUND)
	})
	t.Run("Update", func(t *testing.T) {
		t1 := t0.Add(time.Minute)
		upd := *got
		oldDigest := upd.Digest
		upd.Digest = newSecret("", t0).Digest
		upd.Verified, upd.ReauthAt, upd.LastSeenAt = true, t1, t1
		if err := a.UpdateSession(f.ctx, &upd, f.event(ws.ID, "session.mfa", u.ID)); err != nil {
			t.Fatal(err)
		}
		_, err := a.FindSession(f.ctx, oldDigest)
		wantCode(t, err, keyward.ENOTFOUND)
		got, err := a.FindSession(f.ctx, upd.Digest)
		if err != nil || !got.Verified || !got.ReauthAt.Equal(t1) || !got.LastSeenAt.Equal(t1) || !got.CreatedAt.Equal(t0) {
			t.Errorf("after UpdateSession: %+v, %v", got, err)
		}
		missing := upd
		missing.ID = "ses_nope"
		missing.Digest = newSecret("", t0).Digest
		wantCode(t, a.UpdateSession(f.ctx, &missing), keyward.ENOTFOUND)
	})
	t.Run("TouchWritesOnlyLastUse", func(t *testing.T) {
		stale, err := a.FindSession(f.ctx, ses.Digest)
		if err != nil {
			ses, _ := a.FindSessions(f.ctx, u.ID)
			stale = ses[0]
		}
		cur := *stale
		cur.Digest, cur.Verified = newSecret("", t0).Digest, true
		if err := a.UpdateSession(f.ctx, &cur); err != nil {
			t.Fatal(err)
		}
		t2 := t0.Add(time.Hour)
		// A request that read the session before its new digest.
		if err := a.TouchSession(f.ctx, stale.ID, stale.Digest, t2); err != nil {
			t.Fatal(err)
		}
		got, err := a.FindSession(f.ctx, cur.Digest)
		if err != nil || !got.Verified || !got.LastSeenAt.Equal(cur.LastSeenAt) {
			t.Fatalf("after a stale touch: %+v, %v; want it unchanged", got, err)
		}
		if err := a.TouchSession(f.ctx, cur.ID, cur.Digest, t2); err != nil {
			t.Fatal(err)
		}
		got, _ = a.FindSession(f.ctx, cur.Digest)
		if !got.LastSeenAt.Equal(t2) || !got.Verified || !got.ReauthAt.Equal(cur.ReauthAt) {
			t.Errorf("after a touch: %+v; want last use %s, nothing else changed", got, t2)
		}
		// Never backwards.
		a.TouchSession(f.ctx, cur.ID, cur.Digest, t0)
		if got, _ = a.FindSession(f.ctx, cur.Digest); !got.LastSeenAt.Equal(t2) {
			t.Errorf("a touch moved the last use back to %s", got.LastSeenAt)
		}
	})
	t.Run("DeleteSessions", func(t *testing.T) {
		s2 := f.session(a, u, ws.ID)
		s3 := f.session(a, u, ws.ID)
		ss, err := a.FindSessions(f.ctx, u.ID)
		if err != nil || len(ss) != 3 {
			t.Fatalf("FindSessions = %d, %v; want 3", len(ss), err)
		}
		before := len(f.events(ws.ID))
		n, err := a.DeleteSessions(f.ctx, u.ID, s2.ID, "", f.event(ws.ID, "session.end", s2.ID))
		if err != nil || n != 1 {
			t.Fatalf("DeleteSessions(one) = %d, %v", n, err)
		}
		n, err = a.DeleteSessions(f.ctx, u.ID, s2.ID, "", f.event(ws.ID, "session.end", s2.ID))
		if err != nil || n != 0 || len(f.events(ws.ID)) != before+1 {
			t.Fatalf("DeleteSessions(gone) = %d, %v, %d events; want 0, nil, no event", n, err, len(f.events(ws.ID))-before)
		}
		n, err = a.DeleteSessions(f.ctx, u.ID, "", s3.ID, f.event(ws.ID, "session.signout_all", u.ID))
		if err != nil || n != 1 {
			t.Fatalf("DeleteSessions(all but) = %d, %v", n, err)
		}
		ss, _ = a.FindSessions(f.ctx, u.ID)
		if len(ss) != 1 || ss[0].ID != s3.ID {
			t.Errorf("sessions left = %d, want only %s", len(ss), s3.ID)
		}
		f.assertChain(ws.ID)
	})
}

func (s *suite) testRecoveryCodes(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	u := f.user(a, ws, "ann@example.com", keyward.RoleOwner)
	d1, d2 := []byte("digest-1"), []byte("digest-2")
	// Without the app, no codes: nothing is written, the events neither.
	wantCode(t, a.SetRecoveryCodes(f.ctx, u.ID, [][]byte{d1, d2}, f.event(ws.ID, "mfa.recovery_codes", u.ID)), keyward.ECONFLICT)
	if n, err := a.RecoveryCodesLeft(f.ctx, u.ID); err != nil || n != 0 {
		t.Fatalf("RecoveryCodesLeft without the app = %d, %v; want 0", n, err)
	}
	if _, err := a.UpdateUser(f.ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
		u.TOTPSecret = []byte("sealed secret")
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetRecoveryCodes(f.ctx, u.ID, [][]byte{d1, d2}, f.event(ws.ID, "mfa.recovery_codes", u.ID)); err != nil {
		t.Fatal(err)
	}
	if n, err := a.RecoveryCodesLeft(f.ctx, u.ID); err != nil || n != 2 {
		t.Fatalf("RecoveryCodesLeft = %d, %v", n, err)
	}
	if err := a.UseRecoveryCode(f.ctx, u.ID, d1, f.event(ws.ID, "mfa.recovery_code_use", u.ID)); err != nil {
		t.Fatal(err)
	}
	wantCode(t, a.UseRecoveryCode(f.ctx, u.ID, d1, f.event(ws.ID, "mfa.recovery_code_use", u.ID)), keyward.ENOTFOUND)
	if n, _ := a.RecoveryCodesLeft(f.ctx, u.ID); n != 1 {
		t.Errorf("left after one use = %d, want 1", n)
	}
	if err := a.SetRecoveryCodes(f.ctx, u.ID, [][]byte{[]byte("digest-3")}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, a.UseRecoveryCode(f.ctx, u.ID, d2), keyward.ENOTFOUND)
	wantCode(t, a.SetRecoveryCodes(f.ctx, "usr_nope", nil), keyward.ENOTFOUND)
	if evs := f.events(ws.ID); len(evs) != 3 {
		t.Errorf("events = %d, want 3 (create, codes, one use)", len(evs))
	}
	f.assertChain(ws.ID)
}

// testEnableTOTP pins down EnableTOTP: the secret and the recovery codes
// are written together or not at all.
func (s *suite) testEnableTOTP(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	u := f.user(a, ws, "ann@example.com", keyward.RoleOwner)
	at := t0.Add(time.Hour)
	state := func() (secret []byte, step int64, codes int) {
		t.Helper()
		got, err := a.FindUser(f.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		n, err := a.RecoveryCodesLeft(f.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.TOTPSecret, got.TOTPLastStep, n
	}
	t.Run("ErrEventFails", func(t *testing.T) {
		// An event the store refuses (no action) fails the write: neither
		// the secret nor the codes stay.
		bad := f.event(ws.ID, "", u.ID)
		_, err := a.EnableTOTP(f.ctx, u.ID, []byte("sealed secret"), 7, [][]byte{[]byte("code-1")}, at, bad)
		if err == nil {
			t.Fatal("EnableTOTP with a bad event succeeded")
		}
		if secret, _, codes := state(); secret != nil || codes != 0 {
			t.Fatalf("after a failed EnableTOTP: secret %q, %d recovery codes; want none", secret, codes)
		}
	})
	t.Run("OK", func(t *testing.T) {
		before := len(f.events(ws.ID))
		got, err := a.EnableTOTP(f.ctx, u.ID, []byte("sealed secret"), 7, [][]byte{[]byte("code-1"), []byte("code-2")}, at,
			f.event(ws.ID, "mfa.totp_enable", u.ID), f.event(ws.ID, "mfa.recovery_codes_create", u.ID))
		if err != nil || string(got.TOTPSecret) != "sealed secret" || got.TOTPLastStep != 7 || !got.UpdatedAt.Equal(at) {
			t.Fatalf("EnableTOTP = %+v, %v", got, err)
		}
		if secret, step, codes := state(); string(secret) != "sealed secret" || step != 7 || codes != 2 {
			t.Fatalf("after EnableTOTP: secret %q, step %d, %d recovery codes; want the secret, 7, 2", secret, step, codes)
		}
		if n := len(f.events(ws.ID)) - before; n != 2 {
			t.Errorf("%d events written, want 2", n)
		}
		f.assertChain(ws.ID)
	})
	t.Run("ErrOnAlready", func(t *testing.T) {
		before := len(f.events(ws.ID))
		_, err := a.EnableTOTP(f.ctx, u.ID, []byte("another secret"), 9, [][]byte{[]byte("code-3")}, at.Add(time.Hour), f.event(ws.ID, "mfa.totp_enable", u.ID))
		wantCode(t, err, keyward.ECONFLICT)
		if secret, step, codes := state(); string(secret) != "sealed secret" || step != 7 || codes != 2 {
			t.Fatalf("after a refused EnableTOTP: secret %q, step %d, %d recovery codes; want them unchanged", secret, step, codes)
		}
		if n := len(f.events(ws.ID)) - before; n != 0 {
			t.Errorf("%d events written, want 0", n)
		}
	})
	t.Run("ErrNoUser", func(t *testing.T) {
		_, err := a.EnableTOTP(f.ctx, "usr_nope", []byte("sealed secret"), 1, nil, at)
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

// testAccountEvents pins down the events without a workspace: each goes
// to every workspace its actor is a member of when it is written, and not
// to one it has left.
func (s *suite) testAccountEvents(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	acme, beta, gone := f.workspace("acme"), f.workspace("beta"), f.workspace("gone")
	u := f.user(a, acme, "ann@example.com", keyward.RoleMember)
	f.user(a, gone, "owner@example.com", keyward.RoleOwner) // gone keeps an owner
	for _, ws := range []*keyward.Workspace{beta, gone} {
		if err := a.PutMember(f.ctx, &keyward.Member{WorkspaceID: ws.ID, UserID: u.ID, Role: keyward.RoleMember, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.RemoveMember(f.ctx, gone.ID, u.ID, f.event(gone.ID, "member.remove", u.ID)); err != nil {
		t.Fatal(err)
	}
	count := func(ws *keyward.Workspace, action string) (n int, ids []string) {
		for _, ev := range f.events(ws.ID) {
			if ev.Action == action {
				n++
				ids = append(ids, ev.ID)
				if ev.Actor.ID != u.ID || ev.Target != u.ID || string(ev.Changes) != `{"after":"x"}` {
					t.Errorf("event in %s = %+v", ws.Name, ev)
				}
			}
		}
		return n, ids
	}
	ev := f.event("", "user.password_change", u.ID)
	ev.Actor = keyward.Actor{Type: keyward.ActorMember, ID: u.ID}
	ev.Changes = json.RawMessage(`{"after":"x"}`)
	if _, err := a.UpdateUser(f.ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
		u.PasswordHash = "$argon2id$new"
		return []*keyward.AuditEvent{ev}, nil
	}); err != nil {
		t.Fatal(err)
	}
	na, idsA := count(acme, "user.password_change")
	nb, idsB := count(beta, "user.password_change")
	if ng, _ := count(gone, "user.password_change"); na != 1 || nb != 1 || ng != 0 {
		t.Fatalf("events in acme, beta, gone = %d, %d, %d; want 1, 1, 0", na, nb, ng)
	}
	if idsA[0] == idsB[0] || idsA[0] != ev.ID && idsB[0] != ev.ID {
		t.Errorf("event ids %s and %s: want the event's id (%s) once and a new one", idsA[0], idsB[0], ev.ID)
	}
	for _, ws := range []*keyward.Workspace{acme, beta, gone} {
		f.assertChain(ws.ID)
	}
	t.Run("ErrSystemActor", func(t *testing.T) {
		// A workspace-less event whose actor is no member is refused,
		// not dropped unnoticed.
		bad := f.event("", "user.password_change", u.ID)
		_, err := a.UpdateUser(f.ctx, u.ID, func(*keyward.User) ([]*keyward.AuditEvent, error) { return []*keyward.AuditEvent{bad}, nil })
		if err == nil {
			t.Error("an event without a workspace and with a system actor was accepted")
		}
	})
}

func (s *suite) testWorkspaceSettings(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	got, err := a.FindWorkspaceSettings(f.ctx, ws.ID)
	if err != nil || got.MFARequired || got.MaxTokenLifetime != 0 || got.ExpiryRequired || len(got.Scopes) != 0 || got.WorkspaceID != ws.ID {
		t.Fatalf("default settings = %+v, %v", got, err)
	}
	want := &keyward.WorkspaceSettings{WorkspaceID: ws.ID, MFARequired: true, MaxTokenLifetime: 90 * 24 * time.Hour, ExpiryRequired: true,
		Scopes: []keyward.ScopeInfo{{Name: "orders:read", Description: "read orders"}, {Name: "orders:write", Privileged: true}}, UpdatedAt: t0}
	if err := a.PutWorkspaceSettings(f.ctx, want, f.event(ws.ID, "workspace.settings_update", ws.ID)); err != nil {
		t.Fatal(err)
	}
	got, err = a.FindWorkspaceSettings(f.ctx, ws.ID)
	if err != nil || !got.MFARequired || got.MaxTokenLifetime != want.MaxTokenLifetime || !got.ExpiryRequired ||
		!slices.Equal(got.Scopes, want.Scopes) || !got.UpdatedAt.Equal(t0) {
		t.Errorf("settings = %+v, %v; want %+v", got, err, want)
	}
	want.MFARequired = false
	if err := a.PutWorkspaceSettings(f.ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.FindWorkspaceSettings(f.ctx, ws.ID); got.MFARequired {
		t.Errorf("MFARequired not updated")
	}
	_, err = a.FindWorkspaceSettings(f.ctx, "ws_nope")
	wantCode(t, err, keyward.ENOTFOUND)
	wantCode(t, a.PutWorkspaceSettings(f.ctx, &keyward.WorkspaceSettings{WorkspaceID: "ws_nope"}), keyward.ENOTFOUND)
}

func (s *suite) testTokensCreatedBy(t *testing.T) {
	f := s.fixture(t)
	ws := f.workspace("acme")
	mine, _ := f.create(f.newToken(ws.ID, "mine"), func(t *keyward.Token) { t.CreatedBy = "usr_1" })
	f.create(f.newToken(ws.ID, "theirs"), func(t *keyward.Token) { t.CreatedBy = "usr_2" })
	got, err := f.s.FindTokens(f.ctx, keyward.TokenFilter{WorkspaceID: ws.ID, CreatedBy: "usr_1", Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if ids := tokenIDs(got); !slices.Equal(ids, []string{mine.ID}) {
		t.Errorf("FindTokens(CreatedBy usr_1) = %v, want [%s]", ids, mine.ID)
	}
}

func (s *suite) testInvites(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	owner := f.user(a, ws, "owner@example.com", keyward.RoleOwner)
	newInvite := func(email, role string) *keyward.Invite {
		inv := &keyward.Invite{ID: f.id(keyward.PrefixInvite), Digest: newSecret("", t0).Digest, WorkspaceID: ws.ID, Email: email,
			Role: role, CreatedBy: owner.ID, CreatedAt: t0, ExpiresAt: t0.Add(keyward.DefaultInviteTTL)}
		if err := a.CreateInvite(f.ctx, inv, f.event(ws.ID, "member.invite", inv.ID)); err != nil {
			t.Fatalf("CreateInvite: %v", err)
		}
		return inv
	}
	inv := newInvite("bob@example.com", keyward.RoleAdmin)
	got, err := a.FindInvite(f.ctx, inv.Digest)
	if err != nil || got.ID != inv.ID || got.Email != "bob@example.com" || got.Role != keyward.RoleAdmin || got.UsedAt != nil ||
		!got.ExpiresAt.Equal(inv.ExpiresAt) || got.CreatedBy != owner.ID {
		t.Fatalf("FindInvite = %+v, %v", got, err)
	}
	t.Run("ErrExpired", func(t *testing.T) {
		bob := &keyward.User{ID: f.id(keyward.PrefixUser), Email: "bob@example.com", PasswordHash: "x", CreatedAt: t0, UpdatedAt: t0}
		wantCode(t, a.AcceptInvite(f.ctx, inv.Digest, inv.ExpiresAt, bob, ""), keyward.ENOTFOUND)
		_, err := a.FindUserByEmail(f.ctx, "bob@example.com")
		wantCode(t, err, keyward.ENOTFOUND)
	})
	t.Run("ErrUnknown", func(t *testing.T) {
		wantCode(t, a.AcceptInvite(f.ctx, []byte("nope"), t0, nil, owner.ID), keyward.ENOTFOUND)
	})
	t.Run("AcceptNewUserOnce", func(t *testing.T) {
		bob := &keyward.User{ID: f.id(keyward.PrefixUser), Email: "bob@example.com", PasswordHash: "x", CreatedAt: t0, UpdatedAt: t0}
		at := t0.Add(time.Hour)
		if err := a.AcceptInvite(f.ctx, inv.Digest, at, bob, "", f.event(ws.ID, "member.join", bob.ID)); err != nil {
			t.Fatal(err)
		}
		m, err := a.FindMember(f.ctx, ws.ID, bob.ID)
		if err != nil || m.Role != keyward.RoleAdmin {
			t.Fatalf("member after accepting = %+v, %v", m, err)
		}
		used, _ := a.FindInvite(f.ctx, inv.Digest)
		if used.UsedAt == nil || !used.UsedAt.Equal(at) {
			t.Errorf("UsedAt = %v, want %v", used.UsedAt, at)
		}
		other := &keyward.User{ID: f.id(keyward.PrefixUser), Email: "eve@example.com", PasswordHash: "x", CreatedAt: t0, UpdatedAt: t0}
		wantCode(t, a.AcceptInvite(f.ctx, inv.Digest, at, other, ""), keyward.ENOTFOUND)
		if ins, _ := a.FindInvites(f.ctx, ws.ID); len(ins) != 0 {
			t.Errorf("a used invitation is still listed")
		}
		f.assertChain(ws.ID)
	})
	t.Run("ErrAlreadyMember", func(t *testing.T) {
		again := newInvite("owner@example.com", keyward.RoleViewer)
		wantCode(t, a.AcceptInvite(f.ctx, again.Digest, t0, nil, owner.ID), keyward.ECONFLICT)
		if got, _ := a.FindInvite(f.ctx, again.Digest); got.UsedAt != nil {
			t.Errorf("a failed acceptance used the invitation")
		}
	})
	t.Run("Delete", func(t *testing.T) {
		x := newInvite("carol@example.com", keyward.RoleMember)
		if ins, _ := a.FindInvites(f.ctx, ws.ID); len(ins) != 2 || ins[0].ID != x.ID {
			t.Fatalf("FindInvites = %d, want 2, newest first", len(ins))
		}
		wantCode(t, a.DeleteInvite(f.ctx, "ws_other", x.ID), keyward.ENOTFOUND)
		if err := a.DeleteInvite(f.ctx, ws.ID, x.ID, f.event(ws.ID, "member.invite_cancel", x.ID)); err != nil {
			t.Fatal(err)
		}
		wantCode(t, a.DeleteInvite(f.ctx, ws.ID, x.ID), keyward.ENOTFOUND)
		wantCode(t, a.DeleteInvite(f.ctx, ws.ID, inv.ID), keyward.ENOTFOUND) // used: kept for the record
	})
	t.Run("ErrUnknownWorkspace", func(t *testing.T) {
		bad := &keyward.Invite{ID: f.id(keyward.PrefixInvite), Digest: []byte("d"), WorkspaceID: "ws_nope", Email: "x@example.com",
			Role: keyward.RoleMember, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		wantCode(t, a.CreateInvite(f.ctx, bad), keyward.ENOTFOUND)
	})
}

func (s *suite) testPasskeys(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	u := f.user(a, ws, "ann@example.com", keyward.RoleOwner)
	other := f.user(a, ws, "bob@example.com", keyward.RoleMember)
	pk := &keyward.Passkey{ID: f.id(keyward.PrefixPasskey), UserID: u.ID, CredentialID: []byte("cred-1"),
		Credential: []byte(`{"signCount":0}`), Name: "laptop", CreatedAt: t0}
	if err := a.AddPasskey(f.ctx, pk, f.event(ws.ID, "mfa.passkey_add", pk.ID)); err != nil {
		t.Fatal(err)
	}
	dup := *pk
	dup.ID = f.id(keyward.PrefixPasskey)
	wantCode(t, a.AddPasskey(f.ctx, &dup), keyward.ECONFLICT)
	wantCode(t, a.AddPasskey(f.ctx, &keyward.Passkey{ID: f.id(keyward.PrefixPasskey), UserID: "usr_nope", CredentialID: []byte("x"), Credential: []byte("{}"), CreatedAt: t0}), keyward.ENOTFOUND)
	got, err := a.FindPasskeyByCredential(f.ctx, []byte("cred-1"))
	if err != nil || got.ID != pk.ID || got.UserID != u.ID || string(got.Credential) != `{"signCount":0}` || got.Name != "laptop" || got.LastUsedAt != nil {
		t.Fatalf("FindPasskeyByCredential = %+v, %v", got, err)
	}
	at := t0.Add(time.Hour)
	if err := a.UsePasskey(f.ctx, pk.ID, []byte(`{"signCount":1}`), at); err != nil {
		t.Fatal(err)
	}
	list, err := a.FindPasskeys(f.ctx, u.ID)
	if err != nil || len(list) != 1 || string(list[0].Credential) != `{"signCount":1}` || list[0].LastUsedAt == nil || !list[0].LastUsedAt.Equal(at) {
		t.Fatalf("FindPasskeys = %+v, %v", list, err)
	}
	wantCode(t, a.UsePasskey(f.ctx, "pk_nope", []byte("{}"), at), keyward.ENOTFOUND)
	wantCode(t, a.DeletePasskey(f.ctx, other.ID, pk.ID, false), keyward.ENOTFOUND)
	if err := a.DeletePasskey(f.ctx, u.ID, pk.ID, false, f.event(ws.ID, "mfa.passkey_remove", pk.ID)); err != nil {
		t.Fatal(err)
	}
	_, err = a.FindPasskeyByCredential(f.ctx, []byte("cred-1"))
	wantCode(t, err, keyward.ENOTFOUND)
	f.assertChain(ws.ID)
}

// testLastFactor pins down DisableTOTP and DeletePasskey with keepFactor:
// each refuses to take a user's last second factor, and two removals at
// once, each of which alone would leave the other factor, cannot both
// pass, since each checks in the step that removes.
func (s *suite) testLastFactor(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	ws := f.workspace("acme")
	var users int
	newUser := func(totp bool, passkeys int) (*keyward.User, []*keyward.Passkey) {
		t.Helper()
		users++
		u := f.user(a, ws, fmt.Sprintf("user%d@example.com", users), keyward.RoleMember)
		if totp {
			if _, err := a.UpdateUser(f.ctx, u.ID, func(u *keyward.User) ([]*keyward.AuditEvent, error) {
				u.TOTPSecret = []byte("sealed secret")
				return nil, nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := a.SetRecoveryCodes(f.ctx, u.ID, [][]byte{[]byte("code-" + u.ID)}); err != nil {
				t.Fatal(err)
			}
		}
		var keys []*keyward.Passkey
		for i := range passkeys {
			pk := &keyward.Passkey{ID: f.id(keyward.PrefixPasskey), UserID: u.ID, CredentialID: []byte(fmt.Sprintf("cred-%s-%d", u.ID, i)),
				Credential: []byte("{}"), Name: "key", CreatedAt: t0}
			if err := a.AddPasskey(f.ctx, pk); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, pk)
		}
		return u, keys
	}
	factors := func(u *keyward.User) (totp bool, passkeys, codes int) {
		t.Helper()
		got, err := a.FindUser(f.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := a.FindPasskeys(f.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		codes, err = a.RecoveryCodesLeft(f.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.HasMFA(), len(keys), codes
	}
	at := t0.Add(time.Hour)

	t.Run("DisableTOTP", func(t *testing.T) {
		u, _ := newUser(true, 0)
		before := len(f.events(ws.ID))
		_, _, err := a.DisableTOTP(f.ctx, u.ID, true, at, f.event(ws.ID, "mfa.totp_disable", u.ID))
		wantCode(t, err, keyward.ECONFLICT)
		if totp, _, codes := factors(u); !totp || codes != 1 {
			t.Fatalf("after a refusal: app on %v, %d recovery codes; want true, 1", totp, codes)
		}
		got, changed, err := a.DisableTOTP(f.ctx, u.ID, false, at, f.event(ws.ID, "mfa.totp_disable", u.ID))
		if err != nil || !changed || got.HasMFA() || !got.UpdatedAt.Equal(at) {
			t.Fatalf("DisableTOTP = %+v, %v, %v", got, changed, err)
		}
		if totp, _, codes := factors(u); totp || codes != 0 {
			t.Fatalf("after DisableTOTP: app on %v, %d recovery codes; want false, 0", totp, codes)
		}
		// Off already: nothing to do, nothing written, keepFactor or not.
		got, changed, err = a.DisableTOTP(f.ctx, u.ID, true, at.Add(time.Hour), f.event(ws.ID, "mfa.totp_disable", u.ID))
		if err != nil || changed || got.HasMFA() || !got.UpdatedAt.Equal(at) {
			t.Fatalf("DisableTOTP when off = %+v, %v, %v", got, changed, err)
		}
		if n := len(f.events(ws.ID)) - before; n != 1 {
			t.Errorf("%d events written, want 1", n)
		}
		_, _, err = a.DisableTOTP(f.ctx, "usr_nope", false, at)
		wantCode(t, err, keyward.ENOTFOUND)
		f.assertChain(ws.ID)
	})
	t.Run("ErrLastPasskey", func(t *testing.T) {
		u, keys := newUser(false, 2)
		before := len(f.events(ws.ID))
		if err := a.DeletePasskey(f.ctx, u.ID, keys[0].ID, true, f.event(ws.ID, "mfa.passkey_remove", keys[0].ID)); err != nil {
			t.Fatal(err)
		}
		wantCode(t, a.DeletePasskey(f.ctx, u.ID, keys[1].ID, true, f.event(ws.ID, "mfa.passkey_remove", keys[1].ID)), keyward.ECONFLICT)
		if _, n, _ := factors(u); n != 1 {
			t.Fatalf("%d passkeys after a refused removal, want 1", n)
		}
		if n := len(f.events(ws.ID)) - before; n != 1 {
			t.Errorf("%d events written, want 1", n)
		}
		// Beside the app, the last passkey may go.
		v, vk := newUser(true, 1)
		if err := a.DeletePasskey(f.ctx, v.ID, vk[0].ID, true); err != nil {
			t.Fatal(err)
		}
		wantCode(t, a.DeletePasskey(f.ctx, v.ID, vk[0].ID, true), keyward.ENOTFOUND)
		f.assertChain(ws.ID)
	})
	t.Run("ErrLastFactorConcurrent", func(t *testing.T) {
		for i := range 20 {
			// Even rounds: the app off and the only passkey removed at
			// once; odd ones: both passkeys of a user without the app.
			u, keys := newUser(i%2 == 0, 1+i%2)
			remove := []func() error{
				func() error { return a.DeletePasskey(f.ctx, u.ID, keys[0].ID, true) },
				func() error { _, _, err := a.DisableTOTP(f.ctx, u.ID, true, at); return err },
			}
			if len(keys) == 2 {
				remove[1] = func() error { return a.DeletePasskey(f.ctx, u.ID, keys[1].ID, true) }
			}
			errs := make(chan error, 2)
			start := make(chan struct{})
			for _, fn := range remove {
				go func() {
					<-start
					errs <- fn()
				}()
			}
			close(start)
			var refused int
			for range 2 {
				if err := <-errs; err != nil {
					if keyward.ErrorCode(err) != keyward.ECONFLICT {
						t.Fatalf("round %d: %v, want nil or ECONFLICT", i, err)
					}
					refused++
				}
			}
			totp, passkeys, _ := factors(u)
			if !totp && passkeys == 0 || refused != 1 {
				t.Fatalf("round %d: app on %v, %d passkeys, %d removals refused; want a factor left and 1 refused", i, totp, passkeys, refused)
			}
		}
	})
}

func (s *suite) testChallenges(t *testing.T) {
	f := s.fixture(t)
	a := f.accounts()
	c1, c2, c3 := []byte("challenge-digest-1"), []byte("challenge-digest-2"), []byte("challenge-digest-3")
	if err := a.CreateChallenge(f.ctx, c1, t0, t0.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantCode(t, a.CreateChallenge(f.ctx, c1, t0, t0.Add(5*time.Minute)), keyward.ECONFLICT)
	t.Run("UseOnce", func(t *testing.T) {
		if err := a.UseChallenge(f.ctx, c1, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		wantCode(t, a.UseChallenge(f.ctx, c1, t0.Add(time.Minute)), keyward.ENOTFOUND)
	})
	t.Run("ErrExpired", func(t *testing.T) {
		if err := a.CreateChallenge(f.ctx, c2, t0, t0.Add(5*time.Minute)); err != nil {
			t.Fatal(err)
		}
		wantCode(t, a.UseChallenge(f.ctx, c2, t0.Add(5*time.Minute)), keyward.ENOTFOUND)
	})
	t.Run("ErrUnknown", func(t *testing.T) {
		wantCode(t, a.UseChallenge(f.ctx, []byte("never-made"), t0), keyward.ENOTFOUND)
	})
	t.Run("CreateDropsExpired", func(t *testing.T) {
		if err := a.CreateChallenge(f.ctx, c3, t0, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		// Made again after it expired: the expired one is gone, so no
		// conflict, and the new one is good until its own expiry.
		if err := a.CreateChallenge(f.ctx, c3, t0.Add(time.Minute), t0.Add(2*time.Minute)); err != nil {
			t.Fatalf("CreateChallenge after expiry: %v", err)
		}
		if err := a.UseChallenge(f.ctx, c3, t0.Add(90*time.Second)); err != nil {
			t.Fatal(err)
		}
	})
}
