package keyward

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// NewerStoreError is a store that a newer keyward migrated: it records
// migrations this build does not know. keyward migrate refuses it; serve
// runs on it with a warning, as a rollback of an upgrade needs (the
// migrations keep older nodes working), without the newer release's
// changes.
type NewerStoreError struct {
	Migrations []string // the unknown ones, sorted
}

func (e *NewerStoreError) Error() string {
	return fmt.Sprintf("the store is of a newer keyward (migrations %s): this release cannot migrate it; run that release", strings.Join(e.Migrations, ", "))
}

// Migrations compares the migrations a build embeds (names or paths) with
// those a store records: done when every embedded one is recorded, and
// the recorded ones the build does not embed, sorted.
func Migrations(embedded, recorded []string) (done bool, unknown []string) {
	known := make([]string, len(embedded))
	for i, e := range embedded {
		known[i] = path.Base(e)
	}
	done = true
	for _, k := range known {
		if !slices.Contains(recorded, k) {
			done = false
		}
	}
	for _, r := range recorded {
		if !slices.Contains(known, r) {
			unknown = append(unknown, r)
		}
	}
	slices.Sort(unknown)
	return done, unknown
}
