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
