//go:build unix

package verify

import (
	"os"
	"syscall"
)

// spoolSupported: flock tells a spool left by a stopped engine from one in
// use.
const spoolSupported = true

// lockFile takes f's lock for this process, failing at once when another
// holds it.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
