package audit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/postgres"
	"github.com/keyward/keyward/internal/sqlite"
)

var (
	t0      = time.Date(2026, time.March, 14, 9, 26, 53, 0, time.UTC)
	key     = []byte("the audit chain key of the tests")
	wrong   = []byte("another key, which nobody holds!")
	rotated = []byte("the key after the secret rotated")
)

// backend is one store implementation, opened on a fresh database, with
// raw SQL access to it for tampering, as someone who can write the
// database but lacks the server secret would.
type backend struct {
	name string
	// fresh returns a fresh database's location.
	fresh func(t *testing.T) string
	// openLinking opens the store at loc with the chain key, events
	// written before the chain let be linked when link is set, under a
	// server secret of keyIDs (nil: unchecked).
	openLinking func(loc string, key []byte, link bool, keyIDs ...string) (keyward.Store, error)
	// exec runs SQL written with ? placeholders on the database at loc.
	exec func(t *testing.T, loc, query string, args ...any)
}

// open opens the store at loc with the chain key.
func (b backend) open(t *testing.T, loc string, key []byte) keyward.Store {
	t.Helper()
	s, err := b.openLinking(loc, key, false)
	if err != nil {
		t.Fatalf("open the %s store: %v", b.name, err)
	}
	return s
}

func backends(t *testing.T) []backend {
	bs := []backend{{
		name: "SQLite",
		fresh: func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "keyward.db")
		},
		openLinking: func(loc string, key []byte, link bool, keyIDs ...string) (keyward.Store, error) {
			opts := []sqlite.Option{sqlite.WithAuditKey(key)}
			if link {
				opts = append(opts, sqlite.WithLinkUnchainedAudit(keyIDs...))
			}
			db, err := sqlite.Open(context.Background(), loc, opts...)
			if err != nil {
				return nil, err // a nil *DB is not a nil Store
			}
			return db, nil
		},
		exec: func(t *testing.T, loc, query string, args ...any) {
			t.Helper()
			raw, err := sql.Open("sqlite", loc+"?_pragma=busy_timeout(5000)")
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.Exec(query, args...); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		},
	}}
	base := os.Getenv("KEYWARD_TEST_POSTGRES_URL")
	if base == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("KEYWARD_TEST_POSTGRES_URL is not set, and CI=true: PostgreSQL tests must run in CI")
		}
		t.Log("KEYWARD_TEST_POSTGRES_URL is not set: the PostgreSQL cases are skipped")
		return bs
	}
	return append(bs, backend{
		name: "PostgreSQL",
		fresh: func(t *testing.T) string {
			t.Helper()
			b := make([]byte, 8)
			rand.Read(b)
			schema := "keyward_audit_test_" + hex.EncodeToString(b)
			pgExec(t, base, `CREATE SCHEMA `+schema)
			t.Cleanup(func() { pgExec(t, base, `DROP SCHEMA `+schema+` CASCADE`) })
			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			return u.String()
		},
		openLinking: func(loc string, key []byte, link bool, keyIDs ...string) (keyward.Store, error) {
			opts := []postgres.Option{postgres.WithAuditKey(key)}
			if link {
				opts = append(opts, postgres.WithLinkUnchainedAudit(keyIDs...))
			}
			db, err := postgres.Open(context.Background(), loc, opts...)
			if err != nil {
				return nil, err
			}
			return db, nil
		},
		exec: func(t *testing.T, loc, query string, args ...any) {
			t.Helper()
			n := 0
			query = replaceEach(query, "?", func() string { n++; return fmt.Sprintf("$%d", n) })
			pgExec(t, loc, query, args...)
		},
	})
}

func pgExec(t *testing.T, u, query string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func replaceEach(s, old string, next func() string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, old)
		if i < 0 {
			return b.String() + s
		}
		b.WriteString(s[:i])
		b.WriteString(next())
		s = s[i+len(old):]
	}
}

// fixture is a store holding a workspace "acme" with five events and a
// workspace "other" with two, interleaved.
type fixture struct {
	t    *testing.T
	b    backend
	loc  string
	s    keyward.Store
	ws   string
	evs  []*keyward.AuditEvent // acme's, in the order written
	n    int
	othr string
}

func newFixture(t *testing.T, b backend) *fixture {
	t.Helper()
	f := &fixture{t: t, b: b, loc: b.fresh(t)}
	f.s = b.open(t, f.loc, key)
	t.Cleanup(func() { f.s.Close() })
	f.ws = f.workspace("acme")
	f.othr = f.workspace("other")
	for i := range 4 {
		f.evs = append(f.evs, f.token(f.ws, fmt.Sprintf("t%d", i)))
		if i%2 == 0 {
			f.token(f.othr, "o")
		}
	}
	return f
}

func (f *fixture) now() time.Time {
	f.n++
	return t0.Add(time.Duration(f.n) * time.Millisecond)
}

// workspace creates a workspace with its workspace.create event.
func (f *fixture) workspace(name string) string {
	f.t.Helper()
	now := f.now()
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, now), Name: name, TokenPrefix: "kw", CreatedAt: now}
	ev := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, now), WorkspaceID: ws.ID, Time: now, Action: "workspace.create",
		Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: ws.ID, Changes: []byte(`{"name":{"to":"` + name + `"}}`)}
	if err := f.s.CreateWorkspace(context.Background(), ws, nil, nil, ev); err != nil {
		f.t.Fatalf("CreateWorkspace: %v", err)
	}
	if name == "acme" {
		f.evs = append(f.evs, ev)
	}
	return ws.ID
}

// token creates a token and returns its token.create event.
func (f *fixture) token(wsID, name string) *keyward.AuditEvent {
	f.t.Helper()
	now := f.now()
	tok := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, now), WorkspaceID: wsID, Name: name, CreatedAt: now, UpdatedAt: now}
	d := make([]byte, 32)
	rand.Read(d)
	ev := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, now), WorkspaceID: wsID, Time: now, Action: "token.create",
		Actor: keyward.Actor{Type: keyward.ActorToken, ID: "tok_admin"}, Target: tok.ID, IP: "192.0.2.7", UserAgent: "test", RequestID: "req_" + name}
	if err := f.s.CreateToken(context.Background(), tok, &keyward.Secret{Digest: d, KeyID: "k1"}, ev); err != nil {
		f.t.Fatalf("CreateToken: %v", err)
	}
	return ev
}

func (f *fixture) exec(query string, args ...any) {
	f.t.Helper()
	f.b.exec(f.t, f.loc, query, args...)
}

func (f *fixture) verify(keys ...[]byte) audit.Report {
	f.t.Helper()
	if len(keys) == 0 {
		keys = [][]byte{key}
	}
	r, err := audit.Verify(context.Background(), f.s, keys[0], f.ws, keys[1:]...)
	if err != nil {
		f.t.Fatalf("Verify: %v", err)
	}
	return r
}

// wantProblem fails unless r reports kind at the event with the given id.
func wantProblem(t *testing.T, r audit.Report, kind audit.Kind, eventID string) {
	t.Helper()
	if r.Problem == nil {
		t.Fatalf("Verify = OK (%d events), want %s at %s", r.Events, kind, eventID)
	}
	if r.Problem.Kind != kind || r.Problem.EventID != eventID {
		t.Fatalf("Verify = %s at %s (%s), want %s at %s", r.Problem.Kind, r.Problem.EventID, r.Problem.Detail, kind, eventID)
	}
	if !strings.Contains(r.Problem.Detail, eventID) {
		t.Errorf("detail %q does not name the event %s", r.Problem.Detail, eventID)
	}
}

func TestVerify(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { testVerify(t, b) })
	}
}

func testVerify(t *testing.T, b backend) {
	t.Run("OK", func(t *testing.T) {
		f := newFixture(t, b)
		r := f.verify()
		if !r.OK() || r.Events != 5 || r.Head == nil || r.Head.EventID != f.evs[4].ID {
			t.Fatalf("Verify = %+v (problem %+v), want OK with 5 events and the head at %s", r, r.Problem, f.evs[4].ID)
		}
		if r, err := audit.Verify(context.Background(), f.s, key, f.othr); err != nil || !r.OK() || r.Events != 3 {
			t.Errorf("Verify(other) = %+v, %v; want OK with 3 events", r, err)
		}
	})

	t.Run("OKAfterReopen", func(t *testing.T) {
		// Events and their chain survive a restart, and writes after it
		// extend the same chain.
		f := newFixture(t, b)
		f.s.Close()
		f.s = b.open(t, f.loc, key)
		evs, err := f.s.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: f.ws})
		if err != nil || len(evs) != 5 {
			t.Fatalf("FindAuditEvents after reopen = %d events, %v; want 5", len(evs), err)
		}
		f.token(f.ws, "after")
		if r := f.verify(); !r.OK() || r.Events != 6 {
			t.Fatalf("Verify after reopen = %+v (problem %+v), want OK with 6 events", r, r.Problem)
		}
	})

	t.Run("OKRotatedKey", func(t *testing.T) {
		// After the server secret rotates, the events linked under the old
		// key verify under it, given as a previous key.
		f := newFixture(t, b)
		f.s.Close()
		f.s = b.open(t, f.loc, rotated)
		f.token(f.ws, "after")
		if r := f.verify(rotated, key); !r.OK() || r.Events != 6 {
			t.Fatalf("Verify with the previous key = %+v (problem %+v), want OK", r, r.Problem)
		}
		wantProblem(t, f.verify(rotated), audit.Changed, f.evs[0].ID)
	})

	t.Run("ErrOldKeyAfterRotation", func(t *testing.T) {
		// Once an event is linked under the current key, an event (or a
		// head) linked under the old one is reported: whoever holds the
		// old secret, perhaps the one that leaked, wrote it after the
		// rotation.
		f := newFixture(t, b)
		f.s.Close()
		f.s = b.open(t, f.loc, rotated)
		f.token(f.ws, "after")
		f.s.Close()
		f.s = b.open(t, f.loc, key)
		late := f.token(f.ws, "old key again")
		wantProblem(t, f.verify(rotated, key), audit.OldKey, late.ID)
	})

	t.Run("ErrOldKeyHead", func(t *testing.T) {
		// The newest event removed and the head pointed at the one before,
		// signed with the old key: the events left under the current key
		// show that the head must be under it too.
		f := newFixture(t, b)
		f.s.Close()
		f.s = b.open(t, f.loc, rotated)
		kept := f.token(f.ws, "after")
		newest := f.token(f.ws, "newest")
		f.exec(`DELETE FROM audit_events WHERE id = ?`, newest.ID)
		f.exec(`UPDATE audit_heads SET seq = (SELECT seq FROM audit_events WHERE id = ?), event_id = ?,
			mac = (SELECT mac FROM audit_events WHERE id = ?) WHERE workspace_id = ?`, kept.ID, kept.ID, kept.ID, f.ws)
		head := f.verify(rotated, key).Head
		f.exec(`UPDATE audit_heads SET head_mac = ? WHERE workspace_id = ?`, keyward.AuditHeadMAC(key, f.ws, kept.ID, head.MAC), f.ws)
		wantProblem(t, f.verify(rotated, key), audit.OldKey, kept.ID)
	})

	t.Run("ErrOldKeyHeadThenWritten", func(t *testing.T) {
		// As ErrOldKeyHead, then a node with the current key writes: the
		// event chained to that head shows it.
		f := newFixture(t, b)
		f.s.Close()
		f.s = b.open(t, f.loc, rotated)
		kept := f.token(f.ws, "after")
		newest := f.token(f.ws, "newest")
		f.exec(`DELETE FROM audit_events WHERE id = ?`, newest.ID)
		head := f.verify(rotated, key).Head
		var keptMAC []byte
		f.s.AuditChain(context.Background(), f.ws, func(e *keyward.AuditEvent, l keyward.AuditLink) error {
			if e.ID == kept.ID {
				keptMAC = l.MAC
			}
			return nil
		})
		f.exec(`UPDATE audit_heads SET seq = ?, event_id = ?, mac = ?, head_mac = ? WHERE workspace_id = ?`,
			head.Seq-1, kept.ID, keptMAC, keyward.AuditHeadMAC(key, f.ws, kept.ID, keptMAC), f.ws)
		later := f.token(f.ws, "later")
		wantProblem(t, f.verify(rotated, key), audit.OldKey, later.ID)
	})

	t.Run("ErrRemovedSinceRotationHeadFromLink", func(t *testing.T) {
		// The first event written after a rotation is linked to the head
		// it found, made under the old key. Whoever can write the database
		// but holds neither secret removes every event since the rotation
		// and puts back the head of the last event before it: its MAC must
		// not be readable from that first event's link, or verify (given
		// the old key, as it must be to check the events before) would
		// take the cut-back chain for whole, with or without a write after.
		for _, write := range []bool{false, true} {
			t.Run(fmt.Sprintf("WriteAfter=%v", write), func(t *testing.T) {
				f := newFixture(t, b)
				last := f.evs[4]
				f.s.Close()
				f.s = b.open(t, f.loc, rotated)
				first := f.token(f.ws, "after rotation")
				f.token(f.ws, "revocation to hide")
				var lastL, firstL keyward.AuditLink
				f.s.AuditChain(context.Background(), f.ws, func(e *keyward.AuditEvent, l keyward.AuditLink) error {
					switch e.ID {
					case last.ID:
						lastL = l
					case first.ID:
						firstL = l
					}
					return nil
				})
				_, found := keyward.SplitAuditPrev(firstL.Prev)
				if found == nil {
					t.Fatalf("the first event after the rotation is linked to %x, not to the head as found", firstL.Prev)
				}
				f.exec(`DELETE FROM audit_events WHERE workspace_id = ? AND seq >= ?`, f.ws, firstL.Seq)
				f.exec(`UPDATE audit_heads SET seq = ?, event_id = ?, mac = ?, head_mac = ? WHERE workspace_id = ?`,
					lastL.Seq, last.ID, lastL.MAC, found, f.ws)
				if !write {
					wantProblem(t, f.verify(rotated, key), audit.HeadChanged, last.ID)
					return
				}
				later := f.token(f.ws, "later")
				wantProblem(t, f.verify(rotated, key), audit.NewestRemoved, later.ID)
			})
		}
	})

	t.Run("OKConcurrentWriters", func(t *testing.T) {
		// Writers on two handles (two processes, or two nodes) append to
		// the same chains at once: the links follow the commit order.
		f := newFixture(t, b)
		second := b.open(t, f.loc, key)
		defer second.Close()
		const workers, each = 6, 8
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			st := f.s
			if w%2 == 1 {
				st = second
			}
			ws := f.ws
			if w%3 == 1 {
				ws = f.othr
			}
			wg.Go(func() {
				for i := range each {
					now := t0.Add(time.Duration(w*each+i) * time.Second)
					tok := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, now), WorkspaceID: ws, Name: "c", CreatedAt: now, UpdatedAt: now}
					d := make([]byte, 32)
					rand.Read(d)
					ev := &keyward.AuditEvent{Time: now, Action: "token.create", Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: tok.ID}
					errs <- st.CreateToken(context.Background(), tok, &keyward.Secret{Digest: d, KeyID: "k1"}, ev)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("CreateToken: %v", err)
			}
		}
		total := int64(0)
		for _, ws := range []string{f.ws, f.othr} {
			r, err := audit.Verify(context.Background(), f.s, key, ws)
			if err != nil || !r.OK() {
				t.Fatalf("Verify(%s) = %+v, %v (problem %+v)", ws, r, err, r.Problem)
			}
			total += r.Events
		}
		if want := int64(5 + 3 + workers*each); total != want {
			t.Errorf("%d events verified, want %d", total, want)
		}
	})

	t.Run("ErrWrongKey", func(t *testing.T) {
		f := newFixture(t, b)
		wantProblem(t, f.verify(wrong), audit.Changed, f.evs[0].ID)
	})

	t.Run("ErrChanged", func(t *testing.T) {
		f := newFixture(t, b)
		f.exec(`UPDATE audit_events SET action = 'token.revoke' WHERE id = ?`, f.evs[2].ID)
		wantProblem(t, f.verify(), audit.Changed, f.evs[2].ID)
	})

	t.Run("ErrChangedTime", func(t *testing.T) {
		f := newFixture(t, b)
		if b.name == "SQLite" {
			f.exec(`UPDATE audit_events SET time = time + 1000 WHERE id = ?`, f.evs[3].ID)
		} else {
			f.exec(`UPDATE audit_events SET time = time + interval '1 microsecond' WHERE id = ?`, f.evs[3].ID)
		}
		wantProblem(t, f.verify(), audit.Changed, f.evs[3].ID)
	})

	t.Run("ErrChangedTimeBelowMicrosecond", func(t *testing.T) {
		// SQLite keeps nanoseconds, the link covers microseconds: a time
		// moved within its microsecond still shows in every listing.
		if b.name != "SQLite" {
			t.Skip("timestamptz keeps microseconds")
		}
		f := newFixture(t, b)
		f.exec(`UPDATE audit_events SET time = time + 999 WHERE id = ?`, f.evs[3].ID)
		wantProblem(t, f.verify(), audit.Changed, f.evs[3].ID)
	})

	t.Run("ErrUnreadable", func(t *testing.T) {
		// A value keyward never writes, which the store cannot read: the
		// verification fails naming the event.
		f := newFixture(t, b)
		if b.name == "SQLite" {
			f.exec(`UPDATE audit_events SET time = 'soon' WHERE id = ?`, f.evs[2].ID)
		} else {
			f.exec(`UPDATE audit_events SET time = 'infinity' WHERE id = ?`, f.evs[2].ID)
		}
		_, err := audit.Verify(context.Background(), f.s, key, f.ws)
		if err == nil || !strings.Contains(err.Error(), "audit event "+f.evs[2].ID+" (seq ") {
			t.Errorf("Verify = %v, want an error naming %s", err, f.evs[2].ID)
		}
	})

	t.Run("ErrForgedMAC", func(t *testing.T) {
		// Someone without the key edits an event and links it anew under
		// a key of their own.
		f := newFixture(t, b)
		var e keyward.AuditEvent
		var l keyward.AuditLink
		f.s.AuditChain(context.Background(), f.ws, func(se *keyward.AuditEvent, sl keyward.AuditLink) error {
			if se.ID == f.evs[1].ID {
				e, l = *se, sl
			}
			return nil
		})
		e.Action = "token.revoke"
		f.exec(`UPDATE audit_events SET action = ?, mac = ? WHERE id = ?`, e.Action, keyward.AuditMAC(wrong, l.Prev, &e), e.ID)
		wantProblem(t, f.verify(), audit.Changed, e.ID)
	})

	t.Run("ErrNoMAC", func(t *testing.T) {
		f := newFixture(t, b)
		f.exec(`UPDATE audit_events SET mac = NULL WHERE id = ?`, f.evs[1].ID)
		wantProblem(t, f.verify(), audit.Changed, f.evs[1].ID)
	})

	t.Run("ErrRemoved", func(t *testing.T) {
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_events WHERE id = ?`, f.evs[2].ID)
		wantProblem(t, f.verify(), audit.Removed, f.evs[3].ID)
	})

	t.Run("ErrFirstRemoved", func(t *testing.T) {
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_events WHERE id = ?`, f.evs[0].ID)
		wantProblem(t, f.verify(), audit.Removed, f.evs[1].ID)
	})

	t.Run("ErrReordered", func(t *testing.T) {
		// Two events trade places in the sequence.
		f := newFixture(t, b)
		seqs := map[string]int64{}
		f.s.AuditChain(context.Background(), f.ws, func(e *keyward.AuditEvent, l keyward.AuditLink) error {
			seqs[e.ID] = l.Seq
			return nil
		})
		a, c := f.evs[1].ID, f.evs[2].ID
		f.exec(`UPDATE audit_events SET seq = -1 WHERE id = ?`, a)
		f.exec(`UPDATE audit_events SET seq = ? WHERE id = ?`, seqs[a], c)
		f.exec(`UPDATE audit_events SET seq = ? WHERE id = ?`, seqs[c], a)
		wantReordered(t, f)
	})

	t.Run("ErrSwappedContents", func(t *testing.T) {
		// Two events trade their targets.
		f := newFixture(t, b)
		a, c := f.evs[1], f.evs[3]
		f.exec(`UPDATE audit_events SET target = ? WHERE id = ?`, c.Target, a.ID)
		f.exec(`UPDATE audit_events SET target = ? WHERE id = ?`, a.Target, c.ID)
		wantProblem(t, f.verify(), audit.Changed, a.ID)
	})

	t.Run("ErrNewestRemoved", func(t *testing.T) {
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_events WHERE id = ?`, f.evs[4].ID)
		wantProblem(t, f.verify(), audit.NewestRemoved, f.evs[4].ID)
	})

	t.Run("ErrNewestRemovedHeadMoved", func(t *testing.T) {
		// Whoever removes the newest event and points the head at the new
		// last one, copying its values, cannot make the head's MAC.
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_events WHERE id = ?`, f.evs[4].ID)
		f.exec(`UPDATE audit_heads SET seq = (SELECT seq FROM audit_events WHERE id = ?), event_id = ?,
			mac = (SELECT mac FROM audit_events WHERE id = ?) WHERE workspace_id = ?`, f.evs[3].ID, f.evs[3].ID, f.evs[3].ID, f.ws)
		wantProblem(t, f.verify(), audit.HeadChanged, f.evs[3].ID)
	})

	t.Run("ErrNewestRemovedHeadRelinked", func(t *testing.T) {
		// Whoever removes the newest event and points the head at the new
		// last one cannot make the head's MAC; the next event written
		// must not make the chain whole again, whatever the head's MAC
		// column then holds.
		for _, tc := range []struct {
			name    string
			headMAC string // SQL for the head's head_mac
		}{
			{"MACKept", "head_mac"},
			{"MACEmpty", "?"},
			{"MACOfEvent", "(SELECT mac FROM audit_events WHERE id = ?)"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := newFixture(t, b)
				kept := f.evs[3].ID
				f.exec(`DELETE FROM audit_events WHERE id = ?`, f.evs[4].ID)
				args := []any{kept, kept, kept}
				switch tc.name {
				case "MACEmpty":
					args = append(args, []byte{})
				case "MACOfEvent":
					args = append(args, kept)
				}
				f.exec(`UPDATE audit_heads SET seq = (SELECT seq FROM audit_events WHERE id = ?), event_id = ?,
					mac = (SELECT mac FROM audit_events WHERE id = ?), head_mac = `+tc.headMAC+` WHERE workspace_id = ?`, append(args, f.ws)...)
				later := f.token(f.ws, "later")
				wantProblem(t, f.verify(), audit.NewestRemoved, later.ID)
				if r, err := audit.Verify(context.Background(), f.s, key, f.othr); err != nil || !r.OK() {
					t.Errorf("Verify(other) = %+v, %v; want OK", r.Problem, err)
				}
			})
		}
	})

	t.Run("ErrEmptiedBegunAnew", func(t *testing.T) {
		// Every event of the workspace removed with its head: the next
		// event written begins a chain of its own, which must not pass
		// for the workspace's whole log.
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_events WHERE workspace_id = ?`, f.ws)
		f.exec(`DELETE FROM audit_heads WHERE workspace_id = ?`, f.ws)
		later := f.token(f.ws, "later")
		wantProblem(t, f.verify(), audit.Removed, later.ID)
	})

	t.Run("ErrHeadSeqChanged", func(t *testing.T) {
		// The head's seq is not under its MAC: changed alone, it is the
		// head that changed, not the newest event that went.
		f := newFixture(t, b)
		f.exec(`UPDATE audit_heads SET seq = seq + 5 WHERE workspace_id = ?`, f.ws)
		r := f.verify()
		wantProblem(t, r, audit.HeadChanged, f.evs[4].ID)
		if !strings.Contains(r.Problem.Detail, "the head was changed") {
			t.Errorf("detail %q", r.Problem.Detail)
		}
	})

	t.Run("ErrAllRemoved", func(t *testing.T) {
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_events WHERE workspace_id = ?`, f.ws)
		wantProblem(t, f.verify(), audit.NewestRemoved, f.evs[4].ID)
		f.exec(`DELETE FROM audit_heads WHERE workspace_id = ?`, f.ws)
		r := f.verify()
		if r.Problem == nil || r.Problem.Kind != audit.HeadMissing {
			t.Fatalf("Verify without events and head = %+v, want %s", r.Problem, audit.HeadMissing)
		}
		ids, err := audit.Workspaces(context.Background(), f.s)
		if err != nil || len(ids) != 2 || ids[0] != min(f.ws, f.othr) {
			t.Errorf("Workspaces = %v, %v; want both, acme's log gone or not", ids, err)
		}
	})

	t.Run("OKAfterCut", func(t *testing.T) {
		// A retention cut removes the oldest events and records itself in
		// the chain, which then verifies from the first event kept.
		f := newFixture(t, b)
		cutEv := &keyward.AuditEvent{Time: t0.Add(time.Hour), Action: keyward.ActionAuditCut, Actor: keyward.Actor{Type: keyward.ActorSystem}}
		cut, err := f.s.CutAudit(context.Background(), f.ws, f.evs[2].Time, cutEv)
		if err != nil {
			t.Fatal(err)
		}
		if cut.Removed != 2 || len(cut.StartPrev) == 0 {
			t.Fatalf("cut = %+v, want 2 events removed", cut)
		}
		r := f.verify()
		if !r.OK() || r.Events != 4 || r.Cut == nil || r.Cut.Removed != 2 || !r.Cut.Before.Equal(f.evs[2].Time) {
			t.Fatalf("Verify after a cut = %+v (problem %+v), want OK with 4 events after a cut of 2", r, r.Problem)
		}
		if r, err := audit.Verify(context.Background(), f.s, key, f.othr); err != nil || !r.OK() || r.Events != 3 {
			t.Errorf("the cut touched another workspace: %+v, %v", r, err)
		}
		// A second cut, with the first cut's event kept, still verifies
		// from its own start.
		f.token(f.ws, "later")
		if _, err := f.s.CutAudit(context.Background(), f.ws, f.evs[3].Time.Add(time.Microsecond), cutEv); err != nil {
			t.Fatal(err)
		}
		if r := f.verify(); !r.OK() || r.Events != 4 || r.Cut == nil || r.Cut.Removed != 2 {
			t.Fatalf("Verify after a second cut = %+v (problem %+v)", r, r.Problem)
		}
		// Nothing that old: nothing removed, nothing recorded.
		if cut, err := f.s.CutAudit(context.Background(), f.ws, t0, cutEv); err != nil || cut.Removed != 0 {
			t.Fatalf("an empty cut = %+v, %v", cut, err)
		}
		if r := f.verify(); !r.OK() || r.Events != 4 {
			t.Fatalf("an empty cut changed the chain: %+v", r)
		}
	})

	t.Run("ErrRemovedAfterCut", func(t *testing.T) {
		// Removing more of the oldest events than the cut recorded shows.
		f := newFixture(t, b)
		cutEv := &keyward.AuditEvent{Time: t0.Add(time.Hour), Action: keyward.ActionAuditCut, Actor: keyward.Actor{Type: keyward.ActorSystem}}
		if _, err := f.s.CutAudit(context.Background(), f.ws, f.evs[2].Time, cutEv); err != nil {
			t.Fatal(err)
		}
		f.exec(`DELETE FROM audit_events WHERE id = ?`, f.evs[2].ID)
		wantProblem(t, f.verify(), audit.Removed, f.evs[3].ID)
	})

	t.Run("ErrForgedCut", func(t *testing.T) {
		// A cut event written without the key does not explain a removal.
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_events WHERE id = ?`, f.evs[0].ID)
		forger := b.open(t, f.loc, wrong)
		defer forger.Close()
		cutEv := &keyward.AuditEvent{Time: t0.Add(time.Hour), Action: keyward.ActionAuditCut, Actor: keyward.Actor{Type: keyward.ActorSystem}}
		if _, err := forger.CutAudit(context.Background(), f.ws, f.evs[1].Time, cutEv); err != nil {
			t.Fatal(err)
		}
		r := f.verify()
		if r.OK() {
			t.Fatalf("a forged cut verifies: %+v", r)
		}
	})

	t.Run("ErrHeadMissing", func(t *testing.T) {
		f := newFixture(t, b)
		f.exec(`DELETE FROM audit_heads WHERE workspace_id = ?`, f.ws)
		wantProblem(t, f.verify(), audit.HeadMissing, f.evs[4].ID)
		// An event written then starts a chain of its own, which shows.
		ev := f.token(f.ws, "later")
		wantProblem(t, f.verify(), audit.Removed, ev.ID)
	})
}

// wantReordered checks the outcome of swapping the seq of events 1 and 2.
func wantReordered(t *testing.T, f *fixture) {
	t.Helper()
	var order []string
	f.s.AuditChain(context.Background(), f.ws, func(e *keyward.AuditEvent, _ keyward.AuditLink) error {
		order = append(order, e.ID)
		return nil
	})
	if len(order) != 5 || order[1] != f.evs[2].ID || order[2] != f.evs[1].ID {
		t.Fatalf("chain order = %v, want events 1 and 2 swapped", order)
	}
	wantProblem(t, f.verify(), audit.Reordered, f.evs[2].ID)
}

func TestMigrationLinksExistingEvents(t *testing.T) {
	// A store written before the chain existed gets its events linked when
	// it is migrated, under the key given then, when its operator says so:
	// without, the migration stops, as the same state is what someone who
	// removed the chain from the database to rewrite the log leaves.
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			f := newFixture(t, b)
			f.s.Close()
			f.exec(`DROP TABLE audit_heads`)
			f.exec(`DROP INDEX audit_events_workspace_seq`)
			f.exec(`ALTER TABLE audit_events DROP COLUMN mac`)
			f.exec(`ALTER TABLE audit_events DROP COLUMN prev_mac`)
			f.exec(`DELETE FROM schema_migrations WHERE name = '0002_audit_chain.sql'`)
			if b.name == "SQLite" {
				// Times written before were kept to the nanosecond.
				f.exec(`UPDATE audit_events SET time = time + 789 WHERE id = ?`, f.evs[2].ID)
			}
			_, err := b.openLinking(f.loc, key, false)
			var unchained *keyward.UnchainedAuditError
			if !errors.As(err, &unchained) || unchained.Events < 5 {
				t.Fatalf("open without linking: %v, want an UnchainedAuditError", err)
			}
			// Under a server secret that made none of the stored token
			// secrets (most likely the wrong one), nothing is linked.
			if _, err := b.openLinking(f.loc, key, true, "kother", "kolder"); err == nil || !strings.Contains(err.Error(), "nothing linked: every stored token secret was made under a server secret other than the one given (key ids k1; given kother,kolder)") {
				t.Fatalf("open, linking under another secret: %v", err)
			}
			// The failed migrations changed nothing: the next tries again.
			s, err := b.openLinking(f.loc, key, true, "knew", "k1")
			if err != nil {
				t.Fatalf("open, linking: %v", err)
			}
			f.s = s
			if r := f.verify(); !r.OK() || r.Events != 5 {
				t.Fatalf("Verify after migrating = %+v (problem %+v), want OK with 5 events", r, r.Problem)
			}
			if r, err := audit.Verify(context.Background(), f.s, key, f.othr); err != nil || !r.OK() {
				t.Errorf("Verify(other) = %+v, %v", r.Problem, err)
			}
			f.token(f.ws, "after")
			if r := f.verify(); !r.OK() || r.Events != 6 {
				t.Fatalf("Verify after a write = %+v (problem %+v)", r, r.Problem)
			}
		})
	}
}

func TestExport(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			f := newFixture(t, b)
			// Text that CSV must quote, and that a spreadsheet would run as
			// a formula.
			now := f.now()
			tok := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, now), WorkspaceID: f.ws, Name: "q", CreatedAt: now, UpdatedAt: now}
			quoted := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, now), Time: now.Add(123 * time.Microsecond), Action: "token.create",
				Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: tok.ID, UserAgent: "=a \"quoted\", agent\nwith a newline",
				Changes: []byte(`{"name": {"to": "q"}}`)}
			d := make([]byte, 32)
			rand.Read(d)
			if err := f.s.CreateToken(context.Background(), tok, &keyward.Secret{Digest: d, KeyID: "k1"}, quoted); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()

			var csvOut bytes.Buffer
			if err := audit.Export(ctx, f.s, &csvOut, audit.CSV, f.ws); err != nil {
				t.Fatalf("Export csv: %v", err)
			}
			lines := strings.SplitN(csvOut.String(), "\n", 2)
			if lines[0] != "workspace_id,seq,id,time,action,actor_type,actor_id,target,ip,user_agent,request_id,changes,mac" {
				t.Errorf("CSV header = %q", lines[0])
			}
			wantRow := fmt.Sprintf(`,%s,%s,token.create,system,,%s,,"'=a ""quoted"", agent`+"\n"+`with a newline",,"{""name"": {""to"": ""q""}}",`,
				quoted.ID, now.Add(123*time.Microsecond).Format("2006-01-02T15:04:05.000000Z07:00"), tok.ID)
			if !strings.Contains(csvOut.String(), wantRow) {
				t.Errorf("CSV lacks the row %q:\n%s", wantRow, csvOut.String())
			}
			if n := strings.Count(csvOut.String(), "\n"+f.ws+","); n != 6 {
				t.Errorf("CSV has %d rows of acme, want 6:\n%s", n, csvOut.String())
			}

			var jl bytes.Buffer
			if err := audit.Export(ctx, f.s, &jl, audit.JSONL, f.ws, f.othr); err != nil {
				t.Fatalf("Export jsonl: %v", err)
			}
			rows := strings.Split(strings.TrimSuffix(jl.String(), "\n"), "\n")
			if len(rows) != 9 {
				t.Fatalf("JSONL has %d lines, want 9:\n%s", len(rows), jl.String())
			}
			if !strings.HasPrefix(rows[0], `{"workspace_id":"`+f.ws+`","seq":`) || !strings.Contains(rows[0], `"action":"workspace.create"`) {
				t.Errorf("first line = %s", rows[0])
			}
			if !strings.Contains(rows[5], `"user_agent":"=a \"quoted\", agent\nwith a newline"`) || !strings.Contains(rows[5], `"changes":{"name":{"to":"q"}}`) {
				t.Errorf("line of the quoted event = %s", rows[5])
			}
			if !strings.Contains(rows[8], `"workspace_id":"`+f.othr+`"`) {
				t.Errorf("last line = %s, want other's", rows[8])
			}

			if err := audit.Export(ctx, f.s, &jl, "xml", f.ws); keyward.ErrorCode(err) != keyward.EINVALID {
				t.Errorf("Export xml = %v, want EINVALID", err)
			}
		})
	}
}
