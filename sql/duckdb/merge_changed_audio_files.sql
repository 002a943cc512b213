-- Files whose content changed in the stage (from the temporary table "incoming"): a new content version in
-- a new batch; the hash is the stage's (or unknown until the payload reads the file), the old
-- one is kept as previous_md5.
MERGE INTO audio_files AS t
USING (SELECT * FROM incoming) AS s
ON t.file_path = s.file_path
WHEN MATCHED THEN UPDATE SET
    previous_md5 = coalesce(t.content_md5, t.previous_md5),
    size_bytes = s.size_bytes,
    content_md5 = s.content_md5,
    last_modified = s.last_modified,
    batch_key = s.batch_key,
    content_version = t.content_version + 1,
    changed_at = current_timestamp
WHEN NOT MATCHED THEN INSERT
    (file_path, size_bytes, content_md5, last_modified, batch_key, discovered_at, source)
    VALUES (s.file_path, s.size_bytes, s.content_md5, s.last_modified, s.batch_key,
            current_timestamp, s.source);
