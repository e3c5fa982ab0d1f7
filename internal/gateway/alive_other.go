//go:build !unix

package gateway

import (
	"net"
	"syscall"
)

// peeker returns a function that looks at a connection without blocking.
// Without a non-blocking peek it cannot tell: it reports an open
// connection with nothing to read. A request that finds an upstream
// connection closed is retried on a new one when that is safe (see
// Handler.send).
func peeker(c net.Conn) func() (data, closed bool) {
	return func() (bool, bool) { return false, false }
}

// syscallConn returns nil: flushAwait's wait and serveInline are for
// unix sockets.
func syscallConn(c net.Conn) (syscall.RawConn, error) { return nil, nil }

func writeFD(fd uintptr, b []byte) (int, error) { return 0, syscall.EINVAL }

func readFD(fd uintptr, b []byte) (int, error) { return 0, syscall.EINVAL }
