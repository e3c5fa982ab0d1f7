package gateway

import (
	"syscall"
	"unsafe"
)

// rawIO makes the read or write system call trap on the socket fd, which
// does not block, as a raw system call: the scheduler is not told, as it
// is not for any call that cannot block. Told (syscall.Read), it counts a
// call that takes long as one that may block: a write to a loopback
// socket runs the receiver's side of TCP too, tens of µs on a virtual
// machine, and the scheduler's monitor, which checks every 20 µs while
// calls keep taking that long, hands the caller's processor to another
// thread: a sleep, a wake-up and a thread switch for every few requests,
// a sixth of the gateway's CPU time under load.
func rawIO(trap, fd uintptr, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(p), uintptr(len(b)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}
