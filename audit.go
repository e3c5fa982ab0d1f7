package keyward

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Actor kinds.
const (
	ActorToken  = "token"  // a management token
	ActorSystem = "system" // keyward itself, or the CLI acting on the store
	ActorMember = "member" // a person signed in to the dashboard
)

// Actor is who performed an audited act.
type Actor struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// AuditEvent records one state change or security-relevant act. It never
// holds a secret. Stores write it in the same transaction as the change.
type AuditEvent struct {
	ID          string
	WorkspaceID string
	Time        time.Time
	Action      string // object.verb, such as "token.create"
	Actor       Actor
	Target      string // id of the object acted on
	IP          string
	UserAgent   string
	RequestID   string
	Changes     json.RawMessage // {"field": {"from": ..., "to": ...}}, or nil
}

// AuditFilter pages through one workspace's audit events, newest first
// in the order they were written (AuditLink.Seq), not in the order of
// their ids, which follow the clock of the node that made them and only
// to the millisecond. Every condition that is set must hold.
type AuditFilter struct {
	WorkspaceID string
	// Before is the cursor, an event id: only events written before that
	// event of the workspace. One that names no event of the workspace
	// selects none: a retention cut that removed its event removed every
	// one written before it.
	Before string
	Limit  int

	Actor  string    // only events whose actor has this id
	Action string    // only events with this action, such as "token.revoke", or of this object, "token.*"
	Target string    // only events about the object with this id
	From   time.Time // only events at or after From, when not zero
	To     time.Time // only events before To, when not zero
}

// ActionFamily reports whether f.Action names every action of an object,
// such as "token.*", and returns the range of those actions: at or after lo
// and before hi. Stored actions never hold a "*".
func (f AuditFilter) ActionFamily() (lo, hi string, ok bool) {
	object, ok := strings.CutSuffix(f.Action, ".*")
	if !ok || object == "" {
		return "", "", false
	}
	return object + ".", object + "/", true // '/' follows '.'
}

// AuditHead is the head of a workspace's audit chain: where the newest
// event is. Stores keep it apart from the events and update it in the
// transaction that appends an event, so that removing the newest events
// leaves a head that points past the end of the chain.
type AuditHead struct {
	WorkspaceID string
	Seq         int64  // the newest event's sequence number
	EventID     string // the newest event's id
	MAC         []byte // the newest event's AuditMAC, the next event's prev
	HeadMAC     []byte // AuditHeadMAC of the head
}

// AuditLink is an event's place in its workspace's audit chain, as stored.
type AuditLink struct {
	Seq  int64  // the event's sequence number: the order of commits
	MAC  []byte // the event's AuditMAC; nil when the row has none
	Prev []byte // the link the event was chained to: the MAC of the event before it (with a digest of the head's MAC, see AuditPrev), empty for the first
}

// auditChainTag and auditHeadTag open the encodings that AuditMAC and
// AuditHeadMAC authenticate; a new encoding gets a new tag.
const (
	auditChainTag = "keyward-audit-chain/v1"
	auditHeadTag  = "keyward-audit-head/v1"
)

// UnchainedAuditError is the migration to the audit chain finding audit
// events already stored. A store made before the chain existed holds
// them, and linking them vouches for them as they stand; but so does a
// store whose chain's columns, heads and migration record someone who
// can write the database (and lacks the server secret) removed, to have
// the next start re-link a log they rewrote. So a store links such events
// only when its operator says so (keyward migrate --link-unchained-audit).
type UnchainedAuditError struct {
	Events int64
}

func (e *UnchainedAuditError) Error() string {
	return fmt.Sprintf("the audit log holds %d events written without the tamper-evident chain, "+
		"which linking now would vouch for as they stand: if this store was made by a keyward "+
		"release from before the chain, run keyward migrate --link-unchained-audit once; otherwise "+
		"someone removed the chain from the database, and its audit log cannot be trusted", e.Events)
}

// CheckLinkKeys refuses to link the unchained audit events (see
// UnchainedAuditError) when the store holds token secrets (stored: their
// count by server key id) and none under a key of known (the ids of the
// server secrets given, current and previous, or nil to skip the check):
// most likely the wrong secret, under which the link could never be
// verified again, and a link is made once.
func CheckLinkKeys(stored map[string]int64, known []string) error {
	if known == nil || len(stored) == 0 {
		return nil
	}
	var ids []string
	for id := range stored {
		if slices.Contains(known, id) {
			return nil
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return fmt.Errorf("nothing linked: every stored token secret was made under a server secret other than the one given (key ids %s; given %s), "+
		"and the audit log linked under it could never be verified with the store's own; give the secret that made the store",
		strings.Join(ids, ","), strings.Join(known, ","))
}

// AuditMAC returns the link of e in its workspace's audit chain: the
// HMAC-SHA-256, under key, of an encoding of every field of e followed by
// prev, the link of the event before e in the same workspace (empty for
// the first). Each link thus vouches for its event and, through prev, for
// every event before it, in order: editing an event, removing one or
// swapping two breaks the links from there on, and whoever can write the
// database but lacks key cannot compute new ones.
//
// The encoding is a version tag, then each field as a 4-byte big-endian
// length and its bytes, so that no two different events encode alike (no
// field can borrow bytes from its neighbour): the workspace id, the event
// id, the time as Unix microseconds (8 bytes, big-endian; stores keep
// microseconds), the action, the actor's type and id, the target, the IP,
// the user agent, the request id and the changes exactly as stored. A store
// must therefore compute it from the values as it will read them back,
// after whatever it does to store them.
func AuditMAC(key, prev []byte, e *AuditEvent) []byte {
	m := hmac.New(sha256.New, key)
	var b []byte
	b = appendField(b, []byte(auditChainTag))
	b = appendField(b, []byte(e.WorkspaceID))
	b = appendField(b, []byte(e.ID))
	b = appendField(b, binary.BigEndian.AppendUint64(nil, uint64(e.Time.UnixMicro())))
	for _, s := range []string{e.Action, e.Actor.Type, e.Actor.ID, e.Target, e.IP, e.UserAgent, e.RequestID} {
		b = appendField(b, []byte(s))
	}
	b = appendField(b, e.Changes)
	b = appendField(b, prev)
	m.Write(b)
	return m.Sum(nil)
}

// AuditHeadMAC returns the MAC of a chain head: the HMAC-SHA-256, under
// key, of the workspace id, the newest event's id and its link mac, encoded
// as in AuditMAC under a tag of its own. Without it, whoever removed the
// newest events could point the head at the new last event by copying its
// values; with it, they would need key.
func AuditHeadMAC(key []byte, workspaceID, eventID string, mac []byte) []byte {
	m := hmac.New(sha256.New, key)
	var b []byte
	b = appendField(b, []byte(auditHeadTag))
	b = appendField(b, []byte(workspaceID))
	b = appendField(b, []byte(eventID))
	b = appendField(b, mac)
	m.Write(b)
	return m.Sum(nil)
}

// AuditPrev returns the link that an event appended after head (nil: the
// workspace has none yet) is chained to, its AuditLink.Prev: the head's
// mac when the head's own MAC holds under key. Otherwise the head was
// written under another key (an earlier server secret, before a rotation)
// or by someone without one, who may have removed the newest events and
// pointed the head's mac at the new last one: chaining to that mac alone
// would make the chain whole again at the next write. So the link is then
// the head as found, its mac and AuditHeadDigest of its HeadMAC (each
// sha256.Size bytes; a mac of another length is stored as zeros, which
// match nothing), and verification checks that digest, under the keys it
// holds, against the event the link follows (see SplitAuditPrev). The
// digest, not the HeadMAC itself: a head's MAC stays valid for as long as
// its event is the last, so one readable in the database would let whoever
// removes every event written after it (all those since a rotation) put
// that head back and pass verification.
func AuditPrev(key []byte, head *AuditHead) []byte {
	if head == nil {
		return nil
	}
	if hmac.Equal(AuditHeadMAC(key, head.WorkspaceID, head.EventID, head.MAC), head.HeadMAC) {
		return head.MAC
	}
	b := make([]byte, sha256.Size, 2*sha256.Size)
	if len(head.MAC) == sha256.Size {
		copy(b, head.MAC)
	}
	return append(b, AuditHeadDigest(head.HeadMAC)...)
}

// AuditHeadDigest returns the SHA-256 of a head's MAC, which an event
// appended after a head that did not hold under its writer's key stores
// in place of that MAC (see AuditPrev).
func AuditHeadDigest(headMAC []byte) []byte {
	d := sha256.Sum256(headMAC)
	return d[:]
}

// SplitAuditPrev returns the link an event's prev names, the mac of the
// event before it, and, when the event was appended after a head that did
// not hold under the key of its time (see AuditPrev), the AuditHeadDigest
// of that head's MAC, or nil.
func SplitAuditPrev(prev []byte) (link, headDigest []byte) {
	if len(prev) == 2*sha256.Size {
		return prev[:sha256.Size], prev[sha256.Size:]
	}
	return prev, nil
}

// appendField appends v to b with its length as 4 bytes, big-endian.
func appendField(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// ActionAuditCut is the action of the event that records a retention cut.
const ActionAuditCut = "audit.cut"

// AuditCut is the record of a retention cut, the Changes of its
// ActionAuditCut event: the events of the workspace written before Before
// were removed, Removed of them, and the oldest event kept is chained to
// StartPrev, the link of the last event removed. Since the cut event is
// itself linked into the chain, whoever lacks the chain key cannot forge
// one: a chain whose first event is chained to something is intact only
// when a cut event of the chain names that link.
type AuditCut struct {
	Before    time.Time `json:"before"`
	Removed   int64     `json:"removed"`
	StartPrev []byte    `json:"start_prev"`
}
