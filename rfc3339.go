package keyward

import (
	"strings"
	"time"
)

// ParseRFC3339 parses an RFC 3339 date-time, with the letters T and Z in
// either case as RFC 3339 §5.6 allows ("2027-01-01t00:00:00z"), which
// time.RFC3339 alone refuses. The other characters of the format are
// digits and punctuation, which upper-casing leaves as they are.
func ParseRFC3339(s string) (time.Time, error) {
	return time.Parse(time.RFC3339, strings.ToUpper(s))
}
