package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// maxHiddenLine bounds what readHidden keeps of a typed line.
const maxHiddenLine = 64 << 10

// readHidden writes prompt to standard error and reads a line from the
// terminal f without echo, as a password is read. Ctrl-C ends the wait:
// main turns SIGINT into ctx's cancellation instead of ending the
// process, so a plain read would go on until Enter. The terminal gets its
// echo back before readHidden returns, whichever way the wait ends; a read
// left behind by Ctrl-C ends with the process.
func readHidden(ctx context.Context, e *env, f *os.File, prompt string) ([]byte, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	// The terminal's modes change here and only here, never in the reader
	// below, so that no change of theirs can come after this restores.
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(e.stderr, prompt)
	type line struct {
		b   []byte
		err error
	}
	got := make(chan line, 1)
	go func() {
		b, err := readLine(fd)
		got <- line{b, err}
	}()
	select {
	case l := <-got:
		fmt.Fprintln(e.stderr)
		return l.b, l.err
	case <-ctx.Done():
		fmt.Fprintln(e.stderr)
		return nil, ctx.Err()
	}
}

var errLongLine = fmt.Errorf("longer than %d bytes", maxHiddenLine)

// readLine reads fd up to a line feed, which it drops with a carriage
// return before it. The end of input ends the line too, unless nothing
// was read.
func readLine(fd int) ([]byte, error) {
	var b []byte
	buf := make([]byte, 256)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			if len(b) == 0 {
				return nil, errors.New("the terminal closed")
			}
			return b, nil
		}
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			b = append(b, buf[:i]...)
			return bytes.TrimSuffix(b, []byte("\r")), nil
		}
		if b = append(b, buf[:n]...); len(b) > maxHiddenLine {
			return nil, errLongLine
		}
	}
}
