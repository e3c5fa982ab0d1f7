package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/keyward/keyward/internal/fsutil"
)

// Backup writes a consistent copy of the database file at path to dest,
// which must not exist, while other processes may be using the database:
// the copy is made in one read transaction (VACUUM INTO), so writers go on
// and the copy holds every transaction committed before it began, and none
// after. path is neither created nor migrated. The copy is written under a
// temporary name beside dest, checked (quick_check), synced with mode 0600
// and only then given its name, so that dest is whole whenever it exists.
// It returns the size of the copy.
func Backup(ctx context.Context, path, dest string) (int64, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("sqlite: no database at %s", path)
		}
		return 0, fmt.Errorf("sqlite: %w", err)
	}
	if _, err := os.Lstat(dest); err == nil {
		return 0, fmt.Errorf("sqlite: %s exists already; give a new file", dest)
	}
	dir := filepath.Dir(dest)
	f, err := os.CreateTemp(dir, "."+filepath.Base(dest)+".partial-*")
	if err != nil {
		return 0, fmt.Errorf("sqlite: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	// Empty and of mode 0600 (CreateTemp's): VACUUM INTO fills an empty
	// file and keeps its mode.
	f.Close()

	src, err := readOnly(path)
	if err != nil {
		return 0, err
	}
	_, err = src.ExecContext(ctx, `VACUUM INTO ?`, tmp)
	src.Close()
	if err != nil {
		return 0, fmt.Errorf("sqlite: copying %s: %w", path, err)
	}
	if err := quickCheck(ctx, tmp); err != nil {
		return 0, err
	}
	f, err = os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("sqlite: %w", err)
	}
	st, err := f.Stat()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: %w", err)
	}
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
	fsutil.SyncDir(dir)
	return st.Size(), nil
}

// readOnly opens the database file at path for reading only, without
// creating it.
func readOnly(path string) (*sql.DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	u := url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// quickCheck runs SQLite's quick_check on the database file at path.
func quickCheck(ctx context.Context, path string) error {
	db, err := readOnly(path)
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
	return nil
}

// Restore puts the backup file in place of the database file at path,
// which no process may be using (the caller makes sure). The backup is
// checked first (quick_check, and that it is a keyward store); a database
// at path is not removed but renamed, with its -wal and -shm files, to
// aside (path.before-restore-TIME), which Restore returns ("" when there
// was none). The copy is made under a temporary name, synced with mode
// 0600 and renamed into place right after the old database moved aside.
func Restore(ctx context.Context, backup, path string, now time.Time) (aside string, err error) {
	if err := quickCheck(ctx, backup); err != nil {
		return "", fmt.Errorf("%w (the store was left as it was)", err)
	}
	if err := isStore(ctx, backup); err != nil {
		return "", err
	}
	in, err := os.Open(backup)
	if err != nil {
		return "", fmt.Errorf("sqlite: %w", err)
	}
	defer in.Close()
	dir := filepath.Dir(path)
	out, err := os.CreateTemp(dir, "."+filepath.Base(path)+".restore-*")
	if err != nil {
		return "", fmt.Errorf("sqlite: %w", err)
	}
	tmp := out.Name()
	defer os.Remove(tmp)
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: copying the backup: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		aside = path + ".before-restore-" + now.UTC().Format("20060102T150405Z")
		if err := os.Rename(path, aside); err != nil {
			return "", fmt.Errorf("sqlite: moving the current database aside: %w", err)
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if err := os.Rename(path+suffix, aside+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return aside, fmt.Errorf("sqlite: moving %s aside: %w (the current database is at %s)", path+suffix, err, aside)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("sqlite: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return aside, fmt.Errorf("sqlite: putting the backup in place: %w (the database it replaces is at %s)", err, aside)
	}
	fsutil.SyncDir(dir)
	return aside, nil
}

// isStore reports, as an error, a database file that is not a keyward
// store.
func isStore(ctx context.Context, path string) error {
	db, err := readOnly(path)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('schema_migrations', 'workspaces', 'tokens')`).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: reading %s: %w", path, err)
	}
	if n != 3 {
		return fmt.Errorf("sqlite: %s is an SQLite database but no keyward store (the store was left as it was)", path)
	}
	return nil
}
