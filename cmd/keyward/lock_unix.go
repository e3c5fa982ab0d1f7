//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/keyward/keyward/internal/fsutil"
)

// lockDataDir takes the data dir for this serve process alone, until the
// returned file is closed (or the process ends): two nodes on one SQLite
// store would each count rate limits and quotas apart, admitting up to
// twice the limit, and neither would know. Other commands (init, token
// creation offline, audit verify) do not take it.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil { // a first serve makes it
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "serve.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := fsutil.TryLock(f); err != nil {
		f.Close()
		if errors.Is(err, fsutil.ErrLocked) {
			return nil, fmt.Errorf("another keyward serve is running on the data dir %s: one SQLite store serves one node (for several, use PostgreSQL with --database-url)", dir)
		}
		return nil, fmt.Errorf("lock the data dir: %w", err)
	}
	return f, nil
}

// ownLikeDir gives files in dir the owner of dir itself, when this process
// may (root's, say): a restore run with sudo must leave a store that the
// service's own user can open.
func ownLikeDir(dir string, files ...string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || (int(sys.Uid) == os.Geteuid() && int(sys.Gid) == os.Getegid()) {
		return nil
	}
	for _, f := range files {
		if err := os.Lchown(filepath.Join(dir, f), int(sys.Uid), int(sys.Gid)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
