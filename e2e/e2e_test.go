// Package e2e holds black-box tests: they build the real keyward binary,
// run it on loopback with a temporary data dir, and drive it as users do,
// through the public client package and the CLI.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
	"github.com/keyward/keyward/internal/api/spectest"
)

// binary is the keyward binary built once for all tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyward-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "keyward")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/keyward")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building keyward:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is one keyward serve process.
type server struct {
	t       testing.TB
	cmd     *exec.Cmd
	URL     string
	log     *syncBuffer
	exited  chan struct{}
	waitErr error
	addr    chan string // the address it listens on, once it does
}

var listenRE = regexp.MustCompile(`msg="keyward listening" addr=(127\.0\.0\.1:\d+)`)

// startServer runs keyward serve on 127.0.0.1:0 over the store and waits
// until it listens. The process is stopped at the end of the test.
func startServer(t testing.TB, st *store, args ...string) *server {
	t.Helper()
	s := launchServer(t, st, args...)
	s.waitListening()
	return s
}

// launchServer starts keyward serve as startServer does, without waiting
// for it to listen (waitListening does). The process is stopped at the
// end of the test.
func launchServer(t testing.TB, st *store, args ...string) *server {
	t.Helper()
	s := &server{t: t, log: &syncBuffer{}, exited: make(chan struct{}), addr: make(chan string, 1)}
	all := append(append([]string{"serve", "--addr", "127.0.0.1:0", "--flush-interval", "50ms"}, st.args...), args...)
	s.cmd = exec.Command(binary, all...)
	s.cmd.Env = append(baseEnv(), st.env...)
	// Its own working directory: what a node keeps in the default data
	// dir (./keyward-data, also on PostgreSQL: the usage spool) stays out
	// of the source tree.
	s.cmd.Dir = t.TempDir()
	dieWithTest(s.cmd)
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	s.cmd.Stdout = pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		pw.Close()
		close(s.exited)
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			s.log.Write([]byte(line + "\n"))
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case s.addr <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { s.stop() })
	return s
}

// waitListening waits until the server listens, and sets its URL.
func (s *server) waitListening() {
	s.t.Helper()
	select {
	case a := <-s.addr:
		s.URL = "http://" + a
	case <-s.exited:
		s.t.Fatalf("keyward serve exited: %v\n%s", s.waitErr, s.log)
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		s.t.Fatalf("keyward serve did not start\n%s", s.log)
	}
}

// stop sends SIGTERM and waits for a graceful exit.
func (s *server) stop() {
	s.t.Helper()
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.waitErr != nil {
			s.t.Errorf("keyward serve exited with %v\n%s", s.waitErr, s.log)
		}
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		s.t.Errorf("keyward serve did not stop on SIGTERM")
	}
}

// baseEnv is a clean environment: no KEYWARD_ variables of the caller leak in.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// cli runs the keyward CLI and returns its stdout and exit code.
func cli(t testing.TB, stdin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(baseEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// initRoot runs keyward init --output json and returns the root token.
func initRoot(t testing.TB, st *store, extra ...string) string {
	t.Helper()
	out, errOut, code := cli(t, "", st.env, append(append([]string{"init", "--output", "json"}, st.args...), extra...)...)
	if code != 0 {
		t.Fatalf("keyward init: exit %d: %s", code, errOut)
	}
	var v struct{ Token string }
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Token == "" {
		t.Fatalf("keyward init output %q: %v", out, err)
	}
	return v.Token
}

func newClient(t testing.TB, url, token string) *client.Client {
	t.Helper()
	// Every answer the client reads is held to the OpenAPI document.
	hc := &http.Client{Timeout: client.DefaultTimeout, Transport: spectest.Transport(t, nil)}
	c, err := client.New(url, token, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secrets collects every token secret a test saw, to check none is stored
// or logged.
type secrets struct {
	mu   sync.Mutex
	list []string
}

func (s *secrets) add(v string) string {
	s.mu.Lock()
	s.list = append(s.list, v)
	s.mu.Unlock()
	return v
}

// assertNowhere fails when any secret, or the 32-character random body of
// one, appears in any file under dir or in text.
func (s *secrets) assertNowhere(t *testing.T, dir string, texts map[string]string) {
	t.Helper()
	if len(s.list) == 0 {
		t.Fatal("no secrets recorded")
	}
	needles := map[string]string{}
	for _, v := range s.list {
		needles[v] = "token"
		body := v[len(v)-38 : len(v)-6]
		needles[body] = "random body"
	}
	if dir == "" {
		dir = os.DevNull // nothing on local disk: only texts are checked
	}
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for n, what := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s: holds a token's %s", path, what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range texts {
		for n, what := range needles {
			if strings.Contains(text, n) {
				t.Errorf("%s holds a token's %s", name, what)
			}
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func expectCode(t testing.TB, c *client.Client, req client.VerifyRequest, want string) *client.VerifyResponse {
	t.Helper()
	_, file, line, _ := runtime.Caller(1)
	res, err := c.Verify(context.Background(), req)
	if err != nil {
		t.Fatalf("%s:%d: verify: %v", filepath.Base(file), line, err)
	}
	if res.Code != want {
		t.Fatalf("%s:%d: code %s, want %s", filepath.Base(file), line, res.Code, want)
	}
	if res.Valid != (want == "VALID") {
		t.Fatalf("%s:%d: valid %v with code %s", filepath.Base(file), line, res.Valid, res.Code)
	}
	return res
}
