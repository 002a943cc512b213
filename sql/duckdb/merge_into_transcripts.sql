-- One row per (file_path, model_id), describing one content version of the file. A new attempt
-- replaces the old row, except that a row never replaces one of a newer content version, and an
-- error never replaces an ok transcript of the same content.
MERGE INTO transcripts AS t
USING (SELECT * FROM incoming) AS s
ON t.file_path = s.file_path AND t.model_id = s.model_id
WHEN MATCHED AND s.content_version >= t.content_version
     AND NOT (t.status = 'ok' AND s.status = 'error' AND s.content_version = t.content_version)
THEN UPDATE SET
    engine = s.engine, status = s.status, error = s.error, text = s.text,
    language = s.language, duration_s = s.duration_s, segments = s.segments,
    quality_flags = s.quality_flags,
    run_id = s.run_id, batch_key = s.batch_key, transcribed_at = s.transcribed_at,
    content_version = s.content_version, content_md5 = s.content_md5
WHEN NOT MATCHED THEN INSERT
    (file_path, model_id, engine, status, error, text, language, duration_s, segments,
     quality_flags, run_id, batch_key, transcribed_at, content_version, content_md5)
    VALUES (s.file_path, s.model_id, s.engine, s.status, s.error, s.text, s.language,
            s.duration_s, s.segments, s.quality_flags, s.run_id, s.batch_key, s.transcribed_at,
            s.content_version, s.content_md5);
