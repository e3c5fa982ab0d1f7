package keyward

import (
	"encoding/json"
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

// AuditFilter pages through one workspace's audit events, newest first.
type AuditFilter struct {
	WorkspaceID string
	Before      string // id cursor: only events older than this one
	Limit       int
}
