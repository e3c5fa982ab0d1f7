// Package fsutil holds the file-system steps that keyward's durable files
// share: making a new or removed name durable, and a lock that tells a
// live process's file from one a stopped process left.
package fsutil

import (
	"errors"
	"os"
)

// SyncDir makes a new, renamed or removed name in dir durable, where it
// can: not every OS syncs a directory, and the name is there either way.
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// ErrLocked is TryLock's error when another open file holds the lock.
var ErrLocked = errors.New("locked by another process")

// ErrNoLocks is TryLock's error where the system has no flock.
var ErrNoLocks = errors.New("file locks (flock) are not available here")
