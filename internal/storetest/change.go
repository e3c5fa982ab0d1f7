package storetest

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

func changeTokens(cs []keyward.Change) []string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.TokenID
	}
	return ids
}

func (s *suite) testChanges(t *testing.T) {
	t1 := t0.Add(time.Hour)

	t.Run("OKEmpty", func(t *testing.T) {
		f := s.fixture(t)
		f.workspace("acme")
		if seq, err := f.s.LastChange(f.ctx); err != nil || seq != 0 {
			t.Errorf("LastChange = %d, %v; want 0, nil", seq, err)
		}
		if cs, err := f.s.Changes(f.ctx, 0, 10); err != nil || len(cs) != 0 {
			t.Errorf("Changes = %v, %v; want none", cs, err)
		}
	})

	t.Run("OKEveryTokenWrite", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme") // no admin token: no change
		a, _ := f.create(f.newToken(ws.ID, "a"))
		b, _ := f.create(f.newToken(ws.ID, "b"))
		update := func(id string, w bool, err error) {
			t.Helper()
			_, gotErr := f.s.UpdateToken(f.ctx, ws.ID, id, func(t *keyward.Token) (*keyward.TokenWrite, error) {
				if !w {
					return nil, err
				}
				t.Name += "!"
				return &keyward.TokenWrite{Event: f.event(ws.ID, "token.update", id), Now: t1}, err
			})
			if !errors.Is(gotErr, err) {
				t.Fatalf("UpdateToken = %v, want %v", gotErr, err)
			}
		}
		update(a.ID, true, nil)
		update(b.ID, false, nil)   // no write: no change
		update(a.ID, true, errFn)  // failed: no change
		update(a.ID, false, errFn) // failed: no change
		f.rotate(b, t1, t1)
		ws2 := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: "two", TokenPrefix: "kw", CreatedAt: t1}
		admin := f.newToken(ws2.ID, "admin")
		if err := f.s.CreateWorkspace(f.ctx, ws2, admin, newSecret(admin.ID, t1)); err != nil {
			t.Fatalf("CreateWorkspace: %v", err)
		}
		root := f.newToken(ws.ID, "root")
		if err := f.s.CreateRootToken(f.ctx, root, newSecret(root.ID, t1), f.event(ws.ID, "token.create", root.ID), false); err != nil {
			t.Fatalf("CreateRootToken: %v", err)
		}
		// Neither usage nor a new key adds a change.
		if err := f.s.FlushUsage(f.ctx, keyward.FlushID{}, []keyward.UsageFlush{{TokenID: a.ID, LastUsedAt: t1, LastUsedIP: "192.0.2.1"}}); err != nil {
			t.Fatalf("FlushUsage: %v", err)
		}

		cs := f.changes()
		if got, want := changeTokens(cs), []string{a.ID, b.ID, a.ID, b.ID, admin.ID, root.ID}; !slices.Equal(got, want) {
			t.Fatalf("changes of tokens %v, want %v", got, want)
		}
		// Each change carries the time of its write: a token's creation,
		// an update's Now.
		for i, want := range []time.Time{t0, t0, t1, t1} {
			if !cs[i].At.Equal(want) {
				t.Errorf("change %d at %v, want %v", i, cs[i].At, want)
			}
		}
		for i := 1; i < len(cs); i++ {
			if cs[i].Seq <= cs[i-1].Seq {
				t.Errorf("change %d has seq %d after %d, want increasing", i, cs[i].Seq, cs[i-1].Seq)
			}
		}
		last, err := f.s.LastChange(f.ctx)
		if err != nil {
			t.Fatalf("LastChange: %v", err)
		}
		if last != cs[len(cs)-1].Seq {
			t.Errorf("LastChange = %d, want %d", last, cs[len(cs)-1].Seq)
		}
	})

	t.Run("OKPaging", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		for i := range 5 {
			f.create(f.newToken(ws.ID, string(rune('a'+i))))
		}
		all := f.changes()
		if len(all) != 5 {
			t.Fatalf("%d changes, want 5", len(all))
		}
		tests := []struct {
			name  string
			after int64
			limit int
			want  []keyward.Change
		}{
			{"First", 0, 2, all[:2]},
			{"Middle", all[1].Seq, 2, all[2:4]},
			{"Last", all[3].Seq, 2, all[4:]},
			{"AfterLast", all[4].Seq, 2, nil},
			{"NoLimit", all[0].Seq, 0, all[1:]},
		}
		for _, tt := range tests {
			got, err := f.s.Changes(f.ctx, tt.after, tt.limit)
			if err != nil {
				t.Fatalf("%s: Changes: %v", tt.name, err)
			}
			if len(got) != 0 || len(tt.want) != 0 {
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: Changes(%d, %d) = %v, want %v", tt.name, tt.after, tt.limit, got, tt.want)
				}
			}
		}
	})
}

func (s *suite) testPruneChanges(t *testing.T) {
	setup := func(t *testing.T) (*fixture, *keyward.Workspace, []keyward.Change) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		for i := range 3 {
			f.create(f.newToken(ws.ID, "t"), func(t *keyward.Token) {
				t.CreatedAt = t0.Add(time.Duration(i) * time.Hour)
			})
		}
		return f, ws, f.changes()
	}

	t.Run("OKNothingOlder", func(t *testing.T) {
		f, _, before := setup(t)
		if err := f.s.PruneChanges(f.ctx, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
			t.Fatalf("PruneChanges: %v", err)
		}
		if got := f.changes(); !reflect.DeepEqual(got, before) {
			t.Errorf("changes = %v, want %v", got, before)
		}
	})

	t.Run("OKAll", func(t *testing.T) {
		f, ws, before := setup(t)
		if err := f.s.PruneChanges(f.ctx, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
			t.Fatalf("PruneChanges: %v", err)
		}
		if got := f.changes(); len(got) != 0 {
			t.Errorf("changes = %v, want none", got)
		}
		// Sequence numbers are not reused after a prune.
		tok, _ := f.create(f.newToken(ws.ID, "later"))
		got := f.changes()
		if len(got) != 1 || got[0].TokenID != tok.ID || got[0].Seq <= before[len(before)-1].Seq {
			t.Errorf("changes = %v, want one of %s after seq %d", got, tok.ID, before[len(before)-1].Seq)
		}
	})
}

func (s *suite) testFlushUsage(t *testing.T) {
	t1 := t0.Add(time.Hour)
	quota := func(t *keyward.Token) { t.Quota = &keyward.Quota{Limit: 100, Period: keyward.PeriodMonth} }
	flush := func(t *testing.T, f *fixture, batch ...keyward.UsageFlush) {
		t.Helper()
		if err := f.s.FlushUsage(f.ctx, keyward.FlushID{}, batch); err != nil {
			t.Fatalf("FlushUsage: %v", err)
		}
	}
	wantUsed := func(t *testing.T, f *fixture, tokenID, period string, want int64) {
		t.Helper()
		got, err := f.s.QuotaUsed(f.ctx, tokenID, period)
		if err != nil {
			t.Fatalf("QuotaUsed: %v", err)
		}
		if got != want {
			t.Errorf("QuotaUsed(%s) = %d, want %d", period, got, want)
		}
	}
	wantLastUse := func(t *testing.T, f *fixture, tok *keyward.Token, at *time.Time, ip string) {
		t.Helper()
		got := f.find(tok.WorkspaceID, tok.ID)
		var d diff
		d.timePtr("LastUsedAt", got.LastUsedAt, at)
		d.str("LastUsedIP", got.LastUsedIP, ip)
		d.report(t, "token "+tok.ID)
	}

	t.Run("OKQuotaAccumulates", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"), quota)
		other, _ := f.create(f.newToken(ws.ID, "other"), quota)
		wantUsed(t, f, tok.ID, "2026-03", 0)
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: t1, Period: "2026-03", QuotaDelta: 3})
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: t1, Period: "2026-03", QuotaDelta: 4})
		wantUsed(t, f, tok.ID, "2026-03", 7)
		wantUsed(t, f, tok.ID, "2026-04", 0)
		wantUsed(t, f, other.ID, "2026-03", 0)
		flush(t, f,
			keyward.UsageFlush{TokenID: tok.ID, Period: "2026-04", QuotaDelta: 2},
			keyward.UsageFlush{TokenID: tok.ID, Period: "2026-04", QuotaDelta: 5}, // twice in one batch
			keyward.UsageFlush{TokenID: other.ID, Period: "2026-03", QuotaDelta: 1},
		)
		wantUsed(t, f, tok.ID, "2026-03", 7)
		wantUsed(t, f, tok.ID, "2026-04", 7)
		wantUsed(t, f, other.ID, "2026-03", 1)
	})

	t.Run("OKBatchAppliedOnce", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"), quota)
		write := func(id keyward.FlushID, delta int64) {
			t.Helper()
			if err := f.s.FlushUsage(f.ctx, id, []keyward.UsageFlush{{TokenID: tok.ID, LastUsedAt: t1, Period: "2026-03", QuotaDelta: delta}}); err != nil {
				t.Fatalf("FlushUsage(%+v): %v", id, err)
			}
		}
		a1 := keyward.FlushID{Writer: "flw_a", Seq: 1, At: t1}
		a2 := keyward.FlushID{Writer: "flw_a", Seq: 2, At: t1.Add(time.Second)}
		write(a1, 3)
		write(a1, 3) // its answer was lost: written again
		wantUsed(t, f, tok.ID, "2026-03", 3)
		write(a2, 4)
		write(a1, 3) // older than the writer's latest: applied before
		wantUsed(t, f, tok.ID, "2026-03", 7)
		write(keyward.FlushID{Writer: "flw_b", Seq: 1, At: t1}, 5) // writers number their own batches
		wantUsed(t, f, tok.ID, "2026-03", 12)
		write(keyward.FlushID{}, 1) // no id: applied every time
		write(keyward.FlushID{}, 1)
		wantUsed(t, f, tok.ID, "2026-03", 14)
		// A writer not heard of for FlushIDRetention is forgotten.
		write(keyward.FlushID{Writer: "flw_c", Seq: 1, At: a2.At.Add(keyward.FlushIDRetention + time.Second)}, 1)
		write(a2, 4)
		wantUsed(t, f, tok.ID, "2026-03", 19)
	})

	t.Run("OKRateWindows", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		a, _ := f.create(f.newToken(ws.ID, "a"))
		b, _ := f.create(f.newToken(ws.ID, "b"))
		counts := func(n int64) []int64 {
			c := make([]int64, 21)
			c[5] = n
			return c
		}
		// States by the start of their newest sub-window (head·width):
		// a later one replaces, an older one (a retried flush) does not,
		// whatever their until (a shortened window ends sooner).
		win := func(id string, n, head int64, until time.Time) *keyward.RateWindow {
			return &keyward.RateWindow{TokenID: id, Window: time.Hour, Width: int64(3 * time.Minute), Head: head, Counts: counts(n), Until: until}
		}
		// Last, when known, is kept to the ns; else it stays zero.
		withLast := func(w *keyward.RateWindow, last time.Time) *keyward.RateWindow {
			w.Last = last
			return w
		}
		flush(t, f,
			keyward.UsageFlush{TokenID: a.ID, Rate: win(a.ID, 1, 9876542, t1.Add(time.Hour))},
			keyward.UsageFlush{TokenID: a.ID, Rate: withLast(win(a.ID, 2, 9876543, t1.Add(time.Minute)), t1.Add(-time.Hour+time.Minute+7))}, // later, ending sooner: replaces
			keyward.UsageFlush{TokenID: a.ID, Rate: win(a.ID, 9, 9876542, t1.Add(2*time.Hour))},                                             // older, retried: does not
			keyward.UsageFlush{TokenID: b.ID, Rate: win(b.ID, 7, 9876543, t0.Add(time.Minute))},
			keyward.UsageFlush{TokenID: f.id(keyward.PrefixToken), Rate: win("tok_gone", 1, 9876543, t1)}, // no such token: left out
		)
		got, err := f.s.RateWindows(f.ctx, t0.Add(2*time.Minute))
		if err != nil {
			t.Fatalf("RateWindows: %v", err)
		}
		if len(got) != 1 {
			t.Fatalf("RateWindows = %+v, want a's only (b's ended)", got)
		}
		w := got[0]
		if w.TokenID != a.ID || w.Window != time.Hour || w.Width != int64(3*time.Minute) || w.Head != 9876543 ||
			len(w.Counts) != 21 || w.Counts[5] != 2 || !w.Until.Equal(t1.Add(time.Minute)) ||
			!w.Last.Equal(t1.Add(-time.Hour+time.Minute+7)) {
			t.Errorf("RateWindows = %+v", w)
		}
		got, _ = f.s.RateWindows(f.ctx, t0)
		if len(got) != 2 {
			t.Fatalf("RateWindows before b's end = %d windows, want 2", len(got))
		}
		for _, w := range got {
			if w.TokenID == b.ID && !w.Last.IsZero() {
				t.Errorf("b's Last = %v, want zero (not known)", w.Last)
			}
		}
	})

	t.Run("OKQuotaUsedUnknown", func(t *testing.T) {
		f := s.fixture(t)
		f.workspace("acme")
		wantUsed(t, f, f.id(keyward.PrefixToken), "total", 0)
	})

	t.Run("OKLastUseMonotonic", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		wantLastUse(t, f, tok, nil, "")
		at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: at(2), LastUsedIP: "192.0.2.2"})
		wantLastUse(t, f, tok, ptr(at(2)), "192.0.2.2")
		// An older use, flushed late by another node, does not go back.
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: at(1), LastUsedIP: "192.0.2.1"})
		wantLastUse(t, f, tok, ptr(at(2)), "192.0.2.2")
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: at(3), LastUsedIP: "2001:db8::3"})
		wantLastUse(t, f, tok, ptr(at(3)), "2001:db8::3")
		flush(t, f,
			keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: at(5), LastUsedIP: "192.0.2.5"},
			keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: at(4), LastUsedIP: "192.0.2.4"},
		)
		wantLastUse(t, f, tok, ptr(at(5)), "192.0.2.5")
	})

	t.Run("OKNoChange", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"), quota)
		before := f.snapshot(ws.ID, tok.ID)
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: t1, LastUsedIP: "192.0.2.1", Period: "2026-03", QuotaDelta: 1})
		want := before.token.Clone()
		want.LastUsedAt, want.LastUsedIP = ptr(t1), "192.0.2.1"
		before.token = want // UpdatedAt included: usage is not an update
		f.unchanged(before)
	})

	t.Run("OKNoPeriod", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: t1, LastUsedIP: "192.0.2.1", QuotaDelta: 5})
		wantUsed(t, f, tok.ID, "", 0)
		wantLastUse(t, f, tok, ptr(t1), "192.0.2.1")
	})

	t.Run("OKQuotaOnly", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"), quota)
		flush(t, f, keyward.UsageFlush{TokenID: tok.ID, Period: "total", QuotaDelta: 5})
		wantUsed(t, f, tok.ID, "total", 5)
		wantLastUse(t, f, tok, nil, "")
	})

	t.Run("OKUnknownTokenSkipped", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"), quota)
		unknown := f.id(keyward.PrefixToken)
		flush(t, f,
			keyward.UsageFlush{TokenID: unknown, LastUsedAt: t1, LastUsedIP: "192.0.2.9", Period: "2026-03", QuotaDelta: 9},
			keyward.UsageFlush{TokenID: tok.ID, LastUsedAt: t1, LastUsedIP: "192.0.2.1", Period: "2026-03", QuotaDelta: 1},
		)
		wantUsed(t, f, tok.ID, "2026-03", 1)
		wantUsed(t, f, unknown, "2026-03", 0)
		wantLastUse(t, f, tok, ptr(t1), "192.0.2.1")
	})

	t.Run("OKEmptyBatch", func(t *testing.T) {
		f := s.fixture(t)
		flush(t, f)
	})
}

func (s *suite) testFindAuditEvents(t *testing.T) {
	t.Run("OKEmpty", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		if evs := f.events(ws.ID); len(evs) != 0 {
			t.Errorf("audit events = %v, want none", eventIDs(evs))
		}
	})

	t.Run("OKEveryField", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok := f.newToken(ws.ID, "t")
		want := &keyward.AuditEvent{
			ID:          f.id(keyward.PrefixEvent),
			WorkspaceID: ws.ID,
			Time:        t0.Add(123456 * time.Microsecond).In(time.FixedZone("JST", 9*3600)),
			Action:      "token.create",
			Actor:       keyward.Actor{Type: keyward.ActorMember, ID: "mem_1"},
			Target:      tok.ID,
			IP:          "2001:db8::42",
			UserAgent:   "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" ✓",
			RequestID:   "req_01",
			Changes:     []byte(`{"scopes": {"from": [], "to": ["orders:read"]}, "expires_at": {"from": null, "to": "2026-04-01T00:00:00Z"}}`),
		}
		if err := f.s.CreateToken(f.ctx, tok, newSecret(tok.ID, t0), want); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		evs := f.events(ws.ID)
		if len(evs) != 1 {
			t.Fatalf("%d audit events, want 1", len(evs))
		}
		assertEvent(t, evs[0], want)
	})

	t.Run("OKNilChanges", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		tok, _ := f.create(f.newToken(ws.ID, "t"))
		evs := f.events(ws.ID)
		if len(evs) != 1 || evs[0].Changes != nil || evs[0].Target != tok.ID {
			t.Errorf("audit events = %+v, want one of %s without changes", evs, tok.ID)
		}
	})

	t.Run("OKPagingNewestFirst", func(t *testing.T) {
		f := s.fixture(t)
		ws := f.workspace("acme")
		other := f.workspace("other")
		var want []string // newest first
		for i := range 5 {
			tok, _ := f.create(f.newToken(ws.ID, "t"))
			f.create(f.newToken(other.ID, "o"))
			want = append([]string{f.events(ws.ID)[0].ID}, want...)
			if i == 2 {
				// An update's event interleaves with creations.
				ev := f.event(ws.ID, "token.update", tok.ID)
				if _, err := f.s.UpdateToken(f.ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
					t.Name = "u"
					return &keyward.TokenWrite{Event: ev, Now: t0}, nil
				}); err != nil {
					t.Fatalf("UpdateToken: %v", err)
				}
				want = append([]string{ev.ID}, want...)
			}
		}
		if got := eventIDs(f.events(ws.ID)); !slices.Equal(got, want) {
			t.Fatalf("audit events = %v, want %v", got, want)
		}
		var got []string
		before := ""
		for page := 0; ; page++ {
			evs, err := f.s.FindAuditEvents(f.ctx, keyward.AuditFilter{WorkspaceID: ws.ID, Before: before, Limit: 2})
			if err != nil {
				t.Fatalf("FindAuditEvents: %v", err)
			}
			if len(evs) > 2 {
				t.Fatalf("page %d has %d events, want at most 2", page, len(evs))
			}
			if len(evs) == 0 {
				break
			}
			for _, e := range evs {
				if e.WorkspaceID != ws.ID {
					t.Errorf("event %s of workspace %s in the page of %s", e.ID, e.WorkspaceID, ws.ID)
				}
			}
			got = append(got, eventIDs(evs)...)
			before = evs[len(evs)-1].ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("paged audit events = %v, want %v", got, want)
		}
	})
}
