-- Files of the given batches that still need a transcript for the model: no row, a row of an
-- older content version, or (when asked) an error row.
-- Parameters: %(batch_keys)s (JSON array text), %(model_id)s, %(force)s, %(retry_errors)s.
SELECT f.FILE_PATH, f.SIZE_BYTES, f.BATCH_KEY, f.CONTENT_VERSION
FROM {audio_files} AS f
LEFT JOIN {transcripts} AS t
    ON t.FILE_PATH = f.FILE_PATH AND t.MODEL_ID = %(model_id)s
WHERE f.BATCH_KEY IN (SELECT VALUE::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(batch_keys)s))))
  AND (%(force)s OR t.FILE_PATH IS NULL OR t.CONTENT_VERSION < f.CONTENT_VERSION
       OR (%(retry_errors)s AND t.STATUS = 'error'))
ORDER BY f.FILE_PATH;
