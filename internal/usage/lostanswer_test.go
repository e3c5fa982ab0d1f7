package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/postgres"
	"github.com/keyward/keyward/internal/sqlite"
)

// lostAnswer is a store whose next lose usage writes commit and then
// fail, as when the connection is cut after COMMIT: the caller cannot
// tell them from writes that did not commit.
type lostAnswer struct {
	keyward.Store
	lose atomic.Int32
}

var errLostAnswer = errors.New("connection reset after COMMIT")

func (l *lostAnswer) WriteUsage(ctx context.Context, id keyward.FlushID, c []keyward.UsageCount, e []*keyward.UsageEvent) error {
	err := l.Store.WriteUsage(ctx, id, c, e)
	if err == nil && l.lose.Add(-1) >= 0 {
		return errLostAnswer
	}
	return err
}

// openStores returns an opener of a new, empty store of each kind:
// SQLite always, PostgreSQL when KEYWARD_TEST_POSTGRES_URL is set.
func openStores(t *testing.T) map[string]func(t *testing.T) keyward.Store {
	stores := map[string]func(t *testing.T) keyward.Store{
		"SQLite": func(t *testing.T) keyward.Store {
			db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "keyward.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
	}
	base := os.Getenv("KEYWARD_TEST_POSTGRES_URL")
	if base == "" {
		return stores
	}
	stores["PostgreSQL"] = func(t *testing.T) keyward.Store {
		ctx := context.Background()
		b := make([]byte, 8)
		rand.Read(b)
		name := "keyward_test_" + hex.EncodeToString(b)
		admin := func(sql string) {
			conn, err := pgx.Connect(ctx, base)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		admin(`CREATE SCHEMA ` + name)
		t.Cleanup(func() { admin(`DROP SCHEMA ` + name + ` CASCADE`) })
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", name)
		u.RawQuery = q.Encode()
		db, err := postgres.Open(ctx, u.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() }) // before the schema is dropped
		return db
	}
	return stores
}

// TestFlushAnswerLost: a flush that the store applied but whose answer
// was lost is not applied again when the recorder writes it again: eight
// verifications count eight, their events are kept once, and what was
// recorded meanwhile is written with the next batch.
func TestFlushAnswerLost(t *testing.T) {
	for name, open := range openStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t)
			ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0), Name: "acme", TokenPrefix: keyward.DefaultTokenPrefix, CreatedAt: t0}
			if err := st.CreateWorkspace(ctx, ws, nil, nil); err != nil {
				t.Fatal(err)
			}
			lost := &lostAnswer{Store: st}
			r := New(Config{Store: lost, SampleEvery: -1, Now: func() time.Time { return t0 }})
			const a = "tok_0000000000000000000000000a"
			for i := range 6 {
				r.Record(req(ws.ID, a, i, "/v1/verify", keyward.Valid, 200))
			}
			r.Record(req(ws.ID, a, 6, "/v1/verify", keyward.Revoked, 401))
			lost.lose.Store(1)
			if err := r.Flush(ctx); !errors.Is(err, errLostAnswer) {
				t.Fatalf("Flush = %v, want the lost answer", err)
			}
			r.Record(req(ws.ID, a, 7, "/v1/verify", keyward.Valid, 200)) // while the batch is written again
			if err := r.Flush(ctx); err != nil {
				t.Fatalf("Flush again: %v", err)
			}
			got := rows(t, st, keyward.UsageFilter{WorkspaceID: ws.ID, Granularity: keyward.Minute})
			want := []string{"10:00 /v1/verify REVOKED 401 1", "10:00 /v1/verify VALID 200 7"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rollups = %q, want %q", got, want)
			}
			if evs := events(t, st, ws.ID); len(evs) != 1 {
				t.Errorf("%d events, want the one failure once", len(evs))
			}
			if s := r.Stats(); s.PendingCounts != 0 || s.PendingEvents != 0 || s.FlushErrors != 1 {
				t.Errorf("stats = %+v, want nothing pending and one flush error", s)
			}
		})
	}
}
