//go:build !unix

package sqlite

// openElsewhere cannot tell here, and says no.
func openElsewhere(path string) (bool, error) { return false, nil }
