package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/fsutil"
)

// Backup writes a consistent copy of the database file at src to dest,
// which must not exist, while other processes may be using the database:
// the copy is made in one read transaction (VACUUM INTO), so writers go on
// and the copy holds every transaction committed before it began, and none
// after (including those still in src's write-ahead log). src is neither
// created nor migrated. The copy is written under a temporary name beside
// dest, checked, synced with mode 0600 and only then given its name, so
// that dest is whole whenever it exists. It returns the size of the copy.
func Backup(ctx context.Context, src, dest string) (int64, error) {
	if _, err := os.Lstat(dest); err == nil {
		return 0, fmt.Errorf("sqlite: %s exists already; give a new file", dest)
	}
	if err := isDir(filepath.Dir(dest)); err != nil {
		return 0, err
	}
	tmp, lock, size, err := snapshot(ctx, src, filepath.Dir(dest), true)
	if err != nil {
		return 0, err
	}
	defer lock.Close()
	defer os.Remove(tmp)
	if err := os.Link(tmp, dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("sqlite: %s was made meanwhile; the backup was not written", dest)
		}
		// No hard links on this file system (FAT, some network and
		// FUSE ones): a rename, which would replace a dest made since
		// the check above.
		if _, err := os.Lstat(dest); err == nil {
			return 0, fmt.Errorf("sqlite: %s was made meanwhile; the backup was not written", dest)
		}
		if err := os.Rename(tmp, dest); err != nil {
			return 0, fmt.Errorf("sqlite: %w", err)
		}
	}
	fsutil.SyncDir(filepath.Dir(dest))
	return size, nil
}

// isDir reports, as an error that names it, a directory that is not there.
func isDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("sqlite: the directory %s does not exist", dir)
	case err != nil:
		return fmt.Errorf("sqlite: %w", err)
	case !st.IsDir():
		return fmt.Errorf("sqlite: %s is not a directory", dir)
	}
	return nil
}

// Partial copies are named so that a later run can find those a killed
// one left (SweepPartials); their SQLite journal has -journal added.
const partialPattern = ".keyward-copy-*.partial"

// partialAge is how old a partial copy must be, besides unlocked, to be
// taken for one a killed run left: its maker locks it just after making
// it, and a copy being written is modified all along.
const partialAge = time.Minute

// SweepPartials removes from dir the partial copies (and their journals)
// that a backup or restore killed before it could remove them left, and
// returns their names: those no running process holds (each run locks its
// own) that were last modified over a minute ago.
func SweepPartials(dir string) []string {
	if !fsutil.Locks {
		return nil
	}
	matches, _ := filepath.Glob(filepath.Join(dir, partialPattern))
	var removed []string
	for _, m := range matches {
		st, err := os.Lstat(m)
		if err != nil || !st.Mode().IsRegular() || time.Since(st.ModTime()) < partialAge {
			continue
		}
		f, err := os.OpenFile(m, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		if fsutil.TryLock(f) == nil {
			os.Remove(m + "-journal")
			if os.Remove(m) == nil {
				removed = append(removed, m)
			}
		}
		f.Close()
	}
	return removed
}

// snapshot copies the keyward store at src, consistently (see Backup),
// to a new temporary file in dir, checked (an intact SQLite file holding a
// keyward store, of a schema this build knows unless newer is allowed),
// synced, of mode 0600. The
// caller removes the file it returns, or renames it, then closes lock, the
// file open and locked so that no sweep takes it for a killed run's until
// it is placed (SweepPartials). Partial copies that killed runs left in
// dir are removed first.
func snapshot(ctx context.Context, src, dir string, newer bool) (tmp string, lock *os.File, size int64, err error) {
	st, err := os.Stat(src)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil, 0, fmt.Errorf("sqlite: no database at %s", src)
	case err != nil:
		return "", nil, 0, fmt.Errorf("sqlite: %w", err)
	case st.IsDir():
		return "", nil, 0, fmt.Errorf("sqlite: %s is a directory, not a database file", src)
	}
	// An absolute name, which SQLite cannot take for a URI.
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", nil, 0, fmt.Errorf("sqlite: %w", err)
	}
	SweepPartials(dir)
	f, err := os.CreateTemp(dir, partialPattern)
	if err != nil {
		return "", nil, 0, fmt.Errorf("sqlite: %w", err)
	}
	tmp = f.Name()
	// Held locked, so that no other run takes it for a killed one's.
	// Empty and of mode 0600 (CreateTemp's): VACUUM INTO fills an empty
	// file and keeps its mode.
	fsutil.TryLock(f)
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp + "-journal")
			os.Remove(tmp)
		}
	}()
	db, err := readOnly(src)
	if err != nil {
		return tmp, nil, 0, err
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, tmp)
	db.Close()
	if err != nil {
		return tmp, nil, 0, fmt.Errorf("sqlite: copying %s: %w", src, err)
	}
	if err := checkStore(ctx, tmp, newer); err != nil {
		return tmp, nil, 0, err
	}
	if st, err = f.Stat(); err == nil {
		err = f.Sync()
	}
	if err != nil {
		return tmp, nil, 0, fmt.Errorf("sqlite: %w", err)
	}
	return tmp, f, st.Size(), nil
}

// RestoreOptions are Restore's choices beyond its arguments.
type RestoreOptions struct {
	// Stage is the directory the copy is made in, on the file system of
	// the database (default: the database's own directory).
	Stage string
}

// Restore puts a copy of the keyward store in the file backup in place of
// the database at dbPath, which no process may be using (the caller makes
// sure). The copy is made as Backup makes one (what backup's write-ahead
// log holds included) and checked before anything is touched. A database
// at dbPath is first checkpointed, then renamed with its -wal and -shm
// files to aside (dbPath.before-restore-TIME, a name not taken yet), which
// Restore returns ("" when there was none); a -wal or -shm left without
// its database is refused, since SQLite would apply it to the copy.
func Restore(ctx context.Context, backup, dbPath string, now time.Time, opt RestoreOptions) (aside string, err error) {
	sides := []string{"", "-wal", "-shm"}
	if err := strayLogs(dbPath); err != nil {
		return "", fmt.Errorf("%w (the store was left as it was)", err)
	}
	stage := opt.Stage
	if stage == "" {
		stage = filepath.Dir(dbPath)
	}
	tmp, lock, _, err := snapshot(ctx, backup, stage, false)
	if err != nil {
		return "", fmt.Errorf("%w (the store was left as it was)", err)
	}
	defer lock.Close()
	defer os.Remove(tmp)
	linked := false // the store's main file is aside by a second name
	if _, err := os.Lstat(dbPath); err == nil {
		// What the old store's log holds goes into its main file, so that
		// the file moved aside is whole by itself.
		checkpoint(ctx, dbPath)
		base := dbPath + ".before-restore-" + now.UTC().Format("20060102T150405Z")
		for i := 1; ; i++ {
			aside = base
			if i > 1 {
				aside += "-" + strconv.Itoa(i)
			}
			free := true
			for _, s := range sides {
				if _, err := os.Lstat(aside + s); err == nil {
					free = false
				}
			}
			if free {
				break
			}
		}
		for i, s := range sides {
			var err error
			if s == "" && os.Link(dbPath, aside) == nil {
				// A second name: the store stays at dbPath until the
				// copy replaces it in one rename, so that no crash in
				// between leaves the data dir without one.
				linked = true
				continue
			}
			if err = os.Rename(dbPath+s, aside+s); err != nil && !errors.Is(err, fs.ErrNotExist) {
				// What was moved goes back: the store stays whole where
				// it was, rather than half of it aside.
				if putBack(aside, dbPath, sides[:i], linked) {
					return "", fmt.Errorf("sqlite: moving %s aside: %w (the store was left as it was)", dbPath+s, err)
				}
				return aside, fmt.Errorf("sqlite: moving %s aside: %w (what was moved is at %s)", dbPath+s, err, aside)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("sqlite: %w", err)
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		// The store goes back where it was, so that no serve starts on
		// a data dir without one (and makes a new, empty store).
		if aside == "" || putBack(aside, dbPath, sides, linked) {
			return "", fmt.Errorf("sqlite: putting the backup in place: %w (the store was left as it was)", err)
		}
		return aside, fmt.Errorf("sqlite: putting the backup in place: %w (the database it replaces is at %s)", err, aside)
	}
	fsutil.SyncDir(filepath.Dir(dbPath))
	return aside, nil
}

// putBack renames the files aside+side back to dbPath+side, for each of
// sides, and reports whether all that were there went back. With linked,
// the main file is still at dbPath too, and its second name goes.
func putBack(aside, dbPath string, sides []string, linked bool) bool {
	back := true
	for _, s := range sides {
		var err error
		if s == "" && linked {
			err = os.Remove(aside)
		} else {
			err = os.Rename(aside+s, dbPath+s)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			back = false
		}
	}
	return back
}

// SecretKeys counts the token secrets of the database file at p by server
// key id, reading only (keyward.Store's SecretKeys, without opening the
// store).
func SecretKeys(ctx context.Context, p string) (map[string]int64, error) {
	db, err := readOnly(p)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return secretKeys(ctx, db)
}

// strayLogs reports, as an error, a write-ahead log with frames beside
// dbPath when there is no database at dbPath: SQLite would apply it to a
// new database made there, or remove it with the changes it holds. An
// empty log, or a -shm alone, holds nothing and is no bar.
func strayLogs(dbPath string) error {
	if _, err := os.Lstat(dbPath); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if st, err := os.Lstat(dbPath + "-wal"); err == nil && st.Size() > 0 {
		return fmt.Errorf("sqlite: %s is there without %s: it belongs to a database moved or removed without it; move it away first", dbPath+"-wal", dbPath)
	}
	return nil
}

// checkpoint moves what the write-ahead log of the database at p holds
// into its main file and empties the log, as far as it can; a database it
// cannot open or checkpoint is left as it is (moved aside whole all the
// same, log and all).
func checkpoint(ctx context.Context, p string) {
	db, err := openFile(p, "rw")
	if err != nil {
		return
	}
	defer db.Close()
	db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
}

// readOnly opens the database file at p for reading only, without
// creating it.
func readOnly(p string) (*sql.DB, error) { return openFile(p, "ro") }

// openFile opens the existing database file at p in mode (ro, rw, or
// immutable: ro on a file no process changes meanwhile, which makes no
// -wal or -shm file beside it) on one connection, by a file: URI, whatever
// characters p holds.
func openFile(p, mode string) (*sql.DB, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	q := url.Values{}
	if mode == "immutable" {
		q.Set("mode", "ro")
		q.Set("immutable", "1")
	} else {
		q.Set("mode", mode)
	}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	u := url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// checkStore reports, as an error, a database file at p that fails
// SQLite's quick_check, is no keyward store, or, unless newer, holds
// migrations this build does not know (a newer keyward's store, which
// this one would serve without its changes).
func checkStore(ctx context.Context, p string, newer bool) error {
	db, err := readOnly(p)
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&res); err != nil {
		return fmt.Errorf("sqlite: checking the copy: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("sqlite: the copy fails its check: %s", res)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('schema_migrations', 'workspaces', 'tokens')`).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: checking the copy: %w", err)
	}
	if n != 3 {
		return errors.New("sqlite: the database is no keyward store")
	}
	if newer {
		return nil
	}
	unknown, err := unknownMigrations(ctx, db)
	if err != nil {
		return fmt.Errorf("sqlite: checking the copy: %w", err)
	}
	if len(unknown) > 0 {
		return fmt.Errorf("sqlite: %w", &keyward.NewerStoreError{Migrations: unknown})
	}
	return nil
}

// unknownMigrations returns the migrations db records that this build
// does not know, sorted.
func unknownMigrations(ctx context.Context, db *sql.DB) ([]string, error) {
	known, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	recorded, err := recordedMigrations(ctx, db)
	if err != nil {
		return nil, err
	}
	_, unknown := keyward.Migrations(known, recorded)
	return unknown, nil
}

// CheckNotNewer reports, as a keyward.NewerStoreError, a database file at
// p that a newer keyward migrated, reading only: keyward migrate refuses
// such a store before it writes anything to it. A file that is not there
// or has no migrations yet passes.
func CheckNotNewer(ctx context.Context, p string) error {
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	db, err := readOnly(p)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: reading %s: %w", p, err)
	} else if n == 0 {
		return nil
	}
	unknown, err := unknownMigrations(ctx, db)
	if err != nil {
		return fmt.Errorf("sqlite: reading %s: %w", p, err)
	}
	if len(unknown) > 0 {
		return &keyward.NewerStoreError{Migrations: unknown}
	}
	return nil
}
