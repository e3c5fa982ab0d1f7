//go:build unix

package gateway

import (
	"net"
	"syscall"
	"unsafe"
)

// peeker returns a function that looks at a connection's socket without
// blocking or consuming anything: data reports bytes waiting to be read,
// closed that the peer closed the connection or reset it. The function is
// built once per connection, allocates nothing when called, and must not
// be called from two goroutines at once.
func peeker(c net.Conn) func() (data, closed bool) {
	rc, err := syscallConn(c)
	switch {
	case err != nil:
		return func() (bool, bool) { return false, true }
	case rc == nil:
		return func() (bool, bool) { return false, false }
	}
	var (
		b    [1]byte
		n    int
		rerr error
	)
	peek := func(fd uintptr) {
		r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		n, rerr = int(r), nil
		if errno != 0 {
			n, rerr = 0, errno
		}
	}
	return func() (bool, bool) {
		// Control, not Read: a read deadline that has passed must not make
		// an open connection look closed.
		if err := rc.Control(peek); err != nil {
			return false, true
		}
		switch {
		case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
			return false, false // open, nothing to read
		case rerr != nil:
			return false, true // reset, say
		case n > 0:
			return true, false
		default:
			return false, true // end of stream: closed
		}
	}
}

// syscallConn returns c's raw connection, for peeker and flushAwait; nil
// when it has none.
func syscallConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, nil
	}
	return sc.SyscallConn()
}
