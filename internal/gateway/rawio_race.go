//go:build unix && race

package gateway

import "syscall"

// readFD and writeFD, in a race-detector build: package syscall's Read
// and Write tell the detector that what was written before a write
// happened before what follows the read of it (the other end of a
// connection in a test); raw system calls (rawio_unix.go) would not, and
// the detector would report races that the socket rules out.
func readFD(fd uintptr, b []byte) (int, error)  { return onFD(syscall.Read, fd, b) }
func writeFD(fd uintptr, b []byte) (int, error) { return onFD(syscall.Write, fd, b) }

// onFD calls op on fd, again while a signal interrupts it.
func onFD(op func(int, []byte) (int, error), fd uintptr, b []byte) (int, error) {
	for {
		n, err := op(int(fd), b)
		if err == syscall.EINTR {
			continue
		}
		return max(n, 0), err
	}
}
