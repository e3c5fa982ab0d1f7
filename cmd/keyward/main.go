// Command keyward is the keyward binary: it runs the server (serve),
// prepares a store (init, migrate), checks and exports the audit log on
// the store (audit), creates dashboard users on the store (user), and talks to a running server to manage and verify
// tokens (token, verify).
//
// Every command prints its usage, flags, environment variables and examples
// with --help. Exit status: 0 on success, 1 on failure (with a one-line
// "keyward: ..." message on standard error), 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/gateway"
	"github.com/keyward/keyward/internal/secret"
)

// version is the release version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run runs the command line args (without the program name) and returns the
// exit status. It touches no process globals: the standard streams and the
// environment come in as arguments, so that tests can drive it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	out := &outWriter{w: stdout}
	e := &env{stdin: stdin, stdout: out, stderr: stderr, getenv: getenv}
	err := dispatch(ctx, e, topGroup, topCommands(), args)
	if err == nil && out.err != nil {
		// What a command printed is its result (a token shown once, the
		// heads audit verify reports): not written, the command failed,
		// whether or not it looked at the error itself.
		err = fmt.Errorf("writing to standard output: %w", out.err)
	}
	return e.exit(ctx, err)
}

// outWriter is standard output as commands see it: it remembers the first
// write that failed (a full disk, a closed descriptor).
type outWriter struct {
	w   io.Writer
	err error
}

func (o *outWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil && o.err == nil {
		o.err = err
	}
	return n, err
}

// env is what a command may use of the process: its standard streams and
// environment variables. Commands receive it instead of reading os.Stdin,
// os.Getenv and the like, so that tests can drive them. It also collects
// the secrets a command has read, so that no error message can show them.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	secrets []string // see addSecret
}

// addSecret records a secret the command holds (a token, a password), so
// that exit scrubs it from the error message it prints. A value shorter
// than minScrubbed is too short to be a secret keyward takes (the error
// says so): scrubbing its letters from every word would garble the
// message, and show the value by what is missing.
func (e *env) addSecret(s string) {
	if len(s) >= minScrubbed {
		e.secrets = append(e.secrets, s)
	}
}

// minScrubbed is the shortest value addSecret records: shorter than any
// token, server secret or password keyward accepts.
const minScrubbed = 8

// secretEnv returns the value of the environment variable name, or the
// content of the file that name+"_FILE" names (surrounding white space
// trimmed). Setting both is an error. The value is recorded with addSecret.
func (e *env) secretEnv(name string) (string, error) {
	v, _, err := e.secretEnvRaw(name)
	return v, err
}

// secretEnvRaw is secretEnv that also returns the value as given: the
// file's content untrimmed, or the variable's value.
func (e *env) secretEnvRaw(name string) (v, raw string, err error) {
	v, file := e.getenv(name), e.getenv(name+"_FILE")
	if v != "" && file != "" {
		return "", "", &bothSetError{name}
	}
	raw = v
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", "", fmt.Errorf("reading %s_FILE: %w", name, err)
		}
		raw = string(b)
		if v = strings.TrimSpace(raw); v == "" {
			return "", "", fmt.Errorf("%s_FILE names an empty file: %s", name, file)
		}
	}
	e.addSecret(v)
	return v, raw, nil
}

// bothSetError is the error of secretEnv for a variable set together with
// its _FILE variant: a usage error where the command tells it apart (see
// workOrUsage), since which value counts would be guesswork.
type bothSetError struct{ name string }

func (b *bothSetError) Error() string {
	return fmt.Sprintf("set only one of %s and %s_FILE", b.name, b.name)
}

// workOrUsage returns an error of secretEnv as a flagSet Check returns it:
// a variable set with its _FILE as is, a usage error; a file that cannot
// be read, or is empty, as a *workError, which exits 1.
func workOrUsage(err error) error {
	var b *bothSetError
	if errors.As(err, &b) {
		return err
	}
	return &workError{err}
}

// usageError is a command line the command cannot run: an unknown command
// or flag, a missing or malformed argument. It exits with status 2.
type usageError struct {
	cmd string // the command path, such as "token create", or "" for the top level
	err error
}

func (u *usageError) Error() string {
	if u.cmd == "" {
		return u.err.Error()
	}
	return u.cmd + ": " + u.err.Error()
}

func (u *usageError) Unwrap() error { return u.err }

// usagef returns a *usageError for the command cmd.
func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// exit prints err, if any, as one line on standard error and returns the
// exit status: 0 for nil or a help request, 2 for a usage error, 1 else.
func (e *env) exit(ctx context.Context, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	msg := err.Error()
	var ke *keyward.Error
	if errors.As(err, &ke) {
		msg = ke.Message
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		msg = "interrupted"
	}
	for _, s := range e.secrets {
		msg = strings.ReplaceAll(msg, s, "[redacted]")
	}
	// A token given where it does not belong (keyward verify kw_..., an
	// extra argument, a flag's value) is echoed by no error message.
	msg = secret.Redact(msg)
	var ce *gateway.ConfigErrors
	if errors.As(err, &ce) && len(ce.Errs) > 1 {
		// One problem a line, as keyward gateway check lists them.
		lines := strings.Split(msg, "\n")
		for i, l := range lines {
			lines[i] = strings.Join(strings.Fields(l), " ")
		}
		msg = strings.Join(lines, "\n  ")
	} else {
		msg = strings.Join(strings.Fields(msg), " ") // one line, whatever the server said
	}
	var ue *usageError
	if errors.As(err, &ue) {
		see := "keyward help"
		if ue.cmd != "" {
			see = "keyward " + ue.cmd + " --help"
		}
		fmt.Fprintf(e.stderr, "keyward: %s (see '%s')\n", msg, see)
		return 2
	}
	fmt.Fprintf(e.stderr, "keyward: %s\n", msg)
	return 1
}

// command is one entry of a dispatcher: a command such as "serve", or a
// group such as "token" whose run dispatches again.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// topCommands lists the commands of the keyward binary, in the order help
// shows them.
func topCommands() []command {
	return []command{
		{"init", "create the store and issue the first root management token", cmdInit},
		{"serve", "run the server: API, OAuth, dashboard, and the gateway if configured", cmdServe},
		{"migrate", "apply the store's schema migrations and exit", cmdMigrate},
		{"backup", "copy the embedded SQLite store to a new file while it serves", cmdBackup},
		{"restore", "put a backup in place of the embedded SQLite store", cmdRestore},
		{"gateway", "check a gateway config file", cmdGateway},
		{"audit", "verify and export the audit log", cmdAudit},
		{"user", "create dashboard users, such as the first owner", cmdUser},
		{"token", "create, list, show, update, rotate, revoke, suspend, resume tokens; their usage", cmdToken},
		{"verify", "verify a token read from standard input", cmdVerify},
		{"version", "print the version", cmdVersion},
		{"help", "show the help of a command", cmdHelp},
	}
}

// group describes a dispatcher level for its help.
type group struct {
	path     string // "" for the top level, else such as "token"
	intro    string
	examples []string
}

var topGroup = group{
	intro: "keyward is a self-hosted API token platform: it issues API tokens, manages\n" +
		"them for their whole life, verifies them, and keeps the audit trail.",
	examples: []string{
		"keyward init",
		"keyward serve --addr 127.0.0.1:8080",
		"KEYWARD_TOKEN_FILE=~/.keyward/token keyward token list",
		"keyward help token create",
	},
}

// dispatch runs the command of cmds that args[0] names, with the rest of
// args. An empty args, or -h/--help, prints the group's help.
func dispatch(ctx context.Context, e *env, g group, cmds []command, args []string) error {
	path := g.path
	if len(args) == 0 {
		printGroupHelp(e.stderr, g, cmds)
		return usagef(path, "missing command")
	}
	name := args[0]
	if isHelp, want, err := helpArg(name); isHelp {
		switch {
		case err != nil:
			return usagef(path, "%v", err)
		case want:
			printGroupHelp(e.stdout, g, cmds)
			return nil
		}
		// --help=false asks for no help: as if not given.
		return dispatch(ctx, e, g, cmds, args[1:])
	}
	switch name {
	case "-version", "--version":
		if path == "" {
			return cmdVersion(ctx, e, args[1:])
		}
	}
	if strings.HasPrefix(name, "-") {
		flags := []string{"help"}
		if path == "" {
			flags = append(flags, "version")
		}
		hint := ""
		if s := suggest(strings.TrimLeft(flagName(name), "-"), flags); s != "" {
			hint = "; did you mean --" + s + "?"
		}
		return usagef(path, "unknown flag %s: flags go after the command%s", name, hint)
	}
	names := make([]string, len(cmds))
	for i, c := range cmds {
		if c.name == name {
			return c.run(ctx, e, args[1:])
		}
		names[i] = c.name
	}
	if s := suggest(name, names); s != "" {
		return usagef(path, "unknown command %q; did you mean %q?", name, s)
	}
	return usagef(path, "unknown command %q", name)
}

// helpArg reports whether arg is the help flag: -h, -help, --h or --help,
// alone or with a value, which the flag package would take for help
// whatever it is. With a value, want is what strconv.ParseBool makes of
// it (--help=true asks for help, --help=false for none), and a value it
// does not take is err.
func helpArg(arg string) (isHelp, want bool, err error) {
	name, value, hasValue := strings.Cut(arg, "=")
	switch name {
	case "-h", "--h", "-help", "--help":
	default:
		return false, false, nil
	}
	if !hasValue {
		return true, true, nil
	}
	want, err = strconv.ParseBool(value)
	if err != nil {
		return true, false, fmt.Errorf("invalid boolean value %q for %s (want true or false, or the flag alone)", value, name)
	}
	return true, want, nil
}

// flagName returns the flag of arg, such as "--hlep=x", without its value.
func flagName(arg string) string {
	name, _, _ := strings.Cut(arg, "=")
	return name
}

// printGroupHelp prints the usage of a dispatcher level and its commands.
func printGroupHelp(w io.Writer, g group, cmds []command) {
	prefix := "keyward"
	if g.path != "" {
		prefix += " " + g.path
	}
	fmt.Fprintf(w, "Usage: %s COMMAND [flags] [arguments]\n\n%s\n\nCommands:\n", prefix, g.intro)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nExamples:\n")
	for _, ex := range g.examples {
		fmt.Fprintf(w, "  %s\n", ex)
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND --help' for the usage, flags and examples of a command.\n", prefix)
}

// cmdHelp prints the help of the command that args name: "keyward help
// token create" is "keyward token create --help".
func cmdHelp(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		printGroupHelp(e.stdout, topGroup, topCommands())
		return nil
	}
	if isHelp, _, _ := helpArg(args[0]); isHelp {
		fs := newFlagSet(e, "help", help{
			usage:    "[COMMAND [SUBCOMMAND]]",
			summary:  "Show the help of a command: its usage, flags, environment variables and examples.",
			examples: []string{"keyward help", "keyward help token create"},
		})
		rest, err := fs.parse(args)
		if err != nil {
			return err
		}
		// --help=false asks for no help of help: the rest names the
		// command, as if it were not there.
		return cmdHelp(ctx, e, rest)
	}
	return dispatch(ctx, e, topGroup, topCommands(), append(append([]string(nil), args...), "--help"))
}

// cmdVersion prints the version of the binary and of Go.
func cmdVersion(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "version", help{
		summary: "Print the version of keyward and of the Go toolchain that built it.\n" +
			"Release builds set it with -ldflags \"-X main.version=v1.2.3\".",
		examples: []string{"keyward version"},
	})
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "keyward %s (%s, %s/%s)\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// versionString returns version, or for a default build the module version
// that the go command recorded, if any.
func versionString() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
