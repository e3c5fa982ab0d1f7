//go:build race

package api

// raceEnabled reports whether the race detector is on; it makes sync.Pool
// drop items, so allocation counts do not hold under it.
const raceEnabled = true
