//go:build unix

package main

import (
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
	_ = backup
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

// TestRootBackupRestore runs as root: root's writes in a directory another
// user can write could be sent elsewhere by a link that user swaps in.
func TestRootBackupRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs as root only (the checks are root's)")
	}
	dataDir, backup := newStore(t)
	if err := os.Chown(dataDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	t.Run("BackupIntoOthersDir", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		os.Mkdir(out, 0o755)
		os.Chown(out, nobody, nobody)
		r := cli(t, nil, nil, "", "backup", "--data-dir", dataDir, "--output-file", filepath.Join(out, "b.db"))
		r.want(t, 1)
		if !strings.Contains(r.stderr, "refusing to write a backup as root: "+out+" can be written by") {
			t.Errorf("stderr %q", r.stderr)
		}
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Errorf("refused, yet wrote %v", ents)
		}
	})
	t.Run("BackupIntoGroupWritableDir", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		os.Mkdir(out, 0o775)
		os.Chmod(out, 0o775)
		cli(t, nil, nil, "", "backup", "--data-dir", dataDir, "--output-file", filepath.Join(out, "b.db")).want(t, 1)
	})

	t.Run("RestoreIntoServicesDataDir", func(t *testing.T) {
		r := cli(t, nil, nil, "", "restore", "--data-dir", dataDir, "--from", backup)
		r.want(t, 0)
		for _, f := range []string{"keyward.db", "serve.lock"} {
			if uid, gid := owner(t, filepath.Join(dataDir, f)); uid != nobody || gid != nobody {
				t.Errorf("%s is %d:%d, want the data dir's %d:%d", f, uid, gid, nobody, nobody)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dataDir), ".keyward-restore-*")); len(left) != 0 {
			t.Errorf("the stage is left: %v", left)
		}
	})

	t.Run("LockLink", func(t *testing.T) {
		// The service's user links the lock file to a file of root's
		// choosing: not created, not locked, not given away.
		target := filepath.Join(t.TempDir(), "nologin")
		lock := filepath.Join(dataDir, "serve.lock")
		os.Remove(lock)
		if err := os.Symlink(target, lock); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(lock)
		r := cli(t, nil, nil, "", "restore", "--data-dir", dataDir, "--from", backup)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "serve.lock is a symbolic link") {
			t.Errorf("stderr %q", r.stderr)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("the link's target was made")
		}
	})

	t.Run("RestoreUnderOthersDir", func(t *testing.T) {
		// The data dir's parent is another user's: the data dir itself
		// could be swapped.
		parent := filepath.Join(t.TempDir(), "home")
		os.Mkdir(parent, 0o755)
		os.Chown(parent, nobody, nobody)
		dir := filepath.Join(parent, "data")
		r := cli(t, nil, nil, "", "restore", "--data-dir", dir, "--from", backup)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "refusing to restore as root: "+parent) || !strings.Contains(r.stderr, "run keyward restore as the data dir's owner") {
			t.Errorf("stderr %q", r.stderr)
		}
		if _, err := os.Lstat(dir); err == nil {
			t.Errorf("refused, yet made %s", dir)
		}
	})
}

// TestRootRestoreRedirects: as root, a data dir reached through a link to
// another user's directory, or under a sticky one (whose owner may move
// the data dir's entry away and put a link in its place), is refused; and
// so is a backup written through another user's link.
func TestRootRestoreRedirects(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs as root only (the checks are root's)")
	}
	_, backup := newStore(t)
	base := t.TempDir()
	mkdir := func(p string, mode os.FileMode, uid int) string {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chown(p, uid, uid)
		return p
	}
	home := mkdir(filepath.Join(base, "home"), 0o755, nobody)
	data := mkdir(filepath.Join(home, "data"), 0o700, nobody)
	link := filepath.Join(base, "keyward") // root's link to the user's data dir
	if err := os.Symlink(data, link); err != nil {
		t.Fatal(err)
	}
	sticky := mkdir(filepath.Join(base, "tmp"), 0o777|os.ModeSticky, 0)
	underSticky := mkdir(filepath.Join(sticky, "data"), 0o700, nobody)
	for _, tc := range []struct{ dir, refused string }{{link, home}, {underSticky, sticky}} {
		r := cli(t, nil, nil, "", "restore", "--data-dir", tc.dir, "--from", backup)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "refusing to restore as root: "+tc.refused+" can be written by") {
			t.Errorf("restore into %s: %q", tc.dir, r.stderr)
		}
	}
	if ents, _ := os.ReadDir(data); len(ents) != 0 {
		t.Errorf("refused, yet wrote %v", ents)
	}

	// The user's link, in the user's directory, to a directory of root's.
	rootOnly := mkdir(filepath.Join(base, "root-only"), 0o700, 0)
	if err := os.Symlink(rootOnly, filepath.Join(home, "bk")); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(home, "bk"), nobody, nobody)
	dataDir, _ := newStore(t)
	r := cli(t, nil, nil, "", "backup", "--data-dir", dataDir, "--output-file", filepath.Join(home, "bk", "x.db"))
	r.want(t, 1)
	if !strings.Contains(r.stderr, "refusing to write a backup as root") {
		t.Errorf("backup through the user's link: %q", r.stderr)
	}
	if ents, _ := os.ReadDir(rootOnly); len(ents) != 0 {
		t.Errorf("refused, yet wrote %v", ents)
	}
}

func TestForeignDir(t *testing.T) {
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
	for _, tc := range []struct{ dir, want string }{
		{own, ""}, {others, others}, {group, group}, {sticky, sticky}, {inSticky, ""}, {underOthers, others}, {link, others},
	} {
		got, err := foreignDir(tc.dir)
		if err != nil || got != tc.want {
			t.Errorf("foreignDir(%s) = %q, %v; want %q", tc.dir, got, err, tc.want)
		}
	}
	if got, _ := foreignFrom(sticky, false); got != "" {
		t.Errorf("a sticky parent: %q", got)
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
