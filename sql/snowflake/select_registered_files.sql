-- Manifest size, modification time and batch of the candidate files.
-- Parameters: %(file_paths)s (JSON array text).
SELECT FILE_PATH, SIZE_BYTES, LAST_MODIFIED, BATCH_KEY FROM {audio_files}
WHERE FILE_PATH IN (SELECT VALUE::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(file_paths)s))));
