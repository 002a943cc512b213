-- Parameters: %(file_paths)s (JSON array text).
SELECT FILE_PATH, TEXT FROM {reference_transcripts}
WHERE FILE_PATH IN (SELECT VALUE::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(file_paths)s))));
