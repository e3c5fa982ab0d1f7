package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// bulkLoader returns the fixture's store as a keyward.BulkLoader, or skips
// the test when the store is not one.
func (f *fixture) bulkLoader() keyward.BulkLoader {
	f.t.Helper()
	b, ok := f.s.(keyward.BulkLoader)
	if !ok {
		f.t.Skip("the store does not implement keyward.BulkLoader")
	}
	return b
}

// count returns the number of stored tokens or fails the test.
func (f *fixture) count(b keyward.BulkLoader) int64 {
	f.t.Helper()
	n, err := b.CountTokens(f.ctx)
	if err != nil {
		f.t.Fatalf("CountTokens: %v", err)
	}
	return n
}

// absent fails the test unless neither the tokens nor the secrets are
// stored.
func (f *fixture) absent(toks []*keyward.Token, secs []*keyward.Secret) {
	f.t.Helper()
	for _, tok := range toks {
		if _, err := f.s.TokenByID(f.ctx, tok.ID); keyward.ErrorCode(err) != keyward.ENOTFOUND {
			f.t.Errorf("TokenByID(%s) error = %v, want ENOTFOUND (nothing inserted)", tok.ID, err)
		}
	}
	for _, sec := range secs {
		if _, _, err := f.s.LookupSecret(f.ctx, sec.Digest); keyward.ErrorCode(err) != keyward.ENOTFOUND {
			f.t.Errorf("LookupSecret(secret of %s) error = %v, want ENOTFOUND (nothing inserted)", sec.TokenID, err)
		}
	}
}

func (s *suite) testInsertTokens(t *testing.T) {
	// batch returns n unsaved tokens of the workspace and their secrets.
	batch := func(f *fixture, wsID string, n int) ([]*keyward.Token, []*keyward.Secret) {
		toks := make([]*keyward.Token, n)
		secs := make([]*keyward.Secret, n)
		for i := range toks {
			toks[i] = f.newToken(wsID, fmt.Sprintf("bulk-%d", i))
			secs[i] = newSecret(toks[i].ID, t0)
		}
		return toks, secs
	}

	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		b := f.bulkLoader()
		ws := f.workspace("acme")
		other := f.workspace("other")
		existing, _ := f.create(f.newToken(ws.ID, "existing"))
		before := f.snapshot(ws.ID, existing.ID)

		full := f.fullToken(ws.ID)
		minimal := &keyward.Token{ID: f.id(keyward.PrefixToken), WorkspaceID: ws.ID, Name: "minimal", CreatedAt: t0, UpdatedAt: t0}
		elsewhere := f.newToken(other.ID, "elsewhere")
		toks := []*keyward.Token{full, minimal, elsewhere}
		fullSec := newSecret(full.ID, t0.Add(time.Microsecond))
		fullSec.KeyID = "k2"
		minimalSec := newSecret("", time.Time{}) // stored as the token's
		elsewhereSec := newSecret(elsewhere.ID, t0)
		elsewhereSec.ExpiresAt = ptr(t0.Add(time.Hour))
		secs := []*keyward.Secret{fullSec, minimalSec, elsewhereSec}
		if err := b.InsertTokens(f.ctx, toks, secs); err != nil {
			t.Fatalf("InsertTokens: %v", err)
		}

		minimalWant := *minimalSec
		minimalWant.TokenID, minimalWant.CreatedAt = minimal.ID, minimal.CreatedAt
		wantSecs := []*keyward.Secret{fullSec, &minimalWant, elsewhereSec}
		for i, want := range toks {
			assertToken(t, f.find(want.WorkspaceID, want.ID), want)
			gs, gt, err := f.s.LookupSecret(f.ctx, secs[i].Digest)
			if err != nil {
				t.Fatalf("LookupSecret(secret of %s): %v", want.Name, err)
			}
			assertSecret(t, gs, wantSecs[i])
			assertToken(t, gt, want)
			if got := f.secrets(want.ID); len(got) != 1 {
				t.Errorf("token %s has %d secrets, want 1", want.Name, len(got))
			}
		}
		// No change and no audit event: the existing token's are all there is.
		if got := f.changes(); !reflect.DeepEqual(got, before.changes) {
			t.Errorf("changes = %v, want %v (unchanged)", got, before.changes)
		}
		if got := f.events(ws.ID); len(got) != len(before.events) {
			t.Errorf("%d audit events in acme, want %d (unchanged)", len(got), len(before.events))
		}
		if got := f.events(other.ID); len(got) != 0 {
			t.Errorf("audit events in other = %v, want none", eventIDs(got))
		}
		if n := f.count(b); n != 4 {
			t.Errorf("CountTokens = %d, want 4", n)
		}
	})

	t.Run("OKMany", func(t *testing.T) {
		f := s.fixture(t)
		b := f.bulkLoader()
		ws := f.workspace("acme")
		toks, secs := batch(f, ws.ID, 2500)
		if err := b.InsertTokens(f.ctx, toks, secs); err != nil {
			t.Fatalf("InsertTokens: %v", err)
		}
		if n := f.count(b); n != int64(len(toks)) {
			t.Errorf("CountTokens = %d, want %d", n, len(toks))
		}
		for _, i := range []int{0, 1, len(toks) / 2, len(toks) - 1} {
			_, gt, err := f.s.LookupSecret(f.ctx, secs[i].Digest)
			if err != nil {
				t.Fatalf("LookupSecret(secret of token %d): %v", i, err)
			}
			assertToken(t, gt, toks[i])
		}
		if cs := f.changes(); len(cs) != 0 {
			t.Errorf("%d changes, want none", len(cs))
		}
	})

	t.Run("OKEmpty", func(t *testing.T) {
		f := s.fixture(t)
		b := f.bulkLoader()
		if err := b.InsertTokens(f.ctx, nil, nil); err != nil {
			t.Fatalf("InsertTokens(nothing): %v", err)
		}
		if n := f.count(b); n != 0 {
			t.Errorf("CountTokens = %d, want 0", n)
		}
	})

	// Each failing batch holds good tokens before and after the bad one,
	// none of which may be stored afterwards.
	fail := func(name, code string, spoil func(f *fixture, existing *keyward.Token, existingSec *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret)) {
		t.Run(name, func(t *testing.T) {
			f := s.fixture(t)
			b := f.bulkLoader()
			ws := f.workspace("acme")
			existing, existingSec := f.create(f.newToken(ws.ID, "existing"))
			before := f.snapshot(ws.ID, existing.ID)
			toks, secs := batch(f, ws.ID, 5)
			toks, secs = spoil(f, existing, existingSec, toks, secs)
			err := b.InsertTokens(f.ctx, toks, secs)
			if err == nil {
				t.Fatalf("InsertTokens succeeded, want an error")
			}
			if code != "" {
				wantCode(t, err, code)
			}
			f.unchanged(before)
			var fresh []*keyward.Token
			for _, tok := range toks {
				if tok.ID != existing.ID {
					fresh = append(fresh, tok)
				}
			}
			var freshSecs []*keyward.Secret
			for _, sec := range secs {
				if sec != nil && string(sec.Digest) != string(existingSec.Digest) {
					freshSecs = append(freshSecs, sec)
				}
			}
			f.absent(fresh, freshSecs)
			if n := f.count(b); n != 1 {
				t.Errorf("CountTokens = %d, want 1 (nothing inserted)", n)
			}
		})
	}
	fail("ErrConflictID", keyward.ECONFLICT, func(f *fixture, existing *keyward.Token, _ *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		toks[3].ID = existing.ID
		secs[3].TokenID = existing.ID
		return toks, secs
	})
	fail("ErrConflictIDInBatch", keyward.ECONFLICT, func(f *fixture, _ *keyward.Token, _ *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		toks[3].ID = toks[1].ID
		secs[3].TokenID = toks[1].ID
		return toks, secs
	})
	fail("ErrConflictDigest", keyward.ECONFLICT, func(f *fixture, _ *keyward.Token, existingSec *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		secs[3].Digest = existingSec.Digest
		return toks, secs
	})
	fail("ErrConflictDigestInBatch", keyward.ECONFLICT, func(f *fixture, _ *keyward.Token, _ *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		secs[3].Digest = secs[1].Digest
		return toks, secs
	})
	fail("ErrNotFoundWorkspace", keyward.ENOTFOUND, func(f *fixture, _ *keyward.Token, _ *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		toks[3].WorkspaceID = f.id(keyward.PrefixWorkspace)
		return toks, secs
	})
	fail("ErrSecretsMismatch", "", func(f *fixture, _ *keyward.Token, _ *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		return toks, secs[:4]
	})
	fail("ErrNilSecret", "", func(f *fixture, _ *keyward.Token, _ *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		secs[3] = nil
		return toks, secs
	})
	fail("ErrSecretOfAnotherToken", "", func(f *fixture, _ *keyward.Token, _ *keyward.Secret, toks []*keyward.Token, secs []*keyward.Secret) ([]*keyward.Token, []*keyward.Secret) {
		secs[3].TokenID = toks[1].ID
		return toks, secs
	})
}
