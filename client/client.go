// Package client is the Go client of the keyward management API: tokens,
// verification, workspaces, the audit log, the OAuth introspection and
// revocation endpoints and the health probes, as documented in docs/api.md.
//
// A Client holds one management token and sends it as a bearer credential
// on every call that needs one. The token never appears in a URL or in an
// error string. Calls that fail with an HTTP error return a *Error parsed
// from the server's problem+json body; use IsNotFound and its siblings
// (IsInvalid, IsUnauthorized, IsForbidden, IsConflict, IsRateLimited,
// IsUnavailable) to test for the common cases, Error.Errors for the fields
// of a validation error, and RetryAfter for when to try again.
//
//	c, err := client.New("http://127.0.0.1:8080", os.Getenv("KEYWARD_TOKEN"))
//	if err != nil { ... }
//	tok, err := c.CreateToken(ctx, client.CreateTokenRequest{
//		Name:   "ci deploy",
//		Scopes: []string{"orders:read"},
//	})
//	fmt.Println(tok.ID, tok.Secret) // the secret is shown this once
//
// NewFromEnv configures a Client the way the keyward CLI is, from
// KEYWARD_SERVER and KEYWARD_TOKEN (or KEYWARD_TOKEN_FILE):
//
//	c, err := client.NewFromEnv()
//
// Each list endpoint has a List method that returns one page and an
// iterator (Tokens, Workspaces, AuditEvents, UsageEvents, DormantTokens,
// TokenReport) that follows the cursor through every page.
//
// The package uses the standard library only.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// DefaultTimeout bounds each request of a Client made without
// WithHTTPClient: connecting, sending and reading the whole response.
const DefaultTimeout = 30 * time.Second

// DefaultUserAgent is the User-Agent header a Client sends unless
// WithUserAgent sets another.
const DefaultUserAgent = "keyward-go-client"

// maxResponseSize bounds a response body the client reads. A full page of
// 500 tokens with 8 KiB of metadata each stays well below it.
const maxResponseSize = 64 << 20

// Client calls one keyward server. It is safe for concurrent use.
type Client struct {
	base       string // scheme://host[/path], without a trailing slash
	token      string
	httpClient *http.Client
	userAgent  string
	oauthBasic bool
	oauthUser  string
}

// Option configures a Client in New.
type Option func(*Client)

// WithHTTPClient makes the Client send its requests with hc instead of a
// client with DefaultTimeout that follows redirects only within the
// server's origin (or from http to https on the same host), so that the
// management token reaches no other port or plain-text connection. The
// caller keeps ownership of hc and should give it a timeout and such a
// redirect policy (CheckRedirect: SameOriginRedirect). A nil hc is ignored.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.httpClient = hc
		}
	}
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// WithOAuthBasicAuth makes Introspect and OAuthRevoke authenticate with
// HTTP Basic, with username as the user name and the management token as
// the password, the way OAuth client libraries do. By default they send the
// token as a bearer credential like every other call.
func WithOAuthBasicAuth(username string) Option {
	return func(c *Client) {
		c.oauthBasic = true
		c.oauthUser = username
	}
}

// New returns a Client for the server at baseURL (such as
// "http://127.0.0.1:8080" or "https://keyward.example.com/prefix") that
// authenticates with the management token. The token may be empty for a
// client that only calls Health and Ready. baseURL must be an http or https
// URL without credentials, query or fragment.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		// Not the *url.Error itself, which repeats the URL whole.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if strings.HasPrefix(err.Error(), "invalid port ") {
			// Nor its quote of what follows the host's last colon: the
			// password of a "user:password" that lacks its "@host".
			err = errors.New("invalid port after host")
		}
		return nil, fmt.Errorf("keyward client: invalid server URL: %w", err)
	}
	switch {
	case u.User != nil:
		// Do not repeat the URL: its user info may hold a password.
		return nil, errors.New("keyward client: server URL must not contain credentials")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		// Nor its query or fragment, where a secret may have been put.
		return nil, fmt.Errorf("keyward client: server URL %q must not have a query or fragment", shownURL(u))
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("keyward client: server URL %q must start with http:// or https://", shownURL(u))
	case u.Host == "":
		return nil, fmt.Errorf("keyward client: server URL %q has no host", shownURL(u))
	}
	if !validToken(token) {
		// Never repeat the token, not even in part.
		return nil, errors.New("keyward client: the token contains spaces or control characters")
	}
	c := &Client{
		base:       strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"),
		token:      token,
		httpClient: &http.Client{Timeout: DefaultTimeout, CheckRedirect: SameOriginRedirect},
		userAgent:  DefaultUserAgent,
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// SameOriginRedirect is the redirect policy of a Client made without
// WithHTTPClient; give it as the CheckRedirect of an http.Client given to
// WithHTTPClient, so that it keeps the management token to the server's
// origin too. net/http sends the Authorization field again to a
// redirect's target on the same host name, whatever its port or scheme, so
// a redirect to another port of the host, or from https to http, would
// hand the management token to another service or to the network. Such a
// redirect is not followed: the 3xx answer is returned as an *Error.
func SameOriginRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	from, to := via[0].URL, req.URL
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "https" {
			return "443"
		}
		return "80"
	}
	switch {
	case !strings.EqualFold(from.Hostname(), to.Hostname()):
		// net/http drops the credential itself; the answer would be
		// another server's, without it.
		return http.ErrUseLastResponse
	case from.Scheme == to.Scheme && port(from) == port(to):
		return nil
	case from.Scheme == "http" && to.Scheme == "https" && port(to) == "443":
		return nil // an upgrade to TLS on its default port
	}
	return http.ErrUseLastResponse
}

// shownURL returns u for an error message: without user info, query and
// fragment, and with anything shaped like a token's secret cut out.
func shownURL(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.ForceQuery, v.Fragment, v.RawFragment = nil, "", false, "", ""
	return secret.Redact(v.String())
}

// validToken reports whether token can travel in a header as it is.
func validToken(token string) bool {
	for i := 0; i < len(token); i++ {
		if token[i] <= ' ' || token[i] >= 0x7f {
			return false
		}
	}
	return true
}

// BaseURL returns the server URL the Client calls, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// Do sends one request to the API and decodes a successful JSON response
// into out. path starts with "/" and may carry an escaped query, such as
// "/v1/tokens?limit=1". body is nil (no body), a json.RawMessage or []byte
// (sent as it is), or any value to encode as JSON. out is nil (the body is
// discarded), a *json.RawMessage (it receives the body as it is), or a
// pointer to decode into. A response outside 2xx returns a *Error.
//
// Do is the escape hatch for requests the typed methods cannot express,
// such as a body with unknown fields.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		var b []byte
		switch v := body.(type) {
		case json.RawMessage:
			b = v
		case []byte:
			b = v
		default:
			var err error
			if b, err = json.Marshal(body); err != nil {
				return fmt.Errorf("keyward client: encoding the request: %w", err)
			}
		}
		r = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, r, true)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, out)
}

// newRequest returns a request for path with the common headers, and the
// bearer credential when auth is true.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader, auth bool) (*http.Request, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("keyward client: path %q must start with /", path)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("keyward client: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if auth && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do performs req. Its error names no secret.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.httpClient.Do(req)
	if err != nil {
		// A *url.Error names the method and URL, which never hold the
		// client's token, but may hold a secret a caller gave as an id.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = secret.Redact(ue.URL)
		}
		return nil, err
	}
	return resp, nil
}

// send performs req and decodes the response as Do documents.
func (c *Client) send(req *http.Request, out any) error {
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer func() {
		// Drain a little so that the connection can be reused.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.parseError(resp)
	}
	if out == nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return fmt.Errorf("keyward client: %s %s: reading the response: %w", req.Method, secret.Redact(req.URL.Path), err)
	}
	if len(b) > maxResponseSize {
		return fmt.Errorf("keyward client: %s %s: the response exceeds %d bytes", req.Method, secret.Redact(req.URL.Path), maxResponseSize)
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("keyward client: %s %s: decoding the response: %w", req.Method, secret.Redact(req.URL.Path), err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

func (c *Client) post(ctx context.Context, path string, body, out any) error {
	return c.Do(ctx, http.MethodPost, path, body, out)
}

// postForm sends an OAuth request: a form body, authenticated with the
// bearer token or, with WithOAuthBasicAuth, HTTP Basic.
func (c *Client) postForm(ctx context.Context, path string, form url.Values, out any) error {
	req, err := c.newRequest(ctx, http.MethodPost, path, strings.NewReader(form.Encode()), !c.oauthBasic)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.oauthBasic {
		req.SetBasicAuth(c.oauthUser, c.token)
	}
	return c.send(req, out)
}

// tokenPath returns the escaped path of the token with the given id, plus
// suffix.
func tokenPath(id, suffix string) string {
	return "/v1/tokens/" + url.PathEscape(id) + suffix
}

// CreateToken issues a new token. The response holds the secret, which the
// server shows this once.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (*IssuedToken, error) {
	var out IssuedToken
	if err := c.post(ctx, "/v1/tokens", req, &out); err != nil {
		return nil, err
	}
	if out.ID == "" || out.Secret == "" {
		return nil, incomplete("POST /v1/tokens", "the token's id and secret")
	}
	return &out, nil
}

// ListTokens returns one page of the tokens that f selects, ordered by id.
// Pass the page's NextCursor as f.Cursor to get the next one; it is empty on
// the last page.
func (c *Client) ListTokens(ctx context.Context, f TokenFilter) (*List[Token], error) {
	var out List[Token]
	if err := c.get(ctx, "/v1/tokens", f.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Tokens returns an iterator over every token that f selects, from
// f.Cursor on, fetching pages of f.Limit tokens (the server's default when
// 0) as it goes. On an error it yields the error once and stops.
//
//	for tok, err := range c.Tokens(ctx, client.TokenFilter{State: "active"}) {
//		if err != nil { return err }
//		fmt.Println(tok.ID)
//	}
func (c *Client) Tokens(ctx context.Context, f TokenFilter) iter.Seq2[Token, error] {
	return pages(f.Cursor, func(cursor string) (*List[Token], error) {
		g := f
		g.Cursor = cursor
		return c.ListTokens(ctx, g)
	})
}

// AllTokens returns every token that f selects, following the cursor
// through all pages.
func (c *Client) AllTokens(ctx context.Context, f TokenFilter) ([]Token, error) {
	items := []Token{}
	for t, err := range c.Tokens(ctx, f) {
		if err != nil {
			return nil, err
		}
		items = append(items, t)
	}
	return items, nil
}

// GetToken returns the token with the given id.
func (c *Client) GetToken(ctx context.Context, id string) (*Token, error) {
	var out Token
	if err := c.get(ctx, tokenPath(id, ""), nil, &out); err != nil {
		return nil, err
	}
	if out.ID == "" {
		return nil, incomplete("GET /v1/tokens/{id}", "the token's id")
	}
	return &out, nil
}

// UpdateToken applies the merge patch p to the token with the given id and
// returns the token as stored after. A nil or empty patch changes nothing.
func (c *Client) UpdateToken(ctx context.Context, id string, p *TokenPatch) (*Token, error) {
	if p == nil {
		p = &TokenPatch{}
	}
	var out Token
	req, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("keyward client: encoding the patch: %w", err)
	}
	if err := c.Do(ctx, http.MethodPatch, tokenPath(id, ""), json.RawMessage(req), &out); err != nil {
		return nil, err
	}
	if out.ID == "" {
		return nil, incomplete("PATCH /v1/tokens/{id}", "the token's id")
	}
	return &out, nil
}

// RotateToken issues a new secret for the token with the given id. The
// secret it replaces stays valid for req.GracePeriod. A nil req sends an
// empty body (no grace period).
func (c *Client) RotateToken(ctx context.Context, id string, req *RotateRequest) (*IssuedToken, error) {
	if req == nil {
		req = &RotateRequest{}
	}
	var out IssuedToken
	if err := c.post(ctx, tokenPath(id, "/rotate"), req, &out); err != nil {
		return nil, err
	}
	if out.ID == "" || out.Secret == "" {
		return nil, incomplete("POST /v1/tokens/{id}/rotate", "the token's id and new secret")
	}
	return &out, nil
}

// RevokeToken revokes the token with the given id for good; reason may be
// empty. Revoking a revoked token succeeds and changes nothing.
func (c *Client) RevokeToken(ctx context.Context, id, reason string) (*Token, error) {
	return c.stateChange(ctx, id, "/revoke", reason)
}

// SuspendToken suspends the token with the given id until ResumeToken;
// reason may be empty.
func (c *Client) SuspendToken(ctx context.Context, id, reason string) (*Token, error) {
	return c.stateChange(ctx, id, "/suspend", reason)
}

// ResumeToken lifts the suspension of the token with the given id; reason
// may be empty.
func (c *Client) ResumeToken(ctx context.Context, id, reason string) (*Token, error) {
	return c.stateChange(ctx, id, "/resume", reason)
}

func (c *Client) stateChange(ctx context.Context, id, action, reason string) (*Token, error) {
	var out Token
	if err := c.post(ctx, tokenPath(id, action), reasonRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	if out.ID == "" {
		return nil, incomplete("POST /v1/tokens/{id}"+action, "the token's id")
	}
	return &out, nil
}

// reasonRequest is the body of revoke, suspend and resume.
type reasonRequest struct {
	Reason string `json:"reason,omitempty"`
}

// Verify asks the server whether req.Token is valid for req.Scopes from
// req.IP. Every well-formed request succeeds: the outcome is in the
// response's Code, and Valid reports whether it is "VALID".
func (c *Client) Verify(ctx context.Context, req VerifyRequest) (*VerifyResponse, error) {
	var out VerifyResponse
	if err := c.post(ctx, "/v1/verify", req, &out); err != nil {
		return nil, err
	}
	if out.Code == "" {
		return nil, incomplete("POST /v1/verify", "the outcome code")
	}
	return &out, nil
}

// incomplete is the error of a success answer that lacks what it must
// hold (a server that is not keyward, a proxy answering in its place):
// acting on its zero values would report success falsely.
func incomplete(call, what string) error {
	return fmt.Errorf("keyward client: %s: the answer lacks %s; is the server keyward?", call, what)
}

// CreateWorkspace creates a workspace and its first admin management
// token, which the response holds this once. It needs keyward:instance.
func (c *Client) CreateWorkspace(ctx context.Context, req CreateWorkspaceRequest) (*CreateWorkspaceResponse, error) {
	var out CreateWorkspaceResponse
	if err := c.post(ctx, "/v1/workspaces", req, &out); err != nil {
		return nil, err
	}
	if out.ID == "" || out.Token == "" {
		return nil, incomplete("POST /v1/workspaces", "the workspace's id and first token")
	}
	return &out, nil
}

// ListWorkspaces returns one page of workspaces, ordered by id. It needs
// keyward:instance.
func (c *Client) ListWorkspaces(ctx context.Context, opts ListOptions) (*List[Workspace], error) {
	var out List[Workspace]
	if err := c.get(ctx, "/v1/workspaces", opts.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAudit returns one page of the workspace's audit events, newest first.
// It needs keyward:audit:read. ListAuditEvents also filters them.
func (c *Client) ListAudit(ctx context.Context, opts ListOptions) (*List[AuditEvent], error) {
	var out List[AuditEvent]
	if err := c.get(ctx, "/v1/audit", opts.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TokenUsage returns a token's usage over a range. It needs
// keyward:tokens:read.
func (c *Client) TokenUsage(ctx context.Context, id string, q UsageQuery) (*Usage, error) {
	var out Usage
	if err := c.get(ctx, "/v1/tokens/"+url.PathEscape(id)+"/usage", q.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Usage returns the workspace's usage over a range and its most used
// tokens. It needs keyward:tokens:read.
func (c *Client) Usage(ctx context.Context, q UsageQuery) (*Usage, error) {
	var out Usage
	if err := c.get(ctx, "/v1/usage", q.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListUsageEvents returns one page of raw usage events, newest first. It
// needs keyward:tokens:read.
func (c *Client) ListUsageEvents(ctx context.Context, f UsageEventFilter) (*List[UsageEvent], error) {
	var out List[UsageEvent]
	if err := c.get(ctx, "/v1/usage/events", f.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Introspect asks the OAuth introspection endpoint (RFC 7662) about token.
// An inactive, unknown, revoked or expired token is no error: the result's
// Active is false. It needs keyward:verify.
func (c *Client) Introspect(ctx context.Context, token string) (*Introspection, error) {
	var raw json.RawMessage
	if err := c.postForm(ctx, "/oauth2/introspect", url.Values{"token": {token}}, &raw); err != nil {
		return nil, err
	}
	out := &Introspection{Raw: raw}
	if err := json.Unmarshal(raw, &out.Fields); err != nil || out.Fields == nil {
		return nil, errors.New("keyward client: POST /oauth2/introspect: the response is not a JSON object")
	}
	out.Active, _ = out.Fields["active"].(bool)
	return out, nil
}

// OAuthRevoke revokes token through the OAuth revocation endpoint (RFC
// 7009). Revoking an unknown token succeeds. It needs keyward:tokens:write.
func (c *Client) OAuthRevoke(ctx context.Context, token string) error {
	return c.postForm(ctx, "/oauth2/revoke", url.Values{"token": {token}}, nil)
}

// Health returns nil when the server answers its liveness probe
// (GET /healthz) with 2xx. It sends no credential.
func (c *Client) Health(ctx context.Context) error {
	return c.probe(ctx, "/healthz")
}

// Ready returns nil when the server answers its readiness probe
// (GET /readyz) with 2xx, that is when its store is reachable. It sends no
// credential.
func (c *Client) Ready(ctx context.Context) error {
	return c.probe(ctx, "/readyz")
}

func (c *Client) probe(ctx context.Context, path string) error {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil, false)
	if err != nil {
		return err
	}
	return c.send(req, nil)
}
