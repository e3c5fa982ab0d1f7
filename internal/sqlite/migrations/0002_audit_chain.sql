-- 0002_audit_chain makes the audit log tamper-evident: each workspace's
-- events form a chain, in seq order, of keyed links (mac, see
-- keyward.AuditMAC), and the chain's head is kept apart from the events, in
-- audit_heads, so that removing the newest events shows too. The store
-- computes the links in Go, under a key derived from the server secret;
-- the events that exist when this migration runs are linked by the Go step
-- that follows it in the same transaction (chainExisting).

-- mac is the event's link; prev_mac the link it was chained to (the mac of
-- the workspace's event before it, NULL for the first), kept so that a
-- verifier can tell an event that was changed from one whose predecessor
-- was removed or moved.
ALTER TABLE audit_events ADD COLUMN mac BLOB;
ALTER TABLE audit_events ADD COLUMN prev_mac BLOB;

CREATE INDEX audit_events_workspace_seq ON audit_events (workspace_id, seq);

-- mac is the newest event's link, the prev of the next one; head_mac is
-- keyward.AuditHeadMAC of the head, so that it cannot be pointed at an
-- older event without the key.
CREATE TABLE audit_heads (
	workspace_id TEXT    PRIMARY KEY,
	seq          INTEGER NOT NULL,
	event_id     TEXT    NOT NULL,
	mac          BLOB    NOT NULL,
	head_mac     BLOB    NOT NULL
) WITHOUT ROWID;
