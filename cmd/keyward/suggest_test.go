package main

import (
	"os"
	"testing"
)

func TestSuggest(t *testing.T) {
	top := []string{"init", "serve", "migrate", "backup", "restore", "gateway", "audit", "user", "token", "verify", "version", "help"}
	tok := []string{"create", "list", "show", "usage", "update", "rotate", "revoke", "suspend", "resume"}
	flags := []string{"help", "data-dir", "database-url", "limit", "link-unchained-audit", "scope", "clear-scopes", "x"}
	for _, tc := range []struct {
		name, typed string
		names       []string
		want        string
	}{
		{"OneLetterOff", "tokn", top, "token"},
		// Letters, not bytes: "ï" is one letter off, not two bytes.
		{"OneLetterOffNotASCII", "lïst", tok, "list"},
		{"Swap", "lsit", tok, "list"},
		{"SwapLong", "verfiy", top, "verify"},
		{"Case", "TOKEN", top, "token"},
		{"Prefix", "tok", top, "token"},
		{"PrefixOfLongName", "database", flags, "database-url"},
		{"PrefixToPlural", "clear-scope", flags, "clear-scopes"},
		{"Underscore", "data_dir", flags, "data-dir"},
		{"TwoEditsInLongWord", "suspnd", tok, "suspend"},
		{"FlagOneOff", "limt", flags, "limit"},
		{"MoreWords", "grace-period", []string{"help", "grace", "server", "output"}, "grace"},
		{"MoreWordsUnderscore", "grace_period", []string{"help", "grace", "server", "output"}, "grace"},
		{"MoreWordsLongest", "usage-event-buffer-size", []string{"usage", "usage-sample", "usage-event-buffer"}, "usage-event-buffer"},
		// rate-limit is 4 edits away, one past the limit: no reason to
		// withhold the hint.
		{"MoreWordsBesideFarName", "quota-limit", []string{"name", "scope", "rate-limit", "quota", "server", "output"}, "quota"},
		{"ErrMoreWordsOfShortName", "x-ray", flags, ""},
		{"ErrTwoEditsInShortWord", "sever", top, ""},
		{"ErrAmbiguousPrefix", "re", tok, ""},
		{"ErrAmbiguousLongerPrefix", "res", append(tok, "restart"), ""},
		{"ErrAmbiguousPrefixNearAnother", "usage-e", []string{"usage", "usage-sample", "usage-event-buffer", "usage-event-retention"}, ""},
		{"ErrTie", "lint", []string{"list", "line"}, ""},
		{"ErrShort", "ls", tok, ""},
		{"ErrOneLetter", "y", flags, ""},
		{"ErrEmpty", "", flags, ""},
		{"ErrFar", "deploy", top, ""},
		{"ErrSecret", "kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr", top, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := suggest(tc.typed, tc.names); got != tc.want {
				t.Errorf("suggest(%q) = %q, want %q", tc.typed, got, tc.want)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"token", "token", 0},
		{"tokn", "token", 1},
		{"lsit", "list", 1},
		{"kitten", "sitting", 3},
		{"ca", "abc", 3}, // optimal string alignment: no edit of a swapped pair
		{"tökén", "token", 2},
		{"lïst", "list", 1},
		{"ïl", "lï", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestDidYouMean: an unknown command, subcommand or flag, at every level
// and for the flags of every command, is a usage error (exit 2) that names
// the close match, if there is exactly one, in the error's line.
func TestDidYouMean(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"Command", []string{"tokn", "list"}, `keyward: unknown command "tokn"; did you mean "token"? (see 'keyward help')`},
		{"CommandPrefix", []string{"ser"}, `keyward: unknown command "ser"; did you mean "serve"? (see 'keyward help')`},
		{"CommandNoMatch", []string{"deploy"}, `keyward: unknown command "deploy" (see 'keyward help')`},
		{"CommandSecret", []string{"kw_1SFvOCfmGpJqMSnDyGnDlGJ5HMAUf2Nx0W8ykr"}, `keyward: unknown command "kw_[redacted]" (see 'keyward help')`},
		{"HelpCommand", []string{"help", "tokn"}, `keyward: unknown command "tokn"; did you mean "token"? (see 'keyward help')`},
		{"HelpSubcommand", []string{"help", "token", "lsit"}, `keyward: token: unknown command "lsit"; did you mean "list"? (see 'keyward token --help')`},
		{"TokenSubcommand", []string{"token", "lsit"}, `keyward: token: unknown command "lsit"; did you mean "list"? (see 'keyward token --help')`},
		{"TokenSubcommandAmbiguous", []string{"token", "re"}, `keyward: token: unknown command "re" (see 'keyward token --help')`},
		{"AuditSubcommand", []string{"audit", "verfy"}, `keyward: audit: unknown command "verfy"; did you mean "verify"? (see 'keyward audit --help')`},
		{"UserSubcommand", []string{"user", "crate"}, `keyward: user: unknown command "crate"; did you mean "create"? (see 'keyward user --help')`},
		{"GatewaySubcommand", []string{"gateway", "chek", "g.yaml"}, `keyward: gateway: unknown command "chek"; did you mean "check"? (see 'keyward gateway --help')`},
		{"TopFlag", []string{"--verison"}, `keyward: unknown flag --verison: flags go after the command; did you mean --version? (see 'keyward help')`},
		{"TopFlagValue", []string{"--hlep=1"}, `keyward: unknown flag --hlep=1: flags go after the command; did you mean --help? (see 'keyward help')`},
		{"TopFlagNoMatch", []string{"--data-dir", "d", "serve"}, `keyward: unknown flag --data-dir: flags go after the command (see 'keyward help')`},
		{"GroupFlag", []string{"token", "--hepl"}, `keyward: token: unknown flag --hepl: flags go after the command; did you mean --help? (see 'keyward token --help')`},
		{"GroupFlagNoVersion", []string{"token", "--verison"}, `keyward: token: unknown flag --verison: flags go after the command (see 'keyward token --help')`},
		{"TokenListFlag", []string{"token", "list", "--limt", "5"}, `keyward: token list: unknown flag --limt; did you mean --limit? (see 'keyward token list --help')`},
		{"TokenListFlagSingleDash", []string{"token", "list", "-limt=5"}, `keyward: token list: unknown flag --limt; did you mean --limit? (see 'keyward token list --help')`},
		{"TokenListFlagNoMatch", []string{"token", "list", "--bogus"}, `keyward: token list: unknown flag --bogus (see 'keyward token list --help')`},
		{"TokenListHelpFlag", []string{"token", "list", "--hlep"}, `keyward: token list: unknown flag --hlep; did you mean --help? (see 'keyward token list --help')`},
		{"TokenCreateFlag", []string{"token", "create", "--name", "n", "--scpoe", "a:b"}, `keyward: token create: unknown flag --scpoe; did you mean --scope? (see 'keyward token create --help')`},
		{"TokenUpdateFlag", []string{"token", "update", "tok_1", "--clear-scope"}, `keyward: token update: unknown flag --clear-scope; did you mean --clear-scopes? (see 'keyward token update --help')`},
		{"TokenShowFlag", []string{"token", "show", "tok_1", "--ouptut", "json"}, `keyward: token show: unknown flag --ouptut; did you mean --output? (see 'keyward token show --help')`},
		{"TokenRotateFlag", []string{"token", "rotate", "tok_1", "--grcae", "1h"}, `keyward: token rotate: unknown flag --grcae; did you mean --grace? (see 'keyward token rotate --help')`},
		{"TokenCreateFlagMoreWords", []string{"token", "create", "--name", "n", "--quota-limit", "10/day"}, `keyward: token create: unknown flag --quota-limit; did you mean --quota? (see 'keyward token create --help')`},
		{"TokenRotateFlagMoreWords", []string{"token", "rotate", "tok_1", "--grace-time", "1h"}, `keyward: token rotate: unknown flag --grace-time; did you mean --grace? (see 'keyward token rotate --help')`},
		{"TokenRotateFlagFieldName", []string{"token", "rotate", "tok_1", "--grace_period", "1h"}, `keyward: token rotate: unknown flag --grace_period; did you mean --grace-period? (see 'keyward token rotate --help')`},
		{"TokenRevokeFlag", []string{"token", "revoke", "tok_1", "--reasn", "x"}, `keyward: token revoke: unknown flag --reasn; did you mean --reason? (see 'keyward token revoke --help')`},
		{"TokenUsageFlag", []string{"token", "usage", "tok_1", "--granularty", "day"}, `keyward: token usage: unknown flag --granularty; did you mean --granularity? (see 'keyward token usage --help')`},
		{"VerifyFlag", []string{"verify", "--scpe", "a:b"}, `keyward: verify: unknown flag --scpe; did you mean --scope? (see 'keyward verify --help')`},
		{"ServeFlag", []string{"serve", "--data_dir", "d"}, `keyward: serve: unknown flag --data_dir; did you mean --data-dir? (see 'keyward serve --help')`},
		{"ServeFlagAmbiguousPrefix", []string{"serve", "--usage-e", "1h"}, `keyward: serve: unknown flag --usage-e (see 'keyward serve --help')`},
		{"ServeFlagPrefix", []string{"serve", "--database", "postgres://h/db"}, `keyward: serve: unknown flag --database; did you mean --database-url? (see 'keyward serve --help')`},
		{"InitFlag", []string{"init", "--new-root-tokn"}, `keyward: init: unknown flag --new-root-tokn; did you mean --new-root-token? (see 'keyward init --help')`},
		{"MigrateFlag", []string{"migrate", "--link-unchained"}, `keyward: migrate: unknown flag --link-unchained; did you mean --link-unchained-audit? (see 'keyward migrate --help')`},
		{"BackupFlag", []string{"backup", "--output", "b.db"}, `keyward: backup: unknown flag --output; did you mean --output-file? (see 'keyward backup --help')`},
		{"RestoreFlag", []string{"restore", "--form", "b.db"}, `keyward: restore: unknown flag --form; did you mean --from? (see 'keyward restore --help')`},
		{"AuditVerifyFlag", []string{"audit", "verify", "--workspce", "acme"}, `keyward: audit verify: unknown flag --workspce; did you mean --workspace? (see 'keyward audit verify --help')`},
		{"AuditExportFlag", []string{"audit", "export", "--fromat", "csv"}, `keyward: audit export: unknown flag --fromat; did you mean --format? (see 'keyward audit export --help')`},
		{"AuditPruneFlag", []string{"audit", "prune", "--older", "48h"}, `keyward: audit prune: unknown flag --older; did you mean --older-than? (see 'keyward audit prune --help')`},
		{"UserCreateFlag", []string{"user", "create", "--emial", "a@example.com"}, `keyward: user create: unknown flag --emial; did you mean --email? (see 'keyward user create --help')`},
		{"GatewayCheckFlag", []string{"gateway", "check", "--hepl"}, `keyward: gateway check: unknown flag --hepl; did you mean --help? (see 'keyward gateway check --help')`},
		{"VersionFlag", []string{"version", "--hlep"}, `keyward: version: unknown flag --hlep; did you mean --help? (see 'keyward version --help')`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir) // a command that ran would make its store here
			r := cli(t, nil, nil, "", tc.args...)
			r.want(t, 2)
			if r.stderr != tc.want+"\n" {
				t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q", r.stdout)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("the command ran: %s holds %s", dir, ents[0].Name())
			}
		})
	}
}
