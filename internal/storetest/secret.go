package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// rotate rotates the token's secret at now with a grace until graceUntil,
// as the API does, and returns the new secret.
func (f *fixture) rotate(tok *keyward.Token, now, graceUntil time.Time) *keyward.Secret {
	f.t.Helper()
	sec := newSecret(tok.ID, now)
	ev := f.event(tok.WorkspaceID, "token.rotate", tok.ID)
	ev.Time = now
	_, err := f.s.UpdateToken(f.ctx, tok.WorkspaceID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		t.RotatedAt = ptr(now)
		t.UpdatedAt = now
		return &keyward.TokenWrite{Event: ev, Rotate: sec, GraceUntil: graceUntil, Now: now}, nil
	})
	if err != nil {
		f.t.Fatalf("UpdateToken (rotate at %v): %v", now, err)
	}
	return sec
}

// validAt returns how many of the token's secrets are valid at t.
func (f *fixture) validAt(tokenID string, t time.Time) int {
	f.t.Helper()
	n := 0
	for _, s := range f.secrets(tokenID) {
		if s.ExpiresAt == nil || t.Before(*s.ExpiresAt) {
			n++
		}
	}
	return n
}

func (s *suite) testRotate(t *testing.T) {
	t1 := t0.Add(time.Hour)

	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec1 := f.create(f.newToken(ws.ID, "t"))
		changes := len(f.changes())
		sec2 := f.rotate(tok, t1, t1.Add(24*time.Hour))

		got := f.find(ws.ID, tok.ID)
		want := tok.Clone()
		want.RotatedAt, want.UpdatedAt = ptr(t1), t1
		assertToken(t, got, want)

		old := *sec1
		old.ExpiresAt = ptr(t1.Add(24 * time.Hour))
		assertSecret(t, f.secretOf(tok.ID, sec1.Digest), &old)
		assertSecret(t, f.secretOf(tok.ID, sec2.Digest), sec2)
		if n := len(f.secrets(tok.ID)); n != 2 {
			t.Errorf("%d secrets, want 2", n)
		}
		if cs := f.changes(); len(cs) != changes+1 {
			t.Errorf("%d changes, want %d", len(cs), changes+1)
		}
		if evs := f.events(ws.ID); len(evs) != 2 || evs[0].Action != "token.rotate" {
			t.Errorf("audit events = %v, want token.rotate first of 2", eventIDs(evs))
		}
		gs, gt, err := f.s.LookupSecret(f.ctx, sec2.Digest)
		if err != nil {
			t.Fatalf("LookupSecret(new): %v", err)
		}
		assertSecret(t, gs, sec2)
		assertToken(t, gt, want)
	})

	t.Run("OKEndsEarlierGrace", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec1 := f.create(f.newToken(ws.ID, "t"))
		sec2 := f.rotate(tok, t1, t1.Add(24*time.Hour))
		t2 := t1.Add(time.Hour)
		sec3 := f.rotate(tok, t2, t2.Add(24*time.Hour))

		checks := []struct {
			sec  *keyward.Secret
			want *time.Time
		}{
			{sec1, ptr(t2)}, // its grace ended at the second rotation
			{sec2, ptr(t2.Add(24 * time.Hour))},
			{sec3, nil},
		}
		for i, c := range checks {
			got := f.secretOf(tok.ID, c.sec.Digest)
			var d diff
			d.timePtr("ExpiresAt", got.ExpiresAt, c.want)
			d.report(t, []string{"first secret", "second secret", "third secret"}[i])
		}
		if n := f.validAt(tok.ID, t2); n != 2 {
			t.Errorf("%d secrets valid after the second rotation, want 2", n)
		}
	})

	t.Run("OKKeepsEndedGrace", func(t *testing.T) {
		// A grace that already ended keeps its end.
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec1 := f.create(f.newToken(ws.ID, "t"))
		f.rotate(tok, t1, t1.Add(time.Hour))
		t2 := t1.Add(2 * time.Hour)
		f.rotate(tok, t2, t2.Add(time.Hour))
		var d diff
		d.timePtr("ExpiresAt", f.secretOf(tok.ID, sec1.Digest).ExpiresAt, ptr(t1.Add(time.Hour)))
		d.report(t, "first secret")
	})

	t.Run("OKZeroGrace", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec1 := f.create(f.newToken(ws.ID, "t"))
		f.rotate(tok, t1, t1)
		var d diff
		d.timePtr("ExpiresAt", f.secretOf(tok.ID, sec1.Digest).ExpiresAt, ptr(t1))
		d.report(t, "first secret")
		if n := f.validAt(tok.ID, t1); n != 1 {
			t.Errorf("%d secrets valid at the rotation, want 1", n)
		}
	})

	t.Run("ErrConflictDigest", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		_, other := f.create(f.newToken(ws.ID, "other"))
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		f.rotate(tok, t1, t1.Add(time.Hour))
		before := f.snapshot(ws.ID, tok.ID)
		sec := newSecret(tok.ID, t1)
		sec.Digest = other.Digest
		_, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Name = "changed"
			t.RotatedAt = ptr(t1.Add(time.Minute))
			return &keyward.TokenWrite{
				Event: f.event(ws.ID, "token.rotate", tok.ID), Rotate: sec,
				GraceUntil: t1.Add(2 * time.Minute), Now: t1.Add(time.Minute),
			}, nil
		})
		wantCode(t, err, keyward.ECONFLICT)
		// Neither the earlier grace nor the current secret changed.
		f.unchanged(before)
	})

	t.Run("ErrCallback", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		before := f.snapshot(ws.ID, tok.ID)
		sec := newSecret(tok.ID, t1)
		_, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			return &keyward.TokenWrite{Event: f.event(ws.ID, "token.rotate", tok.ID), Rotate: sec, GraceUntil: t1, Now: t1}, errFn
		})
		if !errors.Is(err, errFn) {
			t.Fatalf("UpdateToken error = %v, want the callback's", err)
		}
		f.unchanged(before)
		_, _, err = f.s.LookupSecret(f.ctx, sec.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testLookupSecret(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		f.create(f.newToken(ws.ID, "other"))
		tok, sec := f.create(f.fullToken(ws.ID))
		gs, gt, err := f.s.LookupSecret(f.ctx, sec.Digest)
		if err != nil {
			t.Fatalf("LookupSecret: %v", err)
		}
		assertSecret(t, gs, sec)
		assertToken(t, gt, tok)
	})
	t.Run("OKReplacedSecret", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec := f.create(f.newToken(ws.ID, "t"))
		t1 := t0.Add(time.Hour)
		f.rotate(tok, t1, t1.Add(time.Hour))
		gs, gt, err := f.s.LookupSecret(f.ctx, sec.Digest)
		if err != nil {
			t.Fatalf("LookupSecret: %v", err)
		}
		want := *sec
		want.ExpiresAt = ptr(t1.Add(time.Hour))
		assertSecret(t, gs, &want)
		if gt.ID != tok.ID || gt.RotatedAt == nil {
			t.Errorf("LookupSecret token = %s rotated at %v, want %s rotated", gt.ID, gt.RotatedAt, tok.ID)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		_, sec := f.create(f.newToken(ws.ID, "t"))
		other := newSecret("", t0)
		_, _, err := f.s.LookupSecret(f.ctx, other.Digest)
		wantCode(t, err, keyward.ENOTFOUND)
		// A prefix of a stored digest is not that digest.
		_, _, err = f.s.LookupSecret(f.ctx, sec.Digest[:16])
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testTokenSecrets(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		f.create(f.newToken(ws.ID, "other"))
		tok, sec1 := f.create(f.newToken(ws.ID, "t"))
		t1 := t0.Add(time.Hour)
		sec2 := f.rotate(tok, t1, t1.Add(time.Hour))
		t2 := t1.Add(time.Minute)
		sec3 := f.rotate(tok, t2, t2.Add(time.Hour))
		got := f.secrets(tok.ID)
		if len(got) != 3 {
			t.Fatalf("%d secrets, want 3", len(got))
		}
		s1, s2 := *sec1, *sec2
		s1.ExpiresAt = ptr(t2)
		s2.ExpiresAt = ptr(t2.Add(time.Hour))
		assertSecret(t, f.secretOf(tok.ID, sec1.Digest), &s1)
		assertSecret(t, f.secretOf(tok.ID, sec2.Digest), &s2)
		assertSecret(t, f.secretOf(tok.ID, sec3.Digest), sec3)
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		f.create(f.newToken(ws.ID, "t"))
		_, err := f.s.TokenSecrets(f.ctx, f.id(keyward.PrefixToken))
		wantCode(t, err, keyward.ENOTFOUND)
	})
}

func (s *suite) testRedigest(t *testing.T) {
	t1 := t0.Add(time.Hour)

	t.Run("OK", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec1 := f.create(f.newToken(ws.ID, "t"))
		sec2 := f.rotate(tok, t1, t1.Add(time.Hour))
		for _, old := range []*keyward.Secret{sec1, sec2} {
			before := f.secretOf(tok.ID, old.Digest)
			next := newSecret(tok.ID, t1.Add(time.Minute))
			next.KeyID = "k2"
			if err := f.s.Redigest(f.ctx, old.Digest, next); err != nil {
				t.Fatalf("Redigest: %v", err)
			}
			_, _, err := f.s.LookupSecret(f.ctx, old.Digest)
			wantCode(t, err, keyward.ENOTFOUND)
			gs, gt, err := f.s.LookupSecret(f.ctx, next.Digest)
			if err != nil {
				t.Fatalf("LookupSecret(new digest): %v", err)
			}
			// Only the digest and its key change.
			want := *before
			want.Digest, want.KeyID = next.Digest, "k2"
			assertSecret(t, gs, &want)
			if gt.ID != tok.ID {
				t.Errorf("LookupSecret token = %s, want %s", gt.ID, tok.ID)
			}
		}
		if n := len(f.secrets(tok.ID)); n != 2 {
			t.Errorf("%d secrets, want 2", n)
		}
		// SecretKeys counts them by key: the fixture's other secrets are
		// under k1, these two now under k2.
		f.create(f.newToken(ws.ID, "other"))
		keys, err := f.s.SecretKeys(f.ctx)
		if err != nil {
			t.Fatalf("SecretKeys: %v", err)
		}
		if keys["k2"] != 2 || keys["k1"] < 1 || len(keys) != 2 {
			t.Errorf("SecretKeys = %v, want k2: 2 and k1: some", keys)
		}
	})

	t.Run("OKCurrentStaysCurrent", func(t *testing.T) {
		// A re-digested current secret is still the one a rotation replaces.
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec1 := f.create(f.newToken(ws.ID, "t"))
		next := newSecret(tok.ID, t0)
		next.KeyID = "k2"
		if err := f.s.Redigest(f.ctx, sec1.Digest, next); err != nil {
			t.Fatalf("Redigest: %v", err)
		}
		f.rotate(tok, t1, t1.Add(time.Hour))
		var d diff
		d.timePtr("ExpiresAt", f.secretOf(tok.ID, next.Digest).ExpiresAt, ptr(t1.Add(time.Hour)))
		d.report(t, "re-digested secret")
		if n := f.validAt(tok.ID, t1); n != 2 {
			t.Errorf("%d secrets valid after the rotation, want 2", n)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		err := f.s.Redigest(f.ctx, newSecret("", t0).Digest, newSecret(tok.ID, t0))
		wantCode(t, err, keyward.ENOTFOUND)
	})

	t.Run("ErrNotFoundTwice", func(t *testing.T) {
		// Two nodes re-digesting the same secret: the second finds it gone.
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec := f.create(f.newToken(ws.ID, "t"))
		next := newSecret(tok.ID, t0)
		if err := f.s.Redigest(f.ctx, sec.Digest, next); err != nil {
			t.Fatalf("Redigest: %v", err)
		}
		wantCode(t, f.s.Redigest(f.ctx, sec.Digest, next), keyward.ENOTFOUND)
		if _, _, err := f.s.LookupSecret(f.ctx, next.Digest); err != nil {
			t.Errorf("LookupSecret(new digest): %v", err)
		}
	})

	t.Run("ErrConflict", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		_, other := f.create(f.newToken(ws.ID, "other"))
		tok, sec := f.create(f.newToken(ws.ID, "t"))
		next := newSecret(tok.ID, t0)
		next.Digest = other.Digest
		wantCode(t, f.s.Redigest(f.ctx, sec.Digest, next), keyward.ECONFLICT)
		assertSecret(t, f.secretOf(tok.ID, sec.Digest), sec)
	})
}

func (s *suite) testSecretDigests(t *testing.T) {
	f := s.fixture(t)
	ws := f.workspace("acme")
	other := f.workspace("other")
	var want [][]byte
	for i, w := range []string{ws.ID, ws.ID, other.ID, other.ID, ws.ID} {
		var mods []func(*keyward.Token)
		if i == 3 { // a revoked token's secret is listed too
			mods = append(mods, func(t *keyward.Token) { t.Revoked = true })
		}
		tok, sec := f.create(f.newToken(w, fmt.Sprintf("t%d", i)), mods...)
		want = append(want, sec.Digest)
		switch i {
		case 1: // a rotated token: both secrets
			want = append(want, f.rotate(tok, t0.Add(time.Hour), t0.Add(2*time.Hour)).Digest)
		case 2: // a secret under another server key
			next := newSecret(tok.ID, t0)
			next.KeyID = "k2"
			if err := f.s.Redigest(f.ctx, sec.Digest, next); err != nil {
				t.Fatalf("Redigest: %v", err)
			}
			want[len(want)-1] = next.Digest
		}
	}

	all, err := f.s.SecretDigests(f.ctx, nil, 1000)
	if err != nil {
		t.Fatalf("SecretDigests: %v", err)
	}
	for i := 1; i < len(all); i++ {
		if bytes.Compare(all[i-1], all[i]) >= 0 {
			t.Fatalf("digests %d and %d out of byte order: %x, %x", i-1, i, all[i-1], all[i])
		}
	}
	for _, d := range want {
		found := false
		for _, a := range all {
			found = found || bytes.Equal(a, d)
		}
		if !found {
			t.Errorf("digest %x not listed", d)
		}
	}
	// Pages of two give the same list.
	var paged [][]byte
	for after := []byte(nil); ; {
		page, err := f.s.SecretDigests(f.ctx, after, 2)
		if err != nil {
			t.Fatalf("SecretDigests after %x: %v", after, err)
		}
		if len(page) > 2 {
			t.Fatalf("a page of %d, limit 2", len(page))
		}
		paged = append(paged, page...)
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1]
	}
	if len(paged) != len(all) {
		t.Fatalf("pages of two listed %d digests, one page %d", len(paged), len(all))
	}
	for i := range all {
		if !bytes.Equal(paged[i], all[i]) {
			t.Fatalf("paged digest %d = %x, want %x", i, paged[i], all[i])
		}
	}
	last, err := f.s.SecretDigests(f.ctx, all[len(all)-1], 10)
	if err != nil || len(last) != 0 {
		t.Errorf("SecretDigests after the greatest = %x, %v; want none", last, err)
	}
}
