// Package storetest is the conformance suite of keyward.Store. Every store
// implementation runs Run from its own tests, the way testing/fstest.TestFS
// checks every file system, so that all stores behave the same.
//
// Besides what the keyward.Store documentation says, the suite pins down:
//   - ENOTFOUND for a missing object and for an object of another workspace;
//     ECONFLICT for a taken workspace name, token id, digest or event id.
//   - Times come back in UTC, equal to the instants stored, to the
//     microsecond at least; a nil pointer comes back nil.
//   - A zero page size (Limit) means no limit.
//   - Every token write (a created token, an UpdateToken that writes) adds
//     exactly one change and its audit event, in one transaction; a write
//     that fails leaves no change, no event and no other trace.
//   - A rotation ends every grace still running at TokenWrite.Now and gives
//     the replaced secret a grace until GraceUntil.
//   - FlushUsage skips entries of unknown tokens, keeps the latest last use,
//     and adds quota only for entries with a Period.
//   - TokenSecrets returns ENOTFOUND for an unknown token.
//   - Every audit event written is linked, under AuditKey, to the one
//     before it in its workspace, from its fields as read back, and the
//     workspace's head is the newest event; a failed write links nothing.
//     AuditFilter's From is inclusive and To exclusive. FindAuditEvents
//     lists, and pages, in the order events were written, whatever the
//     order of their ids.
//   - FlushUsage and WriteUsage apply a batch with a FlushID once, however
//     often it is written, and one with the zero FlushID every time.
//   - Usage rollups add up across writes; a minute count also lands in its
//     hour; series are summed per bucket, route, outcome and status, and
//     ranges are From-inclusive, To-exclusive.
//   - A store that implements keyward.AccountStore passes the account
//     tests (account.go); the suite skips them for other stores.
//   - A store that implements keyward.BulkLoader inserts a batch whole or
//     not at all, with every field, and adds no change and no audit event;
//     the suite skips these tests for other stores.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// Run runs the conformance suite. open must return a new, empty store (its
// schema in place, no workspaces) with AuditKey as its audit chain key each
// time it is called; Run closes it when the test that opened it ends.
func Run(t *testing.T, open func(t *testing.T) keyward.Store) {
	s := &suite{open: open}
	t.Run("Ping", s.testPing)
	t.Run("CreateWorkspace", s.testCreateWorkspace)
	t.Run("FindWorkspace", s.testFindWorkspace)
	t.Run("FindWorkspaceByName", s.testFindWorkspaceByName)
	t.Run("FindWorkspaces", s.testFindWorkspaces)
	t.Run("CreateToken", s.testCreateToken)
	t.Run("CreateRootToken", s.testCreateRootToken)
	t.Run("FindToken", s.testFindToken)
	t.Run("TokenByID", s.testTokenByID)
	t.Run("FindTokens", s.testFindTokens)
	t.Run("UpdateToken", s.testUpdateToken)
	t.Run("Rotate", s.testRotate)
	t.Run("LookupSecret", s.testLookupSecret)
	t.Run("TokenSecrets", s.testTokenSecrets)
	t.Run("Redigest", s.testRedigest)
	t.Run("SecretDigests", s.testSecretDigests)
	t.Run("Changes", s.testChanges)
	t.Run("PruneChanges", s.testPruneChanges)
	t.Run("FlushUsage", s.testFlushUsage)
	t.Run("FindAuditEvents", s.testFindAuditEvents)
	t.Run("FindAuditEventsFilters", s.testFindAuditEventsFilters)
	t.Run("FindAuditEventsWriteOrder", s.testFindAuditEventsWriteOrder)
	t.Run("AuditChain", s.testAuditChain)
	t.Run("InsertTokens", s.testInsertTokens)
	t.Run("Usage", s.testUsage)
	t.Run("UsageEvents", s.testUsageEvents)
	t.Run("UsageBatch", s.testUsageBatch)
	t.Run("UsageConcurrent", s.testUsageConcurrent)
	t.Run("UsagePruneLimit", s.testUsagePruneLimit)
	t.Run("Accounts", s.testAccounts)
}

type suite struct {
	open func(t *testing.T) keyward.Store
}

// t0 is the suite's "now". The suite never reads the wall clock.
var t0 = time.Date(2026, time.March, 14, 9, 26, 53, 0, time.UTC)

// fixture is one fresh store and what the tests of it need.
type fixture struct {
	t   *testing.T
	s   keyward.Store
	ctx context.Context
	n   int // ids made so far
}

func (s *suite) fixture(t *testing.T) *fixture {
	t.Helper()
	st := s.open(t)
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &fixture{t: t, s: st, ctx: t.Context()}
}

// id returns a new id with the given prefix. Each is a millisecond later
// than the one before, so ids sort in the order they were made.
func (f *fixture) id(prefix string) string {
	f.n++
	return keyward.NewID(prefix, t0.Add(time.Duration(f.n)*time.Millisecond))
}

// workspace creates a workspace with the given name and no admin token.
func (f *fixture) workspace(name string) *keyward.Workspace {
	f.t.Helper()
	ws := &keyward.Workspace{ID: f.id(keyward.PrefixWorkspace), Name: name, TokenPrefix: keyward.DefaultTokenPrefix, CreatedAt: t0}
	if err := f.s.CreateWorkspace(f.ctx, ws, nil, nil); err != nil {
		f.t.Fatalf("CreateWorkspace(%q): %v", name, err)
	}
	return ws
}

// newToken returns an unsaved active token with the given name.
func (f *fixture) newToken(wsID, name string) *keyward.Token {
	return &keyward.Token{
		ID:          f.id(keyward.PrefixToken),
		WorkspaceID: wsID,
		Name:        name,
		Hint:        "kw_…abcd",
		Scopes:      []string{"orders:read"},
		CreatedBy:   keyward.ActorSystem,
		CreatedAt:   t0,
		UpdatedAt:   t0,
	}
}

// newSecret returns an unsaved secret of the token with a random digest.
func newSecret(tokenID string, createdAt time.Time) *keyward.Secret {
	d := make([]byte, 32)
	rand.Read(d)
	return &keyward.Secret{Digest: d, KeyID: "k1", TokenID: tokenID, CreatedAt: createdAt}
}

// event returns an unsaved audit event.
func (f *fixture) event(wsID, action, target string) *keyward.AuditEvent {
	return &keyward.AuditEvent{
		ID:          f.id(keyward.PrefixEvent),
		WorkspaceID: wsID,
		Time:        t0,
		Action:      action,
		Actor:       keyward.Actor{Type: keyward.ActorSystem},
		Target:      target,
	}
}

// create stores t with a new secret and a token.create event, applying
// each mod to t first.
func (f *fixture) create(t *keyward.Token, mods ...func(*keyward.Token)) (*keyward.Token, *keyward.Secret) {
	f.t.Helper()
	for _, m := range mods {
		m(t)
	}
	sec := newSecret(t.ID, t.CreatedAt)
	if err := f.s.CreateToken(f.ctx, t, sec, f.event(t.WorkspaceID, "token.create", t.ID)); err != nil {
		f.t.Fatalf("CreateToken(%s): %v", t.Name, err)
	}
	return t, sec
}

// find returns the stored token or fails the test.
func (f *fixture) find(wsID, id string) *keyward.Token {
	f.t.Helper()
	t, err := f.s.FindToken(f.ctx, wsID, id)
	if err != nil {
		f.t.Fatalf("FindToken(%s): %v", id, err)
	}
	return t
}

// changes returns every change in the feed.
func (f *fixture) changes() []keyward.Change {
	f.t.Helper()
	cs, err := f.s.Changes(f.ctx, 0, 0)
	if err != nil {
		f.t.Fatalf("Changes: %v", err)
	}
	return cs
}

// events returns every audit event of a workspace, newest first.
func (f *fixture) events(wsID string) []*keyward.AuditEvent {
	f.t.Helper()
	evs, err := f.s.FindAuditEvents(f.ctx, keyward.AuditFilter{WorkspaceID: wsID})
	if err != nil {
		f.t.Fatalf("FindAuditEvents: %v", err)
	}
	return evs
}

// secrets returns every secret of a token.
func (f *fixture) secrets(tokenID string) []*keyward.Secret {
	f.t.Helper()
	ss, err := f.s.TokenSecrets(f.ctx, tokenID)
	if err != nil {
		f.t.Fatalf("TokenSecrets(%s): %v", tokenID, err)
	}
	return ss
}

// secretOf returns the token's secret with the given digest, or fails.
func (f *fixture) secretOf(tokenID string, digest []byte) *keyward.Secret {
	f.t.Helper()
	for _, s := range f.secrets(tokenID) {
		if bytes.Equal(s.Digest, digest) {
			return s
		}
	}
	f.t.Fatalf("token %s has no secret %x", tokenID, digest)
	return nil
}

// snapshot is what the suite checks to prove that a failed write left no
// trace: the token as stored, the changes feed and the audit log.
type snapshot struct {
	token   *keyward.Token
	changes []keyward.Change
	events  []*keyward.AuditEvent
	secrets []*keyward.Secret
}

func (f *fixture) snapshot(wsID, tokenID string) snapshot {
	f.t.Helper()
	return snapshot{f.find(wsID, tokenID), f.changes(), f.events(wsID), f.secrets(tokenID)}
}

// unchanged fails the test unless the store is as in before.
func (f *fixture) unchanged(before snapshot) {
	f.t.Helper()
	after := f.snapshot(before.token.WorkspaceID, before.token.ID)
	assertToken(f.t, after.token, before.token)
	if !reflect.DeepEqual(after.changes, before.changes) {
		f.t.Errorf("changes = %v, want %v (unchanged)", after.changes, before.changes)
	}
	if got, want := eventIDs(after.events), eventIDs(before.events); !slices.Equal(got, want) {
		f.t.Errorf("audit events = %v, want %v (unchanged)", got, want)
	}
	if len(after.secrets) != len(before.secrets) {
		f.t.Errorf("%d secrets, want %d (unchanged)", len(after.secrets), len(before.secrets))
	}
	for _, s := range before.secrets {
		assertSecret(f.t, f.secretOf(before.token.ID, s.Digest), s)
	}
}

// wantCode fails the test unless err has the given keyward error code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := keyward.ErrorCode(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func tokenIDs(ts []*keyward.Token) []string {
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	return ids
}

func eventIDs(evs []*keyward.AuditEvent) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

func ptr[T any](v T) *T { return &v }

// assertToken compares every field of got with want. Times must be equal
// instants and in UTC; JSON must be equal values; nil pointers and nil
// metadata must stay nil. Empty and nil lists are equal.
func assertToken(t *testing.T, got, want *keyward.Token) {
	t.Helper()
	if got == nil {
		t.Fatalf("token = nil, want %s", want.ID)
	}
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("WorkspaceID", got.WorkspaceID, want.WorkspaceID)
	d.str("Name", got.Name, want.Name)
	d.str("Hint", got.Hint, want.Hint)
	d.strs("Scopes", got.Scopes, want.Scopes)
	d.timePtr("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	d.strs("AllowedCIDRs", got.AllowedCIDRs, want.AllowedCIDRs)
	if !reflect.DeepEqual(got.RateLimit, want.RateLimit) {
		d.add("RateLimit = %s, want %s", show(got.RateLimit), show(want.RateLimit))
	}
	if !reflect.DeepEqual(got.Quota, want.Quota) {
		d.add("Quota = %s, want %s", show(got.Quota), show(want.Quota))
	}
	d.str("Subject", got.Subject, want.Subject)
	d.json("Metadata", got.Metadata, want.Metadata)
	d.bool("Revoked", got.Revoked, want.Revoked)
	d.timePtr("RevokedAt", got.RevokedAt, want.RevokedAt)
	d.str("RevokeReason", got.RevokeReason, want.RevokeReason)
	d.bool("Suspended", got.Suspended, want.Suspended)
	d.timePtr("SuspendedAt", got.SuspendedAt, want.SuspendedAt)
	d.str("SuspendReason", got.SuspendReason, want.SuspendReason)
	d.str("CreatedBy", got.CreatedBy, want.CreatedBy)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	d.timePtr("RotatedAt", got.RotatedAt, want.RotatedAt)
	d.timePtr("LastUsedAt", got.LastUsedAt, want.LastUsedAt)
	d.str("LastUsedIP", got.LastUsedIP, want.LastUsedIP)
	d.report(t, "token "+want.ID)
}

// assertSecret compares every field of got with want.
func assertSecret(t *testing.T, got, want *keyward.Secret) {
	t.Helper()
	if got == nil {
		t.Fatalf("secret = nil, want one")
	}
	var d diff
	if !bytes.Equal(got.Digest, want.Digest) {
		d.add("Digest = %x, want %x", got.Digest, want.Digest)
	}
	d.str("KeyID", got.KeyID, want.KeyID)
	d.str("TokenID", got.TokenID, want.TokenID)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.timePtr("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	d.report(t, "secret")
}

// assertEvent compares every field of got with want.
func assertEvent(t *testing.T, got, want *keyward.AuditEvent) {
	t.Helper()
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("WorkspaceID", got.WorkspaceID, want.WorkspaceID)
	d.time("Time", got.Time, want.Time)
	d.str("Action", got.Action, want.Action)
	d.str("Actor.Type", got.Actor.Type, want.Actor.Type)
	d.str("Actor.ID", got.Actor.ID, want.Actor.ID)
	d.str("Target", got.Target, want.Target)
	d.str("IP", got.IP, want.IP)
	d.str("UserAgent", got.UserAgent, want.UserAgent)
	d.str("RequestID", got.RequestID, want.RequestID)
	d.json("Changes", got.Changes, want.Changes)
	d.report(t, "audit event "+want.ID)
}

// diff collects the differences between two objects.
type diff []string

func (d *diff) add(format string, args ...any) { *d = append(*d, fmt.Sprintf(format, args...)) }

func (d *diff) report(t *testing.T, what string) {
	t.Helper()
	for _, s := range *d {
		t.Errorf("%s: %s", what, s)
	}
}

func (d *diff) str(name, got, want string) {
	if got != want {
		d.add("%s = %q, want %q", name, got, want)
	}
}

func (d *diff) bool(name string, got, want bool) {
	if got != want {
		d.add("%s = %t, want %t", name, got, want)
	}
}

func (d *diff) strs(name string, got, want []string) {
	if !slices.Equal(got, want) {
		d.add("%s = %q, want %q", name, got, want)
	}
}

func (d *diff) time(name string, got, want time.Time) {
	if !got.Equal(want) {
		d.add("%s = %v, want %v", name, got, want)
	}
	if got.Location() != time.UTC {
		d.add("%s = %v, want it in UTC", name, got)
	}
}

func (d *diff) timePtr(name string, got, want *time.Time) {
	switch {
	case got == nil && want == nil:
	case got == nil:
		d.add("%s = nil, want %v", name, *want)
	case want == nil:
		d.add("%s = %v, want nil", name, *got)
	default:
		d.time(name, *got, *want)
	}
}

func (d *diff) json(name string, got, want json.RawMessage) {
	switch {
	case got == nil && want == nil:
		return
	case got == nil || want == nil:
		d.add("%s = %s, want %s", name, showJSON(got), showJSON(want))
		return
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		d.add("%s = %s: %v", name, got, err)
		return
	}
	if err := json.Unmarshal(want, &w); err != nil {
		d.add("%s: want %s: %v", name, want, err)
		return
	}
	if !reflect.DeepEqual(g, w) {
		d.add("%s = %s, want %s", name, got, want)
	}
}

func show(v any) string {
	if reflect.ValueOf(v).IsNil() {
		return "nil"
	}
	return fmt.Sprintf("%+v", reflect.ValueOf(v).Elem().Interface())
}

func showJSON(b json.RawMessage) string {
	if b == nil {
		return "nil"
	}
	return string(b)
}

// errFn is the error an UpdateToken callback returns in the tests.
var errFn = errors.New("storetest: callback refused")
