//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
