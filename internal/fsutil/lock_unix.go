//go:build unix

package fsutil

import (
	"errors"
	"os"
	"syscall"
)

// Locks reports whether TryLock works here.
const Locks = true

// TryLock takes an exclusive flock on f, held until f is closed (or the
// process ends), failing at once with ErrLocked when another open file,
// of this process or another, holds it.
func TryLock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	return err
}
