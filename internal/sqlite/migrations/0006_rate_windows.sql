-- 0006_rate_windows keeps each token's sliding-window rate limiter as the
-- node's usage flush last saw it (PRODUCT §4: never more than N in any
-- window), so that a restart, or a token dropped from the cache, starts
-- from the admissions already counted rather than from none. counts is a
-- JSON array of the sub-window counts; until (unix ns) is when the newest
-- counted admission leaves the window.
CREATE TABLE rate_windows (
	token_id  TEXT    NOT NULL PRIMARY KEY,
	window_ns INTEGER NOT NULL,
	width     INTEGER NOT NULL,
	head      INTEGER NOT NULL,
	counts    TEXT    NOT NULL,
	until     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX rate_windows_until ON rate_windows (until);
