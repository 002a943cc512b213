-- Parameters: %(model_id)s, %(batch_keys)s (JSON array text).
SELECT f.FILE_PATH, f.BATCH_KEY, t.STATUS, t.ERROR, t.TEXT, t.DURATION_S, r.TEXT
FROM {audio_files} AS f
LEFT JOIN {transcripts} AS t ON t.FILE_PATH = f.FILE_PATH AND t.MODEL_ID = %(model_id)s
LEFT JOIN {reference_transcripts} AS r ON r.FILE_PATH = f.FILE_PATH
WHERE f.BATCH_KEY IN (SELECT VALUE::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(batch_keys)s))))
ORDER BY f.FILE_PATH;
