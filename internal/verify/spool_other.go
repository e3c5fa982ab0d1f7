//go:build !unix

package verify

import (
	"errors"
	"os"
)

// lockFile fails: without flock a process cannot tell a spool left by a
// stopped process from one in use, so there is no spool here.
func lockFile(f *os.File) error { return errors.New("usage spools need flock (unix)") }

func syncDir(dir string) {}
