package keyward_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

func TestNewID(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, prefix := range []string{keyward.PrefixToken, keyward.PrefixWorkspace, keyward.PrefixEvent, keyward.PrefixRequest} {
		t.Run("OKShape_"+strings.TrimSuffix(prefix, "_"), func(t *testing.T) {
			id := keyward.NewID(prefix, at)
			if !strings.HasPrefix(id, prefix) {
				t.Fatalf("NewID(%q) = %q, want that prefix", prefix, id)
			}
			body := strings.TrimPrefix(id, prefix)
			if len(body) != 26 {
				t.Fatalf("NewID(%q) = %q: %d characters after the prefix, want 26", prefix, id, len(body))
			}
			for _, c := range body {
				if !strings.ContainsRune(idAlphabet, c) {
					t.Fatalf("NewID(%q) = %q: %q is not in the alphabet %s", prefix, id, c, idAlphabet)
				}
			}
		})
	}

	t.Run("OKSortedByTime", func(t *testing.T) {
		steps := []time.Duration{time.Millisecond, time.Second, time.Hour, 24 * time.Hour, 365 * 24 * time.Hour}
		for _, step := range steps {
			for i := 0; i < 200; i++ {
				a := keyward.NewID(keyward.PrefixToken, at)
				b := keyward.NewID(keyward.PrefixToken, at.Add(step))
				if a >= b {
					t.Fatalf("id at %v = %q sorts after id at +%v = %q", at, a, step, b)
				}
			}
		}
	})

	t.Run("OKSortedAcrossEpochs", func(t *testing.T) {
		times := []time.Time{
			time.Unix(0, 0).UTC(),
			time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
			time.Date(2026, 11, 23, 10, 0, 0, int(time.Millisecond), time.UTC),
			time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		}
		prev := ""
		for _, tm := range times {
			id := keyward.NewID(keyward.PrefixEvent, tm)
			if id <= prev {
				t.Fatalf("id at %v = %q does not sort after the previous %q", tm, id, prev)
			}
			prev = id
		}
	})

	t.Run("OKUnique", func(t *testing.T) {
		seen := make(map[string]bool, 20000)
		for i := 0; i < 20000; i++ {
			id := keyward.NewID(keyward.PrefixToken, at) // one millisecond: only randomness differs
			if seen[id] {
				t.Fatalf("NewID returned %q twice", id)
			}
			seen[id] = true
		}
	})

	t.Run("OKSameTimeSamePrefix", func(t *testing.T) {
		// The first 10 characters hold exactly the 48 bits of milliseconds
		// (3 + 9·5): ids made in the same millisecond share them.
		a, b := keyward.NewID("", at), keyward.NewID("", at)
		if a[:10] != b[:10] {
			t.Fatalf("ids of one millisecond %q and %q differ in their time part", a, b)
		}
	})
}

func TestOutcomeString(t *testing.T) {
	want := []string{"VALID", "MALFORMED", "NOT_FOUND", "REVOKED", "SUSPENDED", "PENDING_APPROVAL", "EXPIRED", "IP_NOT_ALLOWED", "INSUFFICIENT_SCOPE", "RATE_LIMITED", "QUOTA_EXCEEDED"}
	if keyward.NumOutcomes != len(want) {
		t.Fatalf("NumOutcomes = %d, want %d", keyward.NumOutcomes, len(want))
	}
	for i, w := range want {
		t.Run(w, func(t *testing.T) {
			if got := keyward.Outcome(i).String(); got != w {
				t.Fatalf("Outcome(%d).String() = %q, want %q", i, got, w)
			}
		})
	}
	t.Run("UNKNOWN", func(t *testing.T) {
		for _, o := range []keyward.Outcome{keyward.Outcome(keyward.NumOutcomes), 200, 255} {
			if got := o.String(); got != "UNKNOWN" {
				t.Errorf("Outcome(%d).String() = %q, want UNKNOWN", o, got)
			}
		}
	})
}

func TestOutcomeIdentified(t *testing.T) {
	tests := []struct {
		o    keyward.Outcome
		want bool
	}{
		{keyward.Valid, true},
		{keyward.Malformed, false},
		{keyward.NotFound, false},
		{keyward.Revoked, true},
		{keyward.Suspended, true},
		{keyward.PendingApproval, true},
		{keyward.Expired, true},
		{keyward.IPNotAllowed, true},
		{keyward.InsufficientScope, true},
		{keyward.RateLimited, true},
		{keyward.QuotaExceeded, true},
	}
	if len(tests) != keyward.NumOutcomes {
		t.Fatalf("the table covers %d outcomes of %d", len(tests), keyward.NumOutcomes)
	}
	for _, tt := range tests {
		t.Run(tt.o.String(), func(t *testing.T) {
			if got := tt.o.Identified(); got != tt.want {
				t.Fatalf("%v.Identified() = %v, want %v", tt.o, got, tt.want)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	// A UUID, the gateway's own ids, and runs of letters and digits
	// shorter than a token's secret part are kept.
	for _, kept := range []string{"abc-123", "req_x.y", strings.Repeat("g", 31) + "-" + strings.Repeat("g", 31), "req_" + strings.Repeat("f", 32),
		"123e4567-e89b-12d3-a456-426614174000", "trace_" + strings.Repeat("z", 31), strings.Repeat("ab01", 16)} {
		if got := keyward.RequestID(kept); got != kept {
			t.Errorf("RequestID(%q) = %q, want it kept", kept, got)
		}
	}
	// So is anything shaped like a token, which would be logged and echoed.
	for _, bad := range []string{"", "bad id", `q"uote`, strings.Repeat("a", 65), "é",
		"kw_LNgQWR5wkjYQcCd3EOXKHP7TYPxuwS2e3K3ouH", "x.acme_live_" + strings.Repeat("Z", 38) + "-1", "a_" + strings.Repeat("9", 30) + "ZZ",
		"LNgQWR5wkjYQcCd3EOXKHP7TYPxuwS2e3K3ouH", "kw-LNgQWR5wkjYQcCd3EOXKHP7TYPxuwS2e3K3ouH", "x-LNgQWR5wkjYQcCd3EOXKHP7TYPxuwS2e", strings.Repeat("g", 64)} {
		got := keyward.RequestID(bad)
		if got == bad || !strings.HasPrefix(got, keyward.PrefixRequest) || len(got) != len(keyward.PrefixRequest)+32 || !keyward.ValidRequestID(got) {
			t.Errorf("RequestID(%q) = %q, want a new req_ id", bad, got)
		}
	}
	if keyward.RequestID("") == keyward.RequestID("") {
		t.Error("two new ids are the same")
	}
}

// TestNewTimeID: ids sort by their time to the nanosecond, within a
// millisecond and across, and have NewID's shape.
func TestNewTimeID(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	steps := []time.Duration{1, 15, 999, time.Microsecond, 999_999, time.Millisecond, time.Millisecond + 1, time.Second, 365 * 24 * time.Hour}
	for _, base := range []time.Time{at, at.Add(999_998), time.Unix(1, 0).UTC()} {
		for _, step := range steps {
			for range 50 {
				a := keyward.NewTimeID(keyward.PrefixUsageEvent, base)
				b := keyward.NewTimeID(keyward.PrefixUsageEvent, base.Add(step))
				if a >= b {
					t.Fatalf("id at %v = %q sorts after id at +%v = %q", base, a, step, b)
				}
				if !keyward.ValidID(keyward.PrefixUsageEvent, a) {
					t.Fatalf("NewTimeID = %q, not a valid id", a)
				}
				// Its millisecond sorts as NewID's does.
				if n := keyward.NewID(keyward.PrefixUsageEvent, base.Add(-time.Millisecond)); n >= a {
					t.Fatalf("NewID a millisecond earlier = %q sorts after NewTimeID %q", n, a)
				}
			}
		}
	}
}
