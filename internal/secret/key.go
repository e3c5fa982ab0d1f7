package secret

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/keyward/keyward/internal/fsutil"
)

// MinServerSecretLen is the minimum length of a server secret in bytes.
const MinServerSecretLen = 32

// DigestLen is the length of a token digest.
const DigestLen = sha256.Size

// Digest is a keyed digest of a token text.
type Digest [DigestLen]byte

// Key is one server key: the digest key derived from a server secret, and
// its id, which is stored next to every digest it makes.
type Key struct {
	ID     string
	secret []byte
	pool   sync.Pool // of *macState
}

type macState struct {
	mac hash.Hash
	sum []byte
}

func newKey(serverSecret string) *Key {
	k := &Key{secret: []byte(serverSecret)}
	id := sha256.Sum256([]byte("keyward/key-id/v1\x00" + serverSecret))
	k.ID = hex.EncodeToString(id[:8])
	digestKey := k.Derive("token-digest/v1")
	k.pool.New = func() any {
		return &macState{mac: hmac.New(sha256.New, digestKey), sum: make([]byte, 0, DigestLen)}
	}
	return k
}

// Derive returns a key for one purpose, derived from the server secret with
// HMAC-SHA-256, so that keys of different purposes are independent.
func (k *Key) Derive(purpose string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("keyward/" + purpose))
	return m.Sum(nil)
}

// Digest returns the keyed HMAC-SHA-256 of a token text. It does not
// allocate and is safe for concurrent use.
func (k *Key) Digest(text string) Digest {
	s := k.pool.Get().(*macState)
	s.mac.Reset()
	// HMAC only reads its input: viewing the string as bytes spares a copy.
	s.mac.Write(unsafe.Slice(unsafe.StringData(text), len(text)))
	s.sum = s.mac.Sum(s.sum[:0])
	var d Digest
	copy(d[:], s.sum)
	k.pool.Put(s)
	return d
}

// Keyring holds the current server key and the previous ones that are
// still accepted while digests move to the current key.
type Keyring struct {
	Current  *Key
	Previous []*Key
}

// NewKeyring returns a keyring for the current server secret and any
// previous ones. Each secret must be at least MinServerSecretLen bytes.
func NewKeyring(current string, previous ...string) (*Keyring, error) {
	if len(current) < MinServerSecretLen {
		return nil, fmt.Errorf("server secret must be at least %d bytes (for example 64 hex characters)", MinServerSecretLen)
	}
	r := &Keyring{Current: newKey(current)}
	for i, p := range previous {
		if len(p) < MinServerSecretLen {
			return nil, fmt.Errorf("previous server secret #%d must be at least %d bytes", i+1, MinServerSecretLen)
		}
		if p == current {
			continue
		}
		r.Previous = append(r.Previous, newKey(p))
	}
	return r, nil
}

// Equal reports whether two digests are equal, in constant time.
func Equal(a, b []byte) bool {
	return hmac.Equal(a, b)
}

// LoadOrCreateFile returns the server secret kept in the file at path,
// creating the file with a new random secret (64 hex characters, mode 0600)
// when it does not exist. It refuses a file that others may read.
func LoadOrCreateFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			// A link to nowhere, which must not be written through or
			// replaced.
			return "", fmt.Errorf("server secret file %s is a symbolic link that leads nowhere: remove it, or point it at the secret", path)
		}
		s, cerr := createSecretFile(path)
		if !errors.Is(cerr, fs.ErrExist) {
			return s, cerr
		}
		// Another process created it first: read theirs.
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("server secret file %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	s := strings.TrimSpace(string(b))
	if len(s) < MinServerSecretLen {
		return "", fmt.Errorf("server secret file %s holds fewer than %d bytes", path, MinServerSecretLen)
	}
	return s, nil
}

// createSecretFile writes a new random secret to path, which must not
// exist (fs.ErrExist if another process made it first). The secret is
// written under a temporary name and linked into place, so that a process
// starting at the same time (serve beside init) reads either no file or
// the whole secret; where the file system has no hard links, it is
// created in place (O_EXCL) and written.
func createSecretFile(path string) (string, error) {
	var raw [32]byte
	rand.Read(raw[:])
	s := hex.EncodeToString(raw[:])
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".server.secret-*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := writeSecret(f, s); err != nil {
		return "", err
	}
	err = os.Link(tmp, path)
	switch {
	case err == nil:
		fsutil.SyncDir(filepath.Dir(path))
		return s, nil
	case errors.Is(err, fs.ErrExist):
		return "", err
	}
	// No hard links here (FAT, some network and FUSE file systems).
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	return s, writeSecret(f, s)
}

// writeSecret writes s and a line break to f with mode 0600, syncs and
// closes it.
func writeSecret(f *os.File, s string) error {
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(s + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadFile returns the trimmed content of a secret file, as used for the
// _FILE variants of secret settings.
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
