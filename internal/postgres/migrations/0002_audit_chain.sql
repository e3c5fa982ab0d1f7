-- 0002_audit_chain makes the audit log tamper-evident: each workspace's
-- events form a chain, in seq order (the commit order), of keyed links
-- (mac, see keyward.AuditMAC), and the chain's head is kept apart from the
-- events, in audit_heads, so that removing the newest events shows too.
-- The store computes the links in Go, under a key derived from the server
-- secret, reading and moving the head under the lock that orders appends
-- (lockLogs); the events that exist when this migration runs are linked by
-- the Go step that follows it in the same transaction (chainExisting).
--
-- Nodes of an earlier version append events without a link, which
-- "keyward audit verify" reports: upgrade every node before writing again.

-- mac is the event's link; prev_mac the link it was chained to (the mac of
-- the workspace's event before it, NULL for the first), kept so that a
-- verifier can tell an event that was changed from one whose predecessor
-- was removed or moved.
ALTER TABLE audit_events ADD COLUMN mac bytea;
ALTER TABLE audit_events ADD COLUMN prev_mac bytea;

CREATE INDEX audit_events_workspace_seq ON audit_events (workspace_id, seq);

-- mac is the newest event's link, the prev of the next one; head_mac is
-- keyward.AuditHeadMAC of the head, so that it cannot be pointed at an
-- older event without the key.
CREATE TABLE audit_heads (
	workspace_id text COLLATE "C" NOT NULL,
	seq          bigint           NOT NULL,
	event_id     text COLLATE "C" NOT NULL,
	mac          bytea            NOT NULL,
	head_mac     bytea            NOT NULL,
	CONSTRAINT audit_heads_pkey PRIMARY KEY (workspace_id)
);
