package keyward

import (
	"testing"
	"time"
)

func TestParseRFC3339(t *testing.T) {
	want := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, s := range []string{"2027-01-01T00:00:00Z", "2027-01-01t00:00:00z", "2027-01-01t01:00:00+01:00", "2027-01-01T00:00:00.000Z"} {
		got, err := ParseRFC3339(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseRFC3339(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "2027-01-01", "2027-01-01 00:00:00Z", "2027-01-01T00:00:00", "2027-01-01X00:00:00Z", "tomorrow"} {
		if got, err := ParseRFC3339(s); err == nil {
			t.Errorf("ParseRFC3339(%q) = %v, want an error", s, got)
		}
	}
}
