package postgres

import (
	"errors"
	"io/fs"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// URLFileError is CheckURL's error for a file the URL names (sslrootcert,
// sslcert, sslkey) that cannot be read: the URL is well formed, and what
// is wrong is on the machine.
type URLFileError struct{ Err error }

func (e *URLFileError) Error() string { return e.Err.Error() }
func (e *URLFileError) Unwrap() error { return e.Err }

// CheckURL reports what makes url unusable to Open or Migrate, or nil,
// without connecting or resolving anything: it parses url as they do
// (with the PG* environment variables pgx reads). The error quotes no
// part of url that may be its password: not the URL, and none of its
// values when a user name or password that holds a /, ?, # or @ leaves
// where the password ends unclear. A file the URL names that cannot be
// read is a *URLFileError.
func CheckURL(url string) error {
	_, err := poolConfig(url)
	if err == nil {
		return nil
	}
	var pce *pgconn.ParseConfigError
	if !errors.As(err, &pce) {
		return errors.New("the URL does not parse")
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &URLFileError{errors.New(reason(pce))}
	}
	if ambiguousUserinfo(url) {
		return errors.New("the URL does not parse: its user name or password holds a character to percent-encode " +
			"(write @ as %40, / as %2F, ? as %3F, # as %23, % as %25)")
	}
	return errors.New("the URL does not parse: " + reason(pce))
}

// reason is the error of pce without the connection string it quotes
// (redacted by pgx only as well as it can tell where the password is).
func reason(pce *pgconn.ParseConfigError) string {
	c := *pce
	c.ConnString = ""
	return strings.TrimPrefix(c.Error(), "cannot parse ``: ")
}

// ambiguousUserinfo reports whether url holds an @ after another, or
// after the /, ? or # that ends the part after its "//": then the parser
// may have read some of a password as the host, port, path or query,
// which its errors quote.
func ambiguousUserinfo(url string) bool {
	_, rest, ok := strings.Cut(url, "//")
	if !ok {
		return false
	}
	if strings.Count(rest, "@") > 1 {
		return true
	}
	end := strings.IndexAny(rest, "/?#")
	return end >= 0 && strings.Contains(rest[end:], "@")
}
