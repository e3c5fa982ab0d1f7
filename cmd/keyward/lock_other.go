//go:build !unix

package main

import (
	"errors"
	"os"

	"github.com/keyward/keyward/internal/sqlite"
)

// lockDataDir does nothing where flock is not at hand.
func lockDataDir(dir string) (*os.File, error) { return nil, nil }

// dirOwner has nothing to return where files have no Unix owner.
func dirOwner(dir string) (uid, gid int, err error) { return 0, 0, errors.New("no owners here") }

// asRoot is false where there is no root.
func asRoot() bool { return false }

// foreignDir finds none where files have no Unix owner.
func foreignDir(dir string) (string, error) { return "", nil }

// userName is the number.
func userName(uid int) string { return "" }

// rootRestore has nothing to prepare where there is no root.
func rootRestore(dataDir string) (string, sqlite.RestoreOptions, error) {
	return dataDir, sqlite.RestoreOptions{}, nil
}

// rootOutput has nothing to check where there is no root.
func rootOutput(output string) (string, error) { return output, nil }

// ownLock has no owner to give.
func ownLock(f *os.File, dataDir string) error { return nil }
