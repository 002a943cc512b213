-- New and changed stage files from the directory table's stream into the pending table; reading
-- the stream in this DML consumes it (its offset moves on) in the same transaction.
MERGE INTO {pending} AS t
USING (
    SELECT RELATIVE_PATH, SIZE, CONVERT_TIMEZONE('UTC', LAST_MODIFIED)::TIMESTAMP_NTZ AS LAST_MODIFIED, MD5
    FROM {stream}
    WHERE METADATA$ACTION = 'INSERT'
) AS s
ON t.RELATIVE_PATH = s.RELATIVE_PATH
WHEN MATCHED THEN UPDATE SET SIZE = s.SIZE, LAST_MODIFIED = s.LAST_MODIFIED, MD5 = s.MD5
WHEN NOT MATCHED THEN INSERT (RELATIVE_PATH, SIZE, LAST_MODIFIED, MD5)
    VALUES (s.RELATIVE_PATH, s.SIZE, s.LAST_MODIFIED, s.MD5);
