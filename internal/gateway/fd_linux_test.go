package gateway

import (
	"syscall"
	"testing"
)

// TestRawIO: the raw read and write system calls move bytes, report a
// socket with nothing to read as EAGAIN, and its peer's close as 0 bytes.
func TestRawIO(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := uintptr(fds[0]), uintptr(fds[1])
	defer syscall.Close(fds[0])
	if n, err := rawIO(syscall.SYS_WRITE, a, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	buf := make([]byte, 16)
	if n, err := rawIO(syscall.SYS_READ, b, buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read: %d %v %q", n, err, buf[:n])
	}
	if n, err := rawIO(syscall.SYS_READ, b, buf); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("read of an empty socket: %d %v, want EAGAIN", n, err)
	}
	if n, err := rawIO(syscall.SYS_WRITE, a, nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d %v", n, err)
	}
	syscall.Close(fds[1])
	if _, err := rawIO(syscall.SYS_WRITE, a, []byte("x")); err != syscall.EPIPE {
		t.Fatalf("write to a closed peer: %v, want EPIPE", err)
	}
}
