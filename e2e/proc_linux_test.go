package e2e

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// dieWithTest has the kernel kill cmd's process when the test binary
// dies: a test that panics on its timeout skips its cleanups, and would
// leave servers running on the machine.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// fileOwner returns the owner of the file at p.
func fileOwner(t testing.TB, p string) (uid, gid uint32, ok bool) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
