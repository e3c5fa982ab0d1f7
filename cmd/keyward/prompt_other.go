//go:build !linux

package main

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/term"
)

// readHidden writes prompt to standard error and reads a line from the
// terminal f without echo, as a password is read. (On Linux, Ctrl-C also
// ends the wait; here the line must be ended first.)
func readHidden(ctx context.Context, e *env, f *os.File, prompt string) ([]byte, error) {
	fmt.Fprint(e.stderr, prompt)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	return b, err
}
