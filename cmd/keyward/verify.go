package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/keyward/keyward/client"
)

// errNoToken: the input held no token to verify.
var errNoToken = errors.New("no token to verify")

// maxTokenLine bounds the line the token to verify is read from.
const maxTokenLine = 4 << 10

func cmdVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "verify", help{
		summary: "Ask the server whether a token is valid, for the given scopes and client IP, and\n" +
			"print the outcome code (VALID, NOT_FOUND, REVOKED, ...) with what the server knows of\n" +
			"the token. The token to verify is read from the first line of standard input, or\n" +
			"from --token-file; never from a flag, which would show in ps and shell history.\n" +
			"At a terminal it asks for the token and does not echo it.\n" +
			"It consumes rate limit and quota like any verification when it is VALID.",
		notes: []string{"Exit status: 0 when the token is VALID, 1 when it is not or on an error, 2 on a\nusage error."},
		examples: []string{
			"echo \"$API_TOKEN\" | keyward verify --scope orders:read --ip 203.0.113.7",
			"keyward verify --token-file ./token.txt --output json",
			"if keyward verify < token.txt >/dev/null; then echo valid; fi",
		},
	})
	var tokenFile, ip string
	var scopes []string
	fs.String(&tokenFile, "token-file", "", "", "read the token to verify from the first line of `FILE` instead of standard input")
	fs.Strings(&scopes, "scope", "`SCOPE` the token must grant")
	fs.String(&ip, "ip", "", "", "client `IP` address to check against the token's allowlist")
	r := addRemoteFlags(fs)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	token, err := readTokenToVerify(ctx, e, tokenFile)
	if errors.Is(err, errNoToken) {
		return fs.usagef("%v", err) // nothing to verify: a usage error
	}
	if err != nil {
		return err
	}
	c, err := r.client(e)
	if err != nil {
		return err
	}
	res, err := c.Verify(ctx, client.VerifyRequest{Token: token, Scopes: scopes, IP: ip})
	if err != nil {
		return apiError(err)
	}
	if r.json() {
		err = writeJSON(e.stdout, res)
	} else {
		err = printVerify(e.stdout, res)
	}
	if err != nil {
		return err
	}
	if !res.Valid || res.Code != client.CodeValid {
		return fmt.Errorf("the token is not valid: %s", clean(res.Code))
	}
	return nil
}

// readTokenToVerify reads the first line of file, or of standard input
// when file is "". When standard input is a terminal, it prompts on
// standard error and reads the token without echo.
func readTokenToVerify(ctx context.Context, e *env, file string) (string, error) {
	in, from := e.stdin, "standard input"
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return "", err
		}
		defer f.Close()
		in, from = f, file
	} else if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		// A terminal, not any character device: /dev/null gets no prompt.
		// Read without echo, as a password is: the secret stays off the
		// screen and out of the scrollback.
		b, err := readHidden(ctx, e, f, "Token to verify: ")
		if errors.Is(err, context.Canceled) {
			return "", err
		}
		if err != nil {
			return "", fmt.Errorf("reading the token from the terminal: %w", err)
		}
		if len(b) >= maxTokenLine {
			return "", fmt.Errorf("reading the token from the terminal: longer than %d bytes", maxTokenLine)
		}
		in = strings.NewReader(string(b))
		from = "the terminal"
	}
	if in == nil {
		return "", fmt.Errorf("%w: give it on standard input or with --token-file", errNoToken)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(in, maxTokenLine), maxTokenLine).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading the token from %s: %w", from, err)
	}
	if err == io.EOF && len(line) >= maxTokenLine {
		return "", fmt.Errorf("reading the token from %s: the first line is longer than %d bytes", from, maxTokenLine)
	}
	token := strings.TrimSpace(line)
	if token == "" {
		return "", fmt.Errorf("%w on %s: give it on standard input or with --token-file", errNoToken, from)
	}
	e.addSecret(token)
	return token, nil
}

// printVerify prints the outcome of a verification as a two-column table.
func printVerify(w io.Writer, r *client.VerifyResponse) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("CODE", clean(r.Code))
	if r.Identified() {
		row("TOKEN ID", clean(r.TokenID))
		row("NAME", clean(r.Name))
		row("SUBJECT", clean(r.Subject))
		row("SCOPES", clean(fmtList(r.Scopes)))
		row("EXPIRES", fmtTime(r.ExpiresAt, "never"))
		row("METADATA", clean(fmtMetadata(r.Metadata)))
	}
	if l := r.RateLimit; l != nil {
		row("RATE LIMIT", fmt.Sprintf("%d of %d left, a slot frees in %s", l.Remaining, l.Limit, fmtDuration(time.Duration(l.Reset)*time.Second)))
	}
	if l := r.Quota; l != nil {
		// A quota counted in total (period none) has no period to end.
		when := "counted in total, never resets"
		if l.Reset > 0 {
			when = "resets in " + fmtDuration(time.Duration(l.Reset)*time.Second)
		}
		row("QUOTA", fmt.Sprintf("%d of %d left, %s", l.Remaining, l.Limit, when))
	}
	return tw.Flush()
}
