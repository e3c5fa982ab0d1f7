package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
)

func TestUserCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	const pw = "correct horse battery staple"
	r := cli(t, nil, nil, pw+"\n", "user", "create", "--owner", "--email", "Owner@Example.com", "--password-stdin", "--data-dir", dir)
	r.want(t, 0)
	if !strings.Contains(r.stdout, "(owner@example.com) created: owner of workspace \"default\"") {
		t.Errorf("stdout = %q", r.stdout)
	}
	// A new store is made, and said to be: the data dir may be mistyped.
	if !strings.Contains(r.stderr, "there was no store in "+dir+": a new one was created") {
		t.Errorf("stderr = %q, want a note of the new store", r.stderr)
	}
	// The event is in the chained audit log, without the password.
	exp := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir)
	exp.want(t, 0)
	if !strings.Contains(exp.stdout, `"action":"user.create"`) || strings.Contains(exp.stdout, pw) {
		t.Errorf("audit export: %s", exp.stdout)
	}
	cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir).want(t, 0)
	db, err := os.ReadFile(filepath.Join(dir, "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(db), pw) {
		t.Error("the database holds the password in clear")
	}

	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"ErrEmailTaken", pw + "\n", []string{"--email", "owner@example.com", "--password-stdin"}, 1, "a user with this email exists"},
		{"ErrCommonPassword", "password1234\n", []string{"--email", "bob@example.com", "--password-stdin"}, 1, "list of common or breached passwords"},
		{"ErrShortPassword", "short\n", []string{"--email", "bob@example.com", "--password-stdin"}, 1, "at least 12 characters"},
		{"ErrNoPassword", "", []string{"--email", "bob@example.com", "--password-stdin"}, 1, "holds no password"},
		{"ErrNoTerminal", pw + "\n", []string{"--email", "bob@example.com"}, 1, "--password-stdin"},
		{"ErrNoEmail", pw + "\n", []string{"--password-stdin"}, 2, "--email is required"},
		{"ErrBadEmail", pw + "\n", []string{"--email", "not an email", "--password-stdin"}, 2, "enter an email address"},
		{"ErrBadRole", pw + "\n", []string{"--email", "bob@example.com", "--role", "god", "--password-stdin"}, 2, "--role must be"},
		{"ErrOwnerAndRole", pw + "\n", []string{"--email", "bob@example.com", "--owner", "--role", "viewer", "--password-stdin"}, 2, "disagree"},
		{"ErrNoWorkspace", pw + "\n", []string{"--email", "bob@example.com", "--workspace", "acme", "--password-stdin"}, 1, `no workspace named "acme"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, nil, nil, tt.stdin, append([]string{"user", "create", "--data-dir", dir}, tt.args...)...)
			r.want(t, tt.code)
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr = %q, want %q", r.stderr, tt.want)
			}
			if strings.Contains(r.stderr, strings.TrimSpace(tt.stdin)) && tt.stdin != "" {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}
	// A refused password that is a word of the refusal itself is not
	// scrubbed from it: the message is fixed text, and "[redacted] refused:
	// ... a long [redacted] ..." would garble it and show the password by
	// where the gaps are.
	for _, pw := range []string{"password", "remember", "characters"} {
		t.Run("ErrShortPasswordInMessage/"+pw, func(t *testing.T) {
			r := cli(t, nil, nil, pw+"\n", "user", "create", "--data-dir", dir, "--email", "bob@example.com", "--password-stdin")
			r.want(t, 1)
			if want := "keyward: password refused: use at least 12 characters; a few unrelated words make a long password that is easy to remember\n"; r.stderr != want {
				t.Errorf("stderr = %q, want %q", r.stderr, want)
			}
		})
	}
	t.Run("OKMember", func(t *testing.T) {
		r := cli(t, nil, nil, "another long passphrase\n", "user", "create", "--email", "bob@example.com", "--password-stdin", "--data-dir", dir)
		r.want(t, 0)
		if r.stderr != "" {
			t.Errorf("stderr = %q for a store that exists", r.stderr)
		}
		exp := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir)
		var n int
		for _, line := range strings.Split(strings.TrimSpace(exp.stdout), "\n") {
			var e struct{ Action string }
			json.Unmarshal([]byte(line), &e)
			if e.Action == "user.create" {
				n++
			}
		}
		if n != 2 {
			t.Errorf("%d user.create events, want 2", n)
		}
	})
}

// A store is never given a fresh server secret, and a write to it under a
// secret that made none of its tokens is refused unless the old secret is
// declared lost.
func TestWrongServerSecretCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cli(t, nil, nil, "", "init", "--data-dir", dir, "--output", "json").want(t, 0)
	secretFile := filepath.Join(dir, "server.secret")
	kept, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(secretFile); err != nil {
		t.Fatal(err)
	}
	r := cli(t, nil, nil, "", "init", "--data-dir", dir, "--new-root-token")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "holds a store but no server secret") {
		t.Errorf("stderr = %q", r.stderr)
	}
	if _, err := os.Stat(secretFile); err == nil {
		t.Fatal("a new server secret was generated for an existing store")
	}
	// Nor does audit verify check the log under a new random key.
	r = cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "holds a store but no server secret") {
		t.Errorf("audit verify: stderr = %q", r.stderr)
	}
	if _, err := os.Stat(secretFile); err == nil {
		t.Fatal("audit verify generated a server secret")
	}

	wrong := map[string]string{"KEYWARD_SECRET": strings.Repeat("cd", 32)}
	const pw = "correct horse battery staple"
	// Under a secret that made no stored token, the writing commands
	// refuse, leaving the audit chain as it was, unless told the old
	// secret is lost.
	events := func() int {
		t.Helper()
		r := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir)
		r.want(t, 0)
		return strings.Count(r.stdout, "\n")
	}
	restore := func() {
		t.Helper()
		if err := os.WriteFile(secretFile, kept, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	remove := func() {
		t.Helper()
		if err := os.Remove(secretFile); err != nil {
			t.Fatal(err)
		}
	}
	restore()
	before := events()
	remove()
	r = cli(t, nil, wrong, pw+"\n", "user", "create", "--email", "ann@example.com", "--password-stdin", "--data-dir", dir)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "every stored token secret (1) was made under a server secret other than this one") ||
		!strings.Contains(r.stderr, "nothing written") || !strings.Contains(r.stderr, "--new-server-secret") ||
		strings.Contains(r.stderr, strings.Repeat("cd", 32)) {
		t.Errorf("stderr = %q", r.stderr)
	}
	r = cli(t, nil, wrong, "", "init", "--data-dir", dir, "--new-root-token")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "nothing written") {
		t.Errorf("init --new-root-token: stderr %q", r.stderr)
	}
	restore()
	if n := events(); n != before {
		t.Fatalf("the refused commands wrote: %d audit events, %d before", n, before)
	}
	if r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir); r.code != 0 {
		t.Fatalf("audit verify after the refused commands: exit %d, %s", r.code, r.stderr)
	}
	remove()
	r = cli(t, nil, wrong, pw+"\n", "user", "create", "--email", "ann@example.com", "--password-stdin", "--data-dir", dir, "--new-server-secret")
	r.want(t, 0)
	if !strings.Contains(r.stderr, "warning: every stored token secret (1) was made under a server secret other than this one") {
		t.Errorf("user create --new-server-secret: stderr %q", r.stderr)
	}
	r = cli(t, nil, wrong, "", "init", "--data-dir", dir, "--new-root-token", "--new-server-secret")
	if r.code != 0 || !strings.Contains(r.stderr, "warning: every stored token secret (1)") {
		t.Errorf("init --new-root-token --new-server-secret: exit %d, stderr %q", r.code, r.stderr)
	}

	// Under the right secret: no warning.
	if err := os.WriteFile(secretFile, kept, 0o600); err != nil {
		t.Fatal(err)
	}
	r = cli(t, nil, nil, pw+"\n", "user", "create", "--email", "bob@example.com", "--password-stdin", "--data-dir", dir)
	r.want(t, 0)
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("warned under the right secret: %q", r.stderr)
	}
}

// A store made while KEYWARD_SECRET was used with white space at its ends,
// as given (the newline of a file it was read from, say), keeps working now
// that the secret is used trimmed: the value as given is a previous secret.
func TestSecretWithNewline(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	raw := strings.Repeat("s", 64) + "\n"
	ctx := context.Background()
	keys, err := secret.NewKeyring(raw)
	if err != nil {
		t.Fatal(err)
	}
	cfg := storeConfig{DataDir: dir, Secret: raw}
	st, err := openStore(ctx, cfg, keys)
	if err != nil {
		t.Fatal(err)
	}
	svc := &manage.Service{Store: st, Keys: keys}
	if _, _, err := svc.CreateRootToken(ctx, false); err != nil {
		t.Fatal(err)
	}
	st.Close()

	env := map[string]string{"KEYWARD_SECRET": raw}
	r := cli(t, nil, env, "", "init", "--data-dir", dir, "--new-root-token")
	r.want(t, 0)
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("init warned: %q", r.stderr)
	}
	cli(t, nil, env, "", "audit", "verify", "--data-dir", dir).want(t, 0)

	// Rotated away, the value as given (from a file, say) is a previous
	// secret as it is: the events linked under it still verify.
	prevFile := filepath.Join(t.TempDir(), "previous")
	if err := os.WriteFile(prevFile, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	rotated := map[string]string{"KEYWARD_SECRET": strings.Repeat("n", 64), "KEYWARD_SECRET_PREVIOUS_FILE": prevFile}
	cli(t, nil, rotated, "", "audit", "verify", "--data-dir", dir).want(t, 0)
	rotated = map[string]string{"KEYWARD_SECRET": strings.Repeat("n", 64), "KEYWARD_SECRET_PREVIOUS": raw}
	cli(t, nil, rotated, "", "audit", "verify", "--data-dir", dir).want(t, 0)
}

// TestStoreCommandsLeaveNothing: a command on a data dir that does not
// exist yet, which fails on its input, leaves no data dir, store or
// server secret behind.
func TestStoreCommandsLeaveNothing(t *testing.T) {
	const pw = "correct horse battery staple"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"user", "create", "--workspace", "no-such", "--email", "a@b.example", "--password-stdin"},
			`keyward: no workspace named "no-such": there is no store in DIR, and a new one would hold only the "default" workspace; nothing was created (check --data-dir if you meant an existing store)` + "\n"},
		{[]string{"audit", "verify"}, "keyward: no keyward store in DIR: stat DIR/keyward.db: no such file or directory\n"},
		{[]string{"audit", "export"}, "keyward: no keyward store in DIR: stat DIR/keyward.db: no such file or directory\n"},
		{[]string{"audit", "prune", "--older-than", "8760h"}, "keyward: no keyward store in DIR: stat DIR/keyward.db: no such file or directory\n"},
	} {
		base := t.TempDir()
		dir := filepath.Join(base, "new", "data")
		r := cli(t, nil, nil, pw+"\n", append(tc.args, "--data-dir", dir)...)
		r.want(t, 1)
		if want := strings.ReplaceAll(tc.want, "DIR", dir); r.stderr != want {
			t.Errorf("%v: stderr %q, want %q", tc.args, r.stderr, want)
		}
		if _, err := os.Stat(filepath.Join(base, "new")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v: made %s (%v)", tc.args, filepath.Join(base, "new"), err)
		}
	}
}
