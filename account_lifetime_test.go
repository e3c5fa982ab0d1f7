package keyward

import (
	"testing"
	"time"
)

func TestFormatLifetime(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "1 day", 30 * 24 * time.Hour: "30 days", 36 * time.Hour: "36 hours",
		time.Hour: "1 hour", time.Minute: "1 minute", 90 * time.Second: "90 seconds",
		1500 * time.Millisecond: "1.5s",
	} {
		if got := FormatLifetime(d); got != want {
			t.Errorf("FormatLifetime(%v) = %q, want %q", d, got, want)
		}
	}
}
