//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/keyward/keyward/internal/fsutil"
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
			return nil, &dataDirBusyError{dir}
		}
		return nil, fmt.Errorf("lock the data dir: %w", err)
	}
	return f, nil
}

// dirOwner returns the owner of dir, a directory or a link (not its
// target's).
func dirOwner(dir string) (uid, gid int, err error) {
	st, err := os.Lstat(dir)
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
// user's directory could redirect (see rootPath).
func asRoot() bool { return os.Geteuid() == 0 }

// rootPath resolves p (absolute or relative to the working directory)
// for root: it follows p one component at a time, as the kernel would,
// and returns its real path, or, in foreign, the first place where a
// user other than root could redirect what root does there (put a link
// in place of a file or directory, or swap one): a directory root does
// not own, or one its group or everyone may write (the sticky bit, as on
// /tmp, suffices but for the last directory, where root's files are made),
// or a symbolic link root does not own. Every link met on the way is
// checked, and the directory holding it. When last is true, p is a
// directory root makes files in; else p's last component is a file, which
// must not be a link, and its directory is the last.
func rootPath(p string, last bool) (real, foreign string, err error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", "", err
	}
	dirLast := last
	var file string
	if !last {
		file = filepath.Base(abs)
		abs = filepath.Dir(abs)
		dirLast = true
	}
	check := func(st os.FileInfo, final bool) bool {
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return true
		}
		if sys.Uid != 0 {
			return false
		}
		writable := st.IsDir() && st.Mode().Perm()&0o022 != 0
		return !writable || !(final && dirLast) && st.Mode()&os.ModeSticky != 0
	}
	todo := strings.Split(strings.TrimPrefix(abs, "/"), "/")
	cur := "/"
	if st, err := os.Lstat(cur); err != nil {
		return "", "", err
	} else if !check(st, false) { // as the last, it is checked below
		return "", cur, nil
	}
	for links := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		st, err := os.Lstat(next)
		if err != nil {
			return "", "", err
		}
		if st.Mode()&os.ModeSymlink != 0 {
			if !check(st, false) {
				return "", next, nil // the directory holding it is checked
			}
			if links++; links > 40 {
				return "", "", fmt.Errorf("%s: too many links", p)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", "", err
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			todo = append(strings.Split(strings.TrimPrefix(target, "/"), "/"), todo...)
			continue
		}
		if !check(st, len(todo) == 0) {
			return "", next, nil
		}
		cur = next
	}
	// The directory the walk ended in is the last, whatever the way
	// there: a link's target ending in "/", "." or ".." leaves it to be
	// checked as one above, where a sticky bit passes.
	if st, err := os.Lstat(cur); err != nil {
		return "", "", err
	} else if !check(st, true) {
		return "", cur, nil
	}
	if file == "" {
		return cur, "", nil
	}
	real = filepath.Join(cur, file)
	if st, err := os.Lstat(real); err == nil && !st.Mode().IsRegular() {
		return "", real, nil // a link, or no file
	}
	return real, "", nil
}

// userName names the user of uid, for a message: the name if known, else
// the number.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// rootPaths checks, for a command run as root, the paths it works with
// (each absolute or relative; dirs are directories it makes files in, files
// are files it reads, by their directory) with rootPath, and returns their
// real paths in order; the first foreign place refuses the command, since
// SQLite, opening a database, makes files beside it by name and gives them
// the database's owner. what and advice make the refusal's message.
func rootPaths(what, advice string, dirs, files []string) ([]string, error) {
	var out []string
	for i, p := range append(append([]string{}, dirs...), files...) {
		real, foreign, err := rootPath(p, i < len(dirs))
		switch {
		case errors.Is(err, os.ErrNotExist) && i < len(dirs):
			return nil, fmt.Errorf("the directory %s does not exist", p)
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("%s does not exist", p)
		case err != nil:
			return nil, err
		}
		if st, err := os.Lstat(foreign); foreign != "" && err == nil && st.Mode().Type()&(os.ModeNamedPipe|os.ModeDevice|os.ModeSocket) != 0 {
			// Root's, in root's directory, but no plain file.
			return nil, fmt.Errorf("refusing to %s as root: %s is not a plain file (a FIFO or a device?); %s", what, foreign, advice)
		}
		if foreign != "" {
			return nil, rootRefusal(what, foreign, advice)
		}
		out = append(out, real)
	}
	return out, nil
}
