package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/storetest"
)

// TestBackup: a copy made while the database is in use holds every token
// committed before it, is a store keyward opens, is private, and is never
// written over an existing file.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	defer db.Close()
	ws, tok, _ := seed(t, db, "acme")

	// Writers go on while the copy is made.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			tk := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "w",
				CreatedBy: keyward.ActorSystem, CreatedAt: t0, UpdatedAt: t0}
			sec := &keyward.Secret{Digest: randomDigest(), KeyID: "k1", TokenID: tk.ID, CreatedAt: t0}
			ev := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, t0), WorkspaceID: ws.ID, Time: t0, Action: "token.create",
				Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: tk.ID}
			if err := db.CreateToken(ctx, tk, sec, ev); err != nil {
				t.Errorf("CreateToken during the backup: %v", err)
				return
			}
		}
	}()
	dest := filepath.Join(t.TempDir(), "keyward-backup.db")
	size, err := Backup(ctx, path, dest)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	st, err := os.Stat(dest)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != size || st.Mode().Perm() != 0o600 {
		t.Errorf("backup: %d bytes, mode %v; want %d bytes, mode 0600", st.Size(), st.Mode().Perm(), size)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dest)); len(ents) != 1 {
		t.Errorf("files beside the backup: %v, want it alone", ents)
	}
	copyDB, err := Open(ctx, dest, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("opening the backup: %v", err)
	}
	defer copyDB.Close()
	if got, err := copyDB.FindToken(ctx, ws.ID, tok.ID); err != nil || got.Name != tok.Name {
		t.Errorf("the token in the backup: %v, %v", got, err)
	}

	t.Run("ErrDestExists", func(t *testing.T) {
		before, _ := os.ReadFile(dest)
		if _, err := Backup(ctx, path, dest); err == nil || !strings.Contains(err.Error(), "exists already") {
			t.Errorf("Backup over an existing file: %v", err)
		}
		if after, _ := os.ReadFile(dest); string(after) != string(before) {
			t.Error("the existing file was changed")
		}
	})
	t.Run("ErrNoDatabase", func(t *testing.T) {
		dir := t.TempDir()
		missing := filepath.Join(dir, "nothing.db")
		if _, err := Backup(ctx, missing, filepath.Join(dir, "b.db")); err == nil || !strings.Contains(err.Error(), "no database at") {
			t.Errorf("Backup of no database: %v", err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("files made: %v", ents)
		}
	})
	t.Run("ErrNotADatabase", func(t *testing.T) {
		dir := t.TempDir()
		junk := filepath.Join(dir, "junk.db")
		os.WriteFile(junk, []byte(strings.Repeat("not sqlite ", 100)), 0o600)
		if _, err := Backup(ctx, junk, filepath.Join(dir, "b.db")); err == nil {
			t.Error("Backup of a file that is no database succeeded")
		}
		if _, err := os.Stat(filepath.Join(dir, "b.db")); err == nil {
			t.Error("a backup file was left")
		}
	})
}

// TestRestore: a backup takes the database's place; the database it
// replaces is moved aside whole, never removed; what is not a keyward
// backup changes nothing.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	ws, tok, _ := seed(t, db, "acme")
	backup := filepath.Join(t.TempDir(), "b.db")
	if _, err := Backup(ctx, path, backup); err != nil {
		t.Fatal(err)
	}
	// A token made after the backup, which the restore takes back.
	_, later, _ := seed(t, db, "later")
	db.Close()

	t.Run("ErrNotAStore", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.db")
		raw := rawOpen(t, other)
		if _, err := raw.Exec(`CREATE TABLE x (a)`); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		junk := filepath.Join(t.TempDir(), "junk.db")
		os.WriteFile(junk, []byte(strings.Repeat("junk", 1000)), 0o600)
		for _, f := range []string{other, junk, filepath.Join(t.TempDir(), "missing.db")} {
			before, _ := os.ReadFile(path)
			if _, err := Restore(ctx, f, path, t0, RestoreOptions{}); err == nil {
				t.Errorf("Restore from %s succeeded", filepath.Base(f))
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Errorf("Restore from %s changed the database", filepath.Base(f))
			}
		}
	})

	aside, err := Restore(ctx, backup, path, t0, RestoreOptions{})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if want := path + ".before-restore-20260314T092653Z"; aside != want {
		t.Errorf("aside = %s, want %s", aside, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("restored file: %v, %v", st, err)
	}
	restored, err := Open(ctx, path, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restored.FindToken(ctx, ws.ID, tok.ID); err != nil {
		t.Errorf("the backup's token after the restore: %v", err)
	}
	if _, err := restored.FindToken(ctx, later.WorkspaceID, later.ID); keyward.ErrorCode(err) != keyward.ENOTFOUND {
		t.Errorf("a token made after the backup, after the restore: %v, want not found", err)
	}
	restored.Close()
	old, err := Open(ctx, aside, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.FindToken(ctx, later.WorkspaceID, later.ID); err != nil {
		t.Errorf("the database moved aside lost a token: %v", err)
	}
}

// walCopy copies the database at p with its -wal and -shm while it is open
// and idle, as kill -9 of serve leaves it: its newest changes in the log.
func walCopy(t *testing.T, p string) string {
	t.Helper()
	dir := t.TempDir()
	for _, s := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(p + s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "keyward.db"+s), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "keyward.db-wal")); err != nil || st.Size() == 0 {
		t.Fatal("the copy has no write-ahead log to test with")
	}
	return filepath.Join(dir, "keyward.db")
}

// TestRestoreWAL: what a store's write-ahead log holds is neither lost
// from the backup restored (a store left by kill -9, such as an earlier
// restore's aside) nor from the store replaced; a log without its
// database is refused, since SQLite would apply it to the copy.
func TestRestoreWAL(t *testing.T) {
	ctx := context.Background()
	db, p := openTemp(t)
	defer db.Close()
	_, tok, _ := seed(t, db, "acme")
	src := walCopy(t, p)

	// The backup's log is restored with it.
	dest := filepath.Join(t.TempDir(), "keyward.db")
	if _, err := Restore(ctx, src, dest, t0, RestoreOptions{}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	restored, err := Open(ctx, dest, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restored.FindToken(ctx, tok.WorkspaceID, tok.ID); err != nil {
		t.Errorf("a token in the backup's log, after the restore: %v", err)
	}
	restored.Close()

	// The replaced store's log is moved aside with it, its changes
	// checkpointed into the file moved aside.
	old := walCopy(t, p)
	backup := filepath.Join(t.TempDir(), "b.db")
	w2, _ := openTemp(t)
	seed(t, w2, "other")
	w2.Close()
	if _, err := Backup(ctx, filepath.Join(filepath.Dir(w2.path), "keyward.db"), backup); err != nil {
		t.Fatal(err)
	}
	aside, err := Restore(ctx, backup, old, t0, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(old + s); err == nil {
			t.Errorf("%s left beside the restored store", old+s)
		}
	}
	if st, err := os.Stat(aside + "-wal"); err == nil && st.Size() != 0 {
		t.Errorf("the aside's log holds %d bytes, want it checkpointed into the aside", st.Size())
	}
	moved, err := Open(ctx, aside, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := moved.FindToken(ctx, tok.WorkspaceID, tok.ID); err != nil {
		t.Errorf("a token in the replaced store's log, in the store moved aside: %v", err)
	}
	moved.Close()

	// A log left without its database.
	dir := t.TempDir()
	stray := filepath.Join(dir, "keyward.db")
	os.WriteFile(stray+"-wal", []byte("log"), 0o600)
	if _, err := Restore(ctx, backup, stray, t0, RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "is there without") {
		t.Errorf("Restore beside a stray log: %v", err)
	}
	if _, err := os.Stat(stray); err == nil {
		t.Error("a store was put beside the stray log")
	}
}

// TestRestoreTwiceInASecond: a second restore within the same second keeps
// the first one's aside and takes a name of its own.
func TestRestoreTwiceInASecond(t *testing.T) {
	ctx := context.Background()
	db, p := openTemp(t)
	_, tok, _ := seed(t, db, "acme")
	db.Close()
	w2, _ := openTemp(t)
	w2.Close()
	backup := filepath.Join(t.TempDir(), "b.db")
	if _, err := Backup(ctx, w2.path, backup); err != nil {
		t.Fatal(err)
	}
	first, err := Restore(ctx, backup, p, t0, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	second, err := Restore(ctx, backup, p, t0, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first == second || !strings.HasSuffix(second, "-2") {
		t.Errorf("asides %s and %s, want two names", first, second)
	}
	kept, err := Open(ctx, first, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	if _, err := kept.FindToken(ctx, tok.WorkspaceID, tok.ID); err != nil {
		t.Errorf("the first restore's aside lost the original store: %v", err)
	}
}

// TestRestoreNewerStore: a backup made by a newer keyward (a migration
// this build does not know) is refused, not served without its changes.
func TestRestoreNewerStore(t *testing.T) {
	ctx := context.Background()
	db, p := openTemp(t)
	db.Close()
	raw := rawOpen(t, p)
	if _, err := raw.Exec(`INSERT INTO schema_migrations (name, applied_at) VALUES ('0999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	dir := t.TempDir()
	if _, err := Restore(ctx, p, filepath.Join(dir, "keyward.db"), t0, RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "newer keyward (migrations 0999_future.sql)") {
		t.Errorf("Restore of a newer store: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left: %v", ents)
	}
}

// TestRestorePutsBackWhenPlacingFails: when the copy cannot take the
// store's place (here: a stage on another file system, which no rename
// reaches), the store moved aside goes back, so that no serve starts on a
// data dir without one.
func TestRestorePutsBackWhenPlacingFails(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	_, tok, _ := seed(t, db, "acme")
	backup := filepath.Join(t.TempDir(), "b.db")
	if _, err := Backup(ctx, path, backup); err != nil {
		t.Fatal(err)
	}
	db.Close()
	shm, err := os.Stat("/dev/shm")
	here, err2 := os.Stat(filepath.Dir(path))
	if err != nil || err2 != nil || !shm.IsDir() || sameDev(shm, here) {
		t.Skip("no second file system at /dev/shm to stage on")
	}
	stage, err := os.MkdirTemp("/dev/shm", "keyward-test-*")
	if err != nil {
		t.Skip("cannot stage on /dev/shm:", err)
	}
	defer os.RemoveAll(stage)
	aside, err := Restore(ctx, backup, path, t0, RestoreOptions{Stage: stage})
	if err == nil || !strings.Contains(err.Error(), "the store was left as it was") || aside != "" {
		t.Fatalf("Restore across file systems = %q, %v; want a failure that left the store", aside, err)
	}
	again, err := Open(ctx, path, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.FindToken(ctx, tok.WorkspaceID, tok.ID); err != nil {
		t.Errorf("the store after the failed restore: %v", err)
	}
	if left, _ := filepath.Glob(path + ".before-restore-*"); len(left) != 0 {
		t.Errorf("left aside: %v", left)
	}
}
