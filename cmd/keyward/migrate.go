package main

import (
	"context"
	"fmt"

	"github.com/keyward/keyward/internal/postgres"
)

// cmdMigrate applies the store's schema migrations and exits. Every command
// that opens the store migrates it too; migrate lets an operator do it
// first, alone, before rolling out new nodes.
func cmdMigrate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "migrate", help{
		summary: "Apply the store's schema migrations and exit. keyward serve and keyward init\n" +
			"migrate too; run migrate first to upgrade a PostgreSQL store before rolling out\n" +
			"new nodes. Migrations take a lock, so nodes starting meanwhile are safe.",
		examples: []string{
			"keyward migrate --database-url postgres://keyward@db.internal/keyward",
			"keyward migrate --data-dir /var/lib/keyward",
		},
	})
	var cfg storeConfig
	defineStoreFlags(fs, &cfg)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if cfg.DatabaseURL != "" {
		if err := checkDatabaseURL(cfg.DatabaseURL); err != nil {
			return fs.usagef("%v", err)
		}
		if err := postgres.Migrate(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "PostgreSQL store migrated.")
		return nil
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "SQLite store in %s migrated.\n", cfg.DataDir)
	return store.Close()
}
