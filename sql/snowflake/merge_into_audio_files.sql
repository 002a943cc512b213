-- Registers stage files from {incoming}; a file keeps the batch it was first registered in.
-- A known hash or modification time is never replaced by an unknown one.
MERGE INTO {audio_files} AS t
USING (SELECT * FROM {incoming}) AS s
ON t.FILE_PATH = s.FILE_PATH
WHEN MATCHED THEN UPDATE SET
    SIZE_BYTES = s.SIZE_BYTES,
    CONTENT_MD5 = COALESCE(s.CONTENT_MD5, t.CONTENT_MD5),
    LAST_MODIFIED = COALESCE(s.LAST_MODIFIED, t.LAST_MODIFIED)
WHEN NOT MATCHED THEN INSERT
    (FILE_PATH, SIZE_BYTES, CONTENT_MD5, LAST_MODIFIED, BATCH_KEY, DISCOVERED_AT, SOURCE)
    VALUES (s.FILE_PATH, s.SIZE_BYTES, s.CONTENT_MD5, s.LAST_MODIFIED, s.BATCH_KEY,
            CURRENT_TIMESTAMP()::TIMESTAMP_NTZ, s.SOURCE);
