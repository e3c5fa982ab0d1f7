//go:build !unix

package fsutil

import "os"

// Locks reports whether TryLock works here.
const Locks = false

// TryLock fails with ErrNoLocks: there is no flock here.
func TryLock(f *os.File) error { return ErrNoLocks }
