package client

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/keyward/keyward"
)

// Token states as the API reports them.
const (
	StateActive    = "active"
	StateExpired   = "expired"
	StateRevoked   = "revoked"
	StateSuspended = "suspended"
	// StatePendingApproval is a state the API filters on; no token is in
	// it until approval workflows exist.
	StatePendingApproval = "pending_approval"
)

// Quota periods.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
	PeriodNone  = "none"
)

// CodeValid is the verification code of a valid token. The other codes are
// MALFORMED, NOT_FOUND, REVOKED, SUSPENDED, EXPIRED, IP_NOT_ALLOWED,
// INSUFFICIENT_SCOPE, RATE_LIMITED and QUOTA_EXCEEDED.
const CodeValid = "VALID"

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string such as "1m" or "24h", as the API writes it.
type Duration time.Duration

// String returns the duration as the API writes it (keyward.Duration): Go
// syntax without zero minutes or seconds after a larger unit, "1m",
// "24h", "1h30m", "1m30s".
func (d Duration) String() string { return keyward.Duration(d).String() }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// RateLimit admits at most Limit valid verifications in any window of
// length Window.
type RateLimit struct {
	Limit  int64    `json:"limit"`
	Window Duration `json:"window"`
}

// Quota admits at most Limit valid verifications per calendar Period in
// UTC (PeriodDay, PeriodMonth) or in total (PeriodNone).
type Quota struct {
	Limit  int64  `json:"limit"`
	Period string `json:"period"`
}

// Token is the token object of the API. It never holds the secret; see
// IssuedToken. Absent times are nil.
type Token struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Hint          string         `json:"hint"` // prefix and last four characters, such as "kw_…x9Qa"
	State         string         `json:"state"`
	Scopes        []string       `json:"scopes"`
	ExpiresAt     *time.Time     `json:"expires_at"`
	AllowedCIDRs  []string       `json:"allowed_cidrs"`
	RateLimit     *RateLimit     `json:"rate_limit"`
	Quota         *Quota         `json:"quota"`
	Subject       string         `json:"subject"`
	Metadata      map[string]any `json:"metadata"`
	CreatedBy     string         `json:"created_by"`
	CreatedAt     time.Time      `json:"created_at"`
	UpdatedAt     time.Time      `json:"updated_at"`
	RotatedAt     *time.Time     `json:"rotated_at"`
	RevokedAt     *time.Time     `json:"revoked_at"`
	RevokeReason  string         `json:"revoke_reason"`
	SuspendedAt   *time.Time     `json:"suspended_at"`
	SuspendReason string         `json:"suspend_reason"`
	LastUsedAt    *time.Time     `json:"last_used_at"`
	LastUsedIP    string         `json:"last_used_ip"`
}

// IssuedToken is the answer to a create or a rotation: the token object
// and its new secret, which the server shows this once. Keep the secret out
// of logs.
type IssuedToken struct {
	Token
	Secret string `json:"token"`
}

// CreateTokenRequest is the body of POST /v1/tokens. Name is required;
// zero fields are left out. Set at most one of ExpiresIn and ExpiresAt.
type CreateTokenRequest struct {
	Name         string         `json:"name"`
	Scopes       []string       `json:"scopes,omitempty"`
	ExpiresIn    Duration       `json:"expires_in,omitempty"`
	ExpiresAt    *time.Time     `json:"expires_at,omitempty"`
	AllowedCIDRs []string       `json:"allowed_cidrs,omitempty"`
	RateLimit    *RateLimit     `json:"rate_limit,omitempty"`
	Quota        *Quota         `json:"quota,omitempty"`
	Subject      string         `json:"subject,omitempty"`
	Metadata     map[string]any `json:"metadata,omitempty"`
}

// TokenPatch is a JSON merge patch (RFC 7396) of a token, the body of
// PATCH /v1/tokens/{id}. Each field is absent until a method sets it to a
// value (Set...) or to null (Clear...), which clears it on the server. The
// zero TokenPatch is empty and ready to use; the methods return p so that
// calls chain:
//
//	p := new(client.TokenPatch).SetName("ci").ClearExpiresAt()
type TokenPatch struct {
	fields map[string]any
}

// Set sets the JSON field name to value, which is sent as JSON (nil as
// null). It serves fields the typed methods do not cover.
func (p *TokenPatch) Set(name string, value any) *TokenPatch {
	if p.fields == nil {
		p.fields = make(map[string]any)
	}
	p.fields[name] = value
	return p
}

// Clear sets the JSON field name to null, which clears it on the server.
func (p *TokenPatch) Clear(name string) *TokenPatch { return p.Set(name, nil) }

// Unset removes the field name from the patch, so that it stays unchanged.
func (p *TokenPatch) Unset(name string) *TokenPatch {
	delete(p.fields, name)
	return p
}

// Fields returns the names of the fields in the patch, sorted.
func (p *TokenPatch) Fields() []string {
	names := make([]string, 0, len(p.fields))
	for n := range p.fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Len returns the number of fields in the patch.
func (p *TokenPatch) Len() int { return len(p.fields) }

// SetName renames the token. A name cannot be cleared.
func (p *TokenPatch) SetName(name string) *TokenPatch { return p.Set("name", name) }

// SetScopes replaces the token's scopes.
func (p *TokenPatch) SetScopes(scopes []string) *TokenPatch {
	if scopes == nil {
		scopes = []string{}
	}
	return p.Set("scopes", scopes)
}

// ClearScopes removes every scope of the token.
func (p *TokenPatch) ClearScopes() *TokenPatch { return p.Clear("scopes") }

// SetExpiresAt sets when the token expires. It replaces an expires_in
// of the patch: the server takes one or the other.
func (p *TokenPatch) SetExpiresAt(t time.Time) *TokenPatch {
	p.Unset("expires_in")
	return p.Set("expires_at", t.UTC().Format(time.RFC3339Nano))
}

// SetExpiresIn makes the token expire d from when the server applies the
// patch (at least a second). It replaces an expires_at of the patch.
func (p *TokenPatch) SetExpiresIn(d time.Duration) *TokenPatch {
	p.Unset("expires_at")
	return p.Set("expires_in", Duration(d))
}

// ClearExpiresAt makes the token never expire. It replaces an expires_in
// of the patch, which the server would refuse with it.
func (p *TokenPatch) ClearExpiresAt() *TokenPatch {
	p.Unset("expires_in")
	return p.Clear("expires_at")
}

// SetAllowedCIDRs replaces the token's IP allowlist.
func (p *TokenPatch) SetAllowedCIDRs(cidrs []string) *TokenPatch {
	if cidrs == nil {
		cidrs = []string{}
	}
	return p.Set("allowed_cidrs", cidrs)
}

// ClearAllowedCIDRs removes the token's IP allowlist.
func (p *TokenPatch) ClearAllowedCIDRs() *TokenPatch { return p.Clear("allowed_cidrs") }

// SetRateLimit replaces the token's rate limit.
func (p *TokenPatch) SetRateLimit(r RateLimit) *TokenPatch { return p.Set("rate_limit", r) }

// ClearRateLimit removes the token's rate limit.
func (p *TokenPatch) ClearRateLimit() *TokenPatch { return p.Clear("rate_limit") }

// SetQuota replaces the token's quota.
func (p *TokenPatch) SetQuota(q Quota) *TokenPatch { return p.Set("quota", q) }

// ClearQuota removes the token's quota.
func (p *TokenPatch) ClearQuota() *TokenPatch { return p.Clear("quota") }

// SetSubject replaces the token's subject.
func (p *TokenPatch) SetSubject(s string) *TokenPatch { return p.Set("subject", s) }

// ClearSubject removes the token's subject.
func (p *TokenPatch) ClearSubject() *TokenPatch { return p.Clear("subject") }

// SetMetadata merges m into the token's metadata (RFC 7396, as the server
// applies every PATCH): each key of m is set, a key whose value is nil is
// removed, keys not in m stay, and objects nested in both merge the same
// way. A nil or empty m changes nothing; ClearMetadata removes it all.
func (p *TokenPatch) SetMetadata(m map[string]any) *TokenPatch {
	if m == nil {
		m = map[string]any{}
	}
	return p.Set("metadata", m)
}

// ClearMetadata removes the token's metadata.
func (p *TokenPatch) ClearMetadata() *TokenPatch { return p.Clear("metadata") }

// MarshalJSON implements json.Marshaler: the fields set, and only those.
func (p *TokenPatch) MarshalJSON() ([]byte, error) {
	if p == nil || p.fields == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(p.fields)
}

// RotateRequest is the body of POST /v1/tokens/{id}/rotate. The replaced
// secret stays valid for GracePeriod (whole seconds, zero by default).
type RotateRequest struct {
	GracePeriod Duration `json:"grace_period,omitempty"`
}

// VerifyRequest is the body of POST /v1/verify. Scopes and IP are optional;
// a token with an IP allowlist fails closed when IP is empty.
type VerifyRequest struct {
	Token  string   `json:"token"`
	Scopes []string `json:"scopes,omitempty"`
	IP     string   `json:"ip,omitempty"`
}

// LimitStatus is the state of a rate limit or quota after a verification.
// Reset is the number of whole seconds until a slot frees (rate limit) or
// until the period ends (quota).
type LimitStatus struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	Reset     int64 `json:"reset"`
}

// VerifyResponse is the outcome of a verification. Code is the first
// failing check, or CodeValid. The fields from TokenID on are set once the
// token is identified (every code from REVOKED on); RateLimit and Quota
// when the token has them.
type VerifyResponse struct {
	Valid     bool           `json:"valid"`
	Code      string         `json:"code"`
	TokenID   string         `json:"token_id,omitempty"`
	Name      string         `json:"name,omitempty"`
	Subject   string         `json:"subject,omitempty"`
	Scopes    []string       `json:"scopes,omitempty"`
	Metadata  map[string]any `json:"metadata,omitempty"`
	ExpiresAt *time.Time     `json:"expires_at,omitempty"`
	RateLimit *LimitStatus   `json:"rate_limit,omitempty"`
	Quota     *LimitStatus   `json:"quota,omitempty"`
}

// Identified reports whether the server identified the token, so that the
// fields from TokenID on describe it.
func (r *VerifyResponse) Identified() bool { return r.TokenID != "" }

// MarshalJSON implements json.Marshaler with the shape the server writes:
// only valid and code for an unidentified token, and every descriptive
// field, null when unset, for an identified one.
func (r VerifyResponse) MarshalJSON() ([]byte, error) {
	if !r.Identified() {
		return json.Marshal(struct {
			Valid bool   `json:"valid"`
			Code  string `json:"code"`
		}{r.Valid, r.Code})
	}
	scopes := r.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return json.Marshal(struct {
		Valid     bool           `json:"valid"`
		Code      string         `json:"code"`
		TokenID   string         `json:"token_id"`
		Name      string         `json:"name"`
		Subject   string         `json:"subject"`
		Scopes    []string       `json:"scopes"`
		Metadata  map[string]any `json:"metadata"`
		ExpiresAt *time.Time     `json:"expires_at"`
		RateLimit *LimitStatus   `json:"rate_limit,omitempty"`
		Quota     *LimitStatus   `json:"quota,omitempty"`
	}{r.Valid, r.Code, r.TokenID, r.Name, r.Subject, scopes, r.Metadata, r.ExpiresAt, r.RateLimit, r.Quota})
}

// Workspace is a tenant of the server.
type Workspace struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	TokenPrefix string    `json:"token_prefix"`
	CreatedAt   time.Time `json:"created_at"`
}

// CreateWorkspaceRequest is the body of POST /v1/workspaces. TokenPrefix is
// optional (the server's default is "kw").
type CreateWorkspaceRequest struct {
	Name        string `json:"name"`
	TokenPrefix string `json:"token_prefix,omitempty"`
}

// CreateWorkspaceResponse is the new workspace and, in Token, the secret of
// its first admin management token, which the server shows this once.
type CreateWorkspaceResponse struct {
	Workspace
	Token string `json:"token"`
}

// Actor is who performed an audited act: its Type ("token", "system",
// "member") and ID.
type Actor struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// AuditEvent is one entry of the audit log. Changes maps each changed field
// to {"from": ..., "to": ...}, or is nil.
type AuditEvent struct {
	ID        string         `json:"id"`
	Time      time.Time      `json:"time"`
	Action    string         `json:"action"` // object.verb, such as "token.create"
	Actor     Actor          `json:"actor"`
	Target    string         `json:"target"`
	IP        string         `json:"ip"`
	UserAgent string         `json:"user_agent"`
	RequestID string         `json:"request_id"`
	Changes   map[string]any `json:"changes"`
}

// List is one page of a list endpoint. NextCursor is empty on the last
// page; otherwise pass it as the cursor of the next request.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// ListOptions pages through a list: Limit items per page (the server's
// default 50 when 0, at most 500) from Cursor on.
type ListOptions struct {
	Limit  int
	Cursor string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	return q
}

// TokenFilter selects tokens for ListTokens: by State (one of the State
// constants), Subject and Scope (exact), and Name (substring,
// case-insensitive); empty fields select everything. Limit and Cursor page
// through the result as in ListOptions.
type TokenFilter struct {
	State   string
	Subject string
	Scope   string
	Name    string
	Limit   int
	Cursor  string
}

func (f TokenFilter) query() url.Values {
	q := ListOptions{Limit: f.Limit, Cursor: f.Cursor}.query()
	for k, v := range map[string]string{"state": f.State, "subject": f.Subject, "scope": f.Scope, "name": f.Name} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// Introspection is the answer of the OAuth introspection endpoint (RFC
// 7662). Raw is the response body exactly as the server sent it, Fields
// the same decoded, and Active its "active" member.
type Introspection struct {
	Active bool
	Fields map[string]any
	Raw    json.RawMessage
}

// UsageQuery selects a usage range. Zero values take the server's
// defaults: hour buckets over the last day.
type UsageQuery struct {
	Granularity string // minute, hour or day
	From, To    time.Time
	Top         int // GET /v1/usage only: how many of the most used tokens (default 10)
}

func (q UsageQuery) query() url.Values {
	v := url.Values{}
	if q.Granularity != "" {
		v.Set("granularity", q.Granularity)
	}
	setTime(v, "from", q.From)
	setTime(v, "to", q.To)
	if q.Top > 0 {
		v.Set("top", strconv.Itoa(q.Top))
	}
	return v
}

// Usage is a count of verifications over a range: totals by outcome code,
// route and answered status, and one point per bucket.
type Usage struct {
	TokenID     string           `json:"token_id,omitempty"`
	Granularity string           `json:"granularity"`
	From        time.Time        `json:"from"`
	To          time.Time        `json:"to"`
	Total       int64            `json:"total"`
	ByOutcome   map[string]int64 `json:"by_outcome"`
	ByRoute     map[string]int64 `json:"by_route"`
	ByStatus    map[string]int64 `json:"by_status"`
	Points      []UsagePoint     `json:"points"`
	TopTokens   []TopToken       `json:"top_tokens,omitempty"`
}

// UsagePoint is one bucket of a usage series.
type UsagePoint struct {
	Time      time.Time        `json:"time"`
	Total     int64            `json:"total"`
	ByOutcome map[string]int64 `json:"by_outcome"`
}

// TopToken is one of a workspace's most used tokens.
type TopToken struct {
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	Total   int64  `json:"total"`
	Valid   int64  `json:"valid"`
	Failed  int64  `json:"failed"`
}

// UsageEvent is one verification kept whole: a failure (every one, unless
// --usage-failure-events bounds them a minute of each token, route,
// outcome and status), or a sampled success.
type UsageEvent struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	TokenID   string    `json:"token_id"`
	IP        string    `json:"ip"`
	Method    string    `json:"method"`
	Route     string    `json:"route"`
	Path      string    `json:"path"`
	Outcome   string    `json:"outcome"`
	Status    int       `json:"status"`
	LatencyMS float64   `json:"latency_ms"`
}

// UsageEventFilter selects raw usage events.
type UsageEventFilter struct {
	TokenID  string
	Outcome  string
	From, To time.Time
	ListOptions
}

func (f UsageEventFilter) query() url.Values {
	v := f.ListOptions.query()
	if f.TokenID != "" {
		v.Set("token_id", f.TokenID)
	}
	if f.Outcome != "" {
		v.Set("outcome", f.Outcome)
	}
	setTime(v, "from", f.From)
	setTime(v, "to", f.To)
	return v
}
