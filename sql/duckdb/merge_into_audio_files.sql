-- Registers stage files from the temporary table "incoming"; a file keeps the batch it was first registered
-- in. A known hash or modification time is never replaced by an unknown one.
MERGE INTO audio_files AS t
USING (SELECT * FROM incoming) AS s
ON t.file_path = s.file_path
WHEN MATCHED THEN UPDATE SET
    size_bytes = s.size_bytes,
    content_md5 = coalesce(s.content_md5, t.content_md5),
    last_modified = coalesce(s.last_modified, t.last_modified)
WHEN NOT MATCHED THEN INSERT
    (file_path, size_bytes, content_md5, last_modified, batch_key, discovered_at, source)
    VALUES (s.file_path, s.size_bytes, s.content_md5, s.last_modified, s.batch_key,
            current_timestamp, s.source);
