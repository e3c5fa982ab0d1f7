package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/client"
	"github.com/keyward/keyward/internal/secret"
)

var tokenGroup = group{
	path: "token",
	intro: "Manage the tokens of a workspace on a running keyward server. The commands\n" +
		"authenticate with the management token in KEYWARD_TOKEN (or KEYWARD_TOKEN_FILE)\n" +
		"and talk to --server (KEYWARD_SERVER, default " + defaultServer + ").",
	examples: []string{
		"keyward token create --name \"ci deploy\" --scope orders:read --expires-in 720h",
		"keyward token list --state active",
		"keyward token revoke tok_01jd8... --reason \"leaked in a log\"",
	},
}

func tokenCommands() []command {
	return []command{
		{"create", "issue a token and print its secret once", cmdTokenCreate},
		{"list", "list tokens", cmdTokenList},
		{"show", "show one token", cmdTokenShow},
		{"usage", "show how often a token was verified, by outcome, over time", cmdTokenUsage},
		{"update", "change a token's name, scopes, expiry, limits, subject or metadata", cmdTokenUpdate},
		{"rotate", "issue a new secret for a token", cmdTokenRotate},
		{"revoke", "revoke a token for good", cmdTokenRevoke},
		{"suspend", "suspend a token until it is resumed", cmdTokenSuspend},
		{"resume", "resume a suspended token", cmdTokenResume},
	}
}

// cmdToken dispatches the token subcommands.
func cmdToken(ctx context.Context, e *env, args []string) error {
	return dispatch(ctx, e, tokenGroup, tokenCommands(), args)
}

// tokenFlags holds the token fields that create and update set.
type tokenFlags struct {
	name, expiresAt, rateLimit, quota, subject, metadata string
	scopes, cidrs                                        []string
	expiresIn                                            time.Duration

	// update only
	clearScopes, clearExpiry, clearCIDRs, clearRateLimit, clearQuota, clearSubject, clearMetadata bool
}

func (t *tokenFlags) define(fs *flagSet, update bool) {
	req := " (required)"
	if update {
		req = ""
	}
	fs.String(&t.name, "name", "", "", "`NAME` of the token, up to 200 characters"+req)
	fs.Strings(&t.scopes, "scope", "`SCOPE` the token grants, such as orders:read or orders:*")
	fs.Duration(&t.expiresIn, "expires-in", "", 0, "expire after `DURATION` from now, such as 720h")
	fs.String(&t.expiresAt, "expires-at", "", "", "expire at `TIME` (RFC 3339), such as 2027-01-01T00:00:00Z")
	fs.Strings(&t.cidrs, "allow-cidr", "accept the token only from `CIDR` or address, such as 203.0.113.0/24")
	fs.String(&t.rateLimit, "rate-limit", "", "", "at most N valid verifications in any window, as `N/WINDOW` such as 100/1m")
	fs.String(&t.quota, "quota", "", "", "at most N valid verifications per day, month or in total, as `N/PERIOD` with PERIOD day, month or none (in total), such as 10000/month")
	fs.String(&t.subject, "subject", "", "", "`SUBJECT` the token acts for, such as customer-42")
	fs.String(&t.metadata, "metadata", "", "", "`JSON` object kept with the token, such as '{\"team\":\"payments\"}'")
	if update {
		fs.Bool(&t.clearScopes, "clear-scopes", "", false, "remove every scope")
		fs.Bool(&t.clearExpiry, "clear-expiry", "", false, "make the token never expire")
		fs.Bool(&t.clearCIDRs, "clear-cidrs", "", false, "remove the IP allowlist")
		fs.Bool(&t.clearRateLimit, "clear-rate-limit", "", false, "remove the rate limit")
		fs.Bool(&t.clearQuota, "clear-quota", "", false, "remove the quota")
		fs.Bool(&t.clearSubject, "clear-subject", "", false, "remove the subject")
		fs.Bool(&t.clearMetadata, "clear-metadata", "", false, "remove the metadata")
	}
}

// createRequest returns the body of a create from the flags.
func (t *tokenFlags) createRequest(fs *flagSet) (client.CreateTokenRequest, error) {
	req := client.CreateTokenRequest{Name: t.name, Scopes: t.scopes, AllowedCIDRs: t.cidrs, Subject: t.subject}
	if strings.TrimSpace(t.name) == "" {
		return req, fs.usagef("--name is required")
	}
	if fs.Changed("expires-in") && fs.Changed("expires-at") {
		return req, fs.usagef("give --expires-in or --expires-at, not both")
	}
	var err error
	if fs.Changed("expires-in") {
		if t.expiresIn <= 0 {
			return req, fs.usagef("--expires-in must be positive, such as 720h")
		}
		req.ExpiresIn = client.Duration(t.expiresIn)
	}
	if fs.Changed("expires-at") {
		at, err := parseTime(t.expiresAt)
		if err != nil {
			return req, fs.usagef("%v", err)
		}
		req.ExpiresAt = &at
	}
	if fs.Changed("rate-limit") {
		if req.RateLimit, err = parseRateLimit(t.rateLimit); err != nil {
			return req, fs.usagef("%v", err)
		}
	}
	if fs.Changed("quota") {
		if req.Quota, err = parseQuota(t.quota); err != nil {
			return req, fs.usagef("%v", err)
		}
	}
	if fs.Changed("metadata") {
		if req.Metadata, err = parseMetadata(t.metadata); err != nil {
			return req, fs.usagef("%v", err)
		}
	}
	return req, nil
}

// patch returns the merge patch of an update: only the flags given on the
// command line go into it.
func (t *tokenFlags) patch(fs *flagSet, now time.Time) (*client.TokenPatch, error) {
	p := new(client.TokenPatch)
	given := func(names ...string) []string {
		var out []string
		for _, n := range names {
			// --clear-x=false is given but asks for nothing.
			if v := fs.fs.Lookup(n).Value; fs.Changed(n) && !(isBoolFlag(v) && v.String() == "false") {
				out = append(out, "--"+n)
			}
		}
		return out
	}
	for _, group := range [][]string{
		{"scope", "clear-scopes"},
		{"expires-in", "expires-at", "clear-expiry"},
		{"allow-cidr", "clear-cidrs"},
		{"rate-limit", "clear-rate-limit"},
		{"quota", "clear-quota"},
		{"subject", "clear-subject"},
		{"metadata", "clear-metadata"},
	} {
		if g := given(group...); len(g) > 1 {
			return nil, fs.usagef("give only one of %s", strings.Join(g, ", "))
		}
	}
	if fs.Changed("name") {
		p.SetName(t.name)
	}
	switch {
	case fs.Changed("scope"):
		p.SetScopes(t.scopes)
	case t.clearScopes:
		p.ClearScopes()
	}
	switch {
	case fs.Changed("expires-in"):
		if t.expiresIn <= 0 {
			return nil, fs.usagef("--expires-in must be positive, such as 720h")
		}
		p.SetExpiresAt(now.Add(t.expiresIn))
	case fs.Changed("expires-at"):
		at, err := parseTime(t.expiresAt)
		if err != nil {
			return nil, fs.usagef("%v", err)
		}
		p.SetExpiresAt(at)
	case t.clearExpiry:
		p.ClearExpiresAt()
	}
	switch {
	case fs.Changed("allow-cidr"):
		p.SetAllowedCIDRs(t.cidrs)
	case t.clearCIDRs:
		p.ClearAllowedCIDRs()
	}
	switch {
	case fs.Changed("rate-limit"):
		r, err := parseRateLimit(t.rateLimit)
		if err != nil {
			return nil, fs.usagef("%v", err)
		}
		p.SetRateLimit(*r)
	case t.clearRateLimit:
		p.ClearRateLimit()
	}
	switch {
	case fs.Changed("quota"):
		q, err := parseQuota(t.quota)
		if err != nil {
			return nil, fs.usagef("%v", err)
		}
		p.SetQuota(*q)
	case t.clearQuota:
		p.ClearQuota()
	}
	switch {
	case fs.Changed("subject"):
		p.SetSubject(t.subject)
	case t.clearSubject:
		p.ClearSubject()
	}
	switch {
	case fs.Changed("metadata"):
		m, err := parseMetadata(t.metadata)
		if err != nil {
			return nil, fs.usagef("%v", err)
		}
		p.SetMetadata(m)
	case t.clearMetadata:
		p.ClearMetadata()
	}
	if p.Len() == 0 {
		return nil, fs.usagef("nothing to update: give at least one flag, such as --name")
	}
	return p, nil
}

func isBoolFlag(v flag.Value) bool {
	b, ok := v.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func parseTime(s string) (time.Time, error) {
	t, err := keyward.ParseRFC3339(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expires-at %q: want an RFC 3339 time such as 2027-01-01T00:00:00Z", s)
	}
	return t, nil
}

// splitLimit splits "N/X" into a positive N and X.
func splitLimit(flag, s, example string) (int64, string, error) {
	n, x, ok := strings.Cut(s, "/")
	limit, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	if !ok || err != nil || limit <= 0 || strings.TrimSpace(x) == "" {
		return 0, "", fmt.Errorf("--%s %q: want a positive number, a slash and %s", flag, s, example)
	}
	return limit, strings.TrimSpace(x), nil
}

// parseRateLimit parses "N/WINDOW" such as "100/1m".
func parseRateLimit(s string) (*client.RateLimit, error) {
	n, w, err := splitLimit("rate-limit", s, "a window, such as 100/1m")
	if err != nil {
		return nil, err
	}
	d, err := time.ParseDuration(w)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("--rate-limit %q: the window must be a duration such as 1s, 1m or 24h", s)
	}
	return &client.RateLimit{Limit: n, Window: client.Duration(d)}, nil
}

// parseQuota parses "N/PERIOD" such as "10000/month".
func parseQuota(s string) (*client.Quota, error) {
	n, p, err := splitLimit("quota", s, "a period, such as 10000/month")
	if err != nil {
		return nil, err
	}
	if err := choose(fmt.Sprintf("--quota %q: the period", s), &p, client.PeriodDay, client.PeriodMonth, client.PeriodNone); err != nil {
		return nil, err
	}
	return &client.Quota{Limit: n, Period: p}, nil
}

// parseMetadata parses a JSON object.
func parseMetadata(s string) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return nil, fmt.Errorf(`--metadata must be a JSON object such as '{"team":"payments"}'`)
	}
	return m, nil
}

// oneArg returns the only argument, such as a token id.
func oneArg(fs *flagSet, args []string, what string) (string, error) {
	switch {
	case len(args) == 0:
		return "", fs.usagef("missing %s", what)
	case len(args) > 1:
		return "", fs.usagef("unexpected argument %q", args[1])
	case args[0] == "":
		return "", fs.usagef("empty %s", what)
	case what == "token ID" && secret.Redact(args[0]) != args[0]:
		// Sent, it would be in the URL, and so in the server's and any
		// proxy's access log.
		return "", fs.usagef("%s is a token's secret, not its ID (tok_...), and was not sent; to learn which token it is, pipe it to 'keyward verify'", secret.Redact(args[0]))
	}
	return args[0], nil
}

func noArgs(fs *flagSet, args []string) error {
	if len(args) > 0 {
		return fs.usagef("unexpected argument %q", args[0])
	}
	return nil
}

const secretNote = "The token's secret is shown only this once: store it now, it cannot be shown again."

func cmdTokenCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "token create", help{
		usage: "--name NAME [flags]",
		summary: "Issue a token and print it with its secret. The secret is shown only this once;\n" +
			"in table output it is the last line, alone, so that a script can take it.",
		examples: []string{
			"keyward token create --name \"ci deploy\" --scope orders:read --scope orders:write --expires-in 720h",
			"keyward token create --name crm --subject customer-42 --rate-limit 100/1m --quota 10000/month --allow-cidr 203.0.113.0/24",
			"keyward token create --name bot --metadata '{\"team\":\"payments\"}' --output json | jq -r .token",
		},
	})
	var tf tokenFlags
	tf.define(fs, false)
	r := addRemoteFlags(fs)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	req, err := tf.createRequest(fs)
	if err != nil {
		return err
	}
	c, err := r.client(e)
	if err != nil {
		return err
	}
	it, err := c.CreateToken(ctx, req)
	if err != nil {
		return apiError(err)
	}
	return printIssued(e, r, it, "")
}

// printIssued prints a token with its new secret.
func printIssued(e *env, r *remote, it *client.IssuedToken, note string) error {
	e.addSecret(it.Secret)
	if r.json() {
		return writeJSON(e.stdout, it)
	}
	if err := printToken(e.stdout, &it.Token); err != nil {
		return err
	}
	if note != "" {
		fmt.Fprintf(e.stdout, "\n%s\n", note)
	}
	// The secret stands alone on the last line, for people to copy and
	// for scripts to take with tail -n 1.
	_, err := fmt.Fprintf(e.stdout, "\n%s\n%s\n", secretNote, it.Secret)
	return err
}

func cmdTokenList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "token list", help{
		summary: "List the tokens of the workspace, ordered by id: all of them, or one page with --limit.\n" +
			"With --output json it prints {\"items\": [...]}, plus \"next_cursor\" after a page that is not the last.",
		examples: []string{
			"keyward token list",
			"keyward token list --state active --scope orders:read",
			"keyward token list --limit 50 --cursor tok_01jd8...",
			"keyward token list --output json | jq -r '.items[].id'",
		},
	})
	var f client.TokenFilter
	var all bool
	fs.String(&f.State, "state", "", "", "only tokens in `STATE`: active, expired, revoked, suspended or pending_approval")
	fs.String(&f.Subject, "subject", "", "", "only tokens of `SUBJECT` (exact)")
	fs.String(&f.Scope, "scope", "", "", "only tokens holding `SCOPE` (exact)")
	fs.String(&f.Name, "name", "", "", "only tokens whose name contains `TEXT`, ignoring case")
	fs.Int(&f.Limit, "limit", "", 0, "print one page of at most `N` tokens (1 to 500) instead of all")
	fs.String(&f.Cursor, "cursor", "", "", "start after the page that answered `CURSOR` as its next cursor")
	fs.Bool(&all, "all", "", false, "with --limit, fetch every page, N tokens at a time")
	r := addRemoteFlags(fs)
	fs.Check(func() error {
		if f.State != "" {
			if err := choose("--state", &f.State, client.StateActive, client.StateExpired, client.StateRevoked, client.StateSuspended, client.StatePendingApproval); err != nil {
				return err
			}
		}
		if f.Limit < 0 || f.Limit > 500 || f.Limit == 0 && fs.Changed("limit") {
			return fmt.Errorf("--limit must be from 1 to 500")
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
	c, err := r.client(e)
	if err != nil {
		return err
	}
	if f.Limit > 0 && !all {
		page, err := c.ListTokens(ctx, f)
		if err != nil {
			return apiError(err)
		}
		if r.json() {
			return writeJSON(e.stdout, page)
		}
		if err := printTokens(e.stdout, page.Items); err != nil {
			return err
		}
		if page.NextCursor != "" {
			fmt.Fprintf(e.stderr, "More tokens: run again with --cursor %s, or with --all.\n", page.NextCursor)
		}
		return nil
	}
	toks, err := c.AllTokens(ctx, f)
	if err != nil {
		return apiError(err)
	}
	if r.json() {
		return writeJSON(e.stdout, client.List[client.Token]{Items: toks})
	}
	return printTokens(e.stdout, toks)
}

// maxNameCell and maxScopesCell are the most columns of a token's name
// and of its scopes that a table shows: names run to 200 characters, a
// token may hold many scopes, and one long cell would widen every row.
const (
	maxNameCell   = 40
	maxScopesCell = 40
)

// printTokens prints a table of tokens, one a line, with names cut to
// maxNameCell columns and scopes to maxScopesCell, the first scopes and
// how many more (--output json has them whole).
func printTokens(w io.Writer, toks []client.Token) error {
	rows := [][]string{{"ID", "NAME", "HINT", "STATE", "SCOPES", "EXPIRES", "LAST USED"}}
	for _, t := range toks {
		scopes := make([]string, len(t.Scopes))
		for i, s := range t.Scopes {
			scopes[i] = clean(s)
		}
		rows = append(rows, []string{clean(t.ID), cut(clean(t.Name), maxNameCell), clean(t.Hint), clean(t.State),
			clean(cutList(scopes, maxScopesCell)), fmtTime(t.ExpiresAt, "never"), fmtTime(t.LastUsedAt, "never")})
	}
	return writeTable(w, rows)
}

// printToken prints one token as a two-column table.
func printToken(w io.Writer, t *client.Token) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("ID", clean(t.ID))
	row("NAME", clean(t.Name))
	row("HINT", clean(t.Hint))
	row("STATE", clean(t.State))
	row("SCOPES", clean(fmtList(t.Scopes)))
	row("EXPIRES", fmtTime(t.ExpiresAt, "never"))
	row("ALLOWED CIDRS", clean(fmtList(t.AllowedCIDRs)))
	rl := ""
	if t.RateLimit != nil {
		rl = fmt.Sprintf("%d per %s", t.RateLimit.Limit, fmtDuration(time.Duration(t.RateLimit.Window)))
	}
	row("RATE LIMIT", clean(rl))
	q := ""
	if t.Quota != nil {
		q = fmt.Sprintf("%d per %s", t.Quota.Limit, t.Quota.Period)
		if t.Quota.Period == client.PeriodNone {
			q = fmt.Sprintf("%d in total", t.Quota.Limit)
		}
	}
	row("QUOTA", clean(q))
	row("SUBJECT", clean(t.Subject))
	row("METADATA", clean(fmtMetadata(t.Metadata)))
	row("CREATED", fmtTime(&t.CreatedAt, "-")+" by "+clean(t.CreatedBy))
	row("UPDATED", fmtTime(&t.UpdatedAt, "-"))
	if t.RotatedAt != nil {
		row("ROTATED", fmtTime(t.RotatedAt, "-"))
	}
	used := fmtTime(t.LastUsedAt, "never")
	if t.LastUsedIP != "" {
		used += " from " + clean(t.LastUsedIP)
	}
	row("LAST USED", used)
	if t.SuspendedAt != nil {
		row("SUSPENDED", withReason(fmtTime(t.SuspendedAt, "-"), t.SuspendReason))
	}
	if t.RevokedAt != nil {
		row("REVOKED", withReason(fmtTime(t.RevokedAt, "-"), t.RevokeReason))
	}
	return tw.Flush()
}

func withReason(s, reason string) string {
	if reason == "" {
		return s
	}
	return s + ": " + clean(reason)
}

func cmdTokenShow(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "token show", help{
		usage:    "ID [flags]",
		summary:  "Show one token: its state, scopes, limits and last use. The secret is never shown.",
		examples: []string{"keyward token show tok_01jd8...", "keyward token show tok_01jd8... --output json"},
	})
	r := addRemoteFlags(fs)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	id, err := oneArg(fs, args, "token ID")
	if err != nil {
		return err
	}
	c, err := r.client(e)
	if err != nil {
		return err
	}
	t, err := c.GetToken(ctx, id)
	if err != nil {
		return apiError(err)
	}
	if r.json() {
		return writeJSON(e.stdout, t)
	}
	return printToken(e.stdout, t)
}

func cmdTokenUpdate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "token update", help{
		usage: "ID [flags]",
		summary: "Change a token. Only the flags given change anything (a JSON merge patch): a value\n" +
			"flag replaces the field (--scope and --allow-cidr replace the whole list), a --clear-\n" +
			"flag removes it. --expires-in sets the expiry to that long from now. --metadata\n" +
			"merges into the metadata: its keys are set (null removes one), the others stay.",
		examples: []string{
			"keyward token update tok_01jd8... --name \"ci deploy (old)\"",
			"keyward token update tok_01jd8... --scope orders:read --clear-expiry",
			"keyward token update tok_01jd8... --rate-limit 10/1s --clear-quota",
		},
	})
	var tf tokenFlags
	tf.define(fs, true)
	r := addRemoteFlags(fs)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	id, err := oneArg(fs, args, "token ID")
	if err != nil {
		return err
	}
	p, err := tf.patch(fs, time.Now())
	if err != nil {
		return err
	}
	c, err := r.client(e)
	if err != nil {
		return err
	}
	t, err := c.UpdateToken(ctx, id, p)
	if err != nil {
		return apiError(err)
	}
	if r.json() {
		return writeJSON(e.stdout, t)
	}
	return printToken(e.stdout, t)
}

func cmdTokenRotate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "token rotate", help{
		usage: "ID [flags]",
		summary: "Issue a new secret for a token, keeping its id and settings, and print it once.\n" +
			"The secret it replaces keeps working for the grace period, then answers EXPIRED.",
		examples: []string{
			"keyward token rotate tok_01jd8...",
			"keyward token rotate tok_01jd8... --grace 24h --output json",
		},
	})
	var grace time.Duration
	fs.Duration(&grace, "grace", "", 0, "keep the replaced secret valid for `DURATION` (whole seconds, up to 720h); also --grace-period, the API's name")
	// The API's field is grace_period: a script that guesses the flag
	// from it works too.
	fs.fs.DurationVar(&grace, "grace-period", 0, "")
	r := addRemoteFlags(fs)
	fs.Check(func() error {
		// Errors name the flag given; the two together would leave
		// one of them unheard.
		name := "--grace"
		switch {
		case fs.Changed("grace") && fs.Changed("grace-period"):
			return fmt.Errorf("give --grace or --grace-period, not both: they are one setting")
		case fs.Changed("grace-period"):
			name = "--grace-period"
		}
		switch {
		case grace < 0:
			return fmt.Errorf("%s must not be negative", name)
		case grace%time.Second != 0:
			return fmt.Errorf("%s must be whole seconds, such as 90s or 24h", name)
		case grace > 720*time.Hour:
			return fmt.Errorf("%s must be at most 720h", name)
		}
		return nil
	})
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	id, err := oneArg(fs, args, "token ID")
	if err != nil {
		return err
	}
	c, err := r.client(e)
	if err != nil {
		return err
	}
	it, err := c.RotateToken(ctx, id, &client.RotateRequest{GracePeriod: client.Duration(grace)})
	if err != nil {
		return apiError(err)
	}
	note := "The replaced secret no longer works."
	if grace > 0 {
		note = "The replaced secret keeps working for " + fmtDuration(grace) + "."
	}
	return printIssued(e, r, it, note)
}

// stateCommand returns a command that moves a token to another state:
// revoke, suspend or resume.
func stateCommand(verb, done, summary string, change func(c *client.Client, ctx context.Context, id, reason string) (*client.Token, error)) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		fs := newFlagSet(e, "token "+verb, help{
			usage:   "ID [flags]",
			summary: summary,
			examples: []string{
				"keyward token " + verb + " tok_01jd8...",
				"keyward token " + verb + " tok_01jd8... --reason \"ticket SEC-42\"",
			},
		})
		var reason string
		fs.String(&reason, "reason", "", "", "`TEXT` recorded with the change and in the audit log")
		r := addRemoteFlags(fs)
		args, err := fs.parse(args)
		if err != nil {
			return err
		}
		id, err := oneArg(fs, args, "token ID")
		if err != nil {
			return err
		}
		c, err := r.client(e)
		if err != nil {
			return err
		}
		t, err := change(c, ctx, id, reason)
		if err != nil {
			return apiError(err)
		}
		if r.json() {
			return writeJSON(e.stdout, t)
		}
		_, err = fmt.Fprintf(e.stdout, "%s token %s (%s); its state is now %s.\n", done, clean(t.ID), clean(t.Name), clean(t.State))
		return err
	}
}

var (
	cmdTokenRevoke = stateCommand("revoke", "Revoked",
		"Revoke a token for good: from now on it verifies as REVOKED. Revoking a revoked token\nchanges nothing.",
		(*client.Client).RevokeToken)
	cmdTokenSuspend = stateCommand("suspend", "Suspended",
		"Suspend a token: it verifies as SUSPENDED until 'keyward token resume'.",
		(*client.Client).SuspendToken)
	cmdTokenResume = stateCommand("resume", "Resumed",
		"Resume a suspended token, so that it verifies again.",
		(*client.Client).ResumeToken)
)

func cmdTokenUsage(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "token usage", help{
		usage: "ID [flags]",
		summary: "Show how often a token was verified (verify API, introspection, gateway) over a range:\n" +
			"totals by outcome and route, then one line per bucket that saw use. Each node writes\n" +
			"its counts every few seconds (--usage-flush-interval), so the newest uses may be\n" +
			"missing for that long.",
		examples: []string{
			"keyward token usage tok_01jd8...",
			"keyward token usage tok_01jd8... --granularity day --since 720h",
			"keyward token usage tok_01jd8... --granularity minute --output json",
		},
	})
	var granularity string
	var since time.Duration
	fs.String(&granularity, "granularity", "", "hour", "bucket `SIZE`: minute, hour or day")
	fs.Duration(&since, "since", "", 0, "the range: the last `DURATION` (default: an hour of minutes, a day of hours, 30 days)")
	r := addRemoteFlags(fs)
	fs.Check(func() error {
		if err := choose("--granularity", &granularity, "minute", "hour", "day"); err != nil {
			return err
		}
		if since < 0 {
			return errors.New("--since must not be negative")
		}
		// As the server would refuse it, but naming the flags.
		if n := since / keyward.Granularity(granularity).Duration(); n > keyward.MaxUsageBuckets {
			return fmt.Errorf("--since %s holds %d %s buckets, more than %d: give a shorter --since or a coarser --granularity", fmtDuration(since), n, granularity, keyward.MaxUsageBuckets)
		}
		return nil
	})
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	id, err := oneArg(fs, args, "token ID")
	if err != nil {
		return err
	}
	c, err := r.client(e)
	if err != nil {
		return err
	}
	q := client.UsageQuery{Granularity: granularity}
	if since > 0 {
		q.To = time.Now()
		q.From = q.To.Add(-since)
	}
	u, err := c.TokenUsage(ctx, id, q)
	if err != nil {
		return apiError(err)
	}
	if r.json() {
		return writeJSON(e.stdout, u)
	}
	return printUsage(e.stdout, u)
}

// printUsage prints a usage series: the totals, then the buckets that saw
// use.
func printUsage(w io.Writer, u *client.Usage) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "RANGE\t%s to %s, by %s\n", u.From.Format(time.RFC3339), u.To.Format(time.RFC3339), u.Granularity)
	fmt.Fprintf(tw, "TOTAL\t%d\n", u.Total)
	fmt.Fprintf(tw, "BY OUTCOME\t%s\n", clean(fmtCounts(u.ByOutcome)))
	fmt.Fprintf(tw, "BY ROUTE\t%s\n", clean(fmtCounts(u.ByRoute)))
	fmt.Fprintf(tw, "BY STATUS\t%s\n", clean(fmtCounts(u.ByStatus)))
	if err := tw.Flush(); err != nil {
		return err
	}
	used := 0
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range u.Points {
		if p.Total == 0 {
			continue
		}
		if used == 0 {
			fmt.Fprintln(tw, "\nTIME\tTOTAL\tOUTCOMES")
		}
		used++
		fmt.Fprintf(tw, "%s\t%d\t%s\n", p.Time.Format(time.RFC3339), p.Total, clean(fmtCounts(p.ByOutcome)))
	}
	return tw.Flush()
}

// fmtCounts writes counts as "KEY=N KEY=N", most first, ties by key.
func fmtCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
