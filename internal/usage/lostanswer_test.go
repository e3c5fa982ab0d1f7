package usage

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/storetest/stores"
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

// TestFlushAnswerLost: a flush that the store applied but whose answer
// was lost is not applied again when the recorder writes it again: eight
// verifications count eight, their events are kept once, and what was
// recorded meanwhile is written with the next batch.
func TestFlushAnswerLost(t *testing.T) {
	for name, open := range stores.Openers(t) {
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
