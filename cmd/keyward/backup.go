package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/keyward/keyward/internal/sqlite"
)

// cmdBackup copies the embedded SQLite store to a new file, consistently,
// while keyward serve keeps running on it.
func cmdBackup(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "backup", help{
		summary: "Copy the embedded SQLite store to a new file, consistently, while keyward serve\n" +
			"keeps running on it: the copy holds every change committed before it began and\n" +
			"none after, and writers are not held up. The file is made with mode 0600, never\n" +
			"over an existing one, and appears only once whole and checked. It does not hold\n" +
			"the server secret (server.secret in the data dir, or KEYWARD_SECRET): back that\n" +
			"up with it, and as safe; without it the backup's tokens cannot be verified.\n" +
			"keyward restore puts a backup back. A PostgreSQL store is backed up with pg_dump.",
		examples: []string{
			"keyward backup --data-dir /var/lib/keyward --output-file /backups/keyward-$(date +%F).db",
		},
	})
	var cfg storeConfig
	defineStoreFlags(fs, &cfg)
	var output string
	fs.String(&output, "output-file", "", "", "write the copy to `FILE`, which must not exist (required)")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if cfg.DatabaseURL != "" {
		return fs.usagef("the store is PostgreSQL (--database-url): back it up with pg_dump; keyward backup copies the embedded SQLite store of --data-dir")
	}
	if output == "" {
		return fs.usagef("--output-file is required")
	}
	src := filepath.Join(cfg.DataDir, "keyward.db")
	size, err := sqlite.Backup(ctx, src, output)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Backup of %s written to %s (%d bytes).\n", src, output, size)
	fmt.Fprintln(e.stderr, "keyward: note: the backup does not hold the server secret; back it up too (server.secret in the data dir, or KEYWARD_SECRET): without it the backup's tokens cannot be verified")
	return nil
}

// cmdRestore puts a backup in place of the embedded SQLite store, keeping
// the store it replaces.
func cmdRestore(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "restore", help{
		summary: "Put a backup made by keyward backup in place of the embedded SQLite store of\n" +
			"--data-dir. keyward serve must be stopped: restore refuses while it runs on the\n" +
			"data dir. The backup is checked first; the store it replaces is not removed but\n" +
			"renamed, with its -wal and -shm files, to keyward.db.before-restore-TIME in the\n" +
			"data dir (remove it once the restored store is checked). The server secret is\n" +
			"not touched: the backup's tokens verify with the secret of the time it was\n" +
			"made. Everything after the backup is gone from the restored store, the audit\n" +
			"events too: keyward audit verify --expect-head reports heads kept since then as\n" +
			"missing, as it is meant to.",
		examples: []string{
			"keyward restore --data-dir /var/lib/keyward --from /backups/keyward-2026-11-24.db",
		},
	})
	var cfg storeConfig
	defineStoreFlags(fs, &cfg)
	var from string
	fs.String(&from, "from", "", "", "the backup `FILE` (required)")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if cfg.DatabaseURL != "" {
		return fs.usagef("the store is PostgreSQL (--database-url): restore it with pg_restore or psql; keyward restore replaces the embedded SQLite store of --data-dir")
	}
	if from == "" {
		return fs.usagef("--from is required")
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("%w; stop it before a restore", err)
	}
	if lock != nil {
		defer lock.Close()
	}
	path := filepath.Join(cfg.DataDir, "keyward.db")
	aside, err := sqlite.Restore(ctx, from, path, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Restored %s into %s.\n", from, path)
	if aside != "" {
		fmt.Fprintf(e.stdout, "The store it replaced is at %s: remove it once the restored store is checked.\n", aside)
	}
	return nil
}
