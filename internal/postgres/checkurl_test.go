package postgres

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckURL: a URL that does not parse is refused, saying why, without
// quoting the URL or its password.
func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url, want string
		file      bool
	}{
		{"postgres://u:hunter22@db:notaport/keyward", "the URL does not parse: invalid port", false},
		{"postgres://%zz", `the URL does not parse: failed to parse as URL (invalid percent-encoded token: "%zz")`, false},
		{"postgres://u:hun%zzter22@db/keyward", "the URL does not parse: failed to parse as URL (invalid percent-encoded token in password)", false},
		{"postgres://u:hunter22@db/keyward?sslmode=bogus", "the URL does not parse: failed to configure TLS (sslmode is invalid)", false},
		{"postgres://u:hunter22@db/keyward?connect_timeout=soon", `the URL does not parse: invalid connect_timeout (strconv.ParseInt: parsing "soon": invalid syntax)`, false},
		{"postgres://u:hunter22@db/keyward?pool_max_conns=many", `the URL does not parse: cannot parse pool_max_conns (strconv.ParseInt: parsing "many": invalid syntax)`, false},
		// Where the password ends is unclear: no value is quoted.
		{"postgres://u:hun/?connect_timeout=ter22@db/keyward", "the URL does not parse: its user name or password holds a character to percent-encode", false},
		{"postgres://u:h@un%zzter22@db/keyward", "the URL does not parse: its user name or password holds a character to percent-encode", false},
		{"postgres://u:hunter22@db/keyward?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "failed to configure TLS (unable to read CA file: open /nonexistent/ca.pem: no such file or directory)", true},
	} {
		err := CheckURL(tc.url)
		if err == nil {
			t.Errorf("%s: accepted", tc.url)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %q, want it to start with %q", tc.url, err, tc.want)
		}
		for _, pw := range []string{"hunter22", "ter22", "postgres://"} {
			if strings.Contains(err.Error(), pw) {
				t.Errorf("%s: %q shows %q", tc.url, err, pw)
			}
		}
		var fe *URLFileError
		if errors.As(err, &fe) != tc.file {
			t.Errorf("%s: a URLFileError: %v, want %v", tc.url, !tc.file, tc.file)
		}
	}
	for _, ok := range []string{"postgres://u:hunter22@db/keyward", "postgresql://db1:5432,db2:5433/keyward?sslmode=disable", "postgres://u:p%40ss@db/keyward"} {
		if err := CheckURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// TestCheckURLPasswordElsewhere: a URL that parses, but only by taking
// some of an unencoded password for the host, port or database name
// (which connection errors quote), is refused without quoting it; so is
// one whose query error could quote what follows an & in a password.
func TestCheckURLPasswordElsewhere(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		// An @ in the password: libpq ends the user info at the first @.
		{"postgres://u:h@unter22@db/keyward", "the URL is ambiguous: an @ follows the one that ends its user name and password"},
		{"postgres://u:h@unter22@db", "the URL is ambiguous: an @ follows the one that ends its user name and password"},
		{"postgresql://u:h@unter22@db1,db2/keyward?sslmode=disable", "the URL is ambiguous: an @ follows the one that ends its user name and password"},
		// A / in the password: there is no user info, the rest is the database.
		{"postgres://u:/hunter22@db/keyward", "the URL is ambiguous: an @ follows the one that ends its user name and password"},
		{"postgres://u:12/hunter22@db/keyward", "the URL is ambiguous: an @ follows the one that ends its user name and password"},
		// An & in a password in the query.
		{"postgres://u@db/keyward?password=hun&ter22", "the URL does not parse: a password in its query may hold a character to percent-encode"},
		{"postgres://u@db/keyward?password=hun&connect_timeout=ter22", "the URL does not parse: a password in its query may hold a character to percent-encode"},
		{"postgres://u@db/keyward?sslpassword=hun&ter22", "the URL does not parse: a password in its query may hold a character to percent-encode"},
		{"postgres://u@db/keyward?pass%77ord=hun&ter22", "the URL does not parse: a password in its query may hold a character to percent-encode"},
	} {
		err := CheckURL(tc.url)
		if err == nil {
			t.Errorf("%s: accepted", tc.url)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %q, want it to start with %q", tc.url, err, tc.want)
		}
		for _, pw := range []string{"unter22", "ter22", "db", "postgres://"} {
			if strings.Contains(err.Error(), pw) {
				t.Errorf("%s: %q shows %q", tc.url, err, pw)
			}
		}
	}
	// What is unambiguous stays accepted: an @ or / encoded, an @ in a
	// query value, a ? or # in a password (libpq ends the user info at
	// the first @ or /), a password in the query followed by no other.
	for _, ok := range []string{
		"postgres://u:h%40unter22@db/keyward", "postgres://u:h%2Funter22@db/keyward",
		"postgres://u:hunter22@db/keyward?application_name=me@host", "postgres://u:hun?ter22@db/keyward",
		"postgres://u:hun#ter22@db/keyward", "postgres://db/keyward?sslmode=disable&password=hunter22",
		"postgres://u:hunter22@db/my%40db",
	} {
		if err := CheckURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	// Where a password in the query may run on, no reason is said,
	// whichever it is: it may quote what follows the &.
	if err := CheckURL("postgres://u@db:notaport/keyward?password=hun&ter22=1"); err == nil || err.Error() != "the URL does not parse: a password in its query may hold a character to percent-encode (write & as %26, = as %3D, % as %25)" {
		t.Errorf("%v", err)
	}
}

// TestQueryPasswordRunOnRefused: a password in the query with an
// unencoded & makes the rest of it a parameter that the server gets, and
// refuses by quoting its name or value: Open, Migrate and HasWorkspace
// (keyward gateway check) say what the server refused without that text.
func TestQueryPasswordRunOnRefused(t *testing.T) {
	base := baseURL(t)
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	for _, tc := range []struct{ query, code string }{
		{"password=pw&hunter22=x", "42704"},
		{"password=pw&statement_timeout=hunter22", "22023"},
	} {
		u := base + sep + tc.query
		if err := CheckURL(u); err != nil {
			t.Fatalf("CheckURL(%s) = %v", tc.query, err)
		}
		want := "postgres: the server refused a parameter in the URL's query (SQLSTATE " + tc.code +
			"); a password in the query that holds an & must write it as %26"
		db, err := Open(t.Context(), u)
		if err == nil {
			db.Close()
		}
		if err == nil || err.Error() != want {
			t.Errorf("Open(%s) = %v, want %q", tc.query, err, want)
		}
		if _, err := Migrate(t.Context(), u); err == nil || err.Error() != want {
			t.Errorf("Migrate(%s) = %v, want %q", tc.query, err, want)
		}
		if _, err := HasWorkspace(t.Context(), u, "default"); err == nil || err.Error() != want {
			t.Errorf("HasWorkspace(%s) = %v, want %q", tc.query, err, want)
		}
	}
}
