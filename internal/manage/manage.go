// Package manage holds the management operations on tokens and workspaces:
// validation, the rules on who may grant what, secret issuance, audit
// events and cache refresh. The HTTP API, the CLI's store commands and,
// later, the dashboard call it; it knows nothing of HTTP.
package manage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/verify"
)

// MaxGracePeriod bounds the grace period of a rotation.
const MaxGracePeriod = 30 * 24 * time.Hour

// Service performs management operations. Its fields are set once.
type Service struct {
	Store  keyward.Store
	Keys   *secret.Keyring
	Engine *verify.Engine // refreshed after every write; may be nil in CLI use
	Log    *slog.Logger
	Now    func() time.Time
}

// Caller is who asks for an operation, and from where.
type Caller struct {
	Actor       keyward.Actor
	WorkspaceID string
	Scopes      []string // the scopes the caller holds
	// The calling token's own bounds (none for members and keyward
	// itself): see checkBounds.
	ExpiresAt    *time.Time
	AllowedCIDRs []string
	RateLimit    *keyward.RateLimit
	Quota        *keyward.Quota
	IP           string
	UserAgent    string
	RequestID    string
}

// TokenCaller returns the caller acting through a management token.
func TokenCaller(t *keyward.Token) Caller {
	return Caller{
		Actor:        keyward.Actor{Type: keyward.ActorToken, ID: t.ID},
		WorkspaceID:  t.WorkspaceID,
		Scopes:       t.Scopes,
		ExpiresAt:    t.ExpiresAt,
		AllowedCIDRs: t.AllowedCIDRs,
		RateLimit:    t.RateLimit,
		Quota:        t.Quota,
	}
}

// MemberCaller returns the caller for a person signed in to the
// dashboard, acting in a workspace. It holds no scope: the dashboard adds
// keyward:admin for owners and admins, so that members cannot grant
// management scopes.
func MemberCaller(userID, workspaceID string) Caller {
	return Caller{
		Actor:       keyward.Actor{Type: keyward.ActorMember, ID: userID},
		WorkspaceID: workspaceID,
	}
}

// SystemCaller returns the caller for acts of keyward itself or its CLI on
// the store, holding every scope of the workspace.
func SystemCaller(workspaceID string) Caller {
	return Caller{
		Actor:       keyward.Actor{Type: keyward.ActorSystem},
		WorkspaceID: workspaceID,
		Scopes:      []string{keyward.ScopeAdmin, keyward.ScopeInstance},
	}
}

// now is the time of a write, to the microsecond: what PostgreSQL keeps,
// so that an answer gives the times a later read gives, on either store.
func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC().Truncate(time.Microsecond)
	}
	return time.Now().UTC().Truncate(time.Microsecond)
}

func (c Caller) event(action, target string, now time.Time, changes json.RawMessage) *keyward.AuditEvent {
	return &keyward.AuditEvent{
		ID:          keyward.NewID(keyward.PrefixEvent, now),
		WorkspaceID: c.WorkspaceID,
		Time:        now,
		Action:      action,
		Actor:       c.Actor,
		Target:      target,
		IP:          c.IP,
		UserAgent:   c.UserAgent,
		RequestID:   c.RequestID,
		Changes:     changes,
	}
}

// checkGrant fails with EFORBIDDEN when scopes hold a keyward: scope that
// the caller does not hold itself: no one grants more than they have.
func (c Caller) checkGrant(scopes []string, what string) error {
	if sc := keyward.MissingManagementScope(c.Scopes, scopes); sc != "" {
		return keyward.Errorf(keyward.EFORBIDDEN, "%s: the scope %s is not held by the caller", what, sc)
	}
	return nil
}

// checkBounds fails with EFORBIDDEN when t holds keyward: scopes and a
// calling token would get, or hand out, a management token less bound
// than itself: valid after it expires, usable from addresses its
// allowed_cidrs refuse, or admitted more often than its rate_limit or
// quota admits it (a bound token that could lift its own bounds, or mint
// a peer without them, would be bound only until its first call). Each
// bound is compared on its own (see rateWithin, quotaWithin): a quota
// does not stand in for a rate limit. Limits count per token: a peer
// within the caller's limits has limits of its own, as a peer that
// expires with the caller has its own lifetime.
func (c Caller) checkBounds(t *keyward.Token, what string) error {
	if keyward.MissingManagementScope(nil, t.Scopes) == "" {
		return nil
	}
	if c.ExpiresAt != nil && (t.ExpiresAt == nil || t.ExpiresAt.After(*c.ExpiresAt)) {
		return keyward.Errorf(keyward.EFORBIDDEN, "%s: a token with keyward: scopes cannot be valid after the calling token, which expires at %s",
			what, c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if len(c.AllowedCIDRs) > 0 {
		if len(t.AllowedCIDRs) == 0 {
			return keyward.Errorf(keyward.EFORBIDDEN, "%s: a token with keyward: scopes must keep to the calling token's allowed_cidrs (%s)",
				what, strings.Join(c.AllowedCIDRs, ", "))
		}
		for _, s := range t.AllowedCIDRs {
			if !keyward.CIDRsWithin([]string{s}, c.AllowedCIDRs) {
				return keyward.Errorf(keyward.EFORBIDDEN, "%s: %s is outside the calling token's allowed_cidrs (%s)",
					what, s, strings.Join(c.AllowedCIDRs, ", "))
			}
		}
	}
	if r := c.RateLimit; r != nil {
		if t.RateLimit == nil {
			return keyward.Errorf(keyward.EFORBIDDEN, "%s: a token with keyward: scopes must keep to the calling token's rate_limit (%s)",
				what, rateText(r))
		}
		if n, ok := rateWithin(t.RateLimit, r); !ok {
			return keyward.Errorf(keyward.EFORBIDDEN, "%s: a rate_limit of %s admits %d in %s, more than the calling token's rate_limit (%s)",
				what, rateText(t.RateLimit), n, r.Window, rateText(r))
		}
	}
	if q := c.Quota; q != nil {
		if t.Quota == nil {
			return keyward.Errorf(keyward.EFORBIDDEN, "%s: a token with keyward: scopes must keep to the calling token's quota (%s)",
				what, quotaText(q))
		}
		if !quotaWithin(t.Quota, q) {
			return keyward.Errorf(keyward.EFORBIDDEN, "%s: a quota of %s admits more than the calling token's quota (%s)",
				what, quotaText(t.Quota), quotaText(q))
		}
	}
	return nil
}

// rateWithin reports whether the rate limit r admits no more than bound
// does in any window of bound's length, and returns the most r admits
// there: r.Limit for each of r's windows that fit in it, counting one it
// only begins (a burst of r.Limit at the start of each; r's window no
// shorter than bound's fits once). So 50 per 1h admits 50 per 2h, 25 per
// 30m and 1 per 72s, but not 26 per 30m (52 in an hour) nor 1 per 1m (60).
// The most is not computed when it passes bound's limit by a factor, as
// it might not fit in an int64; the int64 maximum stands for it then.
func rateWithin(r, bound *keyward.RateLimit) (int64, bool) {
	w, bw := int64(r.Window), int64(bound.Window)
	fits := (bw + w - 1) / w // ⌈bound's window / r's⌉, ≥ 1
	if r.Limit > bound.Limit/fits {
		if r.Limit > (1<<63-1)/fits {
			return 1<<63 - 1, false
		}
		return r.Limit * fits, false
	}
	return r.Limit * fits, true
}

// quotaWithin reports whether the quota q admits no more than bound in
// any of bound's periods: a calendar day in UTC lies in one calendar
// month, so a day's bound admits any period's limit up to its own (a
// month's or a total's limit may all be spent in one day), a month's
// admits a month's or a total's up to its own and a day's up to a 31st of
// it (a month has up to 31 days), and a total's only a total's up to its
// own: a day's or a month's has no end.
func quotaWithin(q, bound *keyward.Quota) bool {
	switch {
	case bound.Period == keyward.PeriodDay:
		return q.Limit <= bound.Limit
	case bound.Period == keyward.PeriodMonth && q.Period == keyward.PeriodDay:
		return q.Limit <= bound.Limit/31
	case bound.Period == keyward.PeriodMonth:
		return q.Limit <= bound.Limit
	}
	return q.Period == keyward.PeriodNone && q.Limit <= bound.Limit
}

// rateText is a rate limit as the errors name it: "50 per 1h", the
// window as the API writes it.
func rateText(r *keyward.RateLimit) string {
	return fmt.Sprintf("%d per %s", r.Limit, r.Window)
}

// quotaText is a quota as the errors name it: "500 per day", "10 in total".
func quotaText(q *keyward.Quota) string {
	if q.Period == keyward.PeriodNone {
		return fmt.Sprintf("%d in total", q.Limit)
	}
	return fmt.Sprintf("%d per %s", q.Limit, q.Period)
}

// issue returns a new secret text, its stored form and its hint.
func (s *Service) issue(prefix, tokenID string, now time.Time) (string, *keyward.Secret, error) {
	text, err := secret.Generate(prefix)
	if err != nil {
		return "", nil, err
	}
	d := s.Keys.Current.Digest(text)
	return text, &keyward.Secret{Digest: d[:], KeyID: s.Keys.Current.ID, TokenID: tokenID, CreatedAt: now}, nil
}

// refresh brings the verification cache up to date with a write that has
// committed. A failure only delays the update to the next change poll.
func (s *Service) refresh(ctx context.Context, tokenID string) {
	if s.Engine == nil {
		return
	}
	if err := s.Engine.Refresh(ctx, tokenID); err != nil && s.Log != nil {
		s.Log.Warn("cache refresh failed; the change feed will retry", "token_id", tokenID, "err", err)
	}
}

// CreateToken validates t, issues its secret and stores both. It returns the
// stored token and the secret text, which exists nowhere else. t's
// client-settable fields are used; the others are set here.
func (s *Service) CreateToken(ctx context.Context, c Caller, t *keyward.Token) (*keyward.Token, string, error) {
	now := s.now()
	ws, err := s.Store.FindWorkspace(ctx, c.WorkspaceID)
	if err != nil {
		return nil, "", err
	}
	if err := joinInvalid(t.Validate(now), noSecrets(secretPrefixes(ws), t.Name, t.Subject, t.Metadata)); err != nil {
		return nil, "", err
	}
	t.Tidy()
	if err := c.checkGrant(t.Scopes, "cannot create the token"); err != nil {
		return nil, "", err
	}
	if err := c.checkBounds(t, "cannot create the token"); err != nil {
		return nil, "", err
	}
	pol, err := s.policy(ctx, c.WorkspaceID)
	if err != nil {
		return nil, "", err
	}
	if err := pol.CheckToken(t.ExpiresAt, now); err != nil {
		return nil, "", err
	}
	t = t.Clone()
	t.ID = keyward.NewID(keyward.PrefixToken, now)
	t.WorkspaceID = ws.ID
	t.CreatedBy = actorID(c.Actor)
	t.CreatedAt, t.UpdatedAt = now, now
	t.Revoked, t.Suspended = false, false
	t.RevokedAt, t.SuspendedAt, t.RotatedAt, t.LastUsedAt = nil, nil, nil, nil
	t.RevokeReason, t.SuspendReason, t.LastUsedIP = "", "", ""
	text, sec, err := s.issue(ws.TokenPrefix, t.ID, now)
	if err != nil {
		return nil, "", err
	}
	t.Hint = secret.Hint(text)
	ev := c.event("token.create", t.ID, now, diff(nil, t))
	if err := s.Store.CreateToken(ctx, t, sec, ev); err != nil {
		return nil, "", err
	}
	s.refresh(ctx, t.ID)
	return t, text, nil
}

func actorID(a keyward.Actor) string {
	if a.ID != "" {
		return a.ID
	}
	return a.Type
}

// Token returns one token of the caller's workspace.
func (s *Service) Token(ctx context.Context, c Caller, id string) (*keyward.Token, error) {
	if err := tokenID(id); err != nil {
		return nil, err
	}
	return s.Store.FindToken(ctx, c.WorkspaceID, id)
}

// tokenID refuses as not found, without asking the store, an id that
// cannot be a token's, and does not repeat it: what is given in place of
// an id may be a token's secret, which must not come back in an error.
func tokenID(id string) error {
	if !keyward.ValidID(keyward.PrefixToken, id) {
		return keyward.Errorf(keyward.ENOTFOUND, "no token has that id (a token id is %s and 26 characters)", keyward.PrefixToken)
	}
	return nil
}

// Tokens returns a page of the caller's workspace's tokens.
func (s *Service) Tokens(ctx context.Context, c Caller, f keyward.TokenFilter) ([]*keyward.Token, error) {
	f.WorkspaceID = c.WorkspaceID
	f.Now = s.now()
	return s.Store.FindTokens(ctx, f)
}

// UpdateToken applies patch to a copy of the token and stores the result
// when it changed. patch sets client-settable fields only; the result is
// validated as a whole.
func (s *Service) UpdateToken(ctx context.Context, c Caller, id string, patch func(t *keyward.Token)) (*keyward.Token, error) {
	if err := tokenID(id); err != nil {
		return nil, err
	}
	pol, err := s.policy(ctx, c.WorkspaceID)
	if err != nil {
		return nil, err
	}
	ws, err := s.Store.FindWorkspace(ctx, c.WorkspaceID)
	if err != nil {
		return nil, err
	}
	t, err := s.Store.UpdateToken(ctx, c.WorkspaceID, id, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		if err := c.checkGrant(t.Scopes, "cannot change the token"); err != nil {
			return nil, err
		}
		if t.Revoked {
			return nil, keyward.Errorf(keyward.ECONFLICT, "the token is revoked; revocation is final")
		}
		before := t.Clone()
		patch(t)
		now := s.now()
		// What the patch did not touch is not the caller's error (an
		// expiry now past, metadata stored before a rule refused it):
		// only report what the patch changed, every problem of it at once.
		var untouched []string
		if sameTime(before.ExpiresAt, t.ExpiresAt) {
			untouched = append(untouched, "/expires_at")
		}
		if bytes.Equal(before.Metadata, t.Metadata) {
			untouched = append(untouched, "/metadata")
		}
		if before.Name == t.Name {
			untouched = append(untouched, "/name")
		}
		var name, subject string
		var metadata json.RawMessage
		if t.Name != before.Name {
			name = t.Name
		}
		if t.Subject != before.Subject {
			subject = t.Subject
		}
		if !bytes.Equal(before.Metadata, t.Metadata) {
			metadata = t.Metadata
		}
		if err := joinInvalid(withoutErrsAt(t.Validate(now), untouched...), noSecrets(secretPrefixes(ws), name, subject, metadata)); err != nil {
			return nil, err
		}
		t.Tidy()
		if err := c.checkGrant(t.Scopes, "cannot grant the scope"); err != nil {
			return nil, err
		}
		if !slices.Equal(before.Scopes, t.Scopes) || !sameTime(before.ExpiresAt, t.ExpiresAt) || !slices.Equal(before.AllowedCIDRs, t.AllowedCIDRs) ||
			!reflect.DeepEqual(before.RateLimit, t.RateLimit) || !reflect.DeepEqual(before.Quota, t.Quota) {
			if err := c.checkBounds(t, "cannot change the token"); err != nil {
				return nil, err
			}
		}
		if !sameTime(before.ExpiresAt, t.ExpiresAt) {
			if err := pol.CheckToken(t.ExpiresAt, now); err != nil {
				return nil, err
			}
		}
		changes := diff(before, t)
		if changes == nil {
			return nil, nil
		}
		t.UpdatedAt = now
		return &keyward.TokenWrite{Event: c.event("token.update", t.ID, now, changes), Now: now}, nil
	})
	if err != nil {
		return nil, err
	}
	s.refresh(ctx, t.ID)
	return t, nil
}

// policy returns the workspace's token policy (maximum lifetime, expiry
// required), or nil when the store keeps none. A nil policy allows all.
func (s *Service) policy(ctx context.Context, workspaceID string) (*keyward.WorkspaceSettings, error) {
	a, ok := s.Store.(keyward.AccountStore)
	if !ok {
		return nil, nil
	}
	return a.FindWorkspaceSettings(ctx, workspaceID)
}

func sameTime(a, b *time.Time) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}

// withoutErrsAt returns the validation error err without its field errors
// at pointers: nil when none is left, any other error unchanged.
func withoutErrsAt(err error, pointers ...string) error {
	e, ok := err.(*keyward.Error)
	if !ok || e.Code != keyward.EINVALID {
		return err
	}
	var kept []keyward.FieldError
	for _, f := range e.Fields {
		if !slices.Contains(pointers, f.Pointer) {
			kept = append(kept, f)
		}
	}
	switch {
	case len(kept) == 0:
		return nil
	case len(kept) == len(e.Fields):
		return err
	}
	return keyward.Invalid(kept...)
}

// joinInvalid is keyward.JoinInvalid of a and b with the fields in
// pointer order, as the two checks each list their own.
func joinInvalid(a, b error) error {
	err := keyward.JoinInvalid(a, b)
	if ke, ok := err.(*keyward.Error); ok && a != nil && b != nil && ke.Code == keyward.EINVALID {
		slices.SortStableFunc(ke.Fields, func(x, y keyward.FieldError) int { return strings.Compare(x.Pointer, y.Pointer) })
	}
	return err
}

// RotateToken issues a new secret for the token. The secret it replaces
// stays valid for grace; every earlier grace ends now. It returns the token
// and the new secret text. Rotating a revoked token fails with ECONFLICT.
func (s *Service) RotateToken(ctx context.Context, c Caller, id string, grace time.Duration) (*keyward.Token, string, error) {
	if err := tokenID(id); err != nil {
		return nil, "", err
	}
	if grace < 0 || grace > MaxGracePeriod || grace%time.Second != 0 {
		return nil, "", keyward.Invalid(keyward.FieldError{Pointer: "/grace_period", Detail: fmt.Sprintf("grace_period must be whole seconds between 0s and %s", keyward.Duration(MaxGracePeriod))})
	}
	ws, err := s.Store.FindWorkspace(ctx, c.WorkspaceID)
	if err != nil {
		return nil, "", err
	}
	pol, err := s.policy(ctx, c.WorkspaceID)
	if err != nil {
		return nil, "", err
	}
	var text string
	t, err := s.Store.UpdateToken(ctx, c.WorkspaceID, id, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		if err := c.checkGrant(t.Scopes, "cannot rotate the token"); err != nil {
			return nil, err
		}
		// Its new secret goes to the caller.
		if err := c.checkBounds(t, "cannot rotate the token"); err != nil {
			return nil, err
		}
		if t.Revoked {
			return nil, keyward.Errorf(keyward.ECONFLICT, "the token is revoked and cannot be rotated")
		}
		now := s.now()
		if t.ExpiresAt != nil && !now.Before(*t.ExpiresAt) {
			// Its new secret would be expired on arrival.
			return nil, keyward.Errorf(keyward.ECONFLICT, "the token expired at %s: give it a later expiry (PATCH expires_at) before rotating it", t.ExpiresAt.UTC().Format(time.RFC3339))
		}
		// A new secret is a new credential: the workspace policy, which
		// may have come after the token, holds for it as for a new token.
		if err := pol.CheckToken(t.ExpiresAt, now); err != nil {
			return nil, keyward.Errorf(keyward.ECONFLICT, "%s: give the token an expiry the policy allows (PATCH expires_at) before rotating it", keyward.ErrorMessage(err))
		}
		var sec *keyward.Secret
		var err error
		if text, sec, err = s.issue(ws.TokenPrefix, t.ID, now); err != nil {
			return nil, err
		}
		before := t.Clone()
		t.Hint = secret.Hint(text)
		t.RotatedAt = &now
		t.UpdatedAt = now
		changes := diff(before, t)
		changes = withField(changes, "grace_period", keyward.Duration(grace).String())
		return &keyward.TokenWrite{Event: c.event("token.rotate", t.ID, now, changes), Rotate: sec, GraceUntil: now.Add(grace), Now: now}, nil
	})
	if err != nil {
		return nil, "", err
	}
	s.refresh(ctx, t.ID)
	return t, text, nil
}

// RevokeToken revokes the token for good. Revoking a revoked token changes
// nothing and succeeds.
func (s *Service) RevokeToken(ctx context.Context, c Caller, id, reason string) (*keyward.Token, error) {
	return s.setState(ctx, c, id, "token.revoke", reason, func(t *keyward.Token, now time.Time, reason string) (bool, error) {
		if t.Revoked {
			return false, nil
		}
		t.Revoked, t.RevokedAt, t.RevokeReason = true, &now, reason
		return true, nil
	})
}

// SuspendToken suspends the token until ResumeToken. Suspending a suspended
// token succeeds unchanged; a revoked token fails with ECONFLICT.
func (s *Service) SuspendToken(ctx context.Context, c Caller, id, reason string) (*keyward.Token, error) {
	return s.setState(ctx, c, id, "token.suspend", reason, func(t *keyward.Token, now time.Time, reason string) (bool, error) {
		if t.Revoked {
			return false, keyward.Errorf(keyward.ECONFLICT, "the token is revoked; revocation is final")
		}
		if t.Suspended {
			return false, nil
		}
		t.Suspended, t.SuspendedAt, t.SuspendReason = true, &now, reason
		return true, nil
	})
}

// ResumeToken ends a suspension. Resuming a token that is not suspended
// succeeds unchanged; a revoked token fails with ECONFLICT.
func (s *Service) ResumeToken(ctx context.Context, c Caller, id, reason string) (*keyward.Token, error) {
	return s.setState(ctx, c, id, "token.resume", reason, func(t *keyward.Token, now time.Time, _ string) (bool, error) {
		if t.Revoked {
			return false, keyward.Errorf(keyward.ECONFLICT, "the token is revoked; revocation is final")
		}
		if !t.Suspended {
			return false, nil
		}
		t.Suspended, t.SuspendedAt, t.SuspendReason = false, nil, ""
		return true, nil
	})
}

func (s *Service) setState(ctx context.Context, c Caller, id, action, reason string, change func(t *keyward.Token, now time.Time, reason string) (bool, error)) (*keyward.Token, error) {
	if err := tokenID(id); err != nil {
		return nil, err
	}
	if err := keyward.ValidateReason(reason); err != nil {
		return nil, keyward.Invalid(keyward.FieldError{Pointer: "/reason", Detail: err.Error()})
	}
	// A reason often names what happened ("leaked: kw_..."): the change
	// goes ahead, with the secret cut from the reason that is stored on
	// the token and in its audit event; one pasted without its prefix
	// too, when it is the workspace's or the default one's (see
	// secretPrefixes), which only a reason long enough to hold one looks
	// up.
	if len(reason) >= secret.BodyLen {
		ws, err := s.Store.FindWorkspace(ctx, c.WorkspaceID)
		if err != nil {
			return nil, err
		}
		reason = secret.RedactAll(reason, secretPrefixes(ws)...)
	}
	t, err := s.Store.UpdateToken(ctx, c.WorkspaceID, id, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		if err := c.checkGrant(t.Scopes, "cannot change the token"); err != nil {
			return nil, err
		}
		now := s.now()
		before := t.Clone()
		if ok, err := change(t, now, reason); !ok || err != nil {
			return nil, err
		}
		t.UpdatedAt = now
		changes := diff(before, t)
		if reason != "" {
			changes = withField(changes, "reason", reason)
		}
		return &keyward.TokenWrite{Event: c.event(action, t.ID, now, changes), Now: now}, nil
	})
	if err != nil {
		return nil, err
	}
	s.refresh(ctx, t.ID)
	return t, nil
}

// CreateWorkspace creates a workspace and its first management token, which
// holds keyward:admin there. It returns the workspace and the token's
// secret text.
func (s *Service) CreateWorkspace(ctx context.Context, c Caller, ws *keyward.Workspace) (*keyward.Workspace, string, error) {
	if !keyward.Grants(c.Scopes, keyward.ScopeInstance) {
		return nil, "", keyward.Errorf(keyward.EFORBIDDEN, "creating a workspace needs the scope %s", keyward.ScopeInstance)
	}
	now := s.now()
	w := *ws
	if w.TokenPrefix == "" {
		w.TokenPrefix = keyward.DefaultTokenPrefix
	}
	var prefixes []string
	if c.WorkspaceID != "" {
		in, err := s.Store.FindWorkspace(ctx, c.WorkspaceID)
		if err != nil {
			return nil, "", err
		}
		prefixes = secretPrefixes(in)
	} else {
		prefixes = secretPrefixes(nil)
	}
	if err := joinInvalid(w.Validate(), noSecrets(prefixes, w.Name, "", nil)); err != nil {
		return nil, "", err
	}
	w.ID = keyward.NewID(keyward.PrefixWorkspace, now)
	w.CreatedAt = now
	admin := &keyward.Token{
		ID:          keyward.NewID(keyward.PrefixToken, now),
		WorkspaceID: w.ID,
		Name:        "admin",
		Scopes:      []string{keyward.ScopeAdmin},
		CreatedBy:   actorID(c.Actor),
		CreatedAt:   now,
		UpdatedAt:   now,
	}
	// A calling token's bounds (see checkBounds; none for members and
	// keyward itself) bind the management token it hands out, this one too.
	admin.ExpiresAt, admin.AllowedCIDRs = c.ExpiresAt, slices.Clone(c.AllowedCIDRs)
	if c.RateLimit != nil {
		r := *c.RateLimit
		admin.RateLimit = &r
	}
	if c.Quota != nil {
		q := *c.Quota
		admin.Quota = &q
	}
	text, sec, err := s.issue(w.TokenPrefix, admin.ID, now)
	if err != nil {
		return nil, "", err
	}
	admin.Hint = secret.Hint(text)
	in := c
	in.WorkspaceID = w.ID
	wsChanges, _ := json.Marshal(map[string]any{"name": map[string]any{"to": w.Name}, "token_prefix": map[string]any{"to": w.TokenPrefix}})
	events := []*keyward.AuditEvent{
		in.event("workspace.create", w.ID, now, wsChanges),
		in.event("token.create", admin.ID, now, diff(nil, admin)),
	}
	if c.WorkspaceID != "" {
		// Recorded in the creator's chain too: a workspace removed from
		// the database whole is still named there (audit.Workspaces).
		events = append(events, c.event("workspace.create", w.ID, now, wsChanges))
	}
	if err := s.Store.CreateWorkspace(ctx, &w, admin, sec, events...); err != nil {
		return nil, "", err
	}
	s.refresh(ctx, admin.ID)
	return &w, text, nil
}

// Workspaces returns a page of workspaces; the caller needs keyward:instance.
func (s *Service) Workspaces(ctx context.Context, c Caller, f keyward.WorkspaceFilter) ([]*keyward.Workspace, error) {
	if !keyward.Grants(c.Scopes, keyward.ScopeInstance) {
		return nil, keyward.Errorf(keyward.EFORBIDDEN, "listing workspaces needs the scope %s", keyward.ScopeInstance)
	}
	return s.Store.FindWorkspaces(ctx, f)
}

// EnsureDefaultWorkspace returns the default workspace, creating it on an
// empty store. Several processes may call it at once.
func (s *Service) EnsureDefaultWorkspace(ctx context.Context) (*keyward.Workspace, error) {
	ws, err := s.Store.FindWorkspaceByName(ctx, keyward.DefaultWorkspace)
	if keyward.ErrorCode(err) != keyward.ENOTFOUND {
		return ws, err
	}
	now := s.now()
	ws = &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, now), Name: keyward.DefaultWorkspace, TokenPrefix: keyward.DefaultTokenPrefix, CreatedAt: now}
	ev := SystemCaller(ws.ID).event("workspace.create", ws.ID, now, nil)
	err = s.Store.CreateWorkspace(ctx, ws, nil, nil, ev)
	if keyward.ErrorCode(err) == keyward.ECONFLICT {
		return s.Store.FindWorkspaceByName(ctx, keyward.DefaultWorkspace)
	}
	return ws, err
}

// CreateRootToken issues the root management token in the default
// workspace: keyward:admin there and keyward:instance. It fails with
// ECONFLICT when a root token was issued before, unless again is true.
func (s *Service) CreateRootToken(ctx context.Context, again bool) (*keyward.Token, string, error) {
	ws, err := s.EnsureDefaultWorkspace(ctx)
	if err != nil {
		return nil, "", err
	}
	now := s.now()
	t := &keyward.Token{
		ID:          keyward.NewID(keyward.PrefixToken, now),
		WorkspaceID: ws.ID,
		Name:        "root",
		Scopes:      []string{keyward.ScopeAdmin, keyward.ScopeInstance},
		CreatedBy:   keyward.ActorSystem,
		CreatedAt:   now,
		UpdatedAt:   now,
	}
	text, sec, err := s.issue(ws.TokenPrefix, t.ID, now)
	if err != nil {
		return nil, "", err
	}
	t.Hint = secret.Hint(text)
	ev := SystemCaller(ws.ID).event("token.create", t.ID, now, diff(nil, t))
	if err := s.Store.CreateRootToken(ctx, t, sec, ev, again); err != nil {
		if keyward.ErrorCode(err) == keyward.ECONFLICT {
			return nil, "", keyward.Errorf(keyward.ECONFLICT, "a root token was already issued; pass --new-root-token to issue another")
		}
		return nil, "", err
	}
	s.refresh(ctx, t.ID)
	return t, text, nil
}

// auditFields returns the audited view of a token: the fields a client can
// see, by their API names. It never holds a secret.
func auditFields(t *keyward.Token) map[string]any {
	m := map[string]any{
		"name":          t.Name,
		"hint":          t.Hint,
		"scopes":        t.Scopes,
		"expires_at":    t.ExpiresAt,
		"allowed_cidrs": t.AllowedCIDRs,
		"rate_limit":    t.RateLimit,
		"quota":         t.Quota,
		"subject":       t.Subject,
		"metadata":      t.Metadata,
		"revoked":       t.Revoked,
		"revoke_reason": t.RevokeReason,
		"suspended":     t.Suspended,
	}
	for k, v := range m {
		// Normalise through JSON so that nil and empty compare alike.
		b, _ := json.Marshal(v)
		var n any
		json.Unmarshal(b, &n)
		if n == nil || reflect.DeepEqual(n, []any{}) || n == "" || n == false {
			delete(m, k)
			continue
		}
		m[k] = n
	}
	return m
}

// diff returns {"field": {"from": old, "to": new}} for every field that
// differs between before (nil for a creation) and after, or nil when none.
func diff(before, after *keyward.Token) json.RawMessage {
	var a map[string]any
	if before != nil {
		a = auditFields(before)
	}
	b := auditFields(after)
	out := map[string]map[string]any{}
	for k, v := range b {
		if old, ok := a[k]; !ok || !reflect.DeepEqual(old, v) {
			out[k] = map[string]any{"to": v}
			if ok {
				out[k]["from"] = old
			}
		}
	}
	for k, old := range a {
		if _, ok := b[k]; !ok {
			out[k] = map[string]any{"from": old, "to": nil}
		}
	}
	if len(out) == 0 {
		return nil
	}
	raw, _ := json.Marshal(out)
	return raw
}

// withField adds a plain field to a changes object.
func withField(changes json.RawMessage, key string, value any) json.RawMessage {
	m := map[string]any{}
	if changes != nil {
		json.Unmarshal(changes, &m)
	}
	m[key] = value
	raw, _ := json.Marshal(m)
	return raw
}

// noSecrets refuses a token name, subject or metadata (its keys and
// string values, however nested) that holds a token's secret, pasted into
// the wrong field: all are stored, shown in lists and recorded in the
// audit log, where no secret may be. A secret is what secret.Redact finds,
// or the body of one of prefixes' secrets without its prefix; in metadata,
// machine-written data where Redact's shape alone is common (base64url),
// what secret.InData finds. An empty
// name or subject, nil metadata, is not looked at; the errors point at
// the field, never at a key that holds a secret (a pointer names its
// keys): a key is reported at the object that holds it.
func noSecrets(prefixes []string, name, subject string, metadata json.RawMessage) error {
	var errs []keyward.FieldError
	add := func(ptr, what string) {
		if !slices.ContainsFunc(errs, func(e keyward.FieldError) bool { return e.Pointer == ptr }) {
			errs = append(errs, keyward.FieldError{Pointer: ptr, Detail: what + " holds a token's secret; a secret is never stored in plain text"})
		}
	}
	if name != "" && secret.Holds(name, prefixes...) {
		add("/name", "name")
	}
	if subject != "" && secret.Holds(subject, prefixes...) {
		add("/subject", "subject")
	}
	if metadata != nil {
		dec := json.NewDecoder(bytes.NewReader(metadata))
		dec.UseNumber()
		// Metadata that does not decode is Validate's to refuse.
		_ = scanSecrets(dec, "/metadata", true, prefixes, add)
	}
	if errs == nil {
		return nil
	}
	return &keyward.Error{Code: keyward.EINVALID, Message: "a token's secret is in a field that is stored", Fields: errs}
}

// secretPrefixes returns the prefixes whose secrets noSecrets finds
// without their prefix: ws's (the workspace whose tokens a caller holds)
// and the default one (secret.Prefixes).
func secretPrefixes(ws *keyward.Workspace) []string {
	if ws == nil {
		return secret.Prefixes("")
	}
	return secret.Prefixes(ws.TokenPrefix)
}

// scanSecrets reads the JSON value next in dec, at ptr, and reports each
// key and string value that holds a secret to found: a value at its
// pointer, a key at its object's; what is within a value whose key holds
// one is reported at that object too (deep says whether ptr may name
// more, false there).
func scanSecrets(dec *json.Decoder, ptr string, deep bool, prefixes []string, found func(ptr, what string)) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case string:
		if secret.InData(v, prefixes...) {
			found(ptr, "metadata")
		}
	case json.Delim:
		for i := 0; dec.More(); i++ {
			child, under := ptr+"/"+strconv.Itoa(i), deep
			if v == '{' {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := kt.(string)
				child = ptr + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
				if secret.InData(k, prefixes...) {
					found(ptr, "a metadata key")
					under = false
				}
			}
			if !under {
				child = ptr // k is not named
			}
			if err := scanSecrets(dec, child, under, prefixes, found); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return err
		}
	}
	return nil
}
