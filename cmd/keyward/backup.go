package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/sqlite"
)

// cmdBackup copies the embedded SQLite store to a new file, consistently,
// while keyward serve keeps running on it.
func cmdBackup(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "backup", help{
		summary: "Copy the embedded SQLite store to a new file, consistently, while keyward serve\n" +
			"keeps running on it: the copy holds every change committed before it began and\n" +
			"none after, and writers are not held up. The file is made with mode 0600, never\n" +
			"over an existing one, and appears only once whole and checked. Run as root, it\n" +
			"refuses a store or an output directory another user could redirect it from\n" +
			"(run it as the data dir's owner then, e.g. with sudo -u). It does not hold the\n" +
			"server secret (server.secret in the data dir, or KEYWARD_SECRET): back that up\n" +
			"with it, and as safe; without it the backup's tokens cannot be verified.\n" +
			"keyward restore puts a backup back. A PostgreSQL store is backed up with pg_dump.",
		examples: []string{
			"keyward backup --data-dir /var/lib/keyward --output-file /backups/keyward-$(date +%F).db",
		},
	})
	cfg, output, err := parseFileCommand(fs, args, "output-file", "write the copy to `FILE`, which must not exist (required)",
		"back it up with pg_dump; keyward backup copies the embedded SQLite store of --data-dir")
	if err != nil {
		return err
	}
	dataDir := cfg.DataDir
	// Said plainly, before root's checks of the paths: a mistyped data
	// dir or output directory is the likely cause.
	if err := storeThere(dataDir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Dir(output)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the directory %s does not exist: make it first, or give --output-file a file in another", filepath.Dir(output))
	}
	if asRoot() {
		// Root opens the store and writes the copy by name: where another
		// user can write, a link swapped in would send either elsewhere.
		if _, err := os.Lstat(output); err == nil {
			return fmt.Errorf("%s exists already; give a new file", output)
		}
		paths, err := rootPaths("back up", asOwner(dataDir, "backup")+", to a directory that user can write",
			[]string{dataDir, filepath.Dir(output)}, []string{filepath.Join(dataDir, "keyward.db")})
		if err != nil {
			return err
		}
		dataDir, output = paths[0], filepath.Join(paths[1], filepath.Base(output))
	}
	src := filepath.Join(dataDir, "keyward.db")
	size, err := sqlite.Backup(ctx, src, output)
	if err != nil {
		return err
	}
	// On standard output: a cron job mails what reaches standard error.
	fmt.Fprintf(e.stdout, "Backup of %s written to %s (%d bytes).\n", src, output, size)
	fmt.Fprintln(e.stdout, "It does not hold the server secret: back that up too (server.secret in the data dir, or KEYWARD_SECRET); without it the backup's tokens cannot be verified.")
	// A store a newer keyward migrated (this release rolled back to) is
	// backed up all the same; who restores it needs to know which.
	if newer := (*keyward.NewerStoreError)(nil); errors.As(sqlite.CheckNotNewer(ctx, src), &newer) {
		fmt.Fprintf(e.stdout, "The store is of a newer keyward (migrations %s): restore this backup with that release or a later one.\n", strings.Join(newer.Migrations, ", "))
	}
	return nil
}

// storeThere returns nil when dataDir holds a store (keyward.db), else an
// error that names dataDir and says what to do.
func storeThere(dataDir string) error {
	_, err := os.Stat(filepath.Join(dataDir, "keyward.db"))
	if !errors.Is(err, os.ErrNotExist) {
		return nil // there, or what opening it finds
	}
	what := "holds no keyward store (no keyward.db)"
	if _, err := os.Stat(dataDir); errors.Is(err, os.ErrNotExist) {
		what = "does not exist"
	}
	return fmt.Errorf("the data dir %s %s: give the data dir of the store to back up with --data-dir (or KEYWARD_DATA_DIR)", dataDir, what)
}

// rootRefusal is the error of a command that will not act as root in
// dir, which another user can write.
func rootRefusal(what, dir, advice string) error {
	who := "another user"
	if uid, _, err := dirOwner(dir); err == nil && uid != 0 {
		who = userName(uid)
	}
	return fmt.Errorf("refusing to %s as root: %s can be written by %s, who could put a symbolic link where keyward writes and have root write elsewhere; %s", what, dir, who, advice)
}

// asOwner advises running the command as the data dir's owner, named
// when the data dir is there and not root's.
func asOwner(dataDir, command string) string {
	who := "OWNER"
	if uid, _, err := dirOwner(dataDir); err == nil && uid != 0 {
		who = userName(uid)
	}
	return fmt.Sprintf("run keyward %s as the data dir's owner (sudo -u %s keyward %s ...)", command, who, command)
}

// cmdRestore puts a backup in place of the embedded SQLite store, keeping
// the store it replaces.
func cmdRestore(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "restore", help{
		summary: "Put a backup made by keyward backup in place of the embedded SQLite store of\n" +
			"--data-dir. keyward serve must be stopped: restore refuses while it runs on the\n" +
			"data dir (on Unix; elsewhere, make sure yourself). The backup is checked first,\n" +
			"and refused if a newer keyward made it. The store it replaces is not removed:\n" +
			"it is checkpointed and renamed, with its -wal and -shm files, to\n" +
			"keyward.db.before-restore-TIME in the data dir (remove it once the restored\n" +
			"store is checked). Run as root, it refuses a data dir or a backup another\n" +
			"user could redirect it from: run it as the data dir's owner then.\n" +
			"The server secret is not touched: the backup's tokens verify with the secret\n" +
			"of the time it was made. Everything after the backup is gone from the\n" +
			"restored store, the audit events too: keyward audit verify --expect-head\n" +
			"reports heads kept since then as missing, as it is meant to.",
		examples: []string{
			"keyward restore --data-dir /var/lib/keyward --from /backups/keyward-2026-11-24.db",
		},
	})
	cfg, from, err := parseFileCommand(fs, args, "from", "the backup `FILE` (required)",
		"restore it with pg_restore or psql; keyward restore replaces the embedded SQLite store of --data-dir")
	if err != nil {
		return err
	}
	dataDir := cfg.DataDir
	if st, err := os.Stat(from); err != nil {
		return fmt.Errorf("--from: %w", err) // before the data dir is made
	} else if st.IsDir() {
		return fmt.Errorf("--from: %s is a directory, not a backup file", from)
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return err
	}
	if asRoot() {
		// Root opens the backup and the store, and writes in the data dir,
		// by name: where another user can write, a link swapped in would
		// send any of them elsewhere. A data dir not there yet is made by
		// root under the nearest directory that is.
		have, rest := dataDir, ""
		for {
			if _, err := os.Lstat(have); err == nil || have == filepath.Dir(have) {
				break
			}
			have, rest = filepath.Dir(have), filepath.Join(filepath.Base(have), rest)
		}
		files := []string{from}
		if rest == "" {
			files = append(files, filepath.Join(dataDir, "keyward.db"))
		}
		paths, err := rootPaths("restore", asOwner(dataDir, "restore")+", with the backup readable by that user",
			[]string{have}, files)
		if err != nil {
			return err
		}
		dataDir, from = filepath.Join(paths[0], rest), paths[1]
	}
	// What a restore that fails made goes again: the data dir and those
	// above it, and its lock file; never what was there before.
	var made []string // directories, the data dir first
	for d := dataDir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	lockPath := filepath.Join(dataDir, "serve.lock")
	_, err = os.Lstat(lockPath)
	madeLock := errors.Is(err, os.ErrNotExist)
	lock, err := lockDataDir(dataDir)
	restored := false
	defer func() {
		if restored {
			return
		}
		if lock != nil && madeLock {
			os.Remove(lockPath) // while held: no other process has it
		}
		if lock != nil {
			lock.Close()
		}
		for _, d := range made {
			os.Remove(d) // only if empty
		}
	}()
	var busy *dataDirBusyError
	if errors.As(err, &busy) {
		return fmt.Errorf("%w; stop it before a restore", err)
	} else if err != nil {
		return err // a data dir that cannot be made or locked: nothing to stop
	}
	path := filepath.Join(dataDir, "keyward.db")
	aside, err := sqlite.Restore(ctx, from, path, time.Now(), sqlite.RestoreOptions{})
	if err != nil {
		return err
	}
	restored = true
	if lock != nil {
		defer lock.Close()
	}
	fmt.Fprintf(e.stdout, "Restored %s into %s.\n", from, path)
	if aside != "" {
		fmt.Fprintf(e.stdout, "The store it replaced is at %s: remove it once the restored store is checked.\n", aside)
	}
	if msg := restoredKeys(ctx, e, cfg, path); msg != "" {
		fmt.Fprintln(e.stderr, "keyward: warning: "+msg)
	}
	return nil
}

// restoredKeys says what stands between the restored store at path and
// serving it, as far as the server secret goes: none in the data dir nor
// the environment, or one that made none of its token secrets (then every
// token answers NOT_FOUND and the audit chains fail). "" when nothing does,
// or it cannot tell.
func restoredKeys(ctx context.Context, e *env, cfg storeConfig, path string) string {
	if err := loadSecrets(e, &cfg); err != nil {
		return ""
	}
	if cfg.Secret == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "server.secret")); err != nil {
			return "the data dir has no server secret (server.secret), and KEYWARD_SECRET is not set: serve will refuse to start; put the backup's server secret back first"
		}
	}
	keys, err := keyring(cfg) // the file exists, or the variable is set: nothing is made
	if err != nil {
		return ""
	}
	counts, err := sqlite.SecretKeys(ctx, path)
	if err != nil {
		return ""
	}
	// As serve judges at start (logKeys): all of them unknown.
	u := countKeys(counts, keys)
	if !u.allUnknown() {
		return ""
	}
	return fmt.Sprintf("the restored store's tokens were made under a server secret other than this one (key ids %s; this one is %s): they will answer NOT_FOUND and the audit chains will not verify until serve runs with the backup's server secret", strings.Join(u.ids, ","), u.current)
}

// dataDirBusyError is lockDataDir's error when another process (a serve,
// or a restore) holds the data dir.
type dataDirBusyError struct{ dir string }

func (b *dataDirBusyError) Error() string {
	return fmt.Sprintf("another keyward serve is running on the data dir %s (or a restore is): one SQLite store serves one node (for several, use PostgreSQL with --database-url)", b.dir)
}

// parseFileCommand parses the flags of backup and restore: the store
// flags, which must name the embedded SQLite store (pgAdvice says what to
// do on PostgreSQL), and one required file flag.
func parseFileCommand(fs *flagSet, args []string, flag, usage, pgAdvice string) (cfg storeConfig, file string, err error) {
	defineStoreFlags(fs, &cfg)
	fs.String(&file, flag, "", "", usage)
	// Checks, so that they win over a KEYWARD_DATABASE_URL_FILE that
	// cannot be read.
	fs.Check(func() error {
		if cfg.DatabaseURL != "" {
			return fmt.Errorf("the store is PostgreSQL (--database-url): %s", pgAdvice)
		}
		return nil
	})
	fs.Check(func() error {
		switch file {
		case "":
			return fmt.Errorf("--%s is required", flag)
		case "-":
			// Not standard input or output: a store is copied and
			// checked as a file. A file named - is ./-.
			return fmt.Errorf("--%s takes a file, not - (for a file named -, give ./-)", flag)
		}
		return nil
	})
	if args, err = fs.parse(args); err != nil {
		return cfg, "", err
	}
	if err := noArgs(fs, args); err != nil {
		return cfg, "", err
	}
	return cfg, file, nil
}
