-- Pending rows a finished pass handled (files modified up to its horizon; younger ones wait).
-- Parameters: %(horizon)s (UTC, naive).
DELETE FROM {pending} WHERE LAST_MODIFIED <= %(horizon)s;
