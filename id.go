package keyward

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	mrand "math/rand/v2"
	"time"
)

// Id type prefixes.
const (
	PrefixToken     = "tok_"
	PrefixWorkspace = "ws_"
	PrefixEvent     = "evt_"
	PrefixRequest   = "req_"
)

const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz" // Crockford base32, sorts like its values

// NewID returns an opaque id with the given type prefix. Ids made later sort
// after ids made earlier (to the millisecond), so they serve as cursors.
// Its 80 random bits make ids unguessable.
func NewID(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:])
	return encodeID(prefix, binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]))
}

// NewTimeID returns an id like NewID's that also sorts by t within its
// millisecond: after the millisecond come the nanoseconds within it (20
// bits), then 60 random bits. Ids of things made many to a millisecond
// and listed newest first by id, such as usage events, list in the order
// of their times.
func NewTimeID(prefix string, t time.Time) string {
	ms := t.UnixMilli()
	sub := uint64(t.Sub(time.UnixMilli(ms)).Nanoseconds()) // 0 to 999,999 < 2^20
	var r [8]byte
	rand.Read(r[:])
	random := binary.BigEndian.Uint64(r[:]) >> 4
	return encodeID(prefix, uint64(ms)<<16|sub>>4, sub<<60|random)
}

// encodeID writes the 128 bits hi, lo as 26 base32 characters after the
// prefix, most significant first.
func encodeID(prefix string, hi, lo uint64) string {
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = idAlphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return prefix + string(out[:])
}

// ValidID reports whether s is an id that NewID could have made with the
// prefix: what a list's cursor must be.
func ValidID(prefix, s string) bool {
	if len(s) != len(prefix)+26 || s[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' && c != 'i' && c != 'l' && c != 'o' && c != 'u') {
			return false
		}
	}
	return true
}

// NewRequestID returns a new request id: PrefixRequest and 128 random bits
// in hex, in one allocation. Request ids are not secrets, so a fast
// non-cryptographic source does.
func NewRequestID() string {
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], mrand.Uint64())
	binary.BigEndian.PutUint64(raw[8:], mrand.Uint64())
	var b [len(PrefixRequest) + 32]byte
	n := copy(b[:], PrefixRequest)
	hex.Encode(b[n:], raw[:])
	return string(b[:])
}

// RequestID returns the id of a request whose client sent sent as its
// X-Request-Id: sent itself when it is fit to keep (ValidRequestID), else
// a new one. The API, the gateway and the dashboard all go by it.
func RequestID(sent string) string {
	if ValidRequestID(sent) {
		return sent
	}
	return NewRequestID()
}

// ValidRequestID reports whether s may be kept as a request's id when a
// client sends it (X-Request-Id): 1 to 64 characters of [A-Za-z0-9._-],
// safe in headers, logs and JSON as it is, and no run of 32 or more letters
// and digits that are not all hex digits: such a run could be a token's
// secret (32 random base62 characters; its prefix is public, its checksum
// follows from the rest), and an id is logged and echoed as it is. The
// gateway's own ids (req_ and 32 hex digits), hex digests and UUIDs pass.
func ValidRequestID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	run, hex := 0, true // letters and digits in a row; all of them hex
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			run++
			hex = hex && (c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')
			if run >= 32 && !hex {
				return false
			}
		case c == '-' || c == '_' || c == '.':
			run, hex = 0, true
		default:
			return false
		}
	}
	return true
}
