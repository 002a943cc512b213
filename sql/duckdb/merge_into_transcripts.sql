-- One row per (file_path, model_id). A new attempt replaces the old row, except that an error
-- never replaces an earlier ok transcript.
MERGE INTO transcripts AS t
USING (SELECT * FROM incoming) AS s
ON t.file_path = s.file_path AND t.model_id = s.model_id
WHEN MATCHED AND NOT (t.status = 'ok' AND s.status = 'error') THEN UPDATE SET
    engine = s.engine, status = s.status, error = s.error, text = s.text,
    language = s.language, duration_s = s.duration_s, segments = s.segments,
    quality_flags = s.quality_flags,
    run_id = s.run_id, batch_key = s.batch_key, transcribed_at = s.transcribed_at
WHEN NOT MATCHED THEN INSERT
    (file_path, model_id, engine, status, error, text, language, duration_s, segments,
     quality_flags, run_id, batch_key, transcribed_at)
    VALUES (s.file_path, s.model_id, s.engine, s.status, s.error, s.text, s.language,
            s.duration_s, s.segments, s.quality_flags, s.run_id, s.batch_key, s.transcribed_at);
