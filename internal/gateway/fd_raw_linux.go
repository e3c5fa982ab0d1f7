//go:build !race

package gateway

import "syscall"

// readFD reads from the socket fd, which does not block (see rawIO).
func readFD(fd uintptr, b []byte) (int, error) {
	return rawIO(syscall.SYS_READ, fd, b)
}

// writeFD writes b to the socket fd, which does not block (see rawIO).
func writeFD(fd uintptr, b []byte) (int, error) {
	return rawIO(syscall.SYS_WRITE, fd, b)
}
