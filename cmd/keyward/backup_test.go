//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the user the tests give directories to, as a service's own.
const nobody = 65534

func owner(t *testing.T, p string) (uid, gid uint32) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return sys.Uid, sys.Gid
}

// newStore makes a data dir with a store, owned by nobody when run as
// root, in a directory of root's (t.TempDir's), and a backup of it.
func newStore(t *testing.T) (dataDir, backup string) {
	t.Helper()
	base := t.TempDir()
	dataDir = filepath.Join(base, "data")
	cli(t, nil, nil, "", "init", "--data-dir", dataDir).want(t, 0)
	backup = filepath.Join(base, "b.db")
	r := cli(t, nil, nil, "", "backup", "--data-dir", dataDir, "--output-file", backup)
	r.want(t, 0)
	if !strings.Contains(r.stdout, "does not hold the server secret") || r.stderr != "" {
		t.Errorf("backup's output: %q, stderr %q", r.stdout, r.stderr)
	}
	return dataDir, backup
}

func TestBackupRestoreInput(t *testing.T) {
	dataDir, backup := newStore(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"backup", "--output-file", "-"}, 2, "takes a file, not -"},
		{[]string{"restore", "--from", "-"}, 2, "takes a file, not -"},
		{[]string{"backup", "--output-file", filepath.Join(dataDir, "nowhere", "b.db")}, 1, "the directory " + filepath.Join(dataDir, "nowhere") + " does not exist"},
		{[]string{"restore", "--from", dataDir}, 1, "is a directory, not a backup file"},
		{[]string{"restore", "--from", filepath.Join(dataDir, "missing.db")}, 1, "no such file"},
	} {
		r := cli(t, nil, nil, "", append(tc.args, "--data-dir", dataDir)...)
		r.want(t, tc.code)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: stderr %q, want %q", tc.args, r.stderr, tc.want)
		}
	}
	// A failed restore made nothing.
	missing := filepath.Join(t.TempDir(), "new")
	cli(t, nil, nil, "", "restore", "--data-dir", missing, "--from", missing+".db").want(t, 1)
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("a restore of a missing file made the data dir")
	}
	// A data dir that cannot be made is no running serve to stop.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, nil, nil, "", "restore", "--data-dir", file, "--from", backup)
	r.want(t, 1)
	if want := "keyward: data dir: mkdir " + file + ": not a directory\n"; r.stderr != want {
		t.Errorf("restore into a file: stderr %q, want %q", r.stderr, want)
	}
}

// TestPartialsSwept kills no process, but leaves what a killed backup
// leaves: a partial copy and its journal, unlocked and old. The next
// backup to that directory removes them; a recent one stays.
func TestPartialsSwept(t *testing.T) {
	dataDir, _ := newStore(t)
	out := t.TempDir()
	old := filepath.Join(out, ".keyward-copy-123.partial")
	recent := filepath.Join(out, ".keyward-copy-456.partial")
	for _, p := range []string{old, old + "-journal", recent} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-time.Hour)
	os.Chtimes(old, long, long)
	cli(t, nil, nil, "", "backup", "--data-dir", dataDir, "--output-file", filepath.Join(out, "b.db")).want(t, 0)
	for p, want := range map[string]bool{old: false, old + "-journal": false, recent: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: there %v, want %v", p, err == nil, want)
		}
	}
}

// TestRootBackupRestore runs as root: root's backups and restores act
// only where root alone can write. SQLite, opening a database, makes files
// beside it by name and gives them the database's owner, so a store (or
// a directory on the way) of the service's user would let that user send
// root's writes and chowns anywhere.
func TestRootBackupRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs as root only (the checks are root's)")
	}
	ownData, backup := newStore(t) // root's own
	othersData, _ := newStore(t)
	if err := filepath.Walk(othersData, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, nobody, nobody)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	mkdir := func(p string, mode os.FileMode, uid int) string {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chown(p, uid, uid)
		return p
	}
	others := mkdir(filepath.Join(base, "others"), 0o755, nobody)
	group := mkdir(filepath.Join(base, "group"), 0o775, 0)
	rootOnly := mkdir(filepath.Join(base, "root-only"), 0o700, 0)
	// A link of root's to a link of the user's (in a directory of root's):
	// every link on the way counts, not only the first and the last.
	hop := filepath.Join(base, "hop")
	os.Symlink(rootOnly, hop)
	os.Lchown(hop, nobody, nobody)
	twoHops := filepath.Join(base, "two-hops")
	os.Symlink(hop, twoHops)

	refused := func(t *testing.T, r result, what, dir string) {
		t.Helper()
		r.want(t, 1)
		if want := "refusing to " + what + " as root: " + dir + " can be written by"; !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
	}
	backupTo := func(data, out string) result {
		return cli(t, nil, nil, "", "backup", "--data-dir", data, "--output-file", out)
	}
	t.Run("BackupOfOthersStore", func(t *testing.T) {
		refused(t, backupTo(othersData, filepath.Join(rootOnly, "a.db")), "back up", othersData)
	})
	t.Run("BackupIntoOthersDir", func(t *testing.T) {
		refused(t, backupTo(ownData, filepath.Join(others, "b.db")), "back up", others)
	})
	t.Run("BackupIntoGroupWritableDir", func(t *testing.T) {
		refused(t, backupTo(ownData, filepath.Join(group, "c.db")), "back up", group)
	})
	t.Run("BackupThroughOthersLink", func(t *testing.T) {
		refused(t, backupTo(ownData, filepath.Join(twoHops, "d.db")), "back up", hop)
	})
	if ents, _ := os.ReadDir(rootOnly); len(ents) != 0 {
		t.Errorf("refused, yet wrote %v", ents)
	}
	t.Run("BackupOfOwnStore", func(t *testing.T) {
		backupTo(ownData, filepath.Join(rootOnly, "ok.db")).want(t, 0)
	})

	restore := func(data, from string) result {
		return cli(t, nil, nil, "", "restore", "--data-dir", data, "--from", from)
	}
	t.Run("RestoreIntoOthersDataDir", func(t *testing.T) {
		r := restore(othersData, backup)
		refused(t, r, "restore", othersData)
		if !strings.Contains(r.stderr, "run keyward restore as the data dir's owner (sudo -u "+userName(nobody)+" keyward restore ...)") {
			t.Errorf("no advice: %q", r.stderr)
		}
	})
	t.Run("RestoreFromOthersDir", func(t *testing.T) {
		from := filepath.Join(others, "b.db")
		if err := os.Link(backup, from); err != nil {
			t.Fatal(err)
		}
		refused(t, restore(ownData, from), "restore", others)
	})
	t.Run("RestoreFromFIFO", func(t *testing.T) {
		fifo := filepath.Join(rootOnly, "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		r := restore(ownData, fifo)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "refusing to restore as root: "+fifo+" is not a plain file") {
			t.Errorf("stderr %q", r.stderr)
		}
	})
	t.Run("RestoreUnderOthersDir", func(t *testing.T) {
		dir := filepath.Join(others, "new", "data")
		refused(t, restore(dir, backup), "restore", others)
		if _, err := os.Lstat(filepath.Join(others, "new")); err == nil {
			t.Errorf("refused, yet made it")
		}
	})
	t.Run("LockLink", func(t *testing.T) {
		// A link in place of the lock file is not followed.
		target := filepath.Join(t.TempDir(), "nologin")
		lock := filepath.Join(ownData, "serve.lock")
		os.Remove(lock)
		if err := os.Symlink(target, lock); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(lock)
		r := restore(ownData, backup)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "serve.lock is a symbolic link") {
			t.Errorf("stderr %q", r.stderr)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("the link's target was made")
		}
	})
	t.Run("RestoreOwn", func(t *testing.T) {
		r := restore(ownData, backup)
		r.want(t, 0)
		if uid, _ := owner(t, filepath.Join(ownData, "keyward.db")); uid != 0 {
			t.Errorf("keyward.db is %d's", uid)
		}
	})
}

// TestRootPath: the walk root takes through a path, link by link.
func TestRootPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs as root only (it makes directories of other users)")
	}
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chown(p, uid, 0)
		return p
	}
	own := mk("own", 0o755, 0)
	others := mk("others", 0o755, nobody)
	group := mk("group", 0o775, 0)
	sticky := mk("sticky", 0o777|os.ModeSticky, 0)
	inSticky := mk("sticky/in", 0o700, 0)
	underOthers := mk("others/in", 0o700, 0)
	link := filepath.Join(base, "link")
	os.Symlink(others, link)
	rel := filepath.Join(own, "rel")
	os.Symlink("../sticky/in", rel)
	// Links whose targets end the walk in the sticky directory by "/",
	// "." or "..": it is the last directory all the same.
	var ends []string
	for i, target := range []string{sticky + "/", sticky + "/.", inSticky + "/.."} {
		l := filepath.Join(own, fmt.Sprint("end", i))
		os.Symlink(target, l)
		ends = append(ends, l)
	}
	for _, tc := range []struct{ dir, real, foreign string }{
		{own, own, ""}, {others, "", others}, {group, "", group}, {sticky, "", sticky},
		{inSticky, inSticky, ""}, {underOthers, "", others}, {link, "", others}, {rel, inSticky, ""},
		{ends[0], "", sticky}, {ends[1], "", sticky}, {ends[2], "", sticky},
	} {
		real, foreign, err := rootPath(tc.dir, true)
		if err != nil || real != tc.real || foreign != tc.foreign {
			t.Errorf("rootPath(%s) = %q, %q, %v; want %q, %q", tc.dir, real, foreign, err, tc.real, tc.foreign)
		}
	}
	// A file: its directory is the last, and it must not be a link.
	os.WriteFile(filepath.Join(own, "f"), nil, 0o600)
	os.Symlink(filepath.Join(own, "f"), filepath.Join(own, "l"))
	if real, foreign, err := rootPath(filepath.Join(own, "f"), false); err != nil || real != filepath.Join(own, "f") || foreign != "" {
		t.Errorf("a file: %q, %q, %v", real, foreign, err)
	}
	if _, foreign, _ := rootPath(filepath.Join(own, "l"), false); foreign != filepath.Join(own, "l") {
		t.Errorf("a link to a file: foreign %q", foreign)
	}
}

// TestRestoreSecretWarning: restore says when the data dir's server
// secret cannot serve the restored store.
func TestRestoreSecretWarning(t *testing.T) {
	dataDir, backup := newStore(t)
	r := cli(t, nil, nil, "", "restore", "--data-dir", dataDir, "--from", backup)
	r.want(t, 0)
	if r.stderr != "" {
		t.Errorf("restore under the backup's own secret warned: %q", r.stderr)
	}

	fresh := filepath.Join(t.TempDir(), "fresh")
	r = cli(t, nil, nil, "", "restore", "--data-dir", fresh, "--from", backup)
	r.want(t, 0)
	if !strings.Contains(r.stderr, "keyward: warning: the data dir has no server secret (server.secret), and KEYWARD_SECRET is not set") {
		t.Errorf("restore into a data dir without a secret: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(fresh, "server.secret")); err == nil {
		t.Errorf("restore made a server secret")
	}

	other := filepath.Join(t.TempDir(), "other")
	cli(t, nil, nil, "", "init", "--data-dir", other).want(t, 0)
	r = cli(t, nil, nil, "", "restore", "--data-dir", other, "--from", backup)
	r.want(t, 0)
	if !strings.Contains(r.stderr, "keyward: warning: the restored store's tokens were made under a server secret other than this one") {
		t.Errorf("restore into a data dir of another secret: %q", r.stderr)
	}
	// The variable decides, as it does for serve.
	secret, err := os.ReadFile(filepath.Join(dataDir, "server.secret"))
	if err != nil {
		t.Fatal(err)
	}
	r = cli(t, nil, map[string]string{"KEYWARD_SECRET": strings.TrimSpace(string(secret))}, "", "restore", "--data-dir", other, "--from", backup)
	r.want(t, 0)
	if r.stderr != "" {
		t.Errorf("restore with KEYWARD_SECRET the backup's: %q", r.stderr)
	}
}

// TestBackupNoStore: a backup of a data dir that is not there, or holds
// no store, names it and says what to do, as root or not.
func TestBackupNoStore(t *testing.T) {
	base := t.TempDir()
	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for dir, what := range map[string]string{filepath.Join(base, "missing"): "does not exist", empty: "holds no keyward store (no keyward.db)"} {
		r := cli(t, nil, nil, "", "backup", "--data-dir", dir, "--output-file", filepath.Join(base, "b.db"))
		r.want(t, 1)
		if want := "keyward: the data dir " + dir + " " + what + ": give the data dir of the store to back up with --data-dir (or KEYWARD_DATA_DIR)\n"; r.stderr != want {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
	}
	dataDir, _ := newStore(t)
	out := filepath.Join(base, "nowhere", "b.db")
	r := cli(t, nil, nil, "", "backup", "--data-dir", dataDir, "--output-file", out)
	r.want(t, 1)
	if want := "keyward: the directory " + filepath.Dir(out) + " does not exist: make it first, or give --output-file a file in another\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
}

// TestRestoreFailedLeavesNothing: a restore that fails removes the data
// dir it made, and the lock file it made, but nothing that was there.
func TestRestoreFailedLeavesNothing(t *testing.T) {
	base := t.TempDir()
	garbage := filepath.Join(base, "garbage.db")
	if err := os.WriteFile(garbage, []byte("not a database\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A data dir that was not there, nor the directory above it.
	newDir := filepath.Join(base, "new", "data")
	r := cli(t, nil, nil, "", "restore", "--data-dir", newDir, "--from", garbage)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "file is not a database") {
		t.Errorf("stderr %q", r.stderr)
	}
	if _, err := os.Lstat(filepath.Join(base, "new")); !os.IsNotExist(err) {
		t.Errorf("the failed restore left %s (%v)", filepath.Join(base, "new"), err)
	}
	// A data dir that was there, empty: it stays, without a lock file.
	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	r = cli(t, nil, nil, "", "restore", "--data-dir", empty, "--from", garbage)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "file is not a database") {
		t.Errorf("stderr %q", r.stderr)
	}
	if ents, err := os.ReadDir(empty); err != nil || len(ents) != 0 {
		t.Errorf("the failed restore left %v in the data dir (%v)", ents, err)
	}
	// A store's data dir: its lock file, which serve made, stays.
	dataDir, _ := newStore(t)
	lock := filepath.Join(dataDir, "serve.lock")
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, nil, nil, "", "restore", "--data-dir", dataDir, "--from", garbage).want(t, 1)
	for _, f := range []string{"keyward.db", "server.secret", "serve.lock"} {
		if _, err := os.Lstat(filepath.Join(dataDir, f)); err != nil {
			t.Errorf("the failed restore removed %s: %v", f, err)
		}
	}
}

// TestBackupNewerStore: a release rolled back to serves a store a newer
// keyward migrated (README: a rollback), so its backup must go on
// copying it, and say which release restores the copy; restore of that
// copy by this release is refused, as before.
func TestBackupNewerStore(t *testing.T) {
	dataDir, _ := newStore(t)
	execSQL(t, dataDir, `INSERT INTO schema_migrations (name, applied_at) VALUES ('0999_future.sql', 1)`)
	backup := filepath.Join(t.TempDir(), "newer.db")
	r := cli(t, nil, nil, "", "backup", "--data-dir", dataDir, "--output-file", backup)
	r.want(t, 0)
	if want := "The store is of a newer keyward (migrations 0999_future.sql): restore this backup with that release or a later one.\n"; !strings.HasSuffix(r.stdout, want) || r.stderr != "" {
		t.Errorf("backup of a newer store: stdout %q, stderr %q; want stdout ending %q", r.stdout, r.stderr, want)
	}
	// The copy is the store, future migration and all.
	dir := filepath.Join(t.TempDir(), "copy")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keyward.db"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := openDB(t, dir).QueryRow(`SELECT COUNT(*) FROM schema_migrations WHERE name = '0999_future.sql'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the backup records the future migration %d times, %v", n, err)
	}
	r = cli(t, nil, nil, "", "restore", "--data-dir", dataDir, "--from", backup)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "newer keyward (migrations 0999_future.sql)") {
		t.Errorf("restore of a newer backup: stderr %q", r.stderr)
	}
}
