// Package audit verifies and exports the audit log that stores keep as a
// keyed chain per workspace (see keyward.AuditMAC).
//
// Verify walks a workspace's chain in sequence order and recomputes every
// link under the chain key, which is derived from the server secret and
// never stored: whoever can write the database but lacks the secret can
// change, remove or reorder events, but cannot make the links agree
// again. Each event also stores the link it was chained to, which tells an
// event whose fields were changed (its link does not match its fields) from
// one whose predecessor was removed or moved (its link matches, but not
// the event before it). The chain's head, kept apart from the events and
// keyed too, tells that the newest events were removed.
//
// What the chain cannot tell: an attacker who copied the database earlier
// and restores an older state whole (events and head) rolls the log back
// undetected. Keeping the heads that verify prints, or exports, elsewhere
// closes that gap.
package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
)

// Log is the part of a keyward.Store that Verify and Export read.
type Log interface {
	AuditChain(ctx context.Context, workspaceID string, fn func(e *keyward.AuditEvent, l keyward.AuditLink) error) (*keyward.AuditHead, error)
}

// Kind is what is wrong with a chain.
type Kind string

// Kinds of problems, each reported at the first event where it shows.
const (
	// Changed: the event's fields (or its link) were edited, or the event
	// was written by someone without the key, or has no link at all.
	Changed Kind = "changed"
	// Removed: the event the reported one was chained to is missing.
	Removed Kind = "removed"
	// Reordered: the event the reported one was chained to sits elsewhere
	// in the chain.
	Reordered Kind = "reordered"
	// NewestRemoved: the head names an event after the last one left.
	NewestRemoved Kind = "newest_removed"
	// HeadMissing: the workspace has no head, or no events and no head.
	HeadMissing Kind = "head_missing"
	// HeadChanged: the head does not match its own MAC or the chain's end.
	HeadChanged Kind = "head_changed"
	// OldKey: the event (or the head) is linked under a previous server
	// secret's key although an event before it is linked under the
	// current one: it was written after the rotation by whoever still
	// holds the old secret.
	OldKey Kind = "old_key"
)

// Problem is the first thing wrong with a chain.
type Problem struct {
	Kind    Kind
	EventID string // the event where the chain breaks, or that the head names
	Seq     int64  // its sequence number, when known
	Detail  string // what was found, for people
}

// Report is the outcome of verifying one workspace's chain.
type Report struct {
	WorkspaceID string
	// Events is the number of events verified: every event of the chain
	// when it is intact, else those before the problem.
	Events int64
	// Head is the workspace's head as stored, or nil.
	Head *keyward.AuditHead
	// Problem is nil when the chain is intact.
	Problem *Problem
	// Cut is the retention cut the chain starts after, or nil when it
	// starts with the workspace's first event.
	Cut *keyward.AuditCut
	// Found holds those of VerifyExpecting's expected event ids that are
	// in the chain, among the events verified.
	Found map[string]bool
}

// OK reports whether the chain is intact.
func (r *Report) OK() bool { return r.Problem == nil }

// errStop ends a walk early.
var errStop = errors.New("audit: stop")

// Verify walks the audit chain of a workspace and reports the first
// problem found, if any: an event changed, removed or reordered, the newest
// events removed, or the head missing or changed. A workspace with no
// events and no head is reported too: every workspace records its own
// creation. key is the chain key; previous are the chain keys of earlier
// server secrets, under which the events written before a rotation are
// linked. The error is the store's; a broken chain is not an error.
func Verify(ctx context.Context, log Log, key []byte, workspaceID string, previous ...[]byte) (Report, error) {
	return VerifyExpecting(ctx, log, key, workspaceID, nil, previous...)
}

// VerifyExpecting is Verify that also notes, in Report.Found, which of the
// events whose ids expect holds are in the chain. A head printed by an
// earlier verification and kept elsewhere must stay in it: when it is gone
// from every chain, the newest events were removed together with the head
// (an older copy of the head put back), which the chain alone cannot show.
func VerifyExpecting(ctx context.Context, log Log, key []byte, workspaceID string, expect map[string]bool, previous ...[]byte) (Report, error) {
	keys := append([][]byte{key}, previous...)
	r := Report{WorkspaceID: workspaceID}
	if len(expect) > 0 {
		r.Found = map[string]bool{}
	}
	current := false // an event was linked under the current key
	var (
		prev  []byte // the link of the event before
		last  *keyward.AuditEvent
		lastL keyward.AuditLink
		badE  *keyward.AuditEvent // the first event whose link breaks
		badL  keyward.AuditLink
		fail  = func(k Kind, e *keyward.AuditEvent, seq int64, format string, args ...any) {
			r.Problem = &Problem{Kind: k, EventID: e.ID, Seq: seq, Detail: fmt.Sprintf(format, args...)}
		}
	)
	// A chain whose first event is chained to something starts after a
	// retention cut, which one of its own events must record.
	var (
		startPrev []byte
		startE    *keyward.AuditEvent
		startL    keyward.AuditLink
		cuts      []keyward.AuditCut
	)
	head, err := log.AuditChain(ctx, workspaceID, func(e *keyward.AuditEvent, l keyward.AuditLink) error {
		k := -1
		if len(l.MAC) > 0 {
			k = linkedBy(keys, l.Prev, e, l.MAC)
		}
		link, headDigest := keyward.SplitAuditPrev(l.Prev)
		switch {
		case len(l.MAC) == 0:
			fail(Changed, e, l.Seq, "event %s has no link: it was not written by keyward, or its link was removed", e.ID)
			return errStop
		case e.Time.Nanosecond()%1000 != 0:
			// Stores keep, and links cover, the time to the microsecond;
			// a store that keeps finer (SQLite's nanoseconds) holds what
			// the link cannot vouch for, and what a listing would show.
			fail(Changed, e, l.Seq, "event %s does not match its link: its time %s is finer than the microsecond keyward stores, so it was changed",
				e.ID, e.Time.UTC().Format(time.RFC3339Nano))
			return errStop
		case k < 0:
			fail(Changed, e, l.Seq, "event %s does not match its link: its fields or its link were changed, or it was written without the key", e.ID)
			return errStop
		case k > 0 && current:
			fail(OldKey, e, l.Seq, "event %s is linked under a previous server secret although an event before it is linked under the current one: "+
				"it was written after the rotation by whoever still holds the old secret (a node not restarted with the new one, or someone else)", e.ID)
			return errStop
		case r.Events == 0 && len(l.Prev) > 0:
			startPrev, startE, startL = link, e, l
		case r.Events == 0 && (e.Action != "workspace.create" || e.Target != workspaceID):
			// Every workspace's chain begins with its own creation: one
			// that begins elsewhere was emptied, head and all, and
			// begun anew by the next write.
			fail(Removed, e, l.Seq, "event %s (seq %d) begins the chain, but a chain begins with its workspace's workspace.create: "+
				"the events before it were removed together with the head", e.ID, l.Seq)
			return errStop
		case !bytes.Equal(link, prev):
			badE, badL = e, l
			return errStop
		case headDigest != nil:
			// Appended after a head that did not hold under the key of its
			// time: it must be the head of the event before, under a key of
			// a time when none was linked under the current one yet.
			h := &keyward.AuditHead{WorkspaceID: workspaceID, EventID: last.ID, MAC: prev}
			switch {
			case !headDigestOK(keys, h, headDigest):
				fail(NewestRemoved, e, l.Seq, "event %s (seq %d) was written after a chain head that had been changed: "+
					"the events written after event %s (seq %d) were removed, and the head pointed back at it", e.ID, l.Seq, last.ID, lastL.Seq)
				return errStop
			case current && !headDigestOK(keys[:1], h, headDigest):
				fail(OldKey, e, l.Seq, "event %s (seq %d) was written after a chain head signed under a previous server secret although events before it are linked under the current one: "+
					"it was written after the rotation by whoever still holds the old secret", e.ID, l.Seq)
				return errStop
			}
		}
		if e.Action == keyward.ActionAuditCut {
			// Its link holds, so keyward wrote these changes.
			var c keyward.AuditCut
			if json.Unmarshal(e.Changes, &c) == nil {
				cuts = append(cuts, c)
			}
		}
		current = current || k == 0
		prev, last, lastL = l.MAC, e, l
		r.Events++
		if expect[e.ID] {
			r.Found[e.ID] = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return r, err
	}
	r.Head = head
	if r.Problem != nil {
		return r, nil
	}
	if startE != nil {
		for i := range cuts {
			if hmac.Equal(cuts[i].StartPrev, startPrev) {
				r.Cut = &cuts[i]
				break
			}
		}
		if r.Cut == nil {
			// No cut explains the start: the events before it were
			// removed, or it was moved here.
			r.Events = 0
			return r, placeBreak(ctx, log, &r, startE, startL)
		}
	}
	if badE != nil {
		return r, placeBreak(ctx, log, &r, badE, badL)
	}

	switch {
	case head == nil && last == nil:
		r.Problem = &Problem{Kind: HeadMissing, Detail: "the workspace has no audit events and no chain head: its log was removed"}
	case head == nil:
		fail(HeadMissing, last, lastL.Seq, "the chain has %d events, the last %s (seq %d), but no head: the head was removed, and maybe the newest events with it", r.Events, last.ID, lastL.Seq)
	case !headOK(keys, head):
		r.Problem = &Problem{Kind: HeadChanged, EventID: head.EventID, Seq: head.Seq,
			Detail: fmt.Sprintf("the chain head (event %s, seq %d) does not match its MAC: it was changed, maybe pointed at an older event after the newest were removed", head.EventID, head.Seq)}
	case current && !headOK(keys[:1], head):
		r.Problem = &Problem{Kind: OldKey, EventID: head.EventID, Seq: head.Seq,
			Detail: fmt.Sprintf("the chain head (event %s, seq %d) is signed under a previous server secret although events are linked under the current one: it was written after the rotation by whoever still holds the old secret", head.EventID, head.Seq)}
	case last == nil:
		r.Problem = &Problem{Kind: NewestRemoved, EventID: head.EventID, Seq: head.Seq,
			Detail: fmt.Sprintf("the chain head names event %s (seq %d) but the chain is empty: every event was removed", head.EventID, head.Seq)}
	case head.EventID == last.ID && head.Seq == lastL.Seq && bytes.Equal(head.MAC, lastL.MAC):
		// Intact.
	case head.EventID == last.ID && bytes.Equal(head.MAC, lastL.MAC):
		// Only its seq, which its MAC does not cover, disagrees.
		r.Problem = &Problem{Kind: HeadChanged, EventID: head.EventID, Seq: head.Seq,
			Detail: fmt.Sprintf("the chain head names the newest event %s with seq %d, but that event is seq %d: the head was changed", head.EventID, head.Seq, lastL.Seq)}
	case head.Seq > lastL.Seq:
		r.Problem = &Problem{Kind: NewestRemoved, EventID: head.EventID, Seq: head.Seq,
			Detail: fmt.Sprintf("the newest event %s (seq %d) was removed, maybe with others: the chain ends at event %s (seq %d)", head.EventID, head.Seq, last.ID, lastL.Seq)}
	default:
		r.Problem = &Problem{Kind: HeadChanged, EventID: head.EventID, Seq: head.Seq,
			Detail: fmt.Sprintf("the chain head names event %s (seq %d) but the chain ends at event %s (seq %d): an older head was put back", head.EventID, head.Seq, last.ID, lastL.Seq)}
	}
	return r, nil
}

// placeBreak sets r.Problem for the event e whose own link holds but is
// chained to something other than the event before it: it finds, in a
// second walk, the event it was chained to.
func placeBreak(ctx context.Context, log Log, r *Report, e *keyward.AuditEvent, l keyward.AuditLink) error {
	if len(l.Prev) == 0 {
		r.Problem = &Problem{Kind: Removed, EventID: e.ID, Seq: l.Seq,
			Detail: fmt.Sprintf("event %s begins the chain anew although %d events precede it: the chain head was removed before it was written (maybe with the newest events then), or the event was moved", e.ID, r.Events)}
		return nil
	}
	var before *keyward.AuditEvent
	var beforeSeq int64
	_, err := log.AuditChain(ctx, r.WorkspaceID, func(o *keyward.AuditEvent, ol keyward.AuditLink) error {
		if link, _ := keyward.SplitAuditPrev(l.Prev); hmac.Equal(ol.MAC, link) {
			before, beforeSeq = o, ol.Seq
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	if before != nil {
		r.Problem = &Problem{Kind: Reordered, EventID: e.ID, Seq: l.Seq,
			Detail: fmt.Sprintf("event %s (seq %d) was chained after event %s, which now sits at seq %d: events were reordered", e.ID, l.Seq, before.ID, beforeSeq)}
		return nil
	}
	r.Problem = &Problem{Kind: Removed, EventID: e.ID, Seq: l.Seq,
		Detail: fmt.Sprintf("the event before event %s (seq %d) in the chain was removed", e.ID, l.Seq)}
	return nil
}

// linkedBy returns the index in keys of the key under which mac is e's
// link to prev, or -1.
func linkedBy(keys [][]byte, prev []byte, e *keyward.AuditEvent, mac []byte) int {
	for i, k := range keys {
		if hmac.Equal(keyward.AuditMAC(k, prev, e), mac) {
			return i
		}
	}
	return -1
}

// headOK reports whether the head's MAC holds under one of keys.
func headOK(keys [][]byte, h *keyward.AuditHead) bool {
	for _, k := range keys {
		if hmac.Equal(keyward.AuditHeadMAC(k, h.WorkspaceID, h.EventID, h.MAC), h.HeadMAC) {
			return true
		}
	}
	return false
}

// headDigestOK reports whether digest is the keyward.AuditHeadDigest of
// the MAC of h (whose HeadMAC is not used) under one of keys.
func headDigestOK(keys [][]byte, h *keyward.AuditHead, digest []byte) bool {
	for _, k := range keys {
		if hmac.Equal(keyward.AuditHeadDigest(keyward.AuditHeadMAC(k, h.WorkspaceID, h.EventID, h.MAC)), digest) {
			return true
		}
	}
	return false
}

// Workspaces returns the ids of every workspace that verification should
// cover, in order: those with audit events or a chain head, and those in
// the workspaces table, so that a workspace whose whole log was removed is
// not skipped, and those that a workspace.create event of another's chain
// names, so that one removed whole is not either.
func Workspaces(ctx context.Context, s keyward.Store) ([]string, error) {
	ids, err := s.AuditWorkspaces(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	after := ""
	for {
		page, err := s.FindWorkspaces(ctx, keyward.WorkspaceFilter{After: after, Limit: 500})
		if err != nil {
			return nil, err
		}
		for _, ws := range page {
			if !seen[ws.ID] {
				seen[ws.ID] = true
				ids = append(ids, ws.ID)
			}
			after = ws.ID
		}
		if len(page) < 500 {
			break
		}
	}
	// A workspace created by a caller of another is recorded in that
	// one's chain too: one removed whole (row, events and head) is still
	// named there, and its verification reports its log removed.
	for _, id := range slices.Clone(ids) {
		f := keyward.AuditFilter{WorkspaceID: id, Action: "workspace.create", Limit: 500}
		for {
			evs, err := s.FindAuditEvents(ctx, f)
			if err != nil {
				return nil, err
			}
			for _, e := range evs {
				if strings.HasPrefix(e.Target, keyward.PrefixWorkspace) && !seen[e.Target] {
					seen[e.Target] = true
					ids = append(ids, e.Target)
				}
			}
			if len(evs) < f.Limit {
				break
			}
			f.Before = evs[len(evs)-1].ID
		}
	}
	slices.Sort(ids)
	return ids, nil
}
