package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// help describes a command for its --help.
type help struct {
	usage    string   // what follows the command name, such as "ID [flags]"; "[flags]" when empty
	summary  string   // what the command does, one or more sentences
	notes    []string // further paragraphs, such as the exit status
	examples []string // command lines, at least one
}

// flagSet is a flag.FlagSet for one command. Each flag may take its
// default from an environment variable; the help names the variable and
// shows the built-in default, never the environment's value (which may be
// a secret such as a database URL with a password).
//
// Flags are spelled --name in the help; the flag package accepts -name too.
type flagSet struct {
	fs    *flag.FlagSet
	e     *env
	cmd   string // command path, such as "token create"
	help  help
	order []string // flag names in registration order, for the help
	info  map[string]flagInfo
	envs  [][2]string // environment variables the command reads besides its flags: name, description
	errs  []error     // malformed environment values, reported by parse
	check []func() error

	wantHelp helpValue // --help or -h given (and not =false)
}

type flagInfo struct {
	env      string // environment variable, or ""
	def      string // default shown in the help, or ""
	repeated bool
}

// newFlagSet returns an empty flagSet for the command path cmd.
func newFlagSet(e *env, cmd string, h help) *flagSet {
	fs := flag.NewFlagSet("keyward "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors and help itself
	fs.Usage = func() {}
	f := &flagSet{fs: fs, e: e, cmd: cmd, help: h, info: map[string]flagInfo{}}
	// Defined, so that --help=false asks for no help and --help=maybe
	// is an error, where the flag package takes --help=ANYTHING for
	// --help. Not in order: printHelp lists it apart.
	fs.Var(&f.wantHelp, "help", "show this help")
	fs.Var(&f.wantHelp, "h", "show this help")
	return f
}

// helpValue is the value of --help and -h: a boolean flag.
type helpValue bool

func (h *helpValue) IsBoolFlag() bool { return true }
func (h *helpValue) String() string   { return strconv.FormatBool(bool(*h)) }
func (h *helpValue) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("parse error") // as the flag package's own booleans say
	}
	*h = helpValue(v)
	return nil
}

func (f *flagSet) add(name, env, def string, repeated bool) {
	f.order = append(f.order, name)
	f.info[name] = flagInfo{env: env, def: def, repeated: repeated}
}

// envValue returns the value of the environment variable env, or "" when
// env is "" or unset.
func (f *flagSet) envValue(env string) string {
	if env == "" {
		return ""
	}
	return f.e.getenv(env)
}

// String defines a string flag --name whose default is the value of the
// environment variable env when set (env may be ""), else def. usage may
// name the argument in back quotes, as in flag.PrintDefaults.
func (f *flagSet) String(p *string, name, env, def, usage string) {
	v := def
	if ev := f.envValue(env); ev != "" {
		v = ev
	}
	f.fs.StringVar(p, name, v, usage)
	f.add(name, env, def, false)
}

// Bool defines a boolean flag like String; the environment value must be
// one that strconv.ParseBool accepts.
func (f *flagSet) Bool(p *bool, name, env string, def bool, usage string) {
	f.fs.BoolVar(p, name, envDefault(f, env, def, strconv.ParseBool, "true or false"), usage)
	f.add(name, env, shownDefault(def), false)
}

// Int defines an integer flag like String.
func (f *flagSet) Int(p *int, name, env string, def int, usage string) {
	f.fs.IntVar(p, name, envDefault(f, env, def, strconv.Atoi, "a whole number"), usage)
	f.add(name, env, shownDefault(def), false)
}

// Duration defines a duration flag (Go syntax such as "24h") like String.
func (f *flagSet) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	f.fs.DurationVar(p, name, envDefault(f, env, def, time.ParseDuration, "a duration such as 24h"), usage)
	f.add(name, env, shownDefault(def), false)
}

// envDefault returns the flag default: the environment variable env parsed
// with parse when it is set, else def. A value that does not parse is
// recorded for parse to report, naming what was wanted.
func envDefault[T any](f *flagSet, env string, def T, parse func(string) (T, error), want string) T {
	ev := f.envValue(env)
	if ev == "" {
		return def
	}
	v, err := parse(ev)
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s=%q: want %s", env, ev, want))
		return def
	}
	return v
}

// shownDefault is a default as the help shows it: nothing for a zero value.
func shownDefault[T comparable](def T) string {
	var zero T
	if def == zero {
		return ""
	}
	return fmt.Sprint(def)
}

// Describe replaces the help of the flag name, and the default the help
// shows ("" for none): for a command that takes a shared flag (such as
// --data-dir) but does not use it as the others do.
func (f *flagSet) Describe(name, usage, shownDef string) {
	f.fs.Lookup(name).Usage = usage
	in := f.info[name]
	in.def = shownDef
	f.info[name] = in
}

// Strings defines a flag --name that may be repeated; each use appends its
// value to *p.
func (f *flagSet) Strings(p *[]string, name, usage string) {
	f.fs.Func(name, usage, func(s string) error {
		*p = append(*p, s)
		return nil
	})
	f.add(name, "", "", true)
}

// Env adds an environment variable that the command reads besides its
// flags (such as KEYWARD_TOKEN) to the help.
func (f *flagSet) Env(name, description string) {
	f.envs = append(f.envs, [2]string{name, description})
}

// Check adds a validation that parse runs after parsing, in the order
// added; its error is a usage error, unless it is a workError. Every check
// runs, also after one returned a workError, so a check must not assume
// that those before it succeeded.
func (f *flagSet) Check(fn func() error) {
	f.check = append(f.check, fn)
}

// workError is the error of a Check that found a problem no command line
// can show, such as a file it names that cannot be read: parse returns it
// unwrapped, so that it exits 1, not 2.
type workError struct{ err error }

func (w *workError) Error() string { return w.err.Error() }
func (w *workError) Unwrap() error { return w.err }

// Changed reports whether the flag name was given on the command line.
func (f *flagSet) Changed(name string) bool {
	found := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			found = true
		}
	})
	return found
}

// parse parses args, flags and arguments in any order ("--" ends the
// flags), and returns the arguments. On -h or --help it prints the help to
// standard output and returns flag.ErrHelp, which the command returns in
// turn (run exits 0 for it). Any other problem is a *usageError.
func (f *flagSet) parse(args []string) ([]string, error) {
	var pos []string
	for {
		err := f.fs.Parse(args)
		if f.wantHelp {
			// As the flag package did, stopping at --help: help wins
			// over what follows it.
			f.printHelp(f.e.stdout)
			return nil, flag.ErrHelp
		}
		if err != nil {
			return nil, &usageError{cmd: f.cmd, err: flagError(err, f.fs)}
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(f.errs) > 0 {
		return nil, &usageError{cmd: f.cmd, err: errors.Join(f.errs...)}
	}
	// A usage error that any check finds wins over a file one could not
	// read (a workError): the command line is wrong whatever else is, and
	// the exit status says so.
	var work error
	for _, fn := range f.check {
		err := fn()
		if we, ok := err.(*workError); ok {
			if work == nil {
				work = we.err
			}
		} else if err != nil {
			return nil, &usageError{cmd: f.cmd, err: f.fromEnv(err)}
		}
	}
	if work != nil {
		return nil, work
	}
	return pos, nil
}

// fromEnv returns a check's error err saying, for each flag it names that
// took its value from an environment variable (not given on the command
// line), which variable: whoever configures keyward by its environment
// looks for no flag. An error that names the variable already is left.
func (f *flagSet) fromEnv(err error) error {
	msg := err.Error()
	var from []string
	for _, name := range f.order {
		in := f.info[name]
		if in.env == "" || f.envValue(in.env) == "" || f.Changed(name) || strings.Contains(msg, in.env) || !namesFlag(msg, name) {
			continue
		}
		from = append(from, fmt.Sprintf("--%s is set by %s", name, in.env))
	}
	if len(from) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(from, ", "))
}

// namesFlag reports whether msg names the flag --name, not one whose name
// it begins (--usage in --usage-sample).
func namesFlag(msg, name string) bool {
	for rest := msg; ; {
		i := strings.Index(rest, "--"+name)
		if i < 0 {
			return false
		}
		rest = rest[i+2+len(name):]
		if rest == "" || !(rest[0] == '-' || rest[0] >= 'a' && rest[0] <= 'z' || rest[0] >= '0' && rest[0] <= '9') {
			return true
		}
	}
}

// usagef returns a *usageError of this command.
func (f *flagSet) usagef(format string, args ...any) error {
	return usagef(f.cmd, format, args...)
}

// printHelp writes the command's help: usage, summary, flags with their
// environment variables and defaults, environment, notes and examples.
func (f *flagSet) printHelp(w io.Writer) {
	usage := f.help.usage
	if usage == "" {
		usage = "[flags]"
	}
	fmt.Fprintf(w, "Usage: keyward %s %s\n\n%s\n", f.cmd, usage, f.help.summary)
	fmt.Fprintf(w, "\nFlags:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, name := range f.order {
		fl := f.fs.Lookup(name)
		in := f.info[name]
		arg, text := flag.UnquoteUsage(fl)
		if _, isBool := fl.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		} else if in.repeated && arg == "value" {
			arg = "VALUE"
		}
		left := "--" + name
		if arg != "" {
			left += " " + arg
		}
		var extra []string
		if in.repeated {
			extra = append(extra, "repeatable")
		}
		if in.env != "" {
			extra = append(extra, "env "+in.env)
		}
		if in.def != "" {
			extra = append(extra, "default "+in.def)
		}
		if len(extra) > 0 {
			text += " (" + strings.Join(extra, ", ") + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", left, text)
	}
	fmt.Fprintf(tw, "  -h, --help\tshow this help\n")
	tw.Flush()
	if len(f.envs) > 0 {
		fmt.Fprintf(w, "\nEnvironment:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		for _, ev := range f.envs {
			fmt.Fprintf(tw, "  %s\t%s\n", ev[0], ev[1])
		}
		tw.Flush()
	}
	for _, n := range f.help.notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
	fmt.Fprintf(w, "\nExamples:\n")
	for _, ex := range f.help.examples {
		fmt.Fprintf(w, "  %s\n", ex)
	}
}

// flagError rewords the flag package's errors with the --name spelling
// that the help uses, and says what a number or a duration flag takes
// (the flag package says only "parse error").
func flagError(err error, fs *flag.FlagSet) error {
	msg := err.Error()
	if i := strings.Index(msg, " for flag -"); i >= 0 && strings.HasSuffix(msg, ": parse error") {
		name := strings.TrimLeft(strings.TrimSuffix(msg[i+len(" for flag -"):], ": parse error"), "-")
		if fl := fs.Lookup(name); fl != nil {
			want := ""
			switch fmt.Sprintf("%T", fl.Value) {
			case "*flag.durationValue":
				want = "a duration such as 30s, 5m or 24h"
			case "*flag.intValue", "*flag.int64Value", "*flag.uintValue", "*flag.uint64Value":
				want = "a whole number"
			case "*flag.float64Value":
				want = "a number"
			}
			if want != "" {
				return fmt.Errorf("invalid value %s for flag --%s: want %s", msg[len("invalid value "):i], name, want)
			}
		}
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimPrefix(name, "-")
		var names []string
		fs.VisitAll(func(fl *flag.Flag) {
			if fl.Name != "h" {
				names = append(names, fl.Name)
			}
		})
		if s := suggest(name, names); s != "" {
			return fmt.Errorf("unknown flag --%s; did you mean --%s?", name, s)
		}
		return fmt.Errorf("unknown flag --%s", name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("flag --%s needs a value", strings.TrimPrefix(name, "-"))
	}
	if strings.Contains(msg, " for flag -") && !strings.Contains(msg, " for flag --") {
		return errors.New(strings.Replace(msg, " for flag -", " for flag --", 1))
	}
	// A boolean's: `invalid boolean value "maybe" for -new-root-token`.
	if strings.HasPrefix(msg, "invalid boolean value ") && strings.Contains(msg, " for -") && !strings.Contains(msg, " for --") {
		return errors.New(strings.Replace(msg, " for -", " for --", 1) + " (want true or false)")
	}
	return err
}

// choose accepts *p when it is one of choices, whatever its case, and
// stores it back as the choice spells it: the values of a fixed-choice
// flag (--output, --log-level, ...) are taken in any case, JSON as json
// and WARN as warn. Else it returns the error of choiceError for the flag
// what (such as "--output").
func choose(what string, p *string, choices ...string) error {
	for _, c := range choices {
		if strings.EqualFold(*p, c) {
			*p = c
			return nil
		}
	}
	return choiceError(what, *p, choices)
}

// choiceError says that what must be one of choices, not v, with a hint
// for a near miss, as unknown flags and commands get (see suggest).
func choiceError(what, v string, choices []string) error {
	msg := fmt.Sprintf("%s must be %s, not %q", what, orList(choices), v)
	if s := suggestChoice(v, choices); s != "" {
		msg += fmt.Sprintf("; did you mean %s?", s)
	}
	return errors.New(msg)
}

// suggestChoice is suggest for a flag's value, which also takes a value
// that starts with a choice (of at least three letters) for it: "warning"
// for warn.
func suggestChoice(v string, choices []string) string {
	if s := suggest(v, choices); s != "" {
		return s
	}
	lv, found := strings.ToLower(v), ""
	for _, c := range choices {
		if len(c) >= 3 && strings.HasPrefix(lv, c) {
			if found != "" {
				return ""
			}
			found = c
		}
	}
	return found
}

// orList writes choices as "a, b or c".
func orList(choices []string) string {
	if len(choices) < 2 {
		return strings.Join(choices, "")
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}
