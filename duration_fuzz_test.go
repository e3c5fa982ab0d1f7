package keyward_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/client"
)

// FuzzDurationText holds the API's and the client's spelling of a
// duration to the promises their comments make: the same text on both
// sides, no zero minutes or seconds after a larger unit, and a text that
// time.ParseDuration (what both read with) reads back to the same value,
// whatever the sign, size or fraction.
func FuzzDurationText(f *testing.F) {
	for _, d := range []time.Duration{0, 1, -1, time.Second, time.Minute, -time.Minute, time.Hour, -time.Hour,
		90 * time.Minute, time.Hour + time.Second, 60*time.Minute + 500*time.Millisecond, 10 * time.Minute,
		1500 * time.Millisecond, time.Microsecond, 720 * time.Hour, math.MaxInt64, math.MinInt64} {
		f.Add(int64(d))
	}
	f.Fuzz(func(t *testing.T, n int64) {
		d := time.Duration(n)
		b, err := json.Marshal(keyward.Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		cb, err := json.Marshal(client.Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		if string(cb) != string(b) {
			t.Fatalf("%d: the API writes %s, the client %s", n, b, cb)
		}
		if s := client.Duration(d).String(); `"`+s+`"` != string(b) {
			t.Fatalf("%d: client String %q, JSON %s", n, s, b)
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(s, "m0s") || strings.HasSuffix(s, "h0m") {
			t.Fatalf("%d: %q keeps a zero unit at its end", n, s)
		}
		if back, err := time.ParseDuration(s); err != nil || back != d {
			t.Fatalf("%d: ParseDuration(%q) = %v, %v", n, s, back, err)
		}
		var kd keyward.Duration
		if err := json.Unmarshal(b, &kd); err != nil || time.Duration(kd) != d {
			t.Fatalf("%d: keyward.Duration reads %s as %d, %v", n, b, kd, err)
		}
		var cd client.Duration
		if err := json.Unmarshal(b, &cd); err != nil || time.Duration(cd) != d {
			t.Fatalf("%d: client.Duration reads %s as %d, %v", n, b, cd, err)
		}
	})
}
