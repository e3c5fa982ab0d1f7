-- 0009_audit_write_order serves the audit listings (GET /v1/audit, the
-- dashboard), which are in the order events were written (seq), newest
-- first, rather than by id, which orders only to the millisecond: a
-- workspace's events by actor, or by target (the dashboard's token page
-- shows a token's latest), read backwards from a cursor without a sort,
-- however few of a large log's events they are. (workspace_id, seq), of
-- 0002, serves the other listings. The indexes by
-- id (0001, 0008) stay: a node of the previous release lists by them.
CREATE INDEX audit_events_workspace_actor_seq ON audit_events (workspace_id, actor_id, seq);
CREATE INDEX audit_events_workspace_target_seq ON audit_events (workspace_id, target, seq);
