-- Every manifest file of the batches with its transcript for the model (if any) and reference;
-- the same columns as sql/duckdb/select_batch_report.sql.
-- Parameters: %(model_id)s, %(batch_keys)s (JSON array text).
SELECT f.FILE_PATH, t.STATUS, t.ERROR, t.TEXT, t.DURATION_S, TO_JSON(t.QUALITY_FLAGS), r.TEXT
FROM {audio_files} AS f
LEFT JOIN {transcripts} AS t ON t.FILE_PATH = f.FILE_PATH AND t.MODEL_ID = %(model_id)s
    AND t.CONTENT_VERSION = f.CONTENT_VERSION
LEFT JOIN {reference_transcripts} AS r ON r.FILE_PATH = f.FILE_PATH
WHERE f.BATCH_KEY IN (SELECT VALUE::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(batch_keys)s))))
ORDER BY f.FILE_PATH;
