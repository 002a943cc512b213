-- Files of the given batches that still need a transcript for the model.
-- Parameters: %(batch_keys)s (JSON array text), %(model_id)s, %(force)s, %(retry_errors)s.
SELECT f.FILE_PATH, f.SIZE_BYTES, f.BATCH_KEY
FROM {audio_files} AS f
LEFT JOIN {transcripts} AS t
    ON t.FILE_PATH = f.FILE_PATH AND t.MODEL_ID = %(model_id)s
WHERE f.BATCH_KEY IN (SELECT VALUE::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(batch_keys)s))))
  AND (%(force)s OR t.FILE_PATH IS NULL OR (%(retry_errors)s AND t.STATUS = 'error'))
ORDER BY f.FILE_PATH;
