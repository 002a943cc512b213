-- Files of the given batches that still need a transcript for the model: no row, a row of an
-- older content version, or (when asked) an error row.
-- Parameters: $batch_keys (list), $model_id, $force, $retry_errors.
SELECT f.file_path, f.size_bytes, f.batch_key, f.content_version
FROM audio_files AS f
LEFT JOIN transcripts AS t
    ON t.file_path = f.file_path AND t.model_id = $model_id
WHERE list_contains($batch_keys, f.batch_key)
  AND ($force OR t.file_path IS NULL OR t.content_version < f.content_version
       OR ($retry_errors AND t.status = 'error'))
ORDER BY f.file_path;
