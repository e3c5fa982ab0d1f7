-- 0006_rate_windows keeps each token's sliding-window rate limiter as a
-- node's usage flush last saw it (PRODUCT §4: never more than N in any
-- window), so that a restart, or a token dropped from the cache, starts
-- from the admissions already counted rather than from none. counts is a
-- JSON array of the sub-window counts; width is a sub-window's length in
-- ns, head the newest sub-window's number. With several nodes and no
-- Redis, each node's limiter is its own and the last flush wins.
CREATE TABLE rate_windows (
	token_id  text        NOT NULL PRIMARY KEY,
	window_ns bigint      NOT NULL,
	width     bigint      NOT NULL,
	head      bigint      NOT NULL,
	counts    text        NOT NULL,
	until     timestamptz NOT NULL
);

CREATE INDEX rate_windows_until ON rate_windows (until);
