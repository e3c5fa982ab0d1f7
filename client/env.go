package client

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// DefaultServer is the server NewFromEnv calls when KEYWARD_SERVER is
// unset: the default address of keyward serve.
const DefaultServer = "http://127.0.0.1:8080"

// NewFromEnv returns a Client configured the way the keyward CLI is: the
// server from KEYWARD_SERVER (DefaultServer when unset), and the
// management token from KEYWARD_TOKEN or from the file that
// KEYWARD_TOKEN_FILE names (white space at either end, such as a final
// newline, is no part of it). Setting both variables, an unreadable or
// empty token file, or no token at all is an error; no error repeats the
// token.
func NewFromEnv(opts ...Option) (*Client, error) {
	return newFromEnv(os.Getenv, opts...)
}

func newFromEnv(getenv func(string) string, opts ...Option) (*Client, error) {
	server := getenv("KEYWARD_SERVER")
	if server == "" {
		server = DefaultServer
	}
	token, file := getenv("KEYWARD_TOKEN"), getenv("KEYWARD_TOKEN_FILE")
	switch {
	case token != "" && file != "":
		return nil, errors.New("keyward client: set only one of KEYWARD_TOKEN and KEYWARD_TOKEN_FILE")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("keyward client: reading KEYWARD_TOKEN_FILE: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("keyward client: KEYWARD_TOKEN_FILE names an empty file: %s", file)
		}
	default:
		token = strings.TrimSpace(token)
	}
	if token == "" {
		return nil, errors.New("keyward client: no credentials: set KEYWARD_TOKEN (or KEYWARD_TOKEN_FILE) to a management token")
	}
	c, err := New(server, token, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w (from KEYWARD_SERVER / KEYWARD_TOKEN)", err)
	}
	return c, nil
}
