-- One page of the pending table, after the last path seen.
-- Parameters: %(prefix)s (LIKE pattern), %(after)s (path), %(limit)s (rows).
SELECT RELATIVE_PATH, SIZE, LAST_MODIFIED, MD5 FROM {pending}
WHERE RELATIVE_PATH LIKE %(prefix)s AND RELATIVE_PATH > %(after)s
ORDER BY RELATIVE_PATH
LIMIT %(limit)s;
