//go:build unix

package gateway

import (
	"net"
	"syscall"
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
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
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

// readFD and writeFD read and write the socket fd, which does not block.
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
