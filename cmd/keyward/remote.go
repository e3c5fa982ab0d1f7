package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/keyward/keyward/client"
)

// defaultServer is the server the remote commands talk to by default: the
// default address of keyward serve.
const defaultServer = "http://127.0.0.1:8080"

// Output formats.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// remote holds the flags of every command that talks to a server.
type remote struct {
	server string
	output string
}

// addRemoteFlags defines --server and --output on fs and documents the
// credential variables.
func addRemoteFlags(fs *flagSet) *remote {
	r := &remote{}
	fs.String(&r.server, "server", "KEYWARD_SERVER", defaultServer, "`URL` of the keyward server")
	fs.Check(func() error {
		// Before any credential is looked for: a usage error, named.
		u, err := url.Parse(r.server)
		if err != nil {
			// Not repeated: it may hold a password, unmasked since it
			// does not parse.
			return fmt.Errorf("--server (KEYWARD_SERVER) must be an http:// or https:// URL such as %s; the value given does not parse as a URL", defaultServer)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--server (KEYWARD_SERVER) must be an http:// or https:// URL such as %s, not %q", defaultServer, u.Redacted())
		}
		return nil
	})
	addOutputFlag(fs, &r.output)
	fs.Check(func() error {
		// Both set is a usage error, as for serve's variables; the
		// token itself is read once the command line holds (client).
		if fs.e.getenv("KEYWARD_TOKEN") != "" && fs.e.getenv("KEYWARD_TOKEN_FILE") != "" {
			return &bothSetError{"KEYWARD_TOKEN"}
		}
		return nil
	})
	fs.Env("KEYWARD_TOKEN", "management token to authenticate with (never a flag: it would show in ps and shell history)")
	fs.Env("KEYWARD_TOKEN_FILE", "file holding the management token, instead of KEYWARD_TOKEN")
	return r
}

// addOutputFlag defines --output (table or json) on fs.
func addOutputFlag(fs *flagSet, p *string) {
	fs.String(p, "output", "KEYWARD_OUTPUT", outputTable, "output `FORMAT`: table for people, json for scripts")
	fs.Check(func() error {
		return choose("--output", p, outputTable, outputJSON)
	})
}

func (r *remote) json() bool { return r.output == outputJSON }

// client returns a client for r.server with the management token from
// KEYWARD_TOKEN or KEYWARD_TOKEN_FILE.
func (r *remote) client(e *env) (*client.Client, error) {
	token, err := e.secretEnv("KEYWARD_TOKEN")
	if err != nil {
		return nil, err
	}
	// As from KEYWARD_TOKEN_FILE: white space at the ends (a pasted line)
	// is no part of a token.
	token = strings.TrimSpace(token)
	e.addSecret(token)
	if token == "" {
		return nil, errors.New("no credentials: set KEYWARD_TOKEN (or KEYWARD_TOKEN_FILE) to a management token")
	}
	c, err := client.New(r.server, token, client.WithUserAgent("keyward-cli/"+versionString()))
	if err == nil && plainRemote(r.server) {
		fmt.Fprintf(e.stderr, "keyward: warning: %s is plain HTTP to another host: the management token crosses the network unencrypted; use https://\n", r.server)
	}
	return c, err
}

// plainRemote reports whether server is an http:// URL whose host is not
// this machine (a loopback address or localhost).
func plainRemote(server string) bool {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.IsLoopback()
}

// apiError adds a hint to the errors a person can fix at once.
func apiError(err error) error {
	switch {
	case client.IsUnauthorized(err):
		return fmt.Errorf("%w; check KEYWARD_TOKEN", err)
	case client.IsForbidden(err):
		return fmt.Errorf("%w; the management token lacks a scope", err)
	}
	return err
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// clean makes text from the server safe for a terminal table: control
// characters (tabs, escapes) become '?', and an empty value becomes "-".
func clean(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}

// fmtTime formats an optional time in UTC, or none when it is absent.
func fmtTime(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtDuration formats d without zero trailing units: "1m", "24h", "1h30m".
func fmtDuration(d time.Duration) string { return client.Duration(d).String() }

func fmtList(items []string) string {
	return strings.Join(items, ",")
}

// fmtMetadata formats metadata as compact JSON, or "" when it is absent.
func fmtMetadata(m map[string]any) string {
	if m == nil {
		return ""
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "?"
	}
	return string(b)
}
