package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
	"github.com/keyward/keyward/internal/manage"
	"golang.org/x/term"
)

var userGroup = group{
	path: "user",
	intro: "Manage dashboard users on the store directly, with the same --data-dir or\n" +
		"--database-url and server secret (KEYWARD_SECRET) as keyward serve.",
	examples: []string{
		"keyward user create --owner --email you@example.com",
		"echo \"$PASSWORD\" | keyward user create --email ann@example.com --role admin --password-stdin",
	},
}

func userCommands() []command {
	return []command{
		{"create", "create a dashboard user, such as the first owner", cmdUserCreate},
	}
}

// cmdUser dispatches the user subcommands.
func cmdUser(ctx context.Context, e *env, args []string) error {
	return dispatch(ctx, e, userGroup, userCommands(), args)
}

// cmdUserCreate creates a user and its membership of a workspace.
func cmdUserCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "user create", help{
		summary: "Create a dashboard user with a membership of a workspace. The first owner is made\n" +
			"this way: the dashboard has no setup page and no setup secret. The password is\n" +
			"asked for twice at a prompt, or read from the first line of standard input with\n" +
			"--password-stdin. It must have at least 12 characters and not be a common password.",
		notes: []string{"Roles: owner (everything, members and settings), admin (every token), member (its own\n" +
			"tokens), viewer (reads every token, changes nothing)."},
		examples: []string{
			"keyward user create --owner --email you@example.com",
			"keyward user create --email ann@example.com --role member --workspace acme",
			"keyward user create --owner --email you@example.com --password-stdin < password.txt",
		},
	})
	var cfg storeConfig
	var email, role, workspace string
	var owner, fromStdin, newSecret bool
	defineStoreFlags(fs, &cfg)
	fs.String(&email, "email", "", "", "the user's email `ADDRESS`, with which they sign in (required)")
	fs.Bool(&owner, "owner", "", false, "make the user an owner of the workspace (same as --role owner)")
	fs.String(&role, "role", "", keyward.RoleMember, "the user's `ROLE` in the workspace: owner, admin, member or viewer")
	fs.String(&workspace, "workspace", "", keyward.DefaultWorkspace, "the workspace, by `NAME` or id")
	fs.Bool(&fromStdin, "password-stdin", "", false, "read the password from the first line of standard input instead of a prompt")
	defineNewSecretFlag(fs, &newSecret)
	defineServerSecrets(fs, &cfg)
	fs.Check(func() error {
		if email == "" {
			return errors.New("--email is required")
		}
		if _, err := keyward.NormalizeEmail(email); err != nil {
			return fmt.Errorf("--email: %s", keyward.ErrorMessage(err))
		}
		if err := choose("--role", &role, keyward.Roles...); err != nil {
			return err
		}
		if owner {
			if fs.Changed("role") && role != keyward.RoleOwner {
				return errors.New("--owner and --role " + role + " disagree")
			}
			role = keyward.RoleOwner
		}
		return nil
	})
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	// A store yet to be made will hold the default workspace alone: a
	// user of another one is refused before the data dir, its secret and
	// its store are made for nothing (and before the password is asked).
	created := newSQLiteStore(cfg)
	if created && workspace != keyward.DefaultWorkspace {
		return fmt.Errorf("no workspace named %q: there is no store in %s, and a new one would hold only the %q workspace; nothing was created (check --data-dir if you meant an existing store)",
			workspace, cfg.DataDir, keyward.DefaultWorkspace)
	}
	pw, err := readPassword(ctx, e, fromStdin)
	if err != nil {
		return err
	}
	// Check before opening the store, so that a refused password leaves no
	// trace (not even a new data dir). The refusal is fixed text that never
	// holds the password, so the password is recorded for scrubbing only
	// once accepted: scrubbing a refused one that is a word of the refusal
	// ("password", "remember") would garble it and show where it was.
	if err := account.CheckPassword(pw, email); err != nil {
		return errors.New("password refused: " + keyward.ErrorMessage(err))
	}
	e.addSecret(pw)
	keys, err := keyring(cfg)
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg, keys)
	if err != nil {
		return err
	}
	defer store.Close()
	if created {
		noteNewStore(e, cfg)
	}
	if err := checkKeysCLI(ctx, e, store, keys, newSecret); err != nil {
		return err
	}
	accounts, ok := store.(keyward.AccountStore)
	if !ok {
		return errors.New("this store does not keep dashboard users")
	}
	svc := &manage.Service{Store: store, Keys: keys}
	if _, err := svc.EnsureDefaultWorkspace(ctx); err != nil {
		return err
	}
	ws, err := store.FindWorkspaceByName(ctx, workspace)
	if keyward.ErrorCode(err) == keyward.ENOTFOUND {
		ws, err = store.FindWorkspace(ctx, workspace)
	}
	if err != nil {
		if keyward.ErrorCode(err) == keyward.ENOTFOUND {
			return fmt.Errorf("no workspace named %q", workspace)
		}
		return err
	}
	u, err := account.CreateUser(ctx, accounts, account.NewUser{Email: email, Password: pw, WorkspaceID: ws.ID, Role: role},
		account.DefaultParams, keyward.Actor{Type: keyward.ActorSystem, ID: "cli"}, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "User %s (%s) created: %s of workspace %q. Sign in to the dashboard with this email and password.\n",
		u.ID, u.Email, role, ws.Name)
	return nil
}

// readPassword reads the password from the first line of standard input
// (fromStdin), or asks for it twice on the terminal without echo.
func readPassword(ctx context.Context, e *env, fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(io.LimitReader(e.stdin, account.MaxPasswordLen+2)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", errors.New("--password-stdin: standard input holds no password")
		}
		return pw, nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no terminal to ask for the password: pass it on standard input with --password-stdin")
	}
	ask := func(prompt string) (string, error) {
		b, err := readHidden(ctx, e, f, prompt)
		return string(b), err
	}
	pw, err := ask("Password (at least 12 characters): ")
	if err != nil {
		return "", err
	}
	again, err := ask("Password again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("the two passwords differ")
	}
	return pw, nil
}
