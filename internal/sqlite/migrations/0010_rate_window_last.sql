-- 0010_rate_window_last keeps with each rate-limit window the time (unix
-- ns) of the latest admission it counts, so that a restart finds the
-- window empty once a whole window has passed since it (README: the next
-- burst of N is admitted in full at once) rather than a sub-window later,
-- and `reset` never exceeds the window. 0 is not known: a row of an
-- earlier version, restored conservatively by its sub-windows. A row
-- that knows it has until = last_ns + window_ns; a node of the previous
-- release that rewrites the row leaves last_ns as it was but writes its
-- own until, by which a node of this one tells the row apart.
ALTER TABLE rate_windows ADD COLUMN last_ns INTEGER NOT NULL DEFAULT 0;
