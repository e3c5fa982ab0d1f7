//go:build unix

package sqlite

import (
	"os"
	"syscall"
)

// sameDev reports whether two files are on one file system.
func sameDev(a, b os.FileInfo) bool {
	return a.Sys().(*syscall.Stat_t).Dev == b.Sys().(*syscall.Stat_t).Dev
}
