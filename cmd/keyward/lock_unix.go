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
// group or everyone may write. Above dir, the sticky bit (as on /tmp)
// suffices, since it keeps root's entries root's. It returns "" when there
// is none; dir's symbolic links are followed first.
func foreignDir(dir string) (string, error) { return foreignFrom(dir, true) }

// foreignFrom is foreignDir, where strict says whether dir itself must be
// root's alone (false: as its parents, the sticky bit suffices).
func foreignFrom(dir string, strict bool) (string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	if real, err = filepath.Abs(real); err != nil {
		return "", err
	}
	for p := real; ; p = filepath.Dir(p) {
		st, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return "", nil
		}
		writable := st.Mode().Perm()&0o022 != 0
		if sys.Uid != 0 || writable && (strict && p == real || st.Mode()&os.ModeSticky == 0) {
			return p, nil
		}
		if filepath.Dir(p) == p {
			return "", nil
		}
	}
}

// userName names the user of uid, for a message: the name if known, else
// the number.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// rootRestore prepares a restore run as root into dataDir (absolute). The
// directories above it must be root's alone, or the restore is refused.
// A data dir that another user can write (the service's own, the usual
// case) gets the copy made in a directory of root's beside it, where no
// link can be swapped in, and given the data dir's owner there before it
// takes its place by a rename, which follows no link. A data dir not
// there yet is made by root, and is root's.
func rootRestore(dataDir string) (sqlite.RestoreOptions, error) {
	const advice = "run keyward restore as the data dir's owner, with the backup readable by that user"
	parent := filepath.Dir(dataDir)
	if _, err := os.Stat(dataDir); errors.Is(err, os.ErrNotExist) {
		for parent != filepath.Dir(parent) {
			if _, err := os.Stat(parent); err == nil {
				break
			}
			parent = filepath.Dir(parent)
		}
		if d, err := foreignDir(parent); err != nil {
			return sqlite.RestoreOptions{}, err
		} else if d != "" {
			return sqlite.RestoreOptions{}, rootRefusal("restore", d, advice)
		}
		return sqlite.RestoreOptions{}, nil
	}
	if d, err := foreignFrom(parent, false); err != nil {
		return sqlite.RestoreOptions{}, err
	} else if d != "" {
		return sqlite.RestoreOptions{}, rootRefusal("restore", d, advice)
	}
	if d, err := foreignDir(dataDir); err != nil || d == "" {
		return sqlite.RestoreOptions{}, err
	}
	uid, gid, err := dirOwner(dataDir)
	if err != nil {
		return sqlite.RestoreOptions{}, err
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
		return sqlite.RestoreOptions{}, fmt.Errorf("restore: %w", err)
	}
	return sqlite.RestoreOptions{Stage: stage, Prepare: func(p string) error { return os.Lchown(p, uid, gid) }}, nil
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
