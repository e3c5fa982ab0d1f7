package storetest

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// AuditKey is the audit chain key under which the stores that Run tests
// must link events: open passes it to the store, as in
// sqlite.Open(ctx, path, sqlite.WithAuditKey(storetest.AuditKey)).
var AuditKey = []byte("storetest audit chain key")

// link is an event read back from AuditChain with its link.
type link struct {
	e *keyward.AuditEvent
	l keyward.AuditLink
}

// chain returns a workspace's chain and head.
func (f *fixture) chain(wsID string) ([]link, *keyward.AuditHead) {
	f.t.Helper()
	var out []link
	head, err := f.s.AuditChain(f.ctx, wsID, func(e *keyward.AuditEvent, l keyward.AuditLink) error {
		out = append(out, link{e, l})
		return nil
	})
	if err != nil {
		f.t.Fatalf("AuditChain(%s): %v", wsID, err)
	}
	return out, head
}

// assertChain checks that the links of a workspace's chain follow each
// other under AuditKey, from the fields as read back, and that the head is
// the last event's; it returns the events' ids in chain order.
func (f *fixture) assertChain(wsID string) []string {
	f.t.Helper()
	links, head := f.chain(wsID)
	var prev []byte
	var ids []string
	for i, c := range links {
		if c.e.WorkspaceID != wsID {
			f.t.Errorf("event %s of workspace %s in the chain of %s", c.e.ID, c.e.WorkspaceID, wsID)
		}
		if i > 0 && c.l.Seq <= links[i-1].l.Seq {
			f.t.Errorf("event %s has seq %d after %d: not in sequence order", c.e.ID, c.l.Seq, links[i-1].l.Seq)
		}
		if !bytes.Equal(c.l.Prev, prev) {
			f.t.Errorf("event %s: Prev = %x, want the link before it, %x", c.e.ID, c.l.Prev, prev)
		}
		if want := keyward.AuditMAC(AuditKey, prev, c.e); !bytes.Equal(c.l.MAC, want) {
			f.t.Errorf("event %s: MAC = %x, want AuditMAC of its fields as read back, %x", c.e.ID, c.l.MAC, want)
		}
		prev = c.l.MAC
		ids = append(ids, c.e.ID)
	}
	if len(links) == 0 {
		if head != nil {
			f.t.Errorf("head = %+v, want none for an empty chain", head)
		}
		return nil
	}
	last := links[len(links)-1]
	switch {
	case head == nil:
		f.t.Fatalf("no head for a chain of %d events", len(links))
	case head.WorkspaceID != wsID || head.Seq != last.l.Seq || head.EventID != last.e.ID || !bytes.Equal(head.MAC, last.l.MAC):
		f.t.Errorf("head = {%s %d %s %x}, want the last event {%s %d %s %x}", head.WorkspaceID, head.Seq, head.EventID, head.MAC, wsID, last.l.Seq, last.e.ID, last.l.MAC)
	case !bytes.Equal(head.HeadMAC, keyward.AuditHeadMAC(AuditKey, wsID, head.EventID, head.MAC)):
		f.t.Errorf("head MAC = %x, want AuditHeadMAC", head.HeadMAC)
	}
	return ids
}

func (s *suite) testAuditChain(t *testing.T) {
	t.Run("OKEmpty", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		if links, head := f.chain(ws.ID); len(links) != 0 || head != nil {
			t.Errorf("chain = %d events, head %+v; want none", len(links), head)
		}
		if links, head := f.chain("ws_unknown\xff"); len(links) != 0 || head != nil {
			t.Errorf("chain of an unknown id = %d events, head %+v; want none", len(links), head)
		}
	})

	t.Run("OKLinksEveryWrite", func(t *testing.T) {
		// Every write path appends to the chain of its own workspace, in
		// commit order, whatever the other workspaces do meanwhile.
		f := s.fixture(t)
		ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: "acme", TokenPrefix: "kw", CreatedAt: t0}
		admin := f.newToken(ws.ID, "admin")
		wsEvents := []*keyward.AuditEvent{f.event(ws.ID, "workspace.create", ws.ID), f.event("", "token.create", admin.ID)}
		if err := f.s.CreateWorkspace(f.ctx, ws, admin, newSecret(admin.ID, t0), wsEvents...); err != nil {
			t.Fatalf("CreateWorkspace: %v", err)
		}
		other := f.workspace("other")
		want := eventIDs(wsEvents)
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		want = append(want, f.events(ws.ID)[0].ID)
		f.create(f.newToken(other.ID, "o"))
		ev := f.event(ws.ID, "token.update", tok.ID)
		if _, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Name = "u"
			return &keyward.TokenWrite{Event: ev, Now: t0}, nil
		}); err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		want = append(want, ev.ID)
		root := f.newToken(ws.ID, "root")
		rootEv := f.event(ws.ID, "token.create", root.ID)
		if err := f.s.CreateRootToken(f.ctx, root, newSecret(root.ID, t0), rootEv, false); err != nil {
			t.Fatalf("CreateRootToken: %v", err)
		}
		want = append(want, rootEv.ID)
		if got := f.assertChain(ws.ID); !slices.Equal(got, want) {
			t.Errorf("chain = %v, want %v", got, want)
		}
		if got := f.assertChain(other.ID); len(got) != 1 {
			t.Errorf("chain of other = %v, want one event", got)
		}
	})

	t.Run("OKFieldsAsStored", func(t *testing.T) {
		// The link covers the event as the store reads it back, whatever
		// it does to store it (precision of times, text it cannot hold).
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok := f.newToken(ws.ID, "t")
		ev := &keyward.AuditEvent{
			ID: f.id(keyward.PrefixEvent), WorkspaceID: ws.ID, Time: t0.Add(123456789 * time.Nanosecond).In(time.FixedZone("JST", 9*3600)),
			Action: "token.create", Actor: keyward.Actor{Type: keyward.ActorToken, ID: "tok_x"}, Target: tok.ID,
			IP: "192.0.2.1", UserAgent: "bad \xff\x00 agent", RequestID: "req_1",
			Changes: []byte(`{"name": {"to": "t"},  "b": 1}`),
		}
		if err := f.s.CreateToken(f.ctx, tok, newSecret(tok.ID, t0), ev); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		f.assertChain(ws.ID)
		links, _ := f.chain(ws.ID)
		if len(links) != 1 {
			t.Fatalf("%d events, want 1", len(links))
		}
		if got := links[0].e; !got.Time.Equal(t0.Add(123456*time.Microsecond)) || string(got.Changes) != string(ev.Changes) {
			t.Errorf("event = time %v, changes %s; want the time to the microsecond and the changes byte for byte", got.Time, got.Changes)
		}
	})

	t.Run("OKFailedWriteLeavesChain", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, sec := f.create(f.newToken(ws.ID, "t"))
		_, before := f.chain(ws.ID)
		dup := f.newToken(ws.ID, "dup")
		if err := f.s.CreateToken(f.ctx, dup, &keyward.Secret{Digest: sec.Digest, KeyID: "k1"}, f.event(ws.ID, "token.create", dup.ID)); keyward.ErrorCode(err) != keyward.ECONFLICT {
			t.Fatalf("CreateToken with a taken digest = %v, want ECONFLICT", err)
		}
		if _, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(*keyward.Token) (*keyward.TokenWrite, error) { return nil, errFn }); !errors.Is(err, errFn) {
			t.Fatalf("UpdateToken = %v, want the callback's error", err)
		}
		ids := f.assertChain(ws.ID)
		_, after := f.chain(ws.ID)
		if len(ids) != 1 || after == nil || before == nil || after.Seq != before.Seq || !bytes.Equal(after.HeadMAC, before.HeadMAC) {
			t.Errorf("chain = %v, head %+v; want one event and the head unchanged (%+v)", ids, after, before)
		}
	})

	t.Run("OKStopsOnError", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		f.create(f.newToken(ws.ID, "a"))
		f.create(f.newToken(ws.ID, "b"))
		stop := errors.New("stop")
		n := 0
		_, err := f.s.AuditChain(f.ctx, ws.ID, func(*keyward.AuditEvent, keyward.AuditLink) error {
			n++
			return stop
		})
		if err != stop || n != 1 {
			t.Errorf("AuditChain = %v after %d calls, want fn's error unchanged after 1", err, n)
		}
	})

	t.Run("OKAuditWorkspaces", func(t *testing.T) {
		f := s.fixture(t)
		a := f.workspace("a")
		f.workspace("empty")
		b := f.workspace("b")
		f.create(f.newToken(b.ID, "t"))
		f.create(f.newToken(a.ID, "t"))
		f.create(f.newToken(b.ID, "t"))
		got, err := f.s.AuditWorkspaces(f.ctx)
		if err != nil {
			t.Fatalf("AuditWorkspaces: %v", err)
		}
		if want := []string{a.ID, b.ID}; !slices.Equal(got, want) {
			t.Errorf("AuditWorkspaces = %v, want %v", got, want)
		}
	})
}

func (s *suite) testFindAuditEventsFilters(t *testing.T) {
	f := s.fixture(t)
	ws := f.workspace("acme")
	other := f.workspace("other")
	tokA, tokB := f.newToken(ws.ID, "a"), f.newToken(ws.ID, "b")
	actor := func(id string) keyward.Actor { return keyward.Actor{Type: keyward.ActorToken, ID: id} }
	type spec struct {
		action, target string
		actor          keyward.Actor
		at             time.Duration
	}
	var ids []string // in the order made, oldest first
	add := func(wsID string, sp spec) {
		ev := f.event(wsID, sp.action, sp.target)
		ev.Actor, ev.Time = sp.actor, t0.Add(sp.at)
		tok := f.newToken(wsID, "x")
		if err := f.s.CreateToken(f.ctx, tok, newSecret(tok.ID, t0), ev); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		if wsID == ws.ID {
			ids = append(ids, ev.ID)
		}
	}
	add(ws.ID, spec{"token.create", tokA.ID, actor("tok_admin"), 0})                        // 0
	add(ws.ID, spec{"token.revoke", tokA.ID, actor("tok_admin"), time.Hour})                // 1
	add(ws.ID, spec{"token.create", tokB.ID, actor("tok_ci"), 2 * time.Hour})               // 2
	add(ws.ID, spec{"token.revoke", tokB.ID, keyward.Actor{Type: "system"}, 3 * time.Hour}) // 3
	add(ws.ID, spec{"member.invite", ws.ID, keyward.Actor{Type: "system"}, 4 * time.Hour})  // 4
	add(ws.ID, spec{"tokens.export", ws.ID, keyward.Actor{Type: "system"}, 5 * time.Hour})  // 5: not token.*
	add(other.ID, spec{"token.revoke", tokA.ID, actor("tok_admin"), time.Hour})
	pick := func(is ...int) []string { // newest first
		var out []string
		for _, i := range slices.Backward(is) {
			out = append(out, ids[i])
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    keyward.AuditFilter
		want []string
	}{
		{"OKNone", keyward.AuditFilter{}, pick(0, 1, 2, 3, 4, 5)},
		{"OKActor", keyward.AuditFilter{Actor: "tok_admin"}, pick(0, 1)},
		{"OKAction", keyward.AuditFilter{Action: "token.revoke"}, pick(1, 3)},
		{"OKTarget", keyward.AuditFilter{Target: tokB.ID}, pick(2, 3)},
		{"OKFromInclusive", keyward.AuditFilter{From: t0.Add(2 * time.Hour)}, pick(2, 3, 4, 5)},
		{"OKToExclusive", keyward.AuditFilter{To: t0.Add(2 * time.Hour)}, pick(0, 1)},
		{"OKRange", keyward.AuditFilter{From: t0.Add(time.Hour), To: t0.Add(3 * time.Hour)}, pick(1, 2)},
		{"OKRangeOtherZone", keyward.AuditFilter{From: t0.Add(time.Hour).In(time.FixedZone("X", -5*3600))}, pick(1, 2, 3, 4, 5)},
		{"OKCombined", keyward.AuditFilter{Action: "token.revoke", Actor: "tok_admin"}, pick(1)},
		{"OKActionFamily", keyward.AuditFilter{Action: "token.*"}, pick(0, 1, 2, 3)},
		{"OKActionFamilyOther", keyward.AuditFilter{Action: "member.*"}, pick(4)},
		{"OKActionFamilyCombined", keyward.AuditFilter{Action: "token.*", Target: tokB.ID, Before: ids[3]}, pick(2)},
		{"OKActionFamilyNone", keyward.AuditFilter{Action: "session.*"}, nil},
		{"OKActionStarAlone", keyward.AuditFilter{Action: ".*"}, nil},
		{"OKActionPrefixIsNotFamily", keyward.AuditFilter{Action: "token"}, nil},
		{"OKCursor", keyward.AuditFilter{Action: "token.create", Before: ids[2]}, pick(0)},
		{"OKLimit", keyward.AuditFilter{Target: tokA.ID, Limit: 1}, pick(1)},
		{"OKNoMatch", keyward.AuditFilter{Actor: "tok_nobody"}, nil},
		{"OKUnstorable", keyward.AuditFilter{Target: "tok_\xff\x00"}, nil},
		{"OKEmptyRange", keyward.AuditFilter{From: t0.Add(time.Hour), To: t0.Add(time.Hour)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl := tc.f
			fl.WorkspaceID = ws.ID
			evs, err := f.s.FindAuditEvents(f.ctx, fl)
			if err != nil {
				t.Fatalf("FindAuditEvents: %v", err)
			}
			if got := eventIDs(evs); !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
				t.Errorf("FindAuditEvents(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
}

// testFindAuditEventsWriteOrder: audit events are listed in the order they
// were written, newest first, whatever their ids say: ids are ordered only
// to the millisecond (their remaining part is random), and a node whose
// clock is behind makes ids that sort before those written earlier on
// another. Paging follows the same order exactly, with every filter, and
// a cursor that names no event of the workspace (a retention cut removed
// it, say) selects none.
func (s *suite) testFindAuditEventsWriteOrder(t *testing.T) {
	f := s.fixture(t)
	ws := f.workspace("acme")
	other := f.workspace("other")
	at := t0.Add(time.Hour)
	// Ids of one millisecond, in the order they sort; they are written
	// out of that order.
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = keyward.NewID(keyward.PrefixEvent, at)
	}
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Fatal("NewID made the same id twice")
	}
	admin := keyward.Actor{Type: keyward.ActorToken, ID: "tok_admin"}
	ci := keyward.Actor{Type: keyward.ActorToken, ID: "tok_ci"}
	var written []*keyward.AuditEvent // of ws, oldest first
	ev := func(wsID, id, action string, actor keyward.Actor, target string, tm time.Time) *keyward.AuditEvent {
		e := &keyward.AuditEvent{ID: id, WorkspaceID: wsID, Time: tm, Action: action, Actor: actor, Target: target}
		if wsID == ws.ID {
			written = append(written, e)
		}
		return e
	}
	appendAudit := func(e *keyward.AuditEvent) {
		t.Helper()
		if err := f.s.AppendAudit(f.ctx, e); err != nil {
			t.Fatalf("AppendAudit(%s): %v", e.Action, err)
		}
	}
	// A token created and revoked within the millisecond, the revocation's
	// id sorting first.
	tok := f.newToken(ws.ID, "t")
	if err := f.s.CreateToken(f.ctx, tok, newSecret(tok.ID, t0), ev(ws.ID, ids[7], "token.create", admin, tok.ID, at)); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	revoke := ev(ws.ID, ids[2], "token.revoke", admin, tok.ID, at.Add(100*time.Microsecond))
	if _, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		t.Revoked = true
		return &keyward.TokenWrite{Event: revoke, Now: at}, nil
	}); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	appendAudit(ev(other.ID, ids[5], "token.create", admin, tok.ID, at.Add(150*time.Microsecond)))
	appendAudit(ev(ws.ID, ids[9], "member.invite", ci, ws.ID, at.Add(200*time.Microsecond)))
	appendAudit(ev(ws.ID, ids[0], "token.update", ci, tok.ID, at.Add(300*time.Microsecond)))
	appendAudit(ev(other.ID, ids[1], "token.revoke", ci, tok.ID, at.Add(350*time.Microsecond)))
	appendAudit(ev(ws.ID, ids[4], "token.rotate", admin, tok.ID, at.Add(400*time.Microsecond)))
	appendAudit(ev(ws.ID, ids[8], "member.remove", admin, ws.ID, at.Add(500*time.Microsecond)))
	appendAudit(ev(ws.ID, ids[3], "token.suspend", ci, tok.ID, at.Add(600*time.Microsecond)))
	// Written last, on a node whose clock is 5 ms behind.
	appendAudit(ev(ws.ID, keyward.NewID(keyward.PrefixEvent, at.Add(-5*time.Millisecond)), "token.resume", admin, tok.ID, at.Add(-5*time.Millisecond)))
	appendAudit(ev(ws.ID, ids[6], "token.revoke", ci, tok.ID, at.Add(700*time.Microsecond)))

	// want returns the ids of the events of ws that fl selects, newest
	// (last written) first.
	want := func(fl keyward.AuditFilter, before func(e *keyward.AuditEvent) bool) []string {
		var out []string
		for _, e := range slices.Backward(written) {
			lo, hi, family := fl.ActionFamily()
			switch {
			case fl.Actor != "" && e.Actor.ID != fl.Actor,
				family && (e.Action < lo || e.Action >= hi),
				!family && fl.Action != "" && e.Action != fl.Action,
				!fl.From.IsZero() && e.Time.Before(fl.From),
				!fl.To.IsZero() && !e.Time.Before(fl.To),
				before != nil && !before(e):
				continue
			}
			out = append(out, e.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    keyward.AuditFilter
	}{
		{"OKAll", keyward.AuditFilter{}},
		{"OKActionFamily", keyward.AuditFilter{Action: "token.*"}},
		{"OKAction", keyward.AuditFilter{Action: "token.revoke"}},
		{"OKActor", keyward.AuditFilter{Actor: "tok_ci"}},
		{"OKActorAndFamily", keyward.AuditFilter{Actor: "tok_admin", Action: "token.*"}},
		{"OKRange", keyward.AuditFilter{From: at, To: at.Add(time.Millisecond)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl := tc.f
			fl.WorkspaceID = ws.ID
			wantIDs := want(fl, nil)
			evs, err := f.s.FindAuditEvents(f.ctx, fl)
			if err != nil {
				t.Fatalf("FindAuditEvents: %v", err)
			}
			if got := eventIDs(evs); !slices.Equal(got, wantIDs) {
				t.Fatalf("FindAuditEvents(%+v) = %v, want %v", tc.f, got, wantIDs)
			}
			for limit := 1; limit <= 3; limit++ {
				var got []string
				fl.Before = ""
				for page := 0; page <= len(wantIDs); page++ {
					fl.Limit = limit
					evs, err := f.s.FindAuditEvents(f.ctx, fl)
					if err != nil {
						t.Fatalf("FindAuditEvents: %v", err)
					}
					if len(evs) > limit {
						t.Fatalf("page %d of %d events, want at most %d", page, len(evs), limit)
					}
					if len(evs) == 0 {
						break
					}
					got = append(got, eventIDs(evs)...)
					fl.Before = evs[len(evs)-1].ID
				}
				if !slices.Equal(got, wantIDs) {
					t.Errorf("pages of %d of FindAuditEvents(%+v) = %v, want %v", limit, tc.f, got, wantIDs)
				}
			}
		})
	}

	// A cursor that names no event of the workspace (another workspace's,
	// or none at all) has no place in its order: it selects nothing.
	for _, tc := range []struct {
		name   string
		cursor string
	}{
		{"OKCursorOfOtherWorkspace", ids[5]},
		{"OKCursorOfNoEventLater", keyward.NewID(keyward.PrefixEvent, at.Add(time.Second))},
		{"OKCursorOfNoEventEarlier", keyward.NewID(keyward.PrefixEvent, t0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := f.s.FindAuditEvents(f.ctx, keyward.AuditFilter{WorkspaceID: ws.ID, Before: tc.cursor})
			if err != nil {
				t.Fatalf("FindAuditEvents: %v", err)
			}
			if got := eventIDs(evs); len(got) != 0 {
				t.Errorf("FindAuditEvents(before %s) = %v, want none", tc.cursor, got)
			}
		})
	}

	// A cursor whose event a retention cut removed selects nothing: the
	// cut removed every event written before it. The events left whose
	// ids sort before it (one written later on a node whose clock is
	// behind that of the cursor's) were written after it, on a page before.
	t.Run("OKCursorCut", func(t *testing.T) {
		cw := f.workspace("cut")
		ahead := at.Add(time.Hour) // the clock of the cursor's node
		for _, e := range []*keyward.AuditEvent{
			{ID: keyward.NewID(keyward.PrefixEvent, at.Add(-2*time.Hour)), Time: at.Add(-2 * time.Hour)},
			{ID: keyward.NewID(keyward.PrefixEvent, ahead), Time: ahead},
			{ID: keyward.NewID(keyward.PrefixEvent, at.Add(-time.Hour)), Time: at.Add(-time.Hour)},
			{ID: keyward.NewID(keyward.PrefixEvent, at), Time: at},
		} {
			e.WorkspaceID, e.Action, e.Actor, e.Target = cw.ID, "token.update", admin, tok.ID
			appendAudit(e)
		}
		fl := keyward.AuditFilter{WorkspaceID: cw.ID, Limit: 3}
		page, err := f.s.FindAuditEvents(f.ctx, fl)
		if err != nil || len(page) != 3 {
			t.Fatalf("FindAuditEvents = %d events, %v; want 3", len(page), err)
		}
		fl.Before = page[2].ID // the one of the node ahead
		cut := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, at.Add(time.Minute)), Time: at.Add(time.Minute),
			Action: "audit.prune", Actor: admin}
		if c, err := f.s.CutAudit(f.ctx, cw.ID, at.Add(-30*time.Minute), cut); err != nil || c.Removed != 3 {
			t.Fatalf("CutAudit = %+v, %v; want 3 removed", c, err)
		}
		for _, fl := range []keyward.AuditFilter{fl, {WorkspaceID: cw.ID, Before: fl.Before, Action: "token.*"}, {WorkspaceID: cw.ID, Before: fl.Before, Actor: admin.ID}} {
			evs, err := f.s.FindAuditEvents(f.ctx, fl)
			if err != nil {
				t.Fatalf("FindAuditEvents: %v", err)
			}
			if got := eventIDs(evs); len(got) != 0 {
				t.Errorf("FindAuditEvents(%+v) after the cut = %v, want none (listed on the page before)", fl, got)
			}
		}
	})
}
