//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/fsutil"
	"github.com/keyward/keyward/internal/sqlite"
)

// lockDataDir takes the data dir for this serve process alone, until the
// returned file is closed (or the process ends): two nodes on one SQLite
// store would each count rate limits and quotas apart, admitting up to
// twice the limit, and neither would know. Other commands (init, token
// creation offline, audit verify) do not take it; restore does. The lock
// file is never reached through a symbolic link: one put there by the
// data dir's owner would have root (running restore, say) create or lock
// a file of the link's choosing.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil { // a first serve makes it
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "serve.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("data dir: %s is a symbolic link; remove it (keyward makes the lock file itself)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := fsutil.TryLock(f); err != nil {
		f.Close()
		if errors.Is(err, fsutil.ErrLocked) {
			return nil, fmt.Errorf("another keyward serve is running on the data dir %s (or a restore is): one SQLite store serves one node (for several, use PostgreSQL with --database-url)", dir)
		}
		return nil, fmt.Errorf("lock the data dir: %w", err)
	}
	return f, nil
}

// dirOwner returns the owner of the directory dir.
func dirOwner(dir string) (uid, gid int, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		return 0, 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("%s: no owner", dir)
	}
	return int(sys.Uid), int(sys.Gid), nil
}

// asRoot reports whether this process runs as root, whose writes another
// user's directory could redirect (see foreignDir).
func asRoot() bool { return os.Geteuid() == 0 }

// foreignDir returns the first directory, from dir (which must exist) up
// to /, where a user other than root could put a symbolic link in place
// of a file or directory that root makes or uses there, and so have root
// write where that user chooses: a directory root does not own, or one its
// group or everyone may write, or a link root does not own. Above dir, the
// sticky bit (as on /tmp) suffices, since it keeps root's entries root's.
// It walks dir as given, then as resolved (its links followed), and
// returns "" when neither has such a place.
func foreignDir(dir string) (string, error) { return foreignFrom(dir, true) }

// foreignFrom is foreignDir, where strict says whether dir itself must be
// root's alone (false: as its parents, the sticky bit suffices).
func foreignFrom(dir string, strict bool) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	for _, start := range []string{abs, real} {
		for p := start; ; p = filepath.Dir(p) {
			st, err := os.Lstat(p)
			if err != nil {
				return "", err
			}
			sys, ok := st.Sys().(*syscall.Stat_t)
			if !ok {
				return "", nil
			}
			writable := st.IsDir() && st.Mode().Perm()&0o022 != 0
			if sys.Uid != 0 || writable && (strict && p == start || st.Mode()&os.ModeSticky == 0) {
				return p, nil
			}
			if filepath.Dir(p) == p {
				break
			}
		}
	}
	return "", nil
}

// userName names the user of uid, for a message: the name if known, else
// the number.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// rootRestore prepares a restore run as root into dataDir (absolute), and
// returns the data dir to work in: its real path, every symbolic link on
// the way resolved once, so that no link swapped in later is followed.
// The directories above it must be root's alone (no sticky bit: a user
// could move the data dir's own entry away and put a link in its place),
// or the restore is refused. A data dir that another user can write (the
// service's own, the usual case) gets the copy made in a directory of
// root's beside it, where no link can be swapped in, and given the data
// dir's owner there before it takes its place by a rename, which follows
// no link; a data dir that is a file system of its own (a mount), which
// no rename reaches, is refused. A data dir not there yet is made by
// root, and is root's.
func rootRestore(dataDir string) (string, sqlite.RestoreOptions, error) {
	const advice = "run keyward restore as the data dir's owner, with the backup readable by that user"
	if _, err := os.Lstat(dataDir); errors.Is(err, os.ErrNotExist) {
		// The nearest directory that is there, resolved, and what is to
		// be made below it.
		have, rest := filepath.Dir(dataDir), filepath.Base(dataDir)
		for {
			if _, err := os.Lstat(have); err == nil || have == filepath.Dir(have) {
				break
			}
			have, rest = filepath.Dir(have), filepath.Join(filepath.Base(have), rest)
		}
		real, err := filepath.EvalSymlinks(have)
		if err != nil {
			return "", sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
		}
		if d, err := foreignDir(have); err != nil {
			return "", sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
		} else if d != "" {
			return "", sqlite.RestoreOptions{}, rootRefusal("restore", d, advice)
		}
		return filepath.Join(real, rest), sqlite.RestoreOptions{}, nil
	}
	real, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		return "", sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
	}
	// The path as given, and as resolved: no link on either way may be
	// another user's, nor any directory above the data dir.
	if d, err := foreignDir(filepath.Dir(dataDir)); err != nil {
		return "", sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
	} else if d != "" {
		return "", sqlite.RestoreOptions{}, rootRefusal("restore", d, advice)
	}
	parent := filepath.Dir(real)
	if d, err := foreignDir(parent); err != nil {
		return "", sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
	} else if d != "" {
		return "", sqlite.RestoreOptions{}, rootRefusal("restore", d, advice)
	}
	if d, err := foreignDir(real); err != nil {
		return "", sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
	} else if d == "" {
		return real, sqlite.RestoreOptions{}, nil // root's alone
	}
	uid, gid, err := dirOwner(real)
	if err != nil {
		return "", sqlite.RestoreOptions{}, err
	}
	if same, err := sameDevice(real, parent); err != nil {
		return "", sqlite.RestoreOptions{}, err
	} else if !same {
		return "", sqlite.RestoreOptions{}, fmt.Errorf("refusing to restore as root: the data dir %s is a file system of its own (a mount), which root's copy beside it cannot be moved into; %s", real, advice)
	}
	// Stages a killed restore left beside the data dir go first.
	old, _ := filepath.Glob(filepath.Join(parent, ".keyward-restore-*"))
	for _, o := range old {
		if st, err := os.Lstat(o); err == nil && st.IsDir() && time.Since(st.ModTime()) > time.Minute {
			sqlite.SweepPartials(o)
			os.Remove(o) // only if empty: one in use keeps its locked copy
		}
	}
	stage, err := os.MkdirTemp(parent, ".keyward-restore-*")
	if err != nil {
		return "", sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
	}
	return real, sqlite.RestoreOptions{Stage: stage, Prepare: func(p string) error { return os.Lchown(p, uid, gid) }}, nil
}

// sameDevice reports whether the files at a and b are on one file system.
func sameDevice(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return sa.Sys().(*syscall.Stat_t).Dev == sb.Sys().(*syscall.Stat_t).Dev, nil
}

// rootOutput returns the path to write a backup to as root: output with
// its directory's real path, every symbolic link resolved once, after
// checking that no other user can write there or above (foreignDir).
func rootOutput(output string) (string, error) {
	dir, err := filepath.EvalSymlinks(filepath.Dir(output))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("the directory %s does not exist", filepath.Dir(output))
	} else if err != nil {
		return "", fmt.Errorf("--output-file: %w", err)
	}
	if d, err := foreignDir(filepath.Dir(output)); err != nil {
		return "", fmt.Errorf("--output-file: %w", err)
	} else if d != "" {
		return "", rootRefusal("write a backup", d, "write it to a directory only root can write, or run keyward backup as that user")
	}
	return filepath.Join(dir, filepath.Base(output)), nil
}

// ownLock gives the lock file that root made in dataDir the data dir's
// owner, whose serve must open it; through the open file, and only a file
// root made itself (owned by root, one link), never one put there.
func ownLock(f *os.File, dataDir string) error {
	uid, gid, err := dirOwner(dataDir)
	if err != nil || uid == 0 {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != 0 || sys.Nlink != 1 {
		return nil
	}
	return f.Chown(uid, gid)
}
