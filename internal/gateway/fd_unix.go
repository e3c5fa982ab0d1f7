//go:build unix && (!linux || race)

// The race detector learns from syscall.Read and syscall.Write that what
// was written before a write to a socket happens before what follows a
// read of it (a test's client and the handler it calls); a raw system call
// (rawIO) would hide that, so race builds take these.

package gateway

import "syscall"

// writeFD writes b to the socket fd, which does not block.
func writeFD(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), b)
		if err == syscall.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

// readFD reads from the socket fd, which does not block.
func readFD(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), b)
		if err == syscall.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}
