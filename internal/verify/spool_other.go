//go:build !unix

package verify

import (
	"errors"
	"os"
)

// spoolSupported: without flock an engine cannot tell a spool left by a
// stopped one from one in use, so there is no spool here; Config.SpoolDir
// is ignored, which Start says.
const spoolSupported = false

func lockFile(f *os.File) error { return errors.New("usage spools need flock") }

func syncDir(dir string) {}
