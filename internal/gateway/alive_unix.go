//go:build unix

package gateway

import (
	"net"
	"syscall"
)

// aliveCheck returns a function that reports whether an idle connection
// may carry a request: the upstream has neither closed it nor sent
// anything unasked. It peeks at the socket without blocking, so a
// connection the upstream closed while idle is dropped before a request is
// written to it, not after. The function is built once per connection and
// allocates nothing when called.
func aliveCheck(c net.Conn) func() bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return func() bool { return true }
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() bool { return false }
	}
	var (
		b    [1]byte
		rerr error
	)
	peek := func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}
	return func() bool {
		err := rc.Read(peek)
		// EAGAIN: open with nothing to read. Anything else (no error with
		// 0 bytes: closed; bytes: unasked data; a reset) makes it unusable.
		return err == nil && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
	}
}
