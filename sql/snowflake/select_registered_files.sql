-- Parameters: %(file_paths)s (JSON array text).
SELECT FILE_PATH FROM {audio_files}
WHERE FILE_PATH IN (SELECT VALUE::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(file_paths)s))));
