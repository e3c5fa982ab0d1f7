package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/storetest"
)

// TestSessionLockOrder: ending all of a user's sessions but one
// (DeleteSessions) and removing the user from a workspace (RemoveMember)
// or changing its role (ChangeRole), which end its sessions there, lock
// the same session rows. They must not deadlock, whatever order each
// meets the rows in. A third transaction holds the row of a session in
// another workspace, so that DeleteSessions stops after it has taken the
// kept session's row and before the others; the removal then takes what
// it can, and the holder lets go.
func TestSessionLockOrder(t *testing.T) {
	baseURL(t)
	for _, tc := range []struct {
		name   string
		settle func(ctx context.Context, db *DB, wsID, userID string) error
	}{
		{"RemoveMember", func(ctx context.Context, db *DB, wsID, userID string) error {
			return db.RemoveMember(ctx, wsID, userID)
		}},
		{"ChangeRole", func(ctx context.Context, db *DB, wsID, userID string) error {
			return db.ChangeRole(ctx, wsID, userID, keyward.RoleMember, keyward.RoleViewer)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			b := make([]byte, 8)
			rand.Read(b)
			app := "kwlock_" + hex.EncodeToString(b)
			u := withParam(t, newSchema(t), "application_name", app)
			db, err := Open(ctx, u, WithAuditKey(storetest.AuditKey))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer db.Close()
			w1, _, _ := seed(t, db, "one")
			w2, _, _ := seed(t, db, "two")
			owner := &keyward.User{ID: keyward.NewID(keyward.PrefixUser, t0), Email: "owner@example.com", PasswordHash: "x", CreatedAt: t0, UpdatedAt: t0}
			if err := db.CreateUser(ctx, owner, []*keyward.Member{{WorkspaceID: w1.ID, Role: keyward.RoleOwner, CreatedAt: t0}}); err != nil {
				t.Fatal(err)
			}
			user := &keyward.User{ID: keyward.NewID(keyward.PrefixUser, t0), Email: "user@example.com", PasswordHash: "x", CreatedAt: t0, UpdatedAt: t0}
			if err := db.CreateUser(ctx, user, []*keyward.Member{
				{WorkspaceID: w1.ID, Role: keyward.RoleMember, CreatedAt: t0},
				{WorkspaceID: w2.ID, Role: keyward.RoleOwner, CreatedAt: t0},
			}); err != nil {
				t.Fatal(err)
			}
			// In this order on disk: other (w2), then b and kept (w1).
			var ids []string
			for _, ws := range []string{w2.ID, w1.ID, w1.ID} {
				s := &keyward.Session{ID: keyward.NewID(keyward.PrefixSession, t0), Digest: randomDigest(), UserID: user.ID,
					WorkspaceID: ws, Verified: true, CreatedAt: t0, LastSeenAt: t0}
				if err := db.CreateSession(ctx, s); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, s.ID)
			}
			other, kept := ids[0], ids[2]

			holder, err := pgx.Connect(ctx, withParam(t, u, "application_name", app+"_holder"))
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close(context.Background())
			htx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer htx.Rollback(context.Background())
			if _, err := htx.Exec(ctx, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, other); err != nil {
				t.Fatal(err)
			}
			watcher, err := pgx.Connect(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			defer watcher.Close(context.Background())
			waiting := func(n int) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for {
					var got int
					if err := watcher.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&got); err != nil {
						t.Fatal(err)
					}
					if got >= n {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("%d transactions wait for a lock, want %d", got, n)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			ended := make(chan error, 1)
			go func() {
				_, err := db.DeleteSessions(ctx, user.ID, "", kept)
				ended <- err
			}()
			waiting(1)
			settled := make(chan error, 1)
			go func() { settled <- tc.settle(ctx, db, w1.ID, user.ID) }()
			waiting(2)
			if err := htx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-ended; err != nil {
				t.Errorf("DeleteSessions = %v, want nil", err)
			}
			if err := <-settled; err != nil {
				t.Errorf("%s = %v, want nil", tc.name, err)
			}
		})
	}
}
