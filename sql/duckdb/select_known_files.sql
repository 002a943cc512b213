-- Manifest size, modification time and batch of the candidate files (the temporary table "candidates").
SELECT f.file_path, f.size_bytes, f.last_modified, f.batch_key
FROM candidates AS c JOIN audio_files AS f USING (file_path);
