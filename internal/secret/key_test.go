package secret

import (
	"crypto/hmac"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const testSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestDigest(t *testing.T) {
	r, err := NewKeyring(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	tok := "kw_AbCdEfGhIjKlMnOpQrStUvWxYz0123452ZGy5c"
	d := r.Current.Digest(tok)
	m := hmac.New(sha256.New, r.Current.Derive("token-digest/v1"))
	m.Write([]byte(tok))
	if !Equal(d[:], m.Sum(nil)) {
		t.Fatal("digest is not the HMAC-SHA-256 under the derived key")
	}
	other, _ := NewKeyring(strings.Repeat("x", 32))
	if od := other.Current.Digest(tok); Equal(d[:], od[:]) {
		t.Fatal("digests under different keys are equal")
	}
	if r.Current.ID == other.Current.ID || len(r.Current.ID) != 16 {
		t.Fatalf("key ids %q %q", r.Current.ID, other.Current.ID)
	}
	if strings.Contains(r.Current.ID, testSecret[:8]) {
		t.Fatal("key id reveals the secret")
	}
	if n := testing.AllocsPerRun(100, func() { r.Current.Digest(tok) }); n != 0 && !raceEnabled {
		t.Fatalf("Digest allocates %v times", n)
	}
}

func TestNewKeyring(t *testing.T) {
	if _, err := NewKeyring("short"); err == nil {
		t.Fatal("accepted a short secret")
	}
	if _, err := NewKeyring(testSecret, "short"); err == nil {
		t.Fatal("accepted a short previous secret")
	}
	r, err := NewKeyring(testSecret, strings.Repeat("p", 40), testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Previous) != 1 {
		t.Fatalf("%d previous keys, want 1 (the current one is not its own previous)", len(r.Previous))
	}
}

func TestLoadOrCreateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "secret")
	s1, err := LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if len(s1) != 64 {
		t.Fatalf("secret of %d characters", len(s1))
	}
	s2, err := LoadOrCreateFile(path)
	if err != nil || s2 != s1 {
		t.Fatalf("second load = %q, %v; want the same secret", s2, err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateFile(path); err == nil {
		t.Fatal("accepted a world-readable secret file")
	}
}

// TestLoadOrCreateFileConcurrent: processes that start together on a new
// data dir (serve beside init) all get the one secret, and none reads a
// file still being written.
func TestLoadOrCreateFileConcurrent(t *testing.T) {
	for round := range 50 {
		path := filepath.Join(t.TempDir(), "secret")
		const n = 8
		got := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { got[i], errs[i] = LoadOrCreateFile(path) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d: %v", round, errs[i])
			}
			if got[i] != got[0] {
				t.Fatalf("round %d: two secrets, %q and %q", round, got[0], got[i])
			}
		}
		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) != 1 {
			t.Fatalf("round %d: %d files left, want the secret alone", round, len(entries))
		}
	}
}

// TestLoadOrCreateFileDanglingLink: a server.secret that is a link to
// nowhere is an error, neither written through nor tried again forever.
func TestLoadOrCreateFileDanglingLink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := os.Symlink(filepath.Join(dir, "gone"), path); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := LoadOrCreateFile(path); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "leads nowhere") {
			t.Fatalf("LoadOrCreateFile on a dangling link: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("LoadOrCreateFile on a dangling link does not return")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d files in the dir, want the link alone", len(entries))
	}
	if _, err := os.Stat(filepath.Join(dir, "gone")); err == nil {
		t.Fatal("the secret was written through the link")
	}
}

func BenchmarkHMAC(b *testing.B) {
	r, _ := NewKeyring(testSecret)
	tok := "kw_AbCdEfGhIjKlMnOpQrStUvWxYz0123452ZGy5c"
	b.ReportAllocs()
	for b.Loop() {
		r.Current.Digest(tok)
	}
}
