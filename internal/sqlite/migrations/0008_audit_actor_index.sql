-- 0008_audit_actor_index finds a workspace's audit events by their actor
-- without reading the whole log: GET /v1/audit?actor=, and the dashboard,
-- which looks up everything a member (and each token made through her)
-- did when her role changes or she is removed.
CREATE INDEX audit_events_workspace_actor ON audit_events (workspace_id, actor_id, id);
