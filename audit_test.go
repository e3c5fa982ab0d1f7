package keyward_test

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

func TestAuditMAC(t *testing.T) {
	key := []byte("k")
	base := keyward.AuditEvent{
		ID: "evt_1", WorkspaceID: "ws_1", Time: time.Date(2026, 3, 14, 9, 26, 53, 123456000, time.UTC),
		Action: "token.create", Actor: keyward.Actor{Type: "token", ID: "tok_a"}, Target: "tok_b",
		IP: "192.0.2.1", UserAgent: "ua", RequestID: "req_1", Changes: []byte(`{"a":1}`),
	}
	prev := []byte("previous link")
	want := keyward.AuditMAC(key, prev, &base)
	if len(want) != 32 {
		t.Fatalf("len = %d, want 32", len(want))
	}
	t.Run("OKVector", func(t *testing.T) {
		// The encoding is pinned: stored chains must verify with every later
		// release. The vector was computed independently of this code, from
		// the encoding that AuditMAC documents.
		if got := hex.EncodeToString(want); got != "6e4c056e991eca41e0b4e3916c9fec6bc829fc112dd8f2fadce902d817e61afa" {
			t.Errorf("AuditMAC = %s, want the pinned vector", got)
		}
	})
	t.Run("OKSameInputsSameMAC", func(t *testing.T) {
		e := base
		e.Time = base.Time.In(time.FixedZone("X", 3600)).Add(999 * time.Nanosecond) // same microsecond
		e.Changes = append([]byte(nil), base.Changes...)
		if got := keyward.AuditMAC(key, prev, &e); !bytes.Equal(got, want) {
			t.Errorf("MAC of the same event differs")
		}
	})
	for _, tc := range []struct {
		name string
		key  []byte
		prev []byte
		mod  func(e *keyward.AuditEvent)
	}{
		{"Key", []byte("j"), prev, nil},
		{"Prev", key, []byte("previous linj"), nil},
		{"NoPrev", key, nil, nil},
		{"WorkspaceID", key, prev, func(e *keyward.AuditEvent) { e.WorkspaceID = "ws_2" }},
		{"ID", key, prev, func(e *keyward.AuditEvent) { e.ID = "evt_2" }},
		{"TimeMicrosecond", key, prev, func(e *keyward.AuditEvent) { e.Time = e.Time.Add(time.Microsecond) }},
		{"Action", key, prev, func(e *keyward.AuditEvent) { e.Action = "token.revoke" }},
		{"ActorType", key, prev, func(e *keyward.AuditEvent) { e.Actor.Type = "member" }},
		{"ActorID", key, prev, func(e *keyward.AuditEvent) { e.Actor.ID = "tok_c" }},
		{"Target", key, prev, func(e *keyward.AuditEvent) { e.Target = "tok_c" }},
		{"IP", key, prev, func(e *keyward.AuditEvent) { e.IP = "192.0.2.2" }},
		{"UserAgent", key, prev, func(e *keyward.AuditEvent) { e.UserAgent = "ub" }},
		{"RequestID", key, prev, func(e *keyward.AuditEvent) { e.RequestID = "req_2" }},
		{"ChangesBytes", key, prev, func(e *keyward.AuditEvent) { e.Changes = []byte(`{"a": 1}`) }},
		{"NoChanges", key, prev, func(e *keyward.AuditEvent) { e.Changes = nil }},
		// Bytes moved from one field to its neighbour: the lengths tell.
		{"ShiftedBoundary", key, prev, func(e *keyward.AuditEvent) { e.IP, e.UserAgent = "192.0.2.1u", "a" }},
		{"ShiftedIntoPrev", key, []byte(`}previous link`), func(e *keyward.AuditEvent) { e.Changes = []byte(`{"a":1`) }},
	} {
		t.Run("Err"+tc.name, func(t *testing.T) {
			e := base
			if tc.mod != nil {
				tc.mod(&e)
			}
			if got := keyward.AuditMAC(tc.key, tc.prev, &e); bytes.Equal(got, want) {
				t.Errorf("MAC unchanged")
			}
		})
	}
}

func TestAuditHeadMAC(t *testing.T) {
	want := keyward.AuditHeadMAC([]byte("k"), "ws_1", "evt_1", []byte("link"))
	if got := hex.EncodeToString(want); got != "8b2567fd0559c641035e86461e3a5eb7d735918bb0d3415e70f4fe7ece1aab44" {
		t.Errorf("AuditHeadMAC = %s, want the pinned vector", got)
	}
	if link := keyward.AuditMAC([]byte("k"), nil, &keyward.AuditEvent{WorkspaceID: "ws_1", ID: "evt_1"}); bytes.Equal(want, link) {
		t.Fatal("a head MAC equals an event link")
	}
	for name, got := range map[string][]byte{
		"Key":         keyward.AuditHeadMAC([]byte("j"), "ws_1", "evt_1", []byte("link")),
		"WorkspaceID": keyward.AuditHeadMAC([]byte("k"), "ws_2", "evt_1", []byte("link")),
		"EventID":     keyward.AuditHeadMAC([]byte("k"), "ws_1", "evt_2", []byte("link")),
		"MAC":         keyward.AuditHeadMAC([]byte("k"), "ws_1", "evt_1", []byte("linj")),
		"Shifted":     keyward.AuditHeadMAC([]byte("k"), "ws_1", "evt_1l", []byte("ink")),
	} {
		if bytes.Equal(got, want) {
			t.Errorf("Err%s: head MAC unchanged", name)
		}
	}
}
