package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewFromEnv(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name              string
		server, tok, file string
		wantBase          string
		wantErr           string
	}{
		{name: "OKDefaults", tok: testToken, wantBase: "http://127.0.0.1:8080"},
		{name: "OKServer", server: "https://keyward.example.com/api/", tok: testToken, wantBase: "https://keyward.example.com/api"},
		{name: "OKTokenTrimmed", tok: " " + testToken + "\n", wantBase: "http://127.0.0.1:8080"},
		{name: "OKTokenFile", file: tokenFile, wantBase: "http://127.0.0.1:8080"},
		{name: "ErrNoToken", wantErr: "no credentials"},
		{name: "ErrBoth", tok: testToken, file: tokenFile, wantErr: "only one of KEYWARD_TOKEN and KEYWARD_TOKEN_FILE"},
		{name: "ErrNoFile", file: filepath.Join(dir, "missing"), wantErr: "reading KEYWARD_TOKEN_FILE"},
		{name: "ErrEmptyFile", file: emptyFile, wantErr: "empty file"},
		{name: "ErrServer", server: "ftp://example.com", tok: testToken, wantErr: "must start with http"},
		{name: "ErrTokenControl", tok: testToken + " x", wantErr: "spaces or control characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KEYWARD_SERVER", tc.server)
			t.Setenv("KEYWARD_TOKEN", tc.tok)
			t.Setenv("KEYWARD_TOKEN_FILE", tc.file)
			c, err := NewFromEnv()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), testToken) {
					t.Errorf("error leaks the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.BaseURL() != tc.wantBase || c.token != testToken {
				t.Errorf("base = %q, token ok = %v", c.BaseURL(), c.token == testToken)
			}
		})
	}
}
