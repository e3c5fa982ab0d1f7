//go:build race

package e2e

// raceEnabled reports whether the race detector is on; it makes sync.Pool
// drop items, so allocation counts do not hold under it.
const raceEnabled = true
