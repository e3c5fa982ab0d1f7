package account

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"strings"

	"github.com/keyward/keyward/internal/secret"
)

// Key purposes derived from the server secret.
const (
	sealPurpose     = "account-seal/v1"
	recoveryPurpose = "recovery-code/v1"
)

// Sealer seals second-factor secrets (AES-256-GCM) under a key derived
// from the server secret, so that a database dump does not reveal them,
// and opens them under the current or a previous server secret.
type Sealer struct {
	keys [][]byte // current first
}

// NewSealer returns a Sealer for the keyring.
func NewSealer(keys *secret.Keyring) *Sealer {
	s := &Sealer{keys: [][]byte{keys.Current.Derive(sealPurpose)}}
	for _, k := range keys.Previous {
		s.keys = append(s.keys, k.Derive(sealPurpose))
	}
	return s
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Seal encrypts plain, bound to ad (such as the user id).
func (s *Sealer) Seal(plain []byte, ad string) ([]byte, error) {
	g, err := gcm(s.keys[0])
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return g.Seal(nonce, nonce, plain, []byte(ad)), nil
}

// ErrUnseal reports a sealed value no known key opens.
var ErrUnseal = errors.New("account: cannot open a sealed secret with any server key")

// Open decrypts what Seal returned for the same ad.
func (s *Sealer) Open(sealed []byte, ad string) ([]byte, error) {
	for _, k := range s.keys {
		g, err := gcm(k)
		if err != nil {
			return nil, err
		}
		if len(sealed) < g.NonceSize() {
			return nil, ErrUnseal
		}
		if p, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], []byte(ad)); err == nil {
			return p, nil
		}
	}
	return nil, ErrUnseal
}

// RecoveryCodes is how many recovery codes a user gets.
const RecoveryCodes = 10

// NewRecoveryCodes returns RecoveryCodes random codes as people read them
// (xxxxx-xxxxx, 50 bits each), and their digests for the store.
func (s *Sealer) NewRecoveryCodes(userID string) (codes []string, digests [][]byte, err error) {
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	for range RecoveryCodes {
		b := make([]byte, 7)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, err
		}
		c := strings.ToLower(enc.EncodeToString(b))[:10]
		c = c[:5] + "-" + c[5:]
		codes = append(codes, c)
		digests = append(digests, s.RecoveryDigest(userID, c))
	}
	return codes, digests, nil
}

// RecoveryDigest returns the stored digest of a recovery code as typed
// (case, spaces and dashes ignored), keyed with the current server secret
// and bound to the user.
func (s *Sealer) RecoveryDigest(userID, code string) []byte {
	return recoveryDigest(s.keys[0], userID, code)
}

// RecoveryDigests returns the digests of a typed recovery code under the
// current and every previous server secret, current first, so that codes
// made before a rotation of the secret still work.
func (s *Sealer) RecoveryDigests(userID, code string) [][]byte {
	out := make([][]byte, len(s.keys))
	for i, k := range s.keys {
		out[i] = recoveryDigest(k, userID, code)
	}
	return out
}

func recoveryDigest(key []byte, userID, code string) []byte {
	code = strings.ToLower(strings.NewReplacer(" ", "", "-", "").Replace(strings.TrimSpace(code)))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(recoveryPurpose + "\x00" + userID + "\x00" + code))
	return m.Sum(nil)
}
