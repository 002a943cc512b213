-- One page of the files modified after %(since)s, after the last path seen.
-- Parameters: %(prefix)s (LIKE pattern), %(since)s (UTC, naive), %(after)s (path), %(limit)s.
SELECT RELATIVE_PATH, SIZE, LAST_MODIFIED, MD5 FROM DIRECTORY(@{stage})
WHERE RELATIVE_PATH LIKE %(prefix)s
  AND CONVERT_TIMEZONE('UTC', LAST_MODIFIED)::TIMESTAMP_NTZ > %(since)s
  AND RELATIVE_PATH > %(after)s
ORDER BY RELATIVE_PATH
LIMIT %(limit)s;
