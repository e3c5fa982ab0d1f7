package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// openPTY opens a pseudo-terminal pair: the master, which plays the user
// at the keyboard and screen, and the terminal the program reads.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	// Non-blocking, so that os.NewFile puts the master in the poller and
	// its reads take deadlines; the ioctls use the number, as Fd() would
	// make it blocking again.
	mfd, err := syscall.Open("/dev/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(mfd), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		syscall.Close(mfd)
		t.Fatalf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(mfd), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		syscall.Close(mfd)
		t.Fatalf("ptsname: %v", e)
	}
	m := os.NewFile(uintptr(mfd), "/dev/ptmx")
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// echoes reports whether the terminal tty echoes what is typed.
func echoes(t *testing.T, tty *os.File) bool {
	t.Helper()
	var tio syscall.Termios
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, tty.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&tio))); e != 0 {
		t.Fatalf("tcgetattr: %v", e)
	}
	return tio.Lflag&syscall.ECHO != 0
}

// waitEcho waits up to 5 s for the terminal tty to echo (on) or not.
func waitEcho(t *testing.T, tty *os.File, on bool) bool {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if echoes(t, tty) == on {
			return true
		}
	}
	return false
}

// TestVerifyPromptNoEcho: a token typed at the prompt of keyward verify is
// not echoed to the terminal, as a password is not.
func TestVerifyPromptNoEcho(t *testing.T) {
	f := newFakeServer(t)
	_, secret := f.add(map[string]any{"name": "typed"})
	master, tty := openPTY(t)

	done := make(chan result, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		envs := map[string]string{"KEYWARD_TOKEN": mgmtToken, "KEYWARD_SERVER": f.srv.URL}
		code := run(context.Background(), []string{"verify"}, tty, &stdout, &stderr, func(k string) string { return envs[k] })
		done <- result{code, stdout.String(), stderr.String()}
	}()
	// Type once the program has turned echo off (or given up on the
	// terminal: a program that never does fails below).
	waitEcho(t, tty, false)
	if _, err := master.Write([]byte(secret + "\n")); err != nil {
		t.Fatal(err)
	}
	// What the terminal shows, as the user's screen would, until it has
	// been silent for 2 s.
	screen := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 4096)
		for {
			master.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := master.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		screen <- b.Bytes()
	}()

	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("keyward verify did not read the typed token")
	}
	r.want(t, 0)
	if !strings.Contains(r.stderr, "Token to verify: ") {
		t.Errorf("no prompt: stderr %q", r.stderr)
	}
	if !strings.Contains(string(f.body("POST /v1/verify")), secret) {
		t.Errorf("the typed token was not verified: %s", f.body("POST /v1/verify"))
	}
	select {
	case shown := <-screen:
		if bytes.Contains(shown, []byte(secret[3:])) {
			t.Errorf("the terminal echoed the token: %q", shown)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal's output could not be read")
	}
}

// TestPromptInterrupt: Ctrl-C at a prompt that reads without echo ends
// the command at once (main turns SIGINT into the context's
// cancellation, which a plain read would not notice until Enter), and
// leaves the terminal echoing again.
func TestPromptInterrupt(t *testing.T) {
	for _, tc := range []struct {
		name, prompt string
		args         []string
	}{
		{"verify", "Token to verify: ", []string{"verify"}},
		{"user create", "Password (at least 12 characters): ", []string{"user", "create", "--email", "a@example.com", "--data-dir", "DIR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeServer(t)
			for i, a := range tc.args {
				if a == "DIR" {
					tc.args[i] = t.TempDir()
				}
			}
			_, tty := openPTY(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan result, 1)
			go func() {
				var stdout, stderr bytes.Buffer
				envs := map[string]string{"KEYWARD_TOKEN": mgmtToken, "KEYWARD_SERVER": f.srv.URL}
				code := run(ctx, tc.args, tty, &stdout, &stderr, func(k string) string { return envs[k] })
				done <- result{code, stdout.String(), stderr.String()}
			}()
			if !waitEcho(t, tty, false) {
				t.Fatal("the prompt did not turn echo off")
			}
			cancel() // Ctrl-C
			var r result
			select {
			case r = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Ctrl-C did not end the prompt's wait")
			}
			if r.code != 1 || r.stderr != tc.prompt+"\nkeyward: interrupted\n" {
				t.Errorf("exit status %d, stderr %q; want 1 and the prompt, then keyward: interrupted", r.code, r.stderr)
			}
			if !echoes(t, tty) {
				t.Error("the terminal was left without echo")
			}
			if got := f.body("POST /v1/verify"); got != "" {
				t.Errorf("an interrupted verify sent %s", got)
			}
		})
	}
}
