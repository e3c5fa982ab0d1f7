//go:build unix

package sqlite

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// shmDMS is the byte of a WAL database's -shm file on which SQLite's unix
// VFS keeps a read lock for as long as a connection has the database
// open (its "dead man switch", UNIX_SHM_DMS in os_unix.c).
const shmDMS = 128

// openElsewhere reports whether a process other than this one has the
// WAL database at path open: one holds a lock on the -shm file's
// dead-man-switch byte. A database without a -shm file is open nowhere.
// It must not be called while this process has the database open: closing
// its descriptor drops the process's locks on the file, SQLite's too.
func openElsewhere(path string) (bool, error) {
	f, err := os.Open(path + "-shm")
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: shmDMS, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != syscall.F_UNLCK, nil
}
