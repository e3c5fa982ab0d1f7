//go:build !unix

package gateway

import "net"

// alive reports whether an idle connection may carry a request. Without a
// non-blocking peek it cannot tell; a connection found closed is retried
// on a fresh one (see roundTrip).
func alive(c net.Conn) bool { return true }
