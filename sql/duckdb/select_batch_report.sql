-- Every manifest file of the batches with its transcript for the model (if any) and reference.
SELECT f.file_path, t.status, t.error, t.text, t.duration_s, t.quality_flags, r.text AS reference
FROM audio_files AS f
LEFT JOIN transcripts AS t ON t.file_path = f.file_path AND t.model_id = $model_id
    AND t.content_version = f.content_version
LEFT JOIN reference_transcripts AS r ON r.file_path = f.file_path
WHERE list_contains($batch_keys, f.batch_key)
ORDER BY f.file_path;
