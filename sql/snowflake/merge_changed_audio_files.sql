-- Files whose content changed in the stage (from {incoming}): a new content version in a new
-- batch; the hash is the stage's (or unknown until the payload reads the file), the old one is
-- kept as PREVIOUS_MD5. Same statement as sql/duckdb/merge_changed_audio_files.sql.
MERGE INTO {audio_files} AS t
USING (SELECT * FROM {incoming}) AS s
ON t.FILE_PATH = s.FILE_PATH
WHEN MATCHED THEN UPDATE SET
    PREVIOUS_MD5 = COALESCE(t.CONTENT_MD5, t.PREVIOUS_MD5),
    SIZE_BYTES = s.SIZE_BYTES,
    CONTENT_MD5 = s.CONTENT_MD5,
    LAST_MODIFIED = s.LAST_MODIFIED,
    BATCH_KEY = s.BATCH_KEY,
    CONTENT_VERSION = t.CONTENT_VERSION + 1,
    CHANGED_AT = CURRENT_TIMESTAMP()::TIMESTAMP_NTZ
WHEN NOT MATCHED THEN INSERT
    (FILE_PATH, SIZE_BYTES, CONTENT_MD5, LAST_MODIFIED, BATCH_KEY, DISCOVERED_AT, SOURCE)
    VALUES (s.FILE_PATH, s.SIZE_BYTES, s.CONTENT_MD5, s.LAST_MODIFIED, s.BATCH_KEY,
            CURRENT_TIMESTAMP()::TIMESTAMP_NTZ, s.SOURCE);
