//go:build !unix

package main

import "os"

// lockDataDir does nothing where flock is not at hand.
func lockDataDir(dir string) (*os.File, error) { return nil, nil }

// ownLikeDir does nothing where files have no Unix owner.
func ownLikeDir(dir string, files ...string) error { return nil }
