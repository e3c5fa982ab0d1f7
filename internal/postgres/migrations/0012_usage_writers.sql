-- 0012_usage_writers makes usage flushes idempotent (keyward.FlushID),
-- as on SQLite: each writer of usage (a verification engine, a usage
-- recorder) numbers its batches, and a flush records here, in its
-- transaction, the number of the batch it applies. A batch written again
-- because its answer was lost after COMMIT finds its number here and is
-- applied as nothing, rather than counting its quota use and
-- verifications twice. A writer not heard of for
-- keyward.FlushIDRetention is deleted by the next flush (written_at is
-- the writer's own time of its latest batch).
CREATE TABLE usage_writers (
	writer     text PRIMARY KEY,
	seq        bigint NOT NULL,
	written_at timestamptz NOT NULL
);
CREATE INDEX usage_writers_written_at ON usage_writers (written_at);
