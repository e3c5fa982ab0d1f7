//go:build !unix

package main

import (
	"errors"
	"os"
)

// lockDataDir does nothing where flock is not at hand.
func lockDataDir(dir string) (*os.File, error) { return nil, nil }

// dirOwner has nothing to return where files have no Unix owner.
func dirOwner(dir string) (uid, gid int, err error) { return 0, 0, errors.New("no owners here") }

// asRoot is false where there is no root.
func asRoot() bool { return false }

// userName is the number.
func userName(uid int) string { return "" }

// rootPaths has nothing to check where there is no root.
func rootPaths(what, advice string, dirs, files []string) ([]string, error) {
	return append(append([]string{}, dirs...), files...), nil
}
