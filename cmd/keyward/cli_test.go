package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
)

const mgmtToken = "kw_MGMTmgmtMGMTmgmtMGMTmgmtMGMTmgmt0AbCdE"

// fakeServer implements the part of docs/api.md that the CLI uses, in
// memory, and records the bodies it receives.
type fakeServer struct {
	t        *testing.T
	mu       sync.Mutex
	tokens   map[string]map[string]any // id → token object
	secrets  map[string]string         // secret → id
	next     int
	pageSize int
	bodies   map[string][]byte // "METHOD /path" → last body
	queries  []string          // raw queries of GET /v1/tokens
	echoAuth bool              // answer 401 with the credential in the detail, as a broken server might
	srv      *httptest.Server
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, tokens: map[string]map[string]any{}, secrets: map[string]string{}, pageSize: 50, bodies: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens", f.handleCreate)
	mux.HandleFunc("GET /v1/tokens", f.handleList)
	mux.HandleFunc("GET /v1/tokens/{id}", f.handleGet)
	mux.HandleFunc("PATCH /v1/tokens/{id}", f.handlePatch)
	mux.HandleFunc("POST /v1/tokens/{id}/{action}", f.handleAction)
	mux.HandleFunc("POST /v1/verify", f.handleVerify)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req_test")
		if r.Header.Get("Authorization") != "Bearer "+mgmtToken {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
			detail := "invalid credential"
			f.mu.Lock()
			echo := f.echoAuth
			f.mu.Unlock()
			if echo {
				detail = "invalid credential " + r.Header.Get("Authorization")
			}
			problem(w, 401, "unauthorized", detail)
			return
		}
		if ct := r.Header.Get("Content-Type"); r.Method != "GET" && ct != "application/json" {
			problem(w, 415, "invalid", "want JSON, got "+ct)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		f.bodies[r.Method+" "+r.URL.Path] = b
		r.Body = io.NopCloser(bytes.NewReader(b))
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func problem(w http.ResponseWriter, status int, code, detail string, fields ...map[string]string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	p := map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "code": code, "detail": detail, "request_id": "req_test"}
	if len(fields) > 0 {
		p["errors"] = fields
	}
	json.NewEncoder(w).Encode(p)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeServer) body(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.bodies[key])
}

// add stores a token and returns its id and secret.
func (f *fakeServer) add(fields map[string]any) (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLocked(fields)
}

// tokenOf returns the id of the token with the given secret, or "".
func (f *fakeServer) tokenOf(secret string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.secrets[secret]
}

// lastQueries returns the raw queries of the list requests and forgets them.
func (f *fakeServer) lastQueries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.queries
	f.queries = nil
	return q
}

func (f *fakeServer) addLocked(fields map[string]any) (string, string) {
	f.next++
	id := fmt.Sprintf("tok_%03d", f.next)
	secret := fmt.Sprintf("kw_SECRET%031d", f.next)
	t := map[string]any{
		"id": id, "name": "", "hint": "kw_…" + secret[len(secret)-4:], "state": "active", "scopes": []any{},
		"expires_at": nil, "allowed_cidrs": []any{}, "rate_limit": nil, "quota": nil, "subject": "", "metadata": nil,
		"created_by": "tok_root", "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:00Z",
		"rotated_at": nil, "revoked_at": nil, "revoke_reason": "", "suspended_at": nil, "suspend_reason": "",
		"last_used_at": nil, "last_used_ip": "",
	}
	for k, v := range fields {
		t[k] = v
	}
	f.tokens[id] = t
	f.secrets[secret] = id
	return id, secret
}

func (f *fakeServer) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problem(w, 400, "invalid", "body is not JSON")
		return
	}
	if name, _ := req["name"].(string); name == "" {
		problem(w, 400, "invalid", "name is required", map[string]string{"pointer": "/name", "detail": "name is required"})
		return
	}
	if in, ok := req["expires_in"].(string); ok {
		d, _ := time.ParseDuration(in)
		req["expires_at"] = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).Add(d).Format(time.RFC3339)
		delete(req, "expires_in")
	}
	id, secret := f.addLocked(req)
	out := map[string]any{"token": secret}
	for k, v := range f.tokens[id] {
		out[k] = v
	}
	reply(w, 201, out)
}

func (f *fakeServer) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.queries = append(f.queries, r.URL.RawQuery)
	limit := f.pageSize
	if l := q.Get("limit"); l != "" {
		limit, _ = strconv.Atoi(l)
	}
	var ids []string
	for id, t := range f.tokens {
		if s := q.Get("state"); s != "" && t["state"] != s {
			continue
		}
		if n := q.Get("name"); n != "" && !strings.Contains(strings.ToLower(t["name"].(string)), strings.ToLower(n)) {
			continue
		}
		if id > q.Get("cursor") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := map[string]any{}
	items := []any{}
	for i, id := range ids {
		if i == limit {
			out["next_cursor"] = ids[i-1]
			break
		}
		items = append(items, f.tokens[id])
	}
	out["items"] = items
	reply(w, 200, out)
}

func (f *fakeServer) token(w http.ResponseWriter, r *http.Request) map[string]any {
	t := f.tokens[r.PathValue("id")]
	if t == nil {
		problem(w, 404, "not_found", "token "+r.PathValue("id")+" not found")
	}
	return t
}

func (f *fakeServer) handleGet(w http.ResponseWriter, r *http.Request) {
	if t := f.token(w, r); t != nil {
		reply(w, 200, t)
	}
}

func (f *fakeServer) handlePatch(w http.ResponseWriter, r *http.Request) {
	t := f.token(w, r)
	if t == nil {
		return
	}
	var p map[string]any
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		problem(w, 400, "invalid", "body is not JSON")
		return
	}
	for k, v := range p {
		t[k] = v
	}
	reply(w, 200, t)
}

func (f *fakeServer) handleAction(w http.ResponseWriter, r *http.Request) {
	t := f.token(w, r)
	if t == nil {
		return
	}
	switch r.PathValue("action") {
	case "rotate":
		f.next++
		secret := fmt.Sprintf("kw_ROTATED%030d", f.next)
		f.secrets[secret] = t["id"].(string)
		out := map[string]any{"token": secret}
		for k, v := range t {
			out[k] = v
		}
		reply(w, 200, out)
		return
	case "revoke":
		t["state"] = "revoked"
	case "suspend":
		t["state"] = "suspended"
	case "resume":
		t["state"] = "active"
	default:
		http.NotFound(w, r)
		return
	}
	reply(w, 200, t)
}

func (f *fakeServer) handleVerify(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token  string   `json:"token"`
		Scopes []string `json:"scopes"`
		IP     string   `json:"ip"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	id, ok := f.secrets[req.Token]
	if !ok {
		reply(w, 200, map[string]any{"valid": false, "code": "NOT_FOUND"})
		return
	}
	t := f.tokens[id]
	code := "VALID"
	switch t["state"] {
	case "revoked":
		code = "REVOKED"
	case "suspended":
		code = "SUSPENDED"
	}
	reply(w, 200, map[string]any{"valid": code == "VALID", "code": code, "token_id": id, "name": t["name"], "subject": t["subject"],
		"scopes": t["scopes"], "metadata": t["metadata"], "expires_at": t["expires_at"],
		"rate_limit": map[string]any{"limit": 100, "remaining": 99, "reset": 60}})
}

// result is the outcome of one run.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the keyward command line args against f (nil: no server) with
// the environment vars (KEYWARD_SERVER and KEYWARD_TOKEN preset, "" unsets)
// and standard input stdin.
func cli(t *testing.T, f *fakeServer, vars map[string]string, stdin string, args ...string) result {
	t.Helper()
	envs := map[string]string{"KEYWARD_TOKEN": mgmtToken}
	if f != nil {
		envs["KEYWARD_SERVER"] = f.srv.URL
	}
	for k, v := range vars {
		envs[k] = v
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr, func(k string) string { return envs[k] })
	res := result{code, stdout.String(), stderr.String()}
	for _, s := range []string{mgmtToken} {
		if strings.Contains(res.stderr, s) {
			t.Errorf("keyward %s: stderr shows the management token: %q", strings.Join(args, " "), res.stderr)
		}
	}
	return res
}

// want checks the exit status and, for a failure, that stderr is one
// "keyward: " line (for a usage error, that its last line is).
func (r result) want(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit status %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	switch {
	case code == 1 && (len(lines) != 1 || !strings.HasPrefix(r.stderr, "keyward: ")):
		t.Errorf("stderr is not one 'keyward: ' line: %q", r.stderr)
	case code == 2 && !strings.HasPrefix(lines[len(lines)-1], "keyward: "):
		t.Errorf("stderr does not end with a 'keyward: ' line: %q", r.stderr)
	}
}

// allCommands lists every command path that has help.
var allCommands = []string{
	"init", "serve", "migrate", "backup", "restore", "verify", "version", "help", "audit verify", "audit export", "user create",
	"token create", "token list", "token show", "token update", "token rotate",
	"token revoke", "token suspend", "token resume",
}

func TestHelp(t *testing.T) {
	for _, cmd := range allCommands {
		t.Run(strings.ReplaceAll(cmd, " ", "_"), func(t *testing.T) {
			args := append(strings.Fields(cmd), "--help")
			r := cli(t, nil, nil, "", args...)
			r.want(t, 0)
			if !strings.HasPrefix(r.stdout, "Usage: keyward "+cmd+" ") {
				t.Errorf("help does not start with its usage:\n%s", r.stdout)
			}
			if !strings.Contains(r.stdout, "\nExamples:\n  keyward ") && !strings.Contains(r.stdout, "\nExamples:\n  echo") {
				t.Errorf("help has no example:\n%s", r.stdout)
			}
			if r.stderr != "" {
				t.Errorf("stderr = %q", r.stderr)
			}
			if strings.HasPrefix(cmd, "token") || cmd == "verify" {
				for _, s := range []string{"--server URL", "env KEYWARD_SERVER", "default http://127.0.0.1:8080", "env KEYWARD_OUTPUT", "KEYWARD_TOKEN", "KEYWARD_TOKEN_FILE"} {
					if !strings.Contains(r.stdout, s) {
						t.Errorf("help lacks %q:\n%s", s, r.stdout)
					}
				}
			}
			// Short -h and "keyward help CMD" print the same.
			if h := cli(t, nil, nil, "", append(strings.Fields(cmd), "-h")...); h.stdout != r.stdout || h.code != 0 {
				t.Errorf("-h differs from --help")
			}
			if h := cli(t, nil, nil, "", append([]string{"help"}, strings.Fields(cmd)...)...); h.stdout != r.stdout || h.code != 0 {
				t.Errorf("keyward help %s differs from --help:\n%s", cmd, h.stdout)
			}
		})
	}
	t.Run("Top", func(t *testing.T) {
		for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
			r := cli(t, nil, nil, "", args...)
			r.want(t, 0)
			for _, c := range []string{"init", "serve", "token", "verify", "version", "help"} {
				if !strings.Contains(r.stdout, "\n  "+c+" ") {
					t.Errorf("keyward %v lacks command %s:\n%s", args, c, r.stdout)
				}
			}
			if !strings.Contains(r.stdout, "Examples:") {
				t.Errorf("no examples")
			}
		}
	})
	t.Run("TokenGroup", func(t *testing.T) {
		r := cli(t, nil, nil, "", "token", "--help")
		r.want(t, 0)
		for _, c := range []string{"create", "list", "show", "update", "rotate", "revoke", "suspend", "resume"} {
			if !strings.Contains(r.stdout, "\n  "+c+" ") {
				t.Errorf("token help lacks %s", c)
			}
		}
	})
	t.Run("ServeAndInitFlags", func(t *testing.T) {
		r := cli(t, nil, nil, "", "serve", "--help")
		for _, s := range []string{"--addr ADDRESS", "env KEYWARD_ADDR, default 127.0.0.1:8080", "env KEYWARD_DATA_DIR, default ./keyward-data",
			"env KEYWARD_DATABASE_URL", "env KEYWARD_PUBLIC_URL, default http://localhost:8080", "env KEYWARD_TLS_CERT",
			"env KEYWARD_TLS_KEY", "env KEYWARD_LOG_FORMAT", "env KEYWARD_LOG_LEVEL", "KEYWARD_SECRET_FILE"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("serve help lacks %q", s)
			}
		}
		r = cli(t, nil, nil, "", "init", "--help")
		for _, s := range []string{"--data-dir", "--database-url", "--output", "--new-root-token"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("init help lacks %q", s)
			}
		}
	})
	t.Run("QuotaPeriods", func(t *testing.T) {
		// --quota takes day, month or none: the help must name "none",
		// which is how "in total" is written (5/total is refused).
		for _, cmd := range []string{"create", "update"} {
			r := cli(t, nil, nil, "", "token", cmd, "--help")
			r.want(t, 0)
			if want := "as N/PERIOD with PERIOD day, month or none (in total), such as 10000/month"; !strings.Contains(r.stdout, want) {
				t.Errorf("token %s help lacks %q:\n%s", cmd, want, r.stdout)
			}
		}
	})
	t.Run("NoEnvValueInHelp", func(t *testing.T) {
		r := cli(t, nil, map[string]string{"KEYWARD_DATABASE_URL": "postgres://u:hunter2@db/k"}, "", "serve", "--help")
		if strings.Contains(r.stdout, "hunter2") {
			t.Errorf("help shows an environment value:\n%s", r.stdout)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	f := newFakeServer(t)
	for _, tc := range []struct {
		name string
		args []string
		vars map[string]string
		want string
	}{
		{"NoCommand", nil, nil, "missing command"},
		{"UnknownCommand", []string{"bogus"}, nil, `unknown command "bogus"`},
		{"UnknownTokenCommand", []string{"token", "bogus"}, nil, `token: unknown command "bogus"`},
		{"NoTokenCommand", []string{"token"}, nil, "token: missing command"},
		{"UnknownFlag", []string{"token", "list", "--bogus"}, nil, "token list: unknown flag --bogus"},
		{"UnknownShortFlag", []string{"token", "list", "-x"}, nil, "token list: unknown flag --x"},
		{"FlagWithoutValue", []string{"token", "create", "--name"}, nil, "flag --name needs a value"},
		{"UnknownTopFlag", []string{"--bogus"}, nil, "unknown flag --bogus"},
		{"HelpUnknown", []string{"help", "bogus"}, nil, `unknown command "bogus"`},
		{"MissingName", []string{"token", "create", "--scope", "a:b"}, nil, "--name is required"},
		{"MissingID", []string{"token", "show"}, nil, "missing token ID"},
		{"SecretForID", []string{"token", "revoke", "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"}, nil, "kw_[redacted] is a token's secret, not its ID (tok_...), and was not sent"},
		{"ExtraArg", []string{"token", "show", "tok_1", "tok_2"}, nil, `unexpected argument "tok_2"`},
		{"ListArg", []string{"token", "list", "x"}, nil, `unexpected argument "x"`},
		{"InitTwoStores", []string{"init", "--data-dir", "d", "--database-url", "postgres://x"}, nil, "give --data-dir or --database-url"},
		{"MigrateTwoStores", []string{"migrate", "--database-url", "postgres://x", "--data-dir", "d"}, nil, "give --data-dir or --database-url"},
		{"ServeBothStoresInEnv", []string{"serve"}, map[string]string{"KEYWARD_DATA_DIR": "d", "KEYWARD_DATABASE_URL": "postgres://x"}, "KEYWARD_DATA_DIR and KEYWARD_DATABASE_URL are both set"},
		{"MigrateDataDirWithURLInEnv", []string{"migrate", "--data-dir", "d"}, map[string]string{"KEYWARD_DATABASE_URL": "postgres://x"}, "give --data-dir or --database-url"},
		{"URLFileAndURL", []string{"migrate"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "f", "KEYWARD_DATABASE_URL": "postgres://x"}, "both set: give the URL once"},
		{"URLFileAndDataDir", []string{"migrate", "--data-dir", "d"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "f"}, "give --data-dir or a database URL"},
		{"URLFileAndDataDirEnv", []string{"serve"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "f", "KEYWARD_DATA_DIR": "d"}, "KEYWARD_DATA_DIR and KEYWARD_DATABASE_URL_FILE are both set"},
		{"EmptyDatabaseURL", []string{"migrate", "--database-url", ""}, nil, "--database-url is empty"},
		{"ServerNoScheme", []string{"token", "list"}, map[string]string{"KEYWARD_SERVER": "127.0.0.1:8080"}, `--server (KEYWARD_SERVER) must be an http:// or https:// URL such as http://127.0.0.1:8080; the value given does not parse`},
		{"ServerHostOnly", []string{"token", "list"}, map[string]string{"KEYWARD_SERVER": "keyward.example"}, `--server (KEYWARD_SERVER) must be an http:// or https:// URL such as http://127.0.0.1:8080, not "keyward.example"`},
		{"ServerOtherScheme", []string{"verify", "--server", "ftp://u:secretpw@h"}, nil, `not "ftp://u:xxxxx@h"`},
		{"ServerUnparsable", []string{"token", "list", "--server", "http://admin:s3cr%zzetpw@h:8080"}, nil, "the value given does not parse as a URL"},
		{"DurationForm", []string{"serve", "--flush-interval", "5"}, nil, `invalid value "5" for flag --flush-interval: want a duration such as 30s, 5m or 24h`},
		{"NumberForm", []string{"token", "list", "--limit", "abc"}, nil, `invalid value "abc" for flag --limit: want a whole number`},
		{"EmptyDatabaseURLWithFile", []string{"migrate", "--database-url", ""}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "f"}, "--database-url is empty"},
		{"EmptyDataDir", []string{"init", "--data-dir", " "}, nil, "--data-dir is empty"},
		{"RotateFractionalGrace", []string{"token", "rotate", "tok_1", "--grace", "1.5s"}, nil, "--grace must be whole seconds"},
		{"RotateGraceTooLong", []string{"token", "rotate", "tok_1", "--grace", "721h"}, nil, "--grace must be at most 720h"},
		{"ListLimitZero", []string{"token", "list", "--limit", "0"}, nil, "--limit must be from 1 to 500"},
		{"ListLimitNegative", []string{"token", "list", "--limit", "-1"}, nil, "--limit must be from 1 to 500"},
		{"ListLimitTooLarge", []string{"token", "list", "--limit", "501"}, nil, "--limit must be from 1 to 500"},
		{"BadOutput", []string{"token", "list", "--output", "yaml"}, nil, `--output must be table or json, not "yaml"`},
		{"BadOutputEnv", []string{"token", "list"}, map[string]string{"KEYWARD_OUTPUT": "xml"}, `--output must be table or json`},
		{"BadRateLimit", []string{"token", "create", "--name", "n", "--rate-limit", "100"}, nil, "--rate-limit"},
		{"BadRateWindow", []string{"token", "create", "--name", "n", "--rate-limit", "100/forever"}, nil, "the window must be a duration"},
		{"BadQuota", []string{"token", "create", "--name", "n", "--quota", "5/week"}, nil, "the period must be day, month or none"},
		{"BadMetadata", []string{"token", "create", "--name", "n", "--metadata", "[1]"}, nil, "--metadata must be a JSON object"},
		{"BadExpiresAt", []string{"token", "create", "--name", "n", "--expires-at", "tomorrow"}, nil, "RFC 3339"},
		{"BadExpiresIn", []string{"token", "create", "--name", "n", "--expires-in", "30d"}, nil, `invalid value "30d" for flag --expires-in`},
		{"BadLimit", []string{"token", "list", "--limit", "ten"}, nil, `invalid value "ten" for flag --limit`},
		{"BothExpiries", []string{"token", "create", "--name", "n", "--expires-in", "1h", "--expires-at", "2030-01-01T00:00:00Z"}, nil, "not both"},
		{"NothingToUpdate", []string{"token", "update", "tok_1"}, nil, "nothing to update"},
		{"UpdateConflict", []string{"token", "update", "tok_1", "--quota", "5/day", "--clear-quota"}, nil, "give only one of --quota, --clear-quota"},
		{"UpdateExpiryConflict", []string{"token", "update", "tok_1", "--expires-in", "1h", "--clear-expiry"}, nil, "give only one of"},
		{"NegativeGrace", []string{"token", "rotate", "tok_1", "--grace", "-1h"}, nil, "--grace must not be negative"},
		// The alias is named as given, and not taken with --grace.
		{"NegativeGracePeriod", []string{"token", "rotate", "tok_1", "--grace-period", "-1h"}, nil, "keyward: token rotate: --grace-period must not be negative"},
		{"RotateFractionalGracePeriod", []string{"token", "rotate", "tok_1", "--grace-period=1.5s"}, nil, "keyward: token rotate: --grace-period must be whole seconds"},
		{"RotateGraceTwice", []string{"token", "rotate", "tok_1", "--grace", "1h", "--grace-period", "2h"}, nil, "give --grace or --grace-period, not both"},
		{"VerifyArg", []string{"verify", "kw_secret_on_the_command_line"}, nil, "unexpected argument"},
		// A secret where it does not belong is not echoed back.
		{"VerifySecretArg", []string{"verify", "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"}, nil, `unexpected argument "kw_[redacted]"`},
		{"TopSecretArg", []string{"kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"}, nil, `unknown command "kw_[redacted]"`},
		{"ListSecretArg", []string{"token", "list", "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"}, nil, `unexpected argument "kw_[redacted]"`},
		{"SecretAsRateLimit", []string{"token", "create", "--name", "n", "--rate-limit", "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"}, nil, "kw_[redacted]"},
		{"ServeArg", []string{"serve", "now"}, nil, "unexpected argument"},
		{"ServePublicURL", []string{"serve", "--public-url", "localhost:8080"}, nil, "--public-url must be an http:// or https:// URL"},
		{"BoolValue", []string{"init", "--new-root-token=maybe"}, nil, `invalid boolean value "maybe" for --new-root-token: parse error (want true or false)`},
		{"ServeRedisFallback", []string{"serve", "--redis-fallback", "open"}, nil, "--redis-fallback must be closed or local"},
		{"ServeShutdownTimeout", []string{"serve", "--shutdown-timeout", "-1s"}, nil, "--shutdown-timeout must be positive"},
		{"ServeTrustEveryone", []string{"serve", "--trusted-proxies", "10.0.0.0/8,::/0"}, nil, "--trusted-proxies: ::/0 trusts every address"},
		// Zero would mean no bound at all, not "fail closed at once".
		{"ServeStaleGraceZero", []string{"serve", "--stale-grace", "0"}, nil, "--stale-grace must be at least 1s, not 0s"},
		{"ServeEnvDuration", []string{"serve"}, map[string]string{"KEYWARD_STALE_GRACE": "5 minutes"}, `KEYWARD_STALE_GRACE="5 minutes": want a duration`},
		// What the server would refuse as /from, said of the flags.
		{"UsageSinceTooLong", []string{"token", "usage", "tok_01jd8s5r4mvk3bq7h1n2x6w9cz", "--since", "100000h", "--granularity", "minute"}, nil,
			"--since 100000h holds 6000000 minute buckets, more than 10000: give a shorter --since or a coarser --granularity"},
		// A check of a value from the environment names the variable.
		{"ServeEnvChecked", []string{"serve"}, map[string]string{"KEYWARD_USAGE_EVENT_BUFFER": "0"}, "--usage-event-buffer must be at least 1 (--usage-event-buffer is set by KEYWARD_USAGE_EVENT_BUFFER)"},
		{"ServeFailureEventsNegative", []string{"serve", "--usage-failure-events", "-1"}, nil, "--usage-failure-events must be 0 (keep every failure) or more"},
		{"ServeEnvOverridden", []string{"serve", "--stale-grace", "0"}, map[string]string{"KEYWARD_STALE_GRACE": "5m"}, "--stale-grace must be at least 1s, not 0s: cached tokens keep verifying that long while the store is unreachable, then fail closed (see 'keyward serve --help')"},
		{"ServeEnvNamedAlready", []string{"serve"}, map[string]string{"KEYWARD_REDIS_URL": "http://x"}, "--redis-url (KEYWARD_REDIS_URL) must be a redis:// or rediss:// URL (see 'keyward serve --help')"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(t, f, tc.vars, "", tc.args...)
			r.want(t, 2)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tc.want)
			}
			if !strings.Contains(r.stderr, "keyward: ") || !strings.Contains(r.stderr, "--help')") && !strings.Contains(r.stderr, "(see 'keyward help')") {
				t.Errorf("stderr has no pointer to the help: %q", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q", r.stdout)
			}
			if strings.Contains(r.stderr, "1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr") {
				t.Errorf("stderr shows a secret: %q", r.stderr)
			}
		})
	}
	if len(f.bodies) != 0 {
		t.Errorf("a usage error reached the server: %v", f.bodies)
	}
}

func TestCredentials(t *testing.T) {
	f := newFakeServer(t)
	t.Run("ErrMissing", func(t *testing.T) {
		r := cli(t, f, map[string]string{"KEYWARD_TOKEN": ""}, "", "token", "list")
		r.want(t, 1)
		if !strings.Contains(r.stderr, "KEYWARD_TOKEN") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})
	t.Run("File", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "token")
		os.WriteFile(file, []byte(mgmtToken+"\n"), 0o600)
		r := cli(t, f, map[string]string{"KEYWARD_TOKEN": "", "KEYWARD_TOKEN_FILE": file}, "", "token", "list")
		r.want(t, 0)
	})
	t.Run("VariableWithSpaces", func(t *testing.T) {
		// White space at the ends is trimmed, as from a file.
		r := cli(t, f, map[string]string{"KEYWARD_TOKEN": " " + mgmtToken + " \n"}, "", "token", "list")
		r.want(t, 0)
	})
	t.Run("ErrBoth", func(t *testing.T) {
		// A usage error, as for serve's variables set with their _FILE.
		r := cli(t, f, map[string]string{"KEYWARD_TOKEN_FILE": "/nonexistent"}, "", "token", "list")
		r.want(t, 2)
		if want := "keyward: token list: set only one of KEYWARD_TOKEN and KEYWARD_TOKEN_FILE (see 'keyward token list --help')\n"; r.stderr != want {
			t.Errorf("stderr = %q, want %q", r.stderr, want)
		}
	})
	t.Run("ErrFileMissing", func(t *testing.T) {
		r := cli(t, f, map[string]string{"KEYWARD_TOKEN": "", "KEYWARD_TOKEN_FILE": "/nonexistent/token"}, "", "token", "list")
		r.want(t, 1)
	})
	t.Run("ErrWrongToken", func(t *testing.T) {
		wrong := "kw_WRONGwrongWRONGwrongWRONGwrongWRO0AbCdE"
		f.mu.Lock()
		f.echoAuth = true
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.echoAuth = false
			f.mu.Unlock()
		}()
		r := cli(t, f, map[string]string{"KEYWARD_TOKEN": wrong}, "", "token", "list")
		r.want(t, 1)
		if strings.Contains(r.stderr, wrong) || !strings.Contains(r.stderr, "HTTP 401") || !strings.Contains(r.stderr, "check KEYWARD_TOKEN") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})
	t.Run("ErrServerDown", func(t *testing.T) {
		down := httptest.NewServer(http.NotFoundHandler())
		down.Close()
		r := cli(t, nil, map[string]string{"KEYWARD_SERVER": down.URL}, "", "token", "list")
		r.want(t, 1)
	})
	t.Run("ErrBadServerURL", func(t *testing.T) {
		// A usage error, before credentials are looked for.
		r := cli(t, nil, nil, "", "token", "list", "--server", "ftp://x")
		r.want(t, 2)
	})
}

func TestTokenCreate(t *testing.T) {
	f := newFakeServer(t)
	t.Run("Table", func(t *testing.T) {
		r := cli(t, f, nil, "", "token", "create", "--name", "ci deploy", "--scope", "orders:read", "--scope", "orders:write",
			"--expires-in", "720h", "--allow-cidr", "203.0.113.0/24", "--rate-limit", "100/1m", "--quota", "10000/month",
			"--subject", "customer-42", "--metadata", `{"team":"payments"}`)
		r.want(t, 0)
		wantBody := `{"name":"ci deploy","scopes":["orders:read","orders:write"],"expires_in":"720h","allowed_cidrs":["203.0.113.0/24"],
			"rate_limit":{"limit":100,"window":"1m"},"quota":{"limit":10000,"period":"month"},"subject":"customer-42","metadata":{"team":"payments"}}`
		if !jsonEqual(t, f.body("POST /v1/tokens"), wantBody) {
			t.Errorf("body = %s", f.body("POST /v1/tokens"))
		}
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		secret := lines[len(lines)-1]
		if f.tokenOf(secret) == "" {
			t.Errorf("the last line %q is not the secret:\n%s", secret, r.stdout)
		}
		if !strings.Contains(lines[len(lines)-2], "shown only this once") {
			t.Errorf("no warning before the secret:\n%s", r.stdout)
		}
		for _, s := range []string{"ID             tok_", "NAME           ci deploy", "STATE          active", "SCOPES         orders:read,orders:write",
			"EXPIRES        2026-12-23T10:00:00Z", "RATE LIMIT     100 per 1m", "QUOTA          10000 per month", "SUBJECT        customer-42",
			`METADATA       {"team":"payments"}`, "ALLOWED CIDRS  203.0.113.0/24", "LAST USED      never"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("output lacks %q:\n%s", s, r.stdout)
			}
		}
	})
	t.Run("JSON", func(t *testing.T) {
		r := cli(t, f, nil, "", "token", "create", "--name", "bot", "--output", "json", "--expires-at", "2030-01-02T03:04:05Z")
		r.want(t, 0)
		if !jsonEqual(t, f.body("POST /v1/tokens"), `{"name":"bot","expires_at":"2030-01-02T03:04:05Z"}`) {
			t.Errorf("body = %s", f.body("POST /v1/tokens"))
		}
		var out map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
		}
		secret, _ := out["token"].(string)
		if f.tokenOf(secret) == "" || out["name"] != "bot" || out["expires_at"] != "2030-01-02T03:04:05Z" {
			t.Errorf("output = %v", out)
		}
		for _, k := range []string{"id", "hint", "state", "scopes", "allowed_cidrs", "rate_limit", "quota", "metadata", "created_at", "last_used_at", "last_used_ip"} {
			if _, ok := out[k]; !ok {
				t.Errorf("output lacks %q", k)
			}
		}
	})
	t.Run("JSONFromEnv", func(t *testing.T) {
		r := cli(t, f, map[string]string{"KEYWARD_OUTPUT": "json"}, "", "token", "create", "--name", "x")
		r.want(t, 0)
		if !json.Valid([]byte(r.stdout)) {
			t.Errorf("stdout is not JSON: %s", r.stdout)
		}
	})
	t.Run("ErrValidation", func(t *testing.T) {
		r := cli(t, f, nil, "", "token", "create", "--name", " ")
		r.want(t, 2)
	})
}

func TestTokenList(t *testing.T) {
	f := newFakeServer(t)
	f.pageSize = 2
	last := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC).Format(time.RFC3339)
	f.add(map[string]any{"name": "alpha", "scopes": []any{"a:read", "b:write"}, "last_used_at": last})
	f.add(map[string]any{"name": "beta", "state": "revoked", "expires_at": "2027-01-01T00:00:00Z"})
	f.add(map[string]any{"name": "gamma\x1b[31m"})

	t.Run("TableAllPages", func(t *testing.T) {
		r := cli(t, f, nil, "", "token", "list")
		r.want(t, 0)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 4 {
			t.Fatalf("want a header and 3 rows:\n%s", r.stdout)
		}
		if got := strings.Fields(lines[0]); !reflect.DeepEqual(got, []string{"ID", "NAME", "HINT", "STATE", "SCOPES", "EXPIRES", "LAST", "USED"}) {
			t.Errorf("header = %q", lines[0])
		}
		if got := strings.Fields(lines[1]); !reflect.DeepEqual(got, []string{"tok_001", "alpha", "kw_…0001", "active", "a:read,b:write", "never", last}) {
			t.Errorf("row = %q", lines[1])
		}
		if got := strings.Fields(lines[2]); got[3] != "revoked" || got[5] != "2027-01-01T00:00:00Z" || got[6] != "never" {
			t.Errorf("row = %q", lines[2])
		}
		if strings.Contains(r.stdout, "\x1b") {
			t.Errorf("a control character reached the terminal")
		}
		if q := f.lastQueries(); len(q) != 2 {
			t.Errorf("queries = %v, want two pages", q)
		}
	})
	t.Run("JSONAllPages", func(t *testing.T) {
		r := cli(t, f, nil, "", "token", "list", "--output", "json", "--state", "active")
		r.want(t, 0)
		var out struct {
			Items      []map[string]any `json:"items"`
			NextCursor *string          `json:"next_cursor"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatal(err)
		}
		if len(out.Items) != 2 || out.NextCursor != nil || out.Items[0]["name"] != "alpha" {
			t.Errorf("output = %s", r.stdout)
		}
		if q := f.lastQueries(); len(q) != 1 || q[0] != "state=active" {
			t.Errorf("queries = %q", q)
		}
	})
	t.Run("OnePage", func(t *testing.T) {
		r := cli(t, f, nil, "", "token", "list", "--limit", "1", "--output", "json", "--name", "ALPHA BETA")
		r.want(t, 0)
		if q := f.lastQueries(); len(q) != 1 || q[0] != "limit=1&name=ALPHA+BETA" {
			t.Errorf("queries = %v", q)
		}
		r = cli(t, f, nil, "", "token", "list", "--limit", "1", "--output", "json")
		var out map[string]any
		json.Unmarshal([]byte(r.stdout), &out)
		if items := out["items"].([]any); len(items) != 1 || out["next_cursor"] != "tok_001" {
			t.Errorf("output = %s", r.stdout)
		}
		r = cli(t, f, nil, "", "token", "list", "--limit", "1", "--cursor", "tok_001")
		r.want(t, 0)
		if !strings.Contains(r.stdout, "beta") || strings.Contains(r.stdout, "alpha") || !strings.Contains(r.stderr, "--cursor tok_002") {
			t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
		}
	})
	t.Run("AllWithLimit", func(t *testing.T) {
		f.lastQueries()
		r := cli(t, f, nil, "", "token", "list", "--limit", "1", "--all", "--output", "json")
		r.want(t, 0)
		var out map[string]any
		json.Unmarshal([]byte(r.stdout), &out)
		want := []string{"limit=1", "cursor=tok_001&limit=1", "cursor=tok_002&limit=1"}
		if items := out["items"].([]any); len(items) != 3 {
			t.Errorf("items = %d", len(items))
		}
		if q := f.lastQueries(); !reflect.DeepEqual(q, want) {
			t.Errorf("queries = %v, want %v", q, want)
		}
	})
}

func TestTokenShow(t *testing.T) {
	f := newFakeServer(t)
	id, _ := f.add(map[string]any{"name": "shown", "state": "suspended", "suspended_at": "2026-11-24T00:00:00Z", "suspend_reason": "audit",
		"rate_limit": map[string]any{"limit": 5, "window": "1h"}, "quota": map[string]any{"limit": 9, "period": "none"}, "last_used_ip": "198.51.100.1",
		"last_used_at": "2026-11-24T01:00:00Z"})
	r := cli(t, f, nil, "", "token", "show", id)
	r.want(t, 0)
	for _, s := range []string{"NAME           shown", "STATE          suspended", "SUSPENDED      2026-11-24T00:00:00Z: audit",
		"RATE LIMIT     5 per 1h", "QUOTA          9 in total", "LAST USED      2026-11-24T01:00:00Z from 198.51.100.1"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("output lacks %q:\n%s", s, r.stdout)
		}
	}
	// Flags may follow the id.
	r = cli(t, f, nil, "", "token", "show", id, "--output", "json")
	r.want(t, 0)
	var tok map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &tok); err != nil || tok["id"] != id || tok["suspend_reason"] != "audit" {
		t.Errorf("output = %s", r.stdout)
	}
	if _, ok := tok["token"]; ok {
		t.Errorf("show prints a secret field")
	}

	t.Run("ErrNotFound", func(t *testing.T) {
		r := cli(t, f, nil, "", "token", "show", "tok_nope")
		r.want(t, 1)
		if r.stderr != "keyward: token tok_nope not found (HTTP 404 not_found, request req_test)\n" {
			t.Errorf("stderr = %q", r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("stdout = %q", r.stdout)
		}
	})
}

func TestTokenUpdatePatch(t *testing.T) {
	f := newFakeServer(t)
	id, _ := f.add(map[string]any{"name": "old"})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"Name", []string{"--name", "new"}, `{"name":"new"}`},
		{"Scopes", []string{"--scope", "a:read", "--scope", "b:*"}, `{"scopes":["a:read","b:*"]}`},
		{"ClearScopes", []string{"--clear-scopes"}, `{"scopes":null}`},
		{"ExpiresAt", []string{"--expires-at", "2030-01-02T03:04:05+01:00"}, `{"expires_at":"2030-01-02T02:04:05Z"}`},
		{"ClearExpiry", []string{"--clear-expiry"}, `{"expires_at":null}`},
		{"CIDRs", []string{"--allow-cidr", "10.0.0.0/8", "--allow-cidr", "2001:db8::/32"}, `{"allowed_cidrs":["10.0.0.0/8","2001:db8::/32"]}`},
		{"ClearCIDRs", []string{"--clear-cidrs"}, `{"allowed_cidrs":null}`},
		{"RateLimit", []string{"--rate-limit", "10/1s"}, `{"rate_limit":{"limit":10,"window":"1s"}}`},
		{"ClearRateLimit", []string{"--clear-rate-limit"}, `{"rate_limit":null}`},
		{"Quota", []string{"--quota", "5/day"}, `{"quota":{"limit":5,"period":"day"}}`},
		{"ClearQuota", []string{"--clear-quota"}, `{"quota":null}`},
		{"Subject", []string{"--subject", "customer-7"}, `{"subject":"customer-7"}`},
		{"ClearSubject", []string{"--clear-subject"}, `{"subject":null}`},
		{"Metadata", []string{"--metadata", `{"a":{"b":[1,2]}}`}, `{"metadata":{"a":{"b":[1,2]}}}`},
		{"ClearMetadata", []string{"--clear-metadata"}, `{"metadata":null}`},
		{"EmptyName", []string{"--name="}, `{"name":""}`},
		{"ClearFalseIsAbsent", []string{"--name", "x", "--clear-quota=false"}, `{"name":"x"}`},
		{"Several", []string{"--clear-expiry", "--quota", "1/none", "--clear-metadata", "--subject", "s"},
			`{"expires_at":null,"quota":{"limit":1,"period":"none"},"metadata":null,"subject":"s"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"token", "update", id}, tc.args...)
			r := cli(t, f, nil, "", args...)
			r.want(t, 0)
			if got := f.body("PATCH /v1/tokens/" + id); !jsonEqual(t, got, tc.want) {
				t.Errorf("patch = %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("ExpiresInIsAbsolute", func(t *testing.T) {
		before := time.Now()
		r := cli(t, f, nil, "", "token", "update", id, "--expires-in", "1h", "--output", "json")
		r.want(t, 0)
		var p map[string]string
		json.Unmarshal([]byte(f.body("PATCH /v1/tokens/"+id)), &p)
		at, err := time.Parse(time.RFC3339, p["expires_at"])
		if len(p) != 1 || err != nil || at.Before(before.Add(time.Hour-time.Second)) || at.After(time.Now().Add(time.Hour+time.Second)) {
			t.Errorf("patch = %v", p)
		}
		if !json.Valid([]byte(r.stdout)) {
			t.Errorf("stdout is not JSON")
		}
	})
}

func TestTokenRotate(t *testing.T) {
	f := newFakeServer(t)
	id, old := f.add(map[string]any{"name": "r"})
	r := cli(t, f, nil, "", "token", "rotate", id, "--grace", "24h")
	r.want(t, 0)
	if !jsonEqual(t, f.body("POST /v1/tokens/"+id+"/rotate"), `{"grace_period":"24h"}`) {
		t.Errorf("body = %s", f.body("POST /v1/tokens/"+id+"/rotate"))
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	secret := lines[len(lines)-1]
	if f.tokenOf(secret) != id || secret == old {
		t.Errorf("the last line %q is not the new secret", secret)
	}
	if !strings.Contains(r.stdout, "keeps working for 24h") {
		t.Errorf("no grace note:\n%s", r.stdout)
	}

	// The API's name for it works too.
	r = cli(t, f, nil, "", "token", "rotate", id, "--grace-period", "90s")
	r.want(t, 0)
	if !jsonEqual(t, f.body("POST /v1/tokens/"+id+"/rotate"), `{"grace_period":"1m30s"}`) {
		t.Errorf("--grace-period: body = %s", f.body("POST /v1/tokens/"+id+"/rotate"))
	}

	r = cli(t, f, nil, "", "token", "rotate", id, "--output", "json")
	r.want(t, 0)
	if !jsonEqual(t, f.body("POST /v1/tokens/"+id+"/rotate"), `{}`) {
		t.Errorf("body = %s", f.body("POST /v1/tokens/"+id+"/rotate"))
	}
	var out map[string]any
	json.Unmarshal([]byte(r.stdout), &out)
	if s, _ := out["token"].(string); f.tokenOf(s) != id {
		t.Errorf("output = %s", r.stdout)
	}
}

func TestTokenStateChanges(t *testing.T) {
	f := newFakeServer(t)
	id, _ := f.add(map[string]any{"name": "s"})
	for _, tc := range []struct {
		verb, reason, state, body string
	}{
		{"suspend", "audit", "suspended", `{"reason":"audit"}`},
		{"resume", "", "active", `{}`},
		{"revoke", "leaked in a log", "revoked", `{"reason":"leaked in a log"}`},
	} {
		t.Run(tc.verb, func(t *testing.T) {
			args := []string{"token", tc.verb, id}
			if tc.reason != "" {
				args = append(args, "--reason", tc.reason)
			}
			r := cli(t, f, nil, "", args...)
			r.want(t, 0)
			if got := f.body("POST /v1/tokens/" + id + "/" + tc.verb); !jsonEqual(t, got, tc.body) {
				t.Errorf("body = %s, want %s", got, tc.body)
			}
			if !strings.Contains(r.stdout, id+" (s); its state is now "+tc.state) {
				t.Errorf("stdout = %q", r.stdout)
			}
			r = cli(t, f, nil, "", "token", tc.verb, "--output", "json", id)
			r.want(t, 0)
			var out map[string]any
			if json.Unmarshal([]byte(r.stdout), &out); out["state"] != tc.state {
				t.Errorf("json = %s", r.stdout)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	f := newFakeServer(t)
	_, secret := f.add(map[string]any{"name": "v", "subject": "customer-1", "scopes": []any{"orders:read"}})
	_, revoked := f.add(map[string]any{"name": "gone", "state": "revoked"})

	t.Run("ValidFromStdin", func(t *testing.T) {
		r := cli(t, f, nil, secret+"\nsecond line\n", "verify", "--scope", "orders:read", "--scope", "x:y", "--ip", "203.0.113.7")
		r.want(t, 0)
		if !jsonEqual(t, f.body("POST /v1/verify"), `{"token":"`+secret+`","scopes":["orders:read","x:y"],"ip":"203.0.113.7"}`) {
			t.Errorf("body = %s", f.body("POST /v1/verify"))
		}
		for _, s := range []string{"CODE        VALID", "NAME        v", "SUBJECT     customer-1", "RATE LIMIT  99 of 100 left, a slot frees in 1m"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("output lacks %q:\n%s", s, r.stdout)
			}
		}
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("the verified token is printed")
		}
	})
	t.Run("ValidFromFileJSON", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "tok")
		os.WriteFile(file, []byte(secret+"\r\n"), 0o600)
		r := cli(t, f, nil, "", "verify", "--token-file", file, "--output", "json")
		r.want(t, 0)
		var out map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out["valid"] != true || out["code"] != "VALID" || out["token_id"] == nil {
			t.Errorf("output = %s", r.stdout)
		}
	})
	t.Run("ErrRevoked", func(t *testing.T) {
		r := cli(t, f, nil, revoked, "verify")
		r.want(t, 1)
		if !strings.Contains(r.stdout, "CODE        REVOKED") || r.stderr != "keyward: the token is not valid: REVOKED\n" {
			t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
		}
	})
	t.Run("ErrUnknownJSON", func(t *testing.T) {
		r := cli(t, f, nil, "kw_unknown\n", "verify", "--output", "json")
		r.want(t, 1)
		if strings.TrimSpace(r.stdout) != "{\n  \"valid\": false,\n  \"code\": \"NOT_FOUND\"\n}" {
			t.Errorf("stdout = %q", r.stdout)
		}
	})
	t.Run("ErrEmptyStdin", func(t *testing.T) {
		// Nothing to verify is a usage error (2), not an invalid token (1).
		r := cli(t, f, nil, "\n", "verify")
		r.want(t, 2)
		if !strings.Contains(r.stderr, "no token to verify") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})
	t.Run("ErrDevNull", func(t *testing.T) {
		// A character device that is not a terminal gets no prompt.
		null, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer null.Close()
		var stdout, stderr strings.Builder
		code := run(context.Background(), []string{"verify"}, null, &stdout, &stderr, func(k string) string {
			return map[string]string{"KEYWARD_SERVER": f.srv.URL, "KEYWARD_TOKEN": mgmtToken}[k]
		})
		if code != 2 || strings.Contains(stderr.String(), "Token to verify:") {
			t.Errorf("exit %d, stderr %q: want 2 without a prompt", code, stderr.String())
		}
	})
	t.Run("ErrTokenNeverInStderr", func(t *testing.T) {
		// A server error whose text repeats the verified token.
		leaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req map[string]string
			json.NewDecoder(r.Body).Decode(&req)
			problem(w, 400, "invalid", "bad token "+req["token"])
		}))
		defer leaky.Close()
		r := cli(t, nil, map[string]string{"KEYWARD_SERVER": leaky.URL}, secret, "verify")
		r.want(t, 1)
		if strings.Contains(r.stderr, secret) || !strings.Contains(r.stderr, "[redacted]") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})
}

func TestVersion(t *testing.T) {
	r := cli(t, nil, nil, "", "version")
	r.want(t, 0)
	if want := "keyward dev (" + runtime.Version(); !strings.HasPrefix(r.stdout, want) {
		t.Errorf("stdout = %q, want it to start with %q", r.stdout, want)
	}
	if r2 := cli(t, nil, nil, "", "--version"); r2.stdout != r.stdout {
		t.Errorf("--version = %q", r2.stdout)
	}
	old := version
	version = "v1.2.3"
	defer func() { version = old }()
	if r := cli(t, nil, nil, "", "version"); !strings.HasPrefix(r.stdout, "keyward v1.2.3 (") {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestRetentionWarning(t *testing.T) {
	for _, tt := range []struct {
		minute, hour time.Duration
		want         string
	}{
		{336 * time.Hour, 9600 * time.Hour, ""},
		{336 * time.Hour, 336 * time.Hour, ""},
		{336 * time.Hour, 0, ""},
		{0, 0, ""},
		{336 * time.Hour, 24 * time.Hour, "--usage-hour-retention (24h) is shorter than --usage-minute-retention (336h): hour and day series"},
		{0, 9600 * time.Hour, "--usage-hour-retention (9600h) is shorter than --usage-minute-retention (0 (forever)): hour and day series"},
	} {
		got := retentionWarning(&serveConfig{UsageMinuteRetention: tt.minute, UsageHourRetention: tt.hour})
		if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
			t.Errorf("retentionWarning(minute %v, hour %v) = %q, want %q...", tt.minute, tt.hour, got, tt.want)
		}
	}
}

func TestLoadSecrets(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(file, []byte("current-secret-of-at-least-32-bytes!\n"), 0o600)
	const one, two = "old-secret-number-one-32-bytes-long", "old-secret-number-two-32-bytes-long"
	vars := map[string]string{"KEYWARD_SECRET_FILE": file, "KEYWARD_SECRET_PREVIOUS": one + "," + two}
	e := &env{getenv: func(k string) string { return vars[k] }}
	var c storeConfig
	if err := loadSecrets(e, &c); err != nil {
		t.Fatal(err)
	}
	if c.Secret != "current-secret-of-at-least-32-bytes!" || !reflect.DeepEqual(c.SecretPrevious, []string{one, two, one + "," + two}) {
		t.Errorf("got %q %q", c.Secret, c.SecretPrevious)
	}
	var stderr bytes.Buffer
	e.stderr = &stderr
	e.exit(context.Background(), fmt.Errorf("oops: current-secret-of-at-least-32-bytes! "+two))
	if stderr.String() != "keyward: oops: [redacted] [redacted]\n" {
		t.Errorf("stderr = %q", stderr.String())
	}

	// The current secret is used trimmed, and as given too while it had
	// white space at its ends (KEYWARD_SECRET from a file with its newline).
	cur := strings.Repeat("c", 40)
	vars = map[string]string{"KEYWARD_SECRET": cur + "\n"}
	c = storeConfig{}
	if err := loadSecrets(e, &c); err != nil {
		t.Fatal(err)
	}
	if c.Secret != cur || !reflect.DeepEqual(c.SecretPrevious, []string{cur + "\n"}) {
		t.Errorf("got %q %q", c.Secret, c.SecretPrevious)
	}
	a, b := strings.Repeat("a", 32), strings.Repeat("b", 32)
	q, r := strings.Repeat("Q", 64), strings.Repeat("R", 24)
	for _, tc := range []struct {
		v, raw, why string
		want        []string
	}{
		{a + "\r\n" + b + "\n\n", "", "one a line", []string{a, b, a + "\r\n" + b, a + "\r\n" + b + "\n\n"}},
		{" " + a + " , " + b, "", "comma-separated", []string{a, b, a + " , " + b, " " + a + " , " + b}},
		{a, "", "one", []string{a}},
		{a, a + "\n", "one, from a file with its newline", []string{a, a + "\n"}},
		{a + " ", "", "one with a space, as given before this release", []string{a, a + " "}},
		// Secrets that hold a comma or line break: their parts too short
		// to be secrets are left out, the whole is taken.
		{strings.Repeat("x", 20) + "," + strings.Repeat("y", 20), "", "comma inside", []string{strings.Repeat("x", 20) + "," + strings.Repeat("y", 20)}},
		{q + "\n" + r, q + "\n" + r + "\n", "wrapped base64 in a file", []string{q, q + "\n" + r, q + "\n" + r + "\n"}},
		// A mistyped short entry leaves the others.
		{a + "," + "short", "", "a short entry", []string{a, a + ",short"}},
	} {
		raw := tc.raw
		if raw == "" {
			raw = tc.v
		}
		if got, _ := previousSecrets(tc.v, raw); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: previousSecrets(%q, %q) = %q, want %q", tc.why, tc.v, raw, got, tc.want)
		}
	}
	// Every piece is redacted, short ones too.
	if _, pieces := previousSecrets(a+",tiny-secret-part", a+",tiny-secret-part"); !slices.Contains(pieces, "tiny-secret-part") {
		t.Errorf("pieces %q lack the short one", pieces)
	}
}

func TestInterrupted(t *testing.T) {
	f := newFakeServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"KEYWARD_SERVER": f.srv.URL, "KEYWARD_TOKEN": mgmtToken}
	code := run(ctx, []string{"token", "list"}, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	if code != 1 || stderr.String() != "keyward: interrupted\n" {
		t.Errorf("code %d, stderr %q", code, stderr.String())
	}
}

func TestFlagSetEnv(t *testing.T) {
	e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string {
		return map[string]string{"X_S": "from-env", "X_B": "true", "X_I": "7", "X_D": "2m", "X_BAD": "nope"}[k]
	}}
	fs := newFlagSet(e, "test", help{summary: "s", examples: []string{"keyward test"}})
	var s, s2 string
	var b bool
	var i int
	var d time.Duration
	fs.String(&s, "s", "X_S", "def", "")
	fs.String(&s2, "s2", "X_UNSET", "def", "")
	fs.Bool(&b, "b", "X_B", false, "")
	fs.Int(&i, "i", "X_I", 1, "")
	fs.Duration(&d, "d", "X_D", time.Second, "")
	if _, err := fs.parse(nil); err != nil {
		t.Fatal(err)
	}
	if s != "from-env" || s2 != "def" || !b || i != 7 || d != 2*time.Minute {
		t.Errorf("got %q %q %v %d %v", s, s2, b, i, d)
	}
	// A flag beats the environment.
	fs = newFlagSet(e, "test", help{})
	fs.String(&s, "s", "X_S", "def", "")
	if pos, err := fs.parse([]string{"a", "--s", "flag", "b", "--", "--c"}); err != nil || s != "flag" || !reflect.DeepEqual(pos, []string{"a", "b", "--c"}) {
		t.Errorf("got %q, %v, %v", s, pos, err)
	}
	fs = newFlagSet(e, "test", help{})
	fs.Bool(&b, "bad", "X_BAD", false, "")
	if _, err := fs.parse(nil); err == nil || !strings.Contains(err.Error(), `X_BAD="nope"`) {
		t.Errorf("err = %v", err)
	}
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Errorf("invalid JSON %q: %v", a, err)
		return false
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// TestGatewayCheckLines: every problem of a gateway config on its own
// line, in the file's order, as file:line, then a summary line.
func TestGatewayCheckLines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	os.WriteFile(file, []byte(`listen: 127.0.0.1:0
workspace: default
routes:
  - name: a
    path_prefix: nope
    upstreams: [ftp://x]
  - name: a
    timeout: soon
`), 0o600)
	r := cli(t, nil, nil, "", "gateway", "check", file)
	if r.code != 1 {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	want := []string{
		file + ":5: routes[0].path_prefix: ",
		file + ":6: routes[0].upstreams[0]: ",
		file + ":7: routes[1].",
		file + ":7: routes[1].",
		file + ":7: routes[1].",
		file + ":8: routes[1].timeout: ",
		"keyward: " + file + ": 6 errors",
	}
	if len(lines) != len(want) {
		t.Fatalf("stderr has %d lines, want %d:\n%s", len(lines), len(want), r.stderr)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to begin %q", i+1, lines[i], w)
		}
	}
	file2 := filepath.Join(t.TempDir(), "good.yaml")
	os.WriteFile(file2, []byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: a\n    path_prefix: /\n    upstreams: [http://127.0.0.1:1]\n"), 0o600)
	r = cli(t, nil, nil, "", "gateway", "check", file2)
	r.want(t, 0)
	if r.stdout != file2+": OK, listen 127.0.0.1:0, workspace \"default\", 1 route\n" {
		t.Errorf("stdout = %q", r.stdout)
	} // Without a file, the one serve would take from the environment.
	r = cli(t, nil, map[string]string{"KEYWARD_GATEWAY_CONFIG": file2}, "", "gateway", "check")
	r.want(t, 0)
	if !strings.HasPrefix(r.stdout, file2+": OK") {
		t.Errorf("with KEYWARD_GATEWAY_CONFIG: stdout = %q", r.stdout)
	}
	r = cli(t, nil, nil, "", "gateway", "check")
	r.want(t, 2)
}

// A quota counted in total is printed as such, not as resetting in 0s.
func TestPrintVerifyQuota(t *testing.T) {
	for _, c := range []struct {
		reset int64
		want  string
	}{
		{0, "QUOTA  95 of 100 left, counted in total, never resets"},
		{3600, "QUOTA  95 of 100 left, resets in 1h"},
	} {
		var b bytes.Buffer
		r := &client.VerifyResponse{Code: "QUOTA_EXCEEDED", Quota: &client.LimitStatus{Limit: 100, Remaining: 95, Reset: c.reset}}
		if err := printVerify(&b, r); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), c.want) {
			t.Errorf("reset %d: output\n%s\nlacks %q", c.reset, b.String(), c.want)
		}
	}
}

// KEYWARD_DATABASE_URL_FILE is read as KEYWARD_DATABASE_URL would be, so a
// URL that holds a password need not be in the environment.
func TestDatabaseURLFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "db.url")
	os.WriteFile(file, []byte("mysql://user:hunter2@db/keyward\n"), 0o600)
	r := cli(t, nil, map[string]string{"KEYWARD_DATABASE_URL_FILE": file}, "", "migrate")
	if r.code == 0 || !strings.Contains(r.stderr, "must be a postgres:// URL") || strings.Contains(r.stderr, "hunter2") {
		t.Errorf("exit %d, stderr %q: want the file's URL refused, without its password", r.code, r.stderr)
	}
	// The flag overrides it, as flags override variables.
	r = cli(t, nil, map[string]string{"KEYWARD_DATABASE_URL_FILE": file}, "", "migrate", "--database-url", "sqlite://elsewhere")
	if r.code == 0 || !strings.Contains(r.stderr, "must be a postgres:// URL") || strings.Contains(r.stderr, "give the URL once") {
		t.Errorf("--database-url with the _FILE: exit %d, stderr %q", r.code, r.stderr)
	}
	// A file that cannot be read, or is empty, is what running found, as
	// for KEYWARD_SECRET_FILE: exit 1, not a usage error.
	r = cli(t, nil, map[string]string{"KEYWARD_DATABASE_URL_FILE": file + ".missing"}, "", "migrate")
	r.want(t, 1)
	if want := "keyward: reading KEYWARD_DATABASE_URL_FILE: open " + file + ".missing: no such file or directory\n"; r.stderr != want {
		t.Errorf("missing file: stderr %q, want %q", r.stderr, want)
	}
	empty := filepath.Join(t.TempDir(), "empty.url")
	os.WriteFile(empty, []byte("\n"), 0o600)
	r = cli(t, nil, map[string]string{"KEYWARD_DATABASE_URL_FILE": empty}, "", "serve")
	r.want(t, 1)
	if want := "keyward: KEYWARD_DATABASE_URL_FILE names an empty file: " + empty + "\n"; r.stderr != want {
		t.Errorf("empty file: stderr %q, want %q", r.stderr, want)
	}
}

// TestServeRefusesBeforeTouchingTheStore: settings serve cannot run with
// (an address it cannot listen on, TLS files it cannot read, a gateway
// config with errors) are refused before the data dir, its store or its
// server secret is created.
func TestServeRefusesBeforeTouchingTheStore(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	badYAML := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(badYAML, []byte("listen: 127.0.0.1:1\nroutes: [{name: x}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"BadPort", []string{"--addr", "127.0.0.1:99999"}, "--addr"},
		{"PortInUse", []string{"--addr", busy.Addr().String()}, "address already in use"},
		{"NoTLSFiles", []string{"--addr", "127.0.0.1:0", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"}, "--tls-cert"},
		{"NoGatewayConfig", []string{"--addr", "127.0.0.1:0", "--gateway-config", "/nonexistent/gateway.yaml"}, "--gateway-config"},
		{"BadGatewayConfig", []string{"--addr", "127.0.0.1:0", "--gateway-config", badYAML}, "--gateway-config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			r := cli(t, nil, nil, "", append([]string{"serve", "--data-dir", dir}, tc.args...)...)
			if r.code == 0 {
				t.Fatal("serve succeeded")
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr = %q, want it to name %q", r.stderr, tc.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the data dir was created (%v)", err)
			}
		})
	}
}

// TestPlainRemote: the CLI warns before sending a management token over
// plain HTTP to another host, and only then.
func TestPlainRemote(t *testing.T) {
	for server, want := range map[string]bool{
		"http://127.0.0.1:8080":       false,
		"http://[::1]:8080":           false,
		"http://localhost:8080":       false,
		"http://api.localhost":        false,
		"https://keyward.example.com": false,
		"http://keyward.example.com":  true,
		"http://10.0.0.7:8080":        true,
		"http://[2001:db8::1]:8080":   true,
	} {
		if got := plainRemote(server); got != want {
			t.Errorf("plainRemote(%q) = %v, want %v", server, got, want)
		}
	}
	// The warning itself, from a command that then fails to reach the
	// host (.invalid names none).
	r := cli(t, nil, map[string]string{"KEYWARD_SERVER": "http://keyward.invalid:1"}, "", "token", "list")
	if r.code == 0 || !strings.Contains(r.stderr, "plain HTTP to another host") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestShortPreviousSecret: a previous server secret that is too short is
// blamed on KEYWARD_SECRET_PREVIOUS, not on KEYWARD_SECRET, as a usage
// error.
func TestShortPreviousSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	vars := map[string]string{"KEYWARD_SECRET": strings.Repeat("b", 64), "KEYWARD_SECRET_PREVIOUS": "tooshort"}
	r := cli(t, nil, vars, "", "init", "--data-dir", dir)
	r.want(t, 2)
	if want := "keyward: init: KEYWARD_SECRET_PREVIOUS: previous server secret #1 must be at least 32 bytes (see 'keyward init --help')\n"; r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
}

// TestServePublicURLDefault: without --public-url or KEYWARD_PUBLIC_URL,
// the public URL is localhost at the port served, https with TLS; given
// either way, it is taken as given.
func TestServePublicURLDefault(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"Default", nil, nil, "http://localhost:8080"},
		{"OtherPort", []string{"--addr", "0.0.0.0:9000"}, nil, "http://localhost:9000"},
		{"AddrFromEnv", nil, map[string]string{"KEYWARD_ADDR": "127.0.0.1:9001"}, "http://localhost:9001"},
		{"TLS", []string{"--addr", "127.0.0.1:8443", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil, "https://localhost:8443"},
		{"AnyPort", []string{"--addr", "127.0.0.1:0"}, nil, "http://localhost:8080"},
		{"Port80", []string{"--addr", "0.0.0.0:80"}, nil, "http://localhost"},
		{"Port443TLS", []string{"--addr", ":443", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil, "https://localhost"},
		{"Port443Plain", []string{"--addr", ":443"}, nil, "http://localhost:443"},
		{"LeadingZero", []string{"--addr", "127.0.0.1:09000"}, nil, "http://localhost:9000"},
		{"Port80LeadingZero", []string{"--addr", "127.0.0.1:080"}, nil, "http://localhost"},
		{"ServiceName", []string{"--addr", "127.0.0.1:http"}, nil, "http://localhost"},
		{"ServiceNameTLS", []string{"--addr", ":https", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil, "https://localhost"},
		{"ServiceNamePlain", []string{"--addr", ":https"}, nil, "http://localhost:443"},
		{"Flag", []string{"--addr", "127.0.0.1:9000", "--public-url", "https://keys.example.com"}, nil, "https://keys.example.com"},
		{"Env", []string{"--addr", "127.0.0.1:9000"}, map[string]string{"KEYWARD_PUBLIC_URL": "http://localhost:8080"}, "http://localhost:8080"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return c.env[k] }}
			fs := newFlagSet(e, "serve", help{})
			cfg := defineServeFlags(fs)
			if _, err := fs.parse(c.args); err != nil {
				t.Fatal(err)
			}
			if cfg.PublicURL != c.want {
				t.Errorf("PublicURL = %q, want %q", cfg.PublicURL, c.want)
			}
		})
	}
}

// failWriter fails every write, as standard output on a full disk does.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestStdoutFailure: a command whose output could not be written fails;
// init says that the root token it issued is held by nobody.
func TestStdoutFailure(t *testing.T) {
	for _, args := range [][]string{{"init"}, {"init", "--output", "json"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			var stderr bytes.Buffer
			code := run(context.Background(), append(args, "--data-dir", dir), strings.NewReader(""), failWriter{}, &stderr, func(string) string { return "" })
			if code != 1 || !strings.Contains(stderr.String(), "was issued but could not be shown (writing to standard output: no space left on device); nobody holds it") ||
				!strings.Contains(stderr.String(), "keyward init --new-root-token") {
				t.Fatalf("exit %d, stderr %q", code, stderr.String())
			}
		})
	}
	t.Run("version", func(t *testing.T) {
		var stderr bytes.Buffer
		code := run(context.Background(), []string{"version"}, strings.NewReader(""), failWriter{}, &stderr, func(string) string { return "" })
		if code != 1 || stderr.String() != "keyward: writing to standard output: no space left on device\n" {
			t.Fatalf("exit %d, stderr %q", code, stderr.String())
		}
	})
}

// TestServeGatewayConfigErrorLines: serve lists a gateway config's
// problems one a line, as keyward gateway check does.
func TestServeGatewayConfigErrorLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\nworkspace: default\nroutes:\n  - name: r\n    path_prefix: x\n    upstreams: [http://127.0.0.1:1]\n    auth: maybe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, nil, nil, "", "serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--addr", "127.0.0.1:0", "--gateway-config", path)
	want := "keyward: --gateway-config: " + path + ":5: routes[0].path_prefix: must start with \"/\"\n  " +
		path + ":7: routes[0].auth: \"maybe\": must be required, optional or none\n"
	if r.code != 1 || r.stderr != want {
		t.Fatalf("exit %d, stderr:\n%s\nwant:\n%s", r.code, r.stderr, want)
	}
}

// TestServeGatewayUnknownWorkspace: serve refuses a gateway config whose
// workspace the store lacks at the file's line, as keyward gateway check
// does; for an embedded store yet to be made (which would hold the
// default workspace alone), before making it.
func TestServeGatewayUnknownWorkspace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\nworkspace: acme\nroutes:\n  - name: r\n    path_prefix: /r\n    upstreams: [http://127.0.0.1:1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "keyward: --gateway-config: " + path + ":2: workspace: \"acme\": no workspace of that name in the store"
	t.Run("NewStore", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		r := cli(t, nil, nil, "", "serve", "--data-dir", dir, "--addr", "127.0.0.1:0", "--gateway-config", path)
		if r.code != 1 || r.stderr != want+"\n" {
			t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", r.code, r.stderr, want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the data dir was created (%v)", err)
		}
	})
	t.Run("Store", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		cli(t, nil, nil, "", "init", "--data-dir", dir).want(t, 0)
		r := cli(t, nil, nil, "", "serve", "--data-dir", dir, "--addr", "127.0.0.1:0", "--gateway-config", path)
		// After the log lines of the store's open.
		if r.code != 1 || !strings.HasSuffix(r.stderr, "\n"+want+"\n") {
			t.Errorf("exit %d, stderr:\n%s\nwant it to end:\n%s", r.code, r.stderr, want)
		}
	})
}

// TestSecretFileNamed: a server secret from a file that is refused is
// named by the variable and file it came from.
func TestSecretFileNamed(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.secret")
	if err := os.WriteFile(short, []byte("short-secret-24-bytes-xx"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, nil, map[string]string{"KEYWARD_SECRET_FILE": short}, "", "init", "--data-dir", filepath.Join(dir, "data"))
	r.want(t, 2)
	if want := "keyward: init: KEYWARD_SECRET_FILE (" + short + "): server secret must be at least 32 bytes"; !strings.HasPrefix(r.stderr, want) {
		t.Errorf("stderr = %q, want it to start %q", r.stderr, want)
	}
}

// TestShortSecretMessage: a value too short to be a secret is not scrubbed
// letter by letter from the error that says it is too short.
func TestShortSecretMessage(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"e", "short"} {
		r := cli(t, nil, map[string]string{"KEYWARD_SECRET": v}, "", "init", "--data-dir", filepath.Join(dir, "data"))
		r.want(t, 2)
		if want := "keyward: init: KEYWARD_SECRET: server secret must be at least 32 bytes (for example 64 hex characters) (see 'keyward init --help')\n"; r.stderr != want {
			t.Errorf("KEYWARD_SECRET=%s: stderr = %q, want %q", v, r.stderr, want)
		}
	}
}

// TestStartupValuesAreUsageErrors: a flag value that is refused by its form
// alone, before the command does anything, is a usage error (exit 2) naming
// the flag, whichever command takes it; what only doing the work finds (a
// port in use, a data dir that cannot be made) still exits 1.
func TestStartupValuesAreUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		vars map[string]string
		want string
	}{
		{"AddrNoPort", []string{"serve", "--addr", "127.0.0.1"}, nil,
			`keyward: serve: --addr must be HOST:PORT, such as 127.0.0.1:8080 or :8080, not "127.0.0.1": missing port in address (see 'keyward serve --help')`},
		{"AddrIPv6NoBrackets", []string{"serve", "--addr", "::1:22001"}, nil,
			`keyward: serve: --addr must be HOST:PORT, such as 127.0.0.1:8080 or :8080, not "::1:22001": too many colons in address (see 'keyward serve --help')`},
		{"AddrPortEmpty", []string{"serve", "--addr", "127.0.0.1:"}, nil,
			`keyward: serve: --addr "127.0.0.1:": the port is empty: give one, or 0 for any free one (see 'keyward serve --help')`},
		{"AddrPortEmptyIPv6Env", []string{"serve"}, map[string]string{"KEYWARD_ADDR": "[::1]:"},
			`keyward: serve: --addr "[::1]:": the port is empty: give one, or 0 for any free one (--addr is set by KEYWARD_ADDR) (see 'keyward serve --help')`},
		{"AddrColonOnly", []string{"serve", "--addr", ":"}, nil,
			`keyward: serve: --addr ":": the port is empty: give one, or 0 for any free one (see 'keyward serve --help')`},
		{"AddrPortTooLarge", []string{"serve", "--addr", "127.0.0.1:99999"}, nil,
			`keyward: serve: --addr "127.0.0.1:99999": the port must be from 0 (any free one) to 65535 (see 'keyward serve --help')`},
		{"AddrPortNegative", []string{"serve", "--addr", ":-1"}, nil,
			`keyward: serve: --addr ":-1": the port must be a number from 0 to 65535 or a service name, not "-1" (see 'keyward serve --help')`},
		{"AddrPortSigned", []string{"serve", "--addr", "127.0.0.1:+80"}, nil,
			`keyward: serve: --addr "127.0.0.1:+80": the port must be a number from 0 to 65535 or a service name, not "+80" (see 'keyward serve --help')`},
		{"AddrPortNegativeZero", []string{"serve", "--addr", "127.0.0.1:-0"}, nil,
			`keyward: serve: --addr "127.0.0.1:-0": the port must be a number from 0 to 65535 or a service name, not "-0" (see 'keyward serve --help')`},
		{"AddrPortMinus", []string{"serve", "--addr", ":-"}, nil,
			`keyward: serve: --addr ":-": the port must be a number from 0 to 65535 or a service name, not "-" (see 'keyward serve --help')`},
		// The C resolver's getaddrinfo skips white space and takes a sign
		// (" -0" for any free port) where the Go one takes none.
		{"AddrPortSpaceNegativeZero", []string{"serve", "--addr", "127.0.0.1: -0"}, nil,
			`keyward: serve: --addr "127.0.0.1: -0": the port must be a number from 0 to 65535 or a service name, not " -0" (see 'keyward serve --help')`},
		{"AddrPortSpaceSigned", []string{"serve", "--addr", "127.0.0.1: +80"}, nil,
			`keyward: serve: --addr "127.0.0.1: +80": the port must be a number from 0 to 65535 or a service name, not " +80" (see 'keyward serve --help')`},
		{"AddrPortTab", []string{"serve", "--addr", "127.0.0.1:\t9000"}, nil,
			`keyward: serve: --addr "127.0.0.1:\t9000": the port must be a number from 0 to 65535 or a service name, not "\t9000" (see 'keyward serve --help')`},
		{"AddrPortNoService", []string{"serve", "--addr", "127.0.0.1:no-such-service"}, nil,
			`keyward: serve: --addr "127.0.0.1:no-such-service": the port must be a number from 0 to 65535 or a service name, not "no-such-service" (see 'keyward serve --help')`},
		{"AddrEnv", []string{"serve"}, map[string]string{"KEYWARD_ADDR": "localhost"},
			`keyward: serve: --addr must be HOST:PORT, such as 127.0.0.1:8080 or :8080, not "localhost": missing port in address (--addr is set by KEYWARD_ADDR) (see 'keyward serve --help')`},
		{"RedisURLPort", []string{"serve", "--addr", "127.0.0.1:0", "--redis-url", "redis://:hunter2hunter2@h:x/0"}, nil,
			`keyward: serve: --redis-url (KEYWARD_REDIS_URL): the URL does not parse: invalid port ":x" after host (see 'keyward serve --help')`},
		{"RedisURLQuotedPassword", []string{"serve", "--addr", "127.0.0.1:0", "--redis-url", `redis://:hunter2"hunter2@h:6379/0`}, nil,
			`keyward: serve: --redis-url (KEYWARD_REDIS_URL): the URL does not parse: net/url: invalid userinfo (see 'keyward serve --help')`},
		{"RedisURLBackslashPasswordEnv", []string{"serve", "--addr", "127.0.0.1:0"}, map[string]string{"KEYWARD_REDIS_URL": `redis://:hunter2\hunter2@h:x/0`},
			`keyward: serve: --redis-url (KEYWARD_REDIS_URL): the URL does not parse: invalid port ":x" after host (see 'keyward serve --help')`},
		{"RedisURLSlashPasswordEnv", []string{"serve", "--addr", "127.0.0.1:0"}, map[string]string{"KEYWARD_REDIS_URL": "redis://:1234/hunter2hunter2@h:6379/0"},
			`keyward: serve: --redis-url (KEYWARD_REDIS_URL): the URL does not parse: an @ follows a /, ? or # (write one of these in a user name or password as %2F, %3F or %23) (see 'keyward serve --help')`},
		{"RedisURLDatabaseEnv", []string{"serve", "--addr", "127.0.0.1:0"}, map[string]string{"KEYWARD_REDIS_URL": "redis://:hunter2hunter2@h:6379/zero"},
			`keyward: serve: --redis-url (KEYWARD_REDIS_URL): redis: invalid database number: "zero" (see 'keyward serve --help')`},
		{"RedisURLOption", []string{"serve", "--addr", "127.0.0.1:0", "--redis-url", "redis://h:6379/0?colour=red"}, nil,
			`keyward: serve: --redis-url (KEYWARD_REDIS_URL): redis: unexpected option: colour (see 'keyward serve --help')`},
		{"ServeDatabaseURL", []string{"serve", "--addr", "127.0.0.1:0", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: serve: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward serve --help')`},
		{"ServeDatabaseURLEnv", []string{"serve", "--addr", "127.0.0.1:0"}, map[string]string{"KEYWARD_DATABASE_URL": "mysql://u:hunter2@db/k"},
			`keyward: serve: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward serve --help')`},
		{"InitDatabaseURL", []string{"init", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: init: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward init --help')`},
		{"MigrateDatabaseURL", []string{"migrate", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: migrate: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward migrate --help')`},
		{"UserCreateDatabaseURL", []string{"user", "create", "--email", "a@example.com", "--password-stdin", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: user create: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward user create --help')`},
		{"AuditVerifyDatabaseURL", []string{"audit", "verify", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: audit verify: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward audit verify --help')`},
		{"AuditExportDatabaseURL", []string{"audit", "export", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: audit export: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward audit export --help')`},
		{"AuditPruneDatabaseURL", []string{"audit", "prune", "--older-than", "48h", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: audit prune: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward audit prune --help')`},
		{"BackupDatabaseURL", []string{"backup", "--output-file", "b.db", "--database-url", "mysql://u:hunter2@db/k"}, nil,
			`keyward: backup: --database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL (see 'keyward backup --help')`},
		// A server secret refused by its length alone, before the trial
		// bind or anything else; its value is not shown.
		{"ServeShortSecret", []string{"serve", "--addr", "127.0.0.1:0"}, map[string]string{"KEYWARD_SECRET": "hunter2hunter2"},
			`keyward: serve: KEYWARD_SECRET: server secret must be at least 32 bytes (for example 64 hex characters) (see 'keyward serve --help')`},
		{"ServeShortPreviousSecret", []string{"serve", "--addr", "127.0.0.1:0"}, map[string]string{"KEYWARD_SECRET": "", "KEYWARD_SECRET_PREVIOUS": "hunter2hunter2"},
			`keyward: serve: KEYWARD_SECRET_PREVIOUS: previous server secret #1 must be at least 32 bytes (see 'keyward serve --help')`},
		{"MigrateShortSecret", []string{"migrate"}, map[string]string{"KEYWARD_SECRET": "hunter2hunter2"},
			`keyward: migrate: KEYWARD_SECRET: server secret must be at least 32 bytes (for example 64 hex characters) (see 'keyward migrate --help')`},
		{"AuditVerifyShortSecret", []string{"audit", "verify"}, map[string]string{"KEYWARD_SECRET": "hunter2hunter2"},
			`keyward: audit verify: KEYWARD_SECRET: server secret must be at least 32 bytes (for example 64 hex characters) (see 'keyward audit verify --help')`},
		{"UserCreateShortSecret", []string{"user", "create", "--email", "a@example.com", "--password-stdin"}, map[string]string{"KEYWARD_SECRET": "hunter2hunter2"},
			`keyward: user create: KEYWARD_SECRET: server secret must be at least 32 bytes (for example 64 hex characters) (see 'keyward user create --help')`},
		{"ServeNoSecretWithDatabaseURL", []string{"serve", "--addr", "127.0.0.1:0", "--database-url", "postgres://u:hunter2@127.0.0.1:1/k"}, map[string]string{"KEYWARD_SECRET": ""},
			`keyward: serve: KEYWARD_SECRET (or KEYWARD_SECRET_FILE) is required with --database-url: every node must share it (see 'keyward serve --help')`},
		// A variable set with its _FILE, as both database URL variables.
		{"ServeRedisURLAndFile", []string{"serve", "--addr", "127.0.0.1:0"}, map[string]string{"KEYWARD_REDIS_URL": "redis://:hunter2hunter2@h:6379/0", "KEYWARD_REDIS_URL_FILE": "/nonexistent/redis.url"},
			`keyward: serve: set only one of KEYWARD_REDIS_URL and KEYWARD_REDIS_URL_FILE (see 'keyward serve --help')`},
		{"InitSecretAndFile", []string{"init"}, map[string]string{"KEYWARD_SECRET_FILE": "/nonexistent/secret"},
			`keyward: init: set only one of KEYWARD_SECRET and KEYWARD_SECRET_FILE (see 'keyward init --help')`},
		// A usage error wins over a file that cannot be read.
		{"ServeBadAddrUnreadableURLFile", []string{"serve", "--addr", "127.0.0.1"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "/nonexistent/db.url"},
			`keyward: serve: --addr must be HOST:PORT, such as 127.0.0.1:8080 or :8080, not "127.0.0.1": missing port in address (see 'keyward serve --help')`},
		{"ServeBadAddrUnreadableSecretFile", []string{"serve", "--addr", "127.0.0.1"}, map[string]string{"KEYWARD_SECRET": "", "KEYWARD_SECRET_FILE": "/nonexistent/secret"},
			`keyward: serve: --addr must be HOST:PORT, such as 127.0.0.1:8080 or :8080, not "127.0.0.1": missing port in address (see 'keyward serve --help')`},
		{"ServeBadRedisURLUnreadableURLFile", []string{"serve", "--addr", "127.0.0.1:0", "--redis-url", "http://h"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "/nonexistent/db.url"},
			`keyward: serve: --redis-url (KEYWARD_REDIS_URL) must be a redis:// or rediss:// URL (see 'keyward serve --help')`},
		{"UserCreateBadEmailUnreadableURLFile", []string{"user", "create", "--email", "not-an-address", "--password-stdin"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "/nonexistent/db.url"},
			`keyward: user create: --email: enter an email address such as you@example.com (see 'keyward user create --help')`},
		{"BackupNoFileUnreadableURLFile", []string{"backup"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "/nonexistent/db.url"},
			`keyward: backup: --output-file is required (see 'keyward backup --help')`},
		{"AuditPruneUnreadableURLFile", []string{"audit", "prune"}, map[string]string{"KEYWARD_DATABASE_URL_FILE": "/nonexistent/db.url"},
			`keyward: audit prune: --older-than is required and must be at least 24h (see 'keyward audit prune --help')`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir) // the default data dir, ./keyward-data, is made here if anything is
			vars := map[string]string{"KEYWARD_SECRET": strings.Repeat("s", 64)}
			for k, v := range tc.vars {
				vars[k] = v
			}
			r := cli(t, nil, vars, "password-long-enough-1\n", tc.args...)
			r.want(t, 2)
			if r.stderr != tc.want+"\n" {
				t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, tc.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("the command did work first: %s holds %s", dir, ents[0].Name())
			}
		})
	}

	t.Run("PortInUseFails", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		dir := filepath.Join(t.TempDir(), "data")
		r := cli(t, nil, nil, "", "serve", "--data-dir", dir, "--addr", busy.Addr().String())
		r.want(t, 1)
		if want := "keyward: --addr: listen tcp " + busy.Addr().String() + ": bind: address already in use\n"; r.stderr != want {
			t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the data dir was created (%v)", err)
		}
	})
	t.Run("DataDirUnusableFails", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		r := cli(t, nil, map[string]string{"KEYWARD_SECRET": strings.Repeat("s", 64)}, "", "init", "--data-dir", filepath.Join(file, "data"))
		r.want(t, 1)
		if want := "keyward: data dir: mkdir " + file + ": not a directory\n"; r.stderr != want {
			t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want)
		}
	})
}

// TestDatabaseURLUnparsable: a database URL that does not parse is a bad
// flag value, a usage error before anything is read or made, whichever
// command takes it; the message never shows the URL's password.
func TestDatabaseURLUnparsable(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	for _, u := range []string{"postgres://u:hunter22@db:notaport/keyward", "postgres://%zz", "postgres://u:hun%zzter22@db/keyward", "postgres://u:h@un%zzter22@db/keyward"} {
		for _, args := range [][]string{
			{"init"}, {"serve", "--addr", "127.0.0.1:0"}, {"migrate"}, {"audit", "verify"}, {"audit", "export"},
			{"user", "create", "--email", "a@example.com", "--password-stdin"},
			{"gateway", "check", "/nonexistent/gateway.yaml"},
		} {
			for _, how := range []string{"flag", "env"} {
				vars := map[string]string{"KEYWARD_SECRET": secret}
				a := args
				if how == "flag" {
					a = append(append([]string(nil), args...), "--database-url", u)
				} else {
					vars["KEYWARD_DATABASE_URL"] = u
				}
				r := cli(t, nil, vars, "correct horse battery staple\n", a...)
				r.want(t, 2)
				cmd := args[0]
				if cmd == "audit" || cmd == "user" || cmd == "gateway" {
					cmd += " " + args[1]
				}
				if !strings.HasPrefix(r.stderr, "keyward: "+cmd+": --database-url (KEYWARD_DATABASE_URL): the URL does not parse") {
					t.Errorf("%s %v: stderr %q", how, a, r.stderr)
				}
				for _, s := range []string{"hunter22", "ter22", u} {
					if strings.Contains(r.stderr, s) {
						t.Errorf("%s %v: stderr %q shows %q", how, a, r.stderr, s)
					}
				}
			}
		}
	}
	// A file it names that cannot be read is what running found: exit 1.
	r := cli(t, nil, map[string]string{"KEYWARD_SECRET": secret}, "", "migrate", "--database-url", "postgres://u:hunter22@db/keyward?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
	r.want(t, 1)
	if want := "keyward: --database-url (KEYWARD_DATABASE_URL): failed to configure TLS (unable to read CA file: open /nonexistent/ca.pem: no such file or directory)\n"; r.stderr != want {
		t.Errorf("unreadable CA file: stderr %q, want %q", r.stderr, want)
	}
}

// TestChoiceFlags: the values of every fixed-choice flag are taken in any
// case, as --log-level always took them; a value that is none of them is
// a usage error naming those it takes, with a hint for a near miss, as
// unknown flags get.
func TestChoiceFlags(t *testing.T) {
	f := newFakeServer(t)
	for _, tc := range []struct {
		args []string
		vars map[string]string
		want string
	}{
		{[]string{"serve", "--log-format", "jsn"}, nil, `serve: --log-format must be text or json, not "jsn"; did you mean json?`},
		{[]string{"serve"}, map[string]string{"KEYWARD_LOG_FORMAT": "txt"}, `serve: --log-format must be text or json, not "txt"; did you mean text?`},
		{[]string{"serve", "--log-level", "warning"}, nil, `serve: --log-level must be debug, info, warn or error, not "warning"; did you mean warn?`},
		{[]string{"serve", "--log-level", "eror"}, nil, `serve: --log-level must be debug, info, warn or error, not "eror"; did you mean error?`},
		{[]string{"serve", "--log-level", "info+2"}, nil, `serve: --log-level must be debug, info, warn or error, not "info+2"`},
		{[]string{"serve", "--redis-fallback", "lokal"}, nil, `serve: --redis-fallback must be closed or local, not "lokal"; did you mean local?`},
		{[]string{"token", "list", "--output", "jsno"}, nil, `token list: --output must be table or json, not "jsno"; did you mean json?`},
		{[]string{"token", "list", "--output", "yaml"}, nil, `token list: --output must be table or json, not "yaml" (see`},
		{[]string{"token", "list", "--state", "revokd"}, nil, `token list: --state must be active, expired, revoked, suspended or pending_approval, not "revokd"; did you mean revoked?`},
		{[]string{"token", "usage", "tok_1", "--granularity", "hours"}, nil, `token usage: --granularity must be minute, hour or day, not "hours"; did you mean hour?`},
		{[]string{"token", "create", "--name", "n", "--quota", "5/mnth"}, nil, `token create: --quota "5/mnth": the period must be day, month or none, not "mnth"; did you mean month?`},
		{[]string{"audit", "export", "--format", "cvs"}, nil, `audit export: --format must be jsonl or csv, not "cvs"; did you mean csv?`},
		{[]string{"user", "create", "--email", "a@example.com", "--role", "admn"}, nil, `user create: --role must be owner, admin, member or viewer, not "admn"; did you mean admin?`},
		{[]string{"init", "--output", "JSONL"}, nil, `init: --output must be table or json, not "JSONL"; did you mean json?`},
	} {
		if tc.args[0] == "serve" {
			// Found before this one, were the value taken: never serve.
			tc.args = append(tc.args, "--max-body", "1")
		}
		r := cli(t, f, tc.vars, "", tc.args...)
		r.want(t, 2)
		if !strings.HasPrefix(r.stderr, "keyward: "+tc.want) {
			t.Errorf("%v: stderr %q, want it to start with %q", tc.args, r.stderr, "keyward: "+tc.want)
		}
	}
	if len(f.bodies) != 0 {
		t.Errorf("a usage error reached the server: %v", f.bodies)
	}

	// Any case, stored as the flag spells it.
	e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string {
		return map[string]string{"KEYWARD_LOG_LEVEL": "WARN", "KEYWARD_SECRET": "0123456789abcdef0123456789abcdef"}[k]
	}}
	fs := newFlagSet(e, "serve", help{})
	cfg := defineServeFlags(fs)
	if _, err := fs.parse([]string{"--log-format", "JSON", "--redis-fallback", "Local"}); err != nil {
		t.Fatal(err)
	}
	if cfg.LogFormat != "json" || cfg.LogLevel != "warn" || cfg.RedisFallback != "local" {
		t.Errorf("log format %q, level %q, fallback %q", cfg.LogFormat, cfg.LogLevel, cfg.RedisFallback)
	}
	r := cli(t, f, map[string]string{"KEYWARD_OUTPUT": "JSON"}, "", "token", "list", "--state", "Active")
	r.want(t, 0)
	if !strings.Contains(r.stdout, `"items"`) || !slices.Contains(f.lastQueries(), "state=active") {
		t.Errorf("stdout %q, queries %v", r.stdout, f.lastQueries())
	}
}

// TestHelpValue: --help (or -h) with a value is a boolean flag's: true
// asks for the help, false for none, anything else is a usage error; at
// every level, where the flag package took --help=ANYTHING for --help and
// the dispatchers took it for an unknown flag.
func TestHelpValue(t *testing.T) {
	f := newFakeServer(t)
	help := cli(t, nil, nil, "", "token", "list", "--help")
	group := cli(t, nil, nil, "", "token", "--help")
	top := cli(t, nil, nil, "", "--help")
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string // "" for none
		want   string // stderr's last line
	}{
		{[]string{"--help=1"}, 0, top.stdout, ""},
		{[]string{"-h=true"}, 0, top.stdout, ""},
		{[]string{"--help=false", "version"}, 0, "keyward ", ""},
		{[]string{"--help=maybe"}, 2, "", `keyward: invalid boolean value "maybe" for --help (want true or false, or the flag alone) (see 'keyward help')`},
		{[]string{"token", "--help=true"}, 0, group.stdout, ""},
		{[]string{"token", "--help=0", "list"}, 0, "ID ", ""},
		{[]string{"token", "list", "--help=true"}, 0, help.stdout, ""},
		{[]string{"token", "list", "-h=1"}, 0, help.stdout, ""},
		{[]string{"token", "list", "--help=false"}, 0, "ID ", ""},
		{[]string{"token", "list", "--help=maybe"}, 2, "", `keyward: token list: invalid boolean value "maybe" for --help: parse error (want true or false) (see 'keyward token list --help')`},
		{[]string{"help", "--help=1"}, 0, "Usage: keyward help ", ""},
		// Help wins over what follows it, as before.
		{[]string{"token", "list", "--help", "--bogus"}, 0, help.stdout, ""},
		{[]string{"token", "list", "--bogus", "--help"}, 2, "", `keyward: token list: unknown flag --bogus (see 'keyward token list --help')`},
	} {
		r := cli(t, f, nil, "", tc.args...)
		r.want(t, tc.code)
		if tc.stdout == "" && r.stdout != "" || !strings.HasPrefix(r.stdout, tc.stdout) {
			t.Errorf("%v: stdout %q, want it to start with %q", tc.args, r.stdout, tc.stdout)
		}
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if last := lines[len(lines)-1]; last != tc.want {
			t.Errorf("%v: stderr's last line %q, want %q", tc.args, last, tc.want)
		}
	}
}

// TestTokenListStatePendingApproval: every state the API filters on is
// taken by --state (pending_approval too, which PRODUCT.md names), in any
// case, and reaches the server as the API spells it.
func TestTokenListStatePendingApproval(t *testing.T) {
	f := newFakeServer(t)
	r := cli(t, f, nil, "", "token", "list", "--state", "Pending_Approval", "--output", "JSON")
	r.want(t, 0)
	if !strings.Contains(r.stdout, `"items"`) || !slices.Contains(f.lastQueries(), "state=pending_approval") {
		t.Errorf("stdout %q, stderr %q, queries %v", r.stdout, r.stderr, f.lastQueries())
	}
	r = cli(t, f, nil, "", "token", "list", "--state", "pending")
	r.want(t, 2)
	if want := `keyward: token list: --state must be active, expired, revoked, suspended or pending_approval, not "pending"; did you mean pending_approval?`; !strings.HasPrefix(r.stderr, want) {
		t.Errorf("stderr %q, want it to start with %q", r.stderr, want)
	}
	if r := cli(t, nil, nil, "", "token", "list", "--help"); !strings.Contains(r.stdout, "only tokens in STATE: active, expired, revoked, suspended or pending_approval") {
		t.Errorf("help:\n%s", r.stdout)
	}
}

// TestDatabaseURLPasswordElsewhere: a URL that parses only by taking some
// of an unencoded password for the host or database name is a usage
// error, before any connection, whose error (a lookup's, quoting the
// host) would show it.
func TestDatabaseURLPasswordElsewhere(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	for _, u := range []string{"postgres://u:h@unter22@127.0.0.1:1/keyward", "postgres://u:/hunter22@127.0.0.1:1/keyward"} {
		r := cli(t, nil, map[string]string{"KEYWARD_SECRET": secret}, "", "migrate", "--database-url", u)
		r.want(t, 2)
		want := "keyward: migrate: --database-url (KEYWARD_DATABASE_URL): the URL is ambiguous: an @ follows the one that ends its user name and password " +
			"(write @ as %40 and / as %2F in a user name, password or database name) (see 'keyward migrate --help')\n"
		if r.stderr != want || strings.Contains(r.stdout+r.stderr, "unter22") {
			t.Errorf("%s: stderr %q, want %q", u, r.stderr, want)
		}
	}
}

// TestHelpCommandHelpFalse: keyward help --help=false is keyward help, as
// --help=false asks for no help of help; what follows it is still the
// command whose help is asked for.
func TestHelpCommandHelpFalse(t *testing.T) {
	top := cli(t, nil, nil, "", "--help")
	group := cli(t, nil, nil, "", "token", "--help")
	list := cli(t, nil, nil, "", "token", "list", "--help")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "--help=false"}, top.stdout},
		{[]string{"help", "-h=0", "token"}, group.stdout},
		{[]string{"help", "--help=false", "token", "list"}, list.stdout},
	} {
		r := cli(t, nil, nil, "", tc.args...)
		r.want(t, 0)
		if r.stdout != tc.want || r.stdout == "" {
			t.Errorf("%v: stdout %q, want %q", tc.args, r.stdout, tc.want)
		}
	}
}

// TestUsageFailureEventsDefault: with no --usage-failure-events, every
// failed verification is kept as a raw event, as PRODUCT §6 promises; the
// env var sets a bound.
func TestUsageFailureEventsDefault(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"Default", nil, -1},
		{"Env", map[string]string{"KEYWARD_USAGE_FAILURE_EVENTS": "20"}, 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return c.env[k] }}
			fs := newFlagSet(e, "serve", help{})
			cfg := defineServeFlags(fs)
			if _, err := fs.parse(nil); err != nil {
				t.Fatal(err)
			}
			if got := cfg.usageConfig().FailureEvents; got != c.want {
				t.Errorf("FailureEvents = %d, want %d", got, c.want)
			}
		})
	}
}

// TestUsageConfigFailureEvents: --usage-failure-events 0 keeps every
// failure, which the recorder spells as a negative bound (its zero is
// the default).
func TestUsageConfigFailureEvents(t *testing.T) {
	for _, tc := range []struct{ flag, want int }{{0, -1}, {1, 1}, {100, 100}} {
		c := serveConfig{UsageFailureEvents: tc.flag}
		if got := c.usageConfig().FailureEvents; got != tc.want {
			t.Errorf("--usage-failure-events %d: FailureEvents %d, want %d", tc.flag, got, tc.want)
		}
	}
}
