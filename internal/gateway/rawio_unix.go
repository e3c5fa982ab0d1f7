//go:build unix && !race

package gateway

import (
	"syscall"
	"unsafe"
)

// readFD and writeFD read and write the socket fd, which does not block,
// with raw system calls: the scheduler is not told. A system call it is
// told of lets its monitor hand the goroutine's processor to another
// thread when the call lasts over 20µs, as a write to a loopback socket
// often does (it runs the receiver's side of TCP too); that hand-off
// wakes a thread and puts the first one to sleep on its return, for a
// call that cannot block in the first place. (A race-detector build uses
// package syscall's calls instead: see rawio_race.go.)
func readFD(fd uintptr, b []byte) (int, error)  { return onFD(syscall.SYS_READ, fd, b) }
func writeFD(fd uintptr, b []byte) (int, error) { return onFD(syscall.SYS_WRITE, fd, b) }

// onFD makes system call trap (read or write) on fd, again while a signal
// interrupts it.
func onFD(trap, fd uintptr, b []byte) (int, error) {
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
