package keyward

import (
	"context"
	"fmt"
	"net/mail"
	"strings"
	"time"
)

// Member roles, from most to least powerful. An owner and an admin see and
// manage every token of the workspace; an owner also manages members and
// settings; a member sees and manages only the tokens it created; a viewer
// sees every token and changes nothing.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleViewer = "viewer"
)

// Roles lists the roles, most powerful first.
var Roles = []string{RoleOwner, RoleAdmin, RoleMember, RoleViewer}

// ValidRole reports whether r is one of Roles.
func ValidRole(r string) bool {
	for _, v := range Roles {
		if r == v {
			return true
		}
	}
	return false
}

// Id prefixes of accounts.
const (
	PrefixUser    = "usr_"
	PrefixSession = "ses_"
	PrefixInvite  = "inv_"
	PrefixPasskey = "pk_"
)

// Passkey is a user's WebAuthn credential. Credential is the credential
// as the WebAuthn library stores it (JSON: public key, sign count, flags);
// none of it is secret.
type Passkey struct {
	ID           string
	UserID       string
	CredentialID []byte
	Credential   []byte
	Name         string
	CreatedAt    time.Time
	LastUsedAt   *time.Time
}

// DefaultInviteTTL is how long an invitation link works.
const DefaultInviteTTL = 72 * time.Hour

// Invite is an invitation to join a workspace with a role. The link holds a
// random single-use code; the store keeps only its digest.
type Invite struct {
	ID          string
	Digest      []byte
	WorkspaceID string
	Email       string
	Role        string
	CreatedBy   string // user id of the inviter
	CreatedAt   time.Time
	ExpiresAt   time.Time
	UsedAt      *time.Time
}

// MaxEmailLen bounds an email address (RFC 5321's path limit).
const MaxEmailLen = 254

// User is a person with a dashboard account. It holds no secret in clear:
// the password as an argon2id hash, the TOTP secret sealed under a key the
// database does not hold.
type User struct {
	ID           string
	Email        string // lower-cased; unique
	PasswordHash string // PHC string of argon2id
	// TOTPSecret is the sealed TOTP secret; nil while TOTP is not enabled.
	TOTPSecret []byte
	// TOTPLastStep is the time step of the last TOTP code accepted, so that
	// no code is accepted twice.
	TOTPLastStep int64
	// CredentialEpoch counts the endings of all the user's sessions (but
	// one), which every change of its credentials (password, TOTP,
	// passkeys) and "sign out everywhere" is followed by: DeleteSessions
	// bumps it. A session carries the epoch its sign-in read with the
	// credentials it checked; CreateSession refuses one that is behind,
	// so that a sign-in under way when the credentials changed cannot
	// make a session after their change ended the others.
	CredentialEpoch int64
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// HasMFA reports whether the user has a second factor.
func (u *User) HasMFA() bool { return len(u.TOTPSecret) > 0 }

// NormalizeEmail returns the address as stored (trimmed, lower-cased), or
// an EINVALID error when it is not one plain address.
func NormalizeEmail(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	bad := Invalid(FieldError{Pointer: "/email", Detail: "enter an email address such as you@example.com"})
	if s == "" || len(s) > MaxEmailLen {
		return "", bad
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "", bad
	}
	return s, nil
}

// Member is a user's membership of a workspace, with a role.
type Member struct {
	WorkspaceID string
	UserID      string
	Email       string // the user's, filled in by reads
	Role        string
	CreatedAt   time.Time
}

// Session is a signed-in browser. The cookie holds a random id of at least
// 128 bits; the store keeps only its digest. ID is a public handle to name
// the session in pages and audit events; it grants nothing.
type Session struct {
	ID          string
	Digest      []byte
	UserID      string
	WorkspaceID string // the workspace the session acts in
	// Verified reports whether every factor was presented; a session
	// waiting for the second factor can only present it.
	Verified bool
	// ReauthAt is when the user last proved a factor in this session, for
	// the re-authentication that changing factors requires.
	ReauthAt   time.Time
	CreatedAt  time.Time
	LastSeenAt time.Time
	IP         string
	UserAgent  string
	// Epoch is the user's CredentialEpoch read with the credentials the
	// sign-in checked (see User.CredentialEpoch).
	Epoch int64
}

// Expired reports whether the session has ended at now: idle for longer
// than idle, or older than absolute.
func (s *Session) Expired(now time.Time, idle, absolute time.Duration) bool {
	return !now.Before(s.LastSeenAt.Add(idle)) || !now.Before(s.CreatedAt.Add(absolute))
}

// ScopeInfo is an entry of a workspace's scope catalog.
type ScopeInfo struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Privileged  bool   `json:"privileged,omitempty"`
}

// WorkspaceSettings are a workspace's dashboard settings and its minimal
// token policy.
type WorkspaceSettings struct {
	WorkspaceID string
	// MFARequired sends members without a second factor to enrolment
	// before anything else.
	MFARequired bool
	// MaxTokenLifetime bounds the expiry of new tokens; 0 for no bound.
	MaxTokenLifetime time.Duration
	// ExpiryRequired refuses new tokens without an expiry.
	ExpiryRequired bool
	// Scopes is the scope catalog people pick from in the dashboard.
	Scopes    []ScopeInfo
	UpdatedAt time.Time
}

// CheckToken returns an EINVALID error when a new token expiring at
// expiresAt (nil: never) breaks the policy at now.
func (w *WorkspaceSettings) CheckToken(expiresAt *time.Time, now time.Time) error {
	if w == nil {
		return nil
	}
	if expiresAt == nil {
		if w.ExpiryRequired || w.MaxTokenLifetime > 0 {
			return Invalid(FieldError{Pointer: "/expires_at", Detail: "the workspace policy requires an expiry"})
		}
		return nil
	}
	if w.MaxTokenLifetime > 0 && expiresAt.Sub(now) > w.MaxTokenLifetime {
		return Invalid(FieldError{Pointer: "/expires_at", Detail: fmt.Sprintf("the workspace policy allows at most %s", FormatLifetime(w.MaxTokenLifetime))})
	}
	return nil
}

// FormatLifetime writes d as people say it, in its largest whole unit:
// "1 day", "30 days", "36 hours", "90 seconds"; a length that is no whole
// number of seconds as Go writes it.
func FormatLifetime(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}} {
		if d > 0 && d%u.d == 0 {
			if n := int64(d / u.d); n != 1 {
				return fmt.Sprintf("%d %ss", n, u.name)
			}
			return "1 " + u.name
		}
	}
	return d.String()
}

// AccountStore keeps users, memberships, sessions and second factors.
// Like Store, each method is one transaction, and each audit event it is
// given is appended to its workspace's chain in that transaction. An event
// without a WorkspaceID is the account's (a change to its password,
// factors or sessions everywhere): it is appended, in that transaction,
// to the chain of each workspace its actor is a member of then, the first
// copy with the event's id and each other with a new one; to none when
// the actor is a member of none. Methods return ENOTFOUND for a missing
// object and ECONFLICT for a taken email, member or id. Every store
// passes the suite in internal/storetest.
type AccountStore interface {
	// HasOwner reports whether any workspace has an owner.
	HasOwner(ctx context.Context) (bool, error)
	// CreateUser inserts u, its memberships and the events.
	CreateUser(ctx context.Context, u *User, members []*Member, events ...*AuditEvent) error
	// FindUser returns the user with the given id.
	FindUser(ctx context.Context, id string) (*User, error)
	// FindUserByEmail returns the user with the given (normalized) email.
	FindUserByEmail(ctx context.Context, email string) (*User, error)
	// UpdateUser reads the user, calls fn with a copy it may change and
	// writes the copy and the events fn returns, unless fn fails. It returns
	// the user as stored after.
	UpdateUser(ctx context.Context, id string, fn func(u *User) ([]*AuditEvent, error)) (*User, error)

	// EnableTOTP turns the user's authenticator app on at at: it writes
	// the sealed secret and the time step of the code that confirmed it,
	// replaces the recovery codes by digests and records the events, all
	// or nothing, so that the app is never on without its recovery codes.
	// It returns the user as stored after, and ECONFLICT, writing nothing,
	// when the app is on already.
	EnableTOTP(ctx context.Context, userID string, secret []byte, step int64, digests [][]byte, at time.Time, events ...*AuditEvent) (*User, error)
	// SetRecoveryCodes replaces the user's recovery codes by digests and
	// records the events, all or nothing. It returns ECONFLICT, writing
	// nothing, when the user's app is off: checked in the same step as the
	// write, so that codes made as the app is turned off (in another tab)
	// cannot outlive it as a second factor of their own.
	SetRecoveryCodes(ctx context.Context, userID string, digests [][]byte, events ...*AuditEvent) error
	// UseRecoveryCode deletes the user's recovery code with the digest and
	// records the events; ENOTFOUND when the user has no such code.
	UseRecoveryCode(ctx context.Context, userID string, digest []byte, events ...*AuditEvent) error
	// DisableTOTP turns the user's authenticator app off at at: it clears
	// the TOTP secret, deletes the recovery codes and records the events,
	// all or nothing. It returns the user as stored after, and whether the
	// app was on; when it was off, it writes nothing, events included.
	// With keepFactor, it returns ECONFLICT and changes nothing when the
	// user has no passkey, the check made in the same step as the change.
	DisableTOTP(ctx context.Context, userID string, keepFactor bool, at time.Time, events ...*AuditEvent) (*User, bool, error)
	// RecoveryCodesLeft returns how many recovery codes the user has.
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)

	// FindMember returns a user's membership of a workspace.
	FindMember(ctx context.Context, workspaceID, userID string) (*Member, error)
	// FindMembers returns the members of a workspace (userID "") or the
	// memberships of a user (workspaceID ""), ordered by email then
	// workspace id.
	FindMembers(ctx context.Context, workspaceID, userID string) ([]*Member, error)
	// PutMember inserts the membership or changes its role.
	PutMember(ctx context.Context, m *Member, events ...*AuditEvent) error
	// ChangeRole changes the role of an existing member from from to to,
	// ends the user's sessions in that workspace and records the events.
	// It returns ENOTFOUND when the user is not a member (any more), and
	// ECONFLICT when its role is no longer from or when the workspace
	// would be left without an owner. Role changes and removals of one
	// workspace are serialized, so that two owners demoting each other
	// cannot both succeed.
	ChangeRole(ctx context.Context, workspaceID, userID, from, to string, events ...*AuditEvent) error
	// RemoveMember deletes the membership and the user's sessions in that
	// workspace. It returns ECONFLICT when that would leave the workspace
	// without an owner.
	RemoveMember(ctx context.Context, workspaceID, userID string, events ...*AuditEvent) error

	// CreateSession inserts s and the events. It returns ECONFLICT,
	// inserting nothing, when s.Epoch is not the user's CredentialEpoch:
	// the user's sessions were ended (after a change of the credentials
	// the sign-in checked) since the sign-in read it.
	CreateSession(ctx context.Context, s *Session, events ...*AuditEvent) error
	// FindSession returns the session with the given digest.
	FindSession(ctx context.Context, digest []byte) (*Session, error)
	// FindSessions returns the user's sessions, newest first.
	FindSessions(ctx context.Context, userID string) ([]*Session, error)
	// UpdateSession writes s's digest, workspace, Verified, ReauthAt and
	// LastSeenAt, and the events.
	UpdateSession(ctx context.Context, s *Session, events ...*AuditEvent) error
	// TouchSession sets the last use of the session with the id and
	// digest to at, when it is earlier. It writes nothing else, and
	// nothing when the session ended or got a new digest meanwhile, so
	// that a slow request cannot write back an older state.
	TouchSession(ctx context.Context, id string, digest []byte, at time.Time) error
	// DeleteSessions deletes the user's session with the given id, or
	// every session of the user but exceptID when id is "", and records
	// the events when it deleted any. It returns how many it deleted. When id is "", it also
	// bumps the user's CredentialEpoch, so that a sign-in under way
	// cannot make a session after, and moves exceptID's session to the
	// new epoch, all in one step.
	DeleteSessions(ctx context.Context, userID, id, exceptID string, events ...*AuditEvent) (int, error)

	// FindWorkspaceSettings returns a workspace's settings; a workspace
	// that never saved any gets the zero settings.
	FindWorkspaceSettings(ctx context.Context, workspaceID string) (*WorkspaceSettings, error)
	// PutWorkspaceSettings writes the settings and the events.
	PutWorkspaceSettings(ctx context.Context, s *WorkspaceSettings, events ...*AuditEvent) error

	// CreateInvite inserts inv and the events.
	CreateInvite(ctx context.Context, inv *Invite, events ...*AuditEvent) error
	// FindInvite returns the invitation with the digest, used or not.
	FindInvite(ctx context.Context, digest []byte) (*Invite, error)
	// FindInvites returns a workspace's invitations not yet used, newest
	// first.
	FindInvites(ctx context.Context, workspaceID string) ([]*Invite, error)
	// AcceptInvite uses the invitation with the digest at now: it creates
	// newUser when it is not nil, makes userID (or newUser) a member with
	// the invitation's role, and records the events, all or nothing. It
	// returns ENOTFOUND when no unused, unexpired invitation has the digest,
	// and ECONFLICT when the user is a member already.
	AcceptInvite(ctx context.Context, digest []byte, now time.Time, newUser *User, userID string, events ...*AuditEvent) error
	// DeleteInvite deletes an unused invitation of the workspace.
	DeleteInvite(ctx context.Context, workspaceID, id string, events ...*AuditEvent) error

	// AddPasskey inserts pk and the events; ECONFLICT when its credential
	// id is registered already.
	AddPasskey(ctx context.Context, pk *Passkey, events ...*AuditEvent) error
	// FindPasskeys returns the user's passkeys, oldest first.
	FindPasskeys(ctx context.Context, userID string) ([]*Passkey, error)
	// FindPasskeyByCredential returns the passkey with the credential id.
	FindPasskeyByCredential(ctx context.Context, credentialID []byte) (*Passkey, error)
	// UsePasskey writes the passkey's credential (its new sign count) and
	// last use, and the events.
	UsePasskey(ctx context.Context, id string, credential []byte, at time.Time, events ...*AuditEvent) error
	// DeletePasskey deletes the user's passkey with the id and records the
	// events. With keepFactor, it returns ECONFLICT and deletes nothing
	// when the passkey is the user's last second factor (no other passkey,
	// no authenticator app): the check and the deletion are one step, so
	// that removals of factors at once cannot each leave one to the other.
	DeletePasskey(ctx context.Context, userID, id string, keepFactor bool, events ...*AuditEvent) error

	// CreateChallenge records a passkey ceremony's challenge by its digest
	// until expiresAt, and deletes the challenges expired at now.
	// ECONFLICT when the digest is recorded already.
	CreateChallenge(ctx context.Context, digest []byte, now, expiresAt time.Time) error
	// UseChallenge deletes the challenge with the digest; it returns
	// ENOTFOUND when there is none, or when it expired at now. A
	// challenge can thus be used once.
	UseChallenge(ctx context.Context, digest []byte, now time.Time) error
}
