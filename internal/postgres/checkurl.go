package postgres

import (
	"errors"
	"io/fs"
	neturl "net/url"
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
// where the password ends unclear, or a password in the query may run
// on past an &. A URL that parses only by taking what follows an
// unencoded @ or / of a password for the host or database name (which
// connection errors quote) is refused too. A file the URL names that
// cannot be read is a *URLFileError.
func CheckURL(url string) error {
	_, err := poolConfig(url)
	if err == nil {
		if rest, _ := splitUserinfo(url); strings.Contains(rest, "@") {
			return errors.New("the URL is ambiguous: an @ follows the one that ends its user name and password " +
				"(write @ as %40 and / as %2F in a user name, password or database name)")
		}
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
	if queryPasswordRunsOn(url) {
		return errors.New("the URL does not parse: a password in its query may hold a character to percent-encode " +
			"(write & as %26, = as %3D, % as %25)")
	}
	return errors.New("the URL does not parse: " + reason(pce))
}

// splitUserinfo splits url after its scheme as libpq (and pgx) do: the
// user info ends at the first @, unless a / comes first (then there is
// none). rest is the host list, ports and database name that follow it,
// query is what follows their ?.
func splitUserinfo(url string) (rest, query string) {
	_, p, _ := strings.Cut(url, "://")
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		p = p[i+1:]
	}
	rest, query, _ = strings.Cut(p, "?")
	return rest, query
}

// queryPasswordRunsOn reports whether url's query has a password or
// sslpassword that another parameter follows: an & in the password would
// have made the rest of it that parameter, which parse errors quote.
func queryPasswordRunsOn(url string) bool {
	_, query := splitUserinfo(url)
	pairs := strings.Split(query, "&")
	for _, pair := range pairs[:len(pairs)-1] {
		key, _, _ := strings.Cut(pair, "=")
		if k, err := neturl.PathUnescape(key); err == nil {
			key = k
		}
		key = strings.TrimSpace(key)
		if strings.EqualFold(key, "password") || strings.EqualFold(key, "sslpassword") {
			return true
		}
	}
	return false
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
