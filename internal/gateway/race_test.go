//go:build race

package gateway

// raceEnabled reports whether the race detector is on; it makes sync.Pool
// drop items, so allocation counts do not hold under it (make unit runs
// the Allocs tests once more without it).
const raceEnabled = true
