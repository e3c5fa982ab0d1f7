package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/keyward/keyward/internal/postgres"
	"github.com/keyward/keyward/internal/sqlite"
)

// cmdMigrate applies the store's schema migrations and exits. Every command
// that opens the store migrates it too; migrate lets an operator do it
// first, alone, before rolling out new nodes.
func cmdMigrate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "migrate", help{
		summary: "Apply the store's schema migrations and exit. keyward serve and keyward init\n" +
			"migrate too; run migrate first to upgrade a PostgreSQL store before rolling out\n" +
			"new nodes. Migrations take a lock, so nodes starting meanwhile are safe. It needs\n" +
			"the server secret: the audit chain is keyed with a key derived from it. A store\n" +
			"with audit events written before the chain existed needs --link-unchained-audit\n" +
			"(once): a database whose chain someone removed, to rewrite the log, looks the same.",
		examples: []string{
			"keyward migrate --data-dir /var/lib/keyward",
			"KEYWARD_SECRET_FILE=/run/secrets/keyward keyward migrate --database-url postgres://keyward@db.internal/keyward",
		},
	})
	var cfg storeConfig
	defineStoreFlags(fs, &cfg)
	fs.Bool(&cfg.LinkUnchainedAudit, "link-unchained-audit", "", false,
		"let the migration that adds the audit chain link the audit events already stored (a store made by a release from before the chain); without it, such events stop the migration. No environment variable on purpose: a decision for one run, which a deployment's environment would repeat on every start")
	defineServerSecrets(fs, &cfg)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	keys, err := keyring(cfg)
	if err != nil {
		return err
	}
	if cfg.DatabaseURL != "" {
		key, _ := auditKeys(keys)
		opts := []postgres.Option{postgres.WithAuditKey(key), postgres.WithLockWait(func() {
			fmt.Fprintln(e.stderr, "keyward: another keyward is applying migrations to this store (a node starting, or keyward migrate): waiting for it to finish")
		})}
		if cfg.LinkUnchainedAudit {
			opts = append(opts, postgres.WithLinkUnchainedAudit(keyIDs(keys)...))
		}
		applied, err := postgres.Migrate(ctx, cfg.DatabaseURL, opts...)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "PostgreSQL store migrated"+appliedNote(applied))
		return nil
	}
	created := newSQLiteStore(cfg)
	// Read first: opening the store writes to it.
	if err := sqlite.CheckNotNewer(ctx, filepath.Join(cfg.DataDir, "keyward.db")); err != nil {
		return err
	}
	store, err := openStore(ctx, cfg, keys)
	if err != nil {
		return err
	}
	if created {
		noteNewStore(e, cfg)
	}
	fmt.Fprintf(e.stdout, "SQLite store in %s migrated%s\n", cfg.DataDir, appliedNote(appliedMigrations(store)))
	return store.Close()
}

// appliedNote ends migrate's line of output: what it applied.
func appliedNote(applied []string) string {
	if len(applied) == 0 {
		return ": it was up to date, nothing applied."
	}
	return ": applied " + strings.Join(applied, ", ") + "."
}
