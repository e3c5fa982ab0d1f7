package main

import (
	"syscall"
	"time"
)

// preciseSleep sleeps d in the kernel, outside Go's timers.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
