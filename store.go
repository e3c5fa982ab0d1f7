package keyward

import (
	"context"
	"time"
)

// Store is the persistence contract. Each method is one transaction: a
// write and the audit event that records it commit together or not at all.
// Methods return an *Error with ENOTFOUND for a missing object (or one of
// another workspace) and ECONFLICT for a uniqueness violation; any other
// error is internal. Every store passes the suite in internal/storetest.
//
// Every audit event a write inserts is appended, in that transaction, to
// its workspace's audit chain: the store computes its AuditMAC under the
// chain key it was opened with, from the values as stored, and moves the
// workspace's AuditHead to it.
type Store interface {
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error

	// CreateWorkspace inserts ws and, when admin is not nil, its first
	// management token with its secret, and the events.
	CreateWorkspace(ctx context.Context, ws *Workspace, admin *Token, sec *Secret, events ...*AuditEvent) error
	// FindWorkspace returns the workspace with the given id.
	FindWorkspace(ctx context.Context, id string) (*Workspace, error)
	// FindWorkspaceByName returns the workspace with the given name.
	FindWorkspaceByName(ctx context.Context, name string) (*Workspace, error)
	// FindWorkspaces returns a page of workspaces ordered by id.
	FindWorkspaces(ctx context.Context, f WorkspaceFilter) ([]*Workspace, error)

	// CreateToken inserts t, its secret and ev.
	CreateToken(ctx context.Context, t *Token, sec *Secret, ev *AuditEvent) error
	// CreateRootToken inserts a root token like CreateToken and marks the
	// store as having a root token. It fails with ECONFLICT when a root token
	// was issued before, unless again is true.
	CreateRootToken(ctx context.Context, t *Token, sec *Secret, ev *AuditEvent, again bool) error
	// FindToken returns the token with the given id in the given workspace.
	FindToken(ctx context.Context, workspaceID, id string) (*Token, error)
	// TokenByID returns the token with the given id in whichever workspace
	// holds it. Only the verification engine uses it, with ids that the
	// store itself handed out; API paths use FindToken.
	TokenByID(ctx context.Context, id string) (*Token, error)
	// FindTokens returns a page of tokens ordered by id.
	FindTokens(ctx context.Context, f TokenFilter) ([]*Token, error)
	// UpdateToken reads the token, calls fn with a copy it may change, and
	// writes what fn asks for. When fn returns a nil write (nothing to do) or
	// an error, nothing is written. It returns the token as stored after.
	UpdateToken(ctx context.Context, workspaceID, id string, fn func(t *Token) (*TokenWrite, error)) (*Token, error)

	// LookupSecret returns the secret with the given digest and its token.
	LookupSecret(ctx context.Context, digest []byte) (*Secret, *Token, error)
	// TokenSecrets returns every stored secret of a token.
	TokenSecrets(ctx context.Context, tokenID string) ([]*Secret, error)
	// Redigest replaces the digest oldDigest by sec (same token, new key).
	Redigest(ctx context.Context, oldDigest []byte, sec *Secret) error
	// SecretKeys counts the stored secrets by the id of the server key
	// that made their digests.
	SecretKeys(ctx context.Context) (map[string]int64, error)
	// SecretDigests returns up to limit stored secret digests greater than
	// after (all of them from the first when after is empty), in byte
	// order, whatever their token's state and key.
	SecretDigests(ctx context.Context, after []byte, limit int) ([][]byte, error)

	// Changes returns up to limit token changes with a sequence number
	// greater than after, oldest first. Every token write adds one.
	Changes(ctx context.Context, after int64, limit int) ([]Change, error)
	// LastChange returns the newest change's sequence number, or 0.
	LastChange(ctx context.Context) (int64, error)
	// PruneChanges deletes changes recorded before t.
	PruneChanges(ctx context.Context, before time.Time) error

	// FlushUsage adds quota consumption and records last use, in one
	// transaction for the whole batch. It adds no change: usage does not
	// alter how a token verifies on other nodes (quota counts are node-local
	// until global limits exist). A batch that its id says was applied (see
	// FlushID) is applied as nothing, and FlushUsage returns nil.
	FlushUsage(ctx context.Context, id FlushID, batch []UsageFlush) error
	// QuotaUsed returns the consumption recorded for a token's quota period.
	QuotaUsed(ctx context.Context, tokenID, period string) (int64, error)
	// RateWindows returns the stored rate-limit windows that still count
	// admissions after now (Until later than now).
	RateWindows(ctx context.Context, now time.Time) ([]RateWindow, error)

	// WriteUsage adds counts to the minute rollups and to the hour rollups
	// (each count to the bucket holding its Bucket time), and inserts
	// events, in one transaction. Adding is what lets several nodes write
	// the same buckets. A batch that its id says was applied (see FlushID) is
	// applied as nothing, and WriteUsage returns nil.
	WriteUsage(ctx context.Context, id FlushID, counts []UsageCount, events []*UsageEvent) error
	// UsageSeries returns a workspace's usage in [From, To) summed by
	// bucket of f.Granularity, route, outcome and status, oldest bucket
	// first. Minute granularity reads the minute rollups; hour and day the
	// hour rollups (days are UTC). With f.TokenID empty the counts of every
	// token are summed and TokenID is "" in the result.
	UsageSeries(ctx context.Context, f UsageFilter) ([]UsageCount, error)
	// UsageTopTokens returns the tokens of a workspace with the most
	// verifications in [From, To), most first, ties by token id; rollups
	// of unidentified credentials are not a token and are left out.
	UsageTopTokens(ctx context.Context, f UsageFilter, limit int) ([]UsageTokenTotal, error)
	// FindUsageEvents returns a page of raw usage events, newest first.
	FindUsageEvents(ctx context.Context, f UsageEventFilter) ([]*UsageEvent, error)
	// PruneUsage deletes rollups and events older than p says, for
	// retention: with p.Limit, at most that many of each kind, the
	// oldest first.
	PruneUsage(ctx context.Context, p UsagePrune) (UsagePruned, error)

	// FindAuditEvents returns a page of a workspace's audit events, newest
	// first in the order they were written (see AuditFilter).
	FindAuditEvents(ctx context.Context, f AuditFilter) ([]*AuditEvent, error)
	// AuditChain calls fn with each audit event of a workspace and its
	// link, in sequence order, and returns the workspace's chain head (nil
	// when it has none). The events and the head are read from one
	// snapshot, so that writes meanwhile are not half seen. An error from
	// fn stops the walk and is returned unchanged.
	AuditChain(ctx context.Context, workspaceID string, fn func(e *AuditEvent, l AuditLink) error) (*AuditHead, error)
	// AppendAudit records events that go with no other write, such as a
	// failed sign-in or a gateway config reload. An event without a
	// WorkspaceID is the account's of its member actor, copied to each of
	// the actor's workspaces as AccountStore says.
	AppendAudit(ctx context.Context, events ...*AuditEvent) error
	// CutAudit removes, for retention, the audit events of a workspace up
	// to the newest one written before before (in chain order), and
	// appends ev, with Changes set to the AuditCut it made, in one
	// transaction: the chain records its own cut. It returns the cut, with
	// Removed 0 and no event appended when nothing was that old.
	CutAudit(ctx context.Context, workspaceID string, before time.Time, ev *AuditEvent) (AuditCut, error)
	// AuditWorkspaces returns the ids of the workspaces that have audit
	// events or a chain head, in order.
	AuditWorkspaces(ctx context.Context) ([]string, error)
}

// TokenWrite is what a Store.UpdateToken callback asks to be written.
type TokenWrite struct {
	// Event records the change; it is required.
	Event *AuditEvent
	// Rotate, when not nil, becomes the token's current secret. The secret
	// it replaces stays valid until GraceUntil; every earlier grace ends now.
	Rotate     *Secret
	GraceUntil time.Time
	Now        time.Time
}

// Change says that a token changed, for cache invalidation across nodes.
type Change struct {
	Seq     int64
	TokenID string
	// At is the time of the write the change records (see PruneChanges):
	// a write made again after a restore, under the same number and of
	// the same token, is told apart by it.
	At time.Time
}

// FlushID names a batch of usage (Store.FlushUsage, Store.WriteUsage), so
// that a batch whose write committed but whose answer was lost (the
// connection cut after COMMIT) is not added twice when it is written
// again: counts add up, so writing one twice would count it twice.
//
// A writer (a verification engine, a usage recorder: one per process)
// numbers its batches 1, 2, 3... and writes a batch only once the one
// before it is applied, writing a failed one again, unchanged, until it
// is. A store records, with each batch it applies, the writer's Seq; a
// batch whose Seq is not above the one recorded for its writer was
// applied, and is applied as nothing. A writer not heard of for
// FlushIDRetention (by At, the writers' own clocks) is forgotten.
//
// The zero FlushID applies its batch unconditionally: a usage spool of
// an earlier release, whose batches had no id.
type FlushID struct {
	Writer string    // random, never reused; "" for no id
	Seq    int64     // from 1
	At     time.Time // when the writer formed the batch
}

// FlushIDRetention is how long a store remembers the batches a writer
// applied after its latest: a batch written again later than that (a
// spool written back after a longer outage) may be added twice.
const FlushIDRetention = 30 * 24 * time.Hour

// NewFlushWriter returns a new writer id for FlushID.
func NewFlushWriter(now time.Time) string {
	return NewID("flw_", now)
}

// UsageFlush is one token's usage since the last flush.
type UsageFlush struct {
	TokenID    string
	LastUsedAt time.Time
	LastUsedIP string
	Period     string // quota period key; "" when the token has no quota
	QuotaDelta int64
	// Rate, when not nil, is the token's rate-limit window on this node
	// as it stands, stored in place of the one stored before, so that a
	// restart does not hand out a fresh allowance.
	Rate *RateWindow
}

// RateWindow is the state of one token's sliding-window rate limiter:
// admissions counted in sub-windows of Width, the newest of which is
// number Head (its start is Head·Width, unix ns). Counts holds the ring of
// sub-window counts, Head's at Head mod len(Counts). Until is when the
// newest counted admission leaves the window: past it the state counts
// nothing. Last is the time of the latest admission counted, at least, or
// zero when not known (a state stored before it was kept); a state that
// knows it has Until = Last + Window, so one whose Until another node of
// an earlier version rewrote without Last is told apart.
type RateWindow struct {
	TokenID string
	Window  time.Duration
	Width   int64
	Head    int64
	Counts  []int64
	Until   time.Time
	Last    time.Time
}

// BulkLoader is implemented by stores that can insert many tokens at once,
// for seeding tests and benchmarks. It writes no audit events and no
// changes, so other nodes' caches do not hear of the tokens until they look
// them up: it is not for production writes.
type BulkLoader interface {
	// InsertTokens inserts tokens and their secrets, secrets[i] being the
	// secret of tokens[i], in one transaction: on error nothing is
	// inserted. A secret with an empty TokenID or a zero CreatedAt is
	// stored as its token's. It returns ENOTFOUND when a token's workspace
	// does not exist and ECONFLICT when a token id or digest exists.
	InsertTokens(ctx context.Context, tokens []*Token, secrets []*Secret) error
	// CountTokens returns the number of tokens stored, in every workspace.
	CountTokens(ctx context.Context) (int64, error)
}
