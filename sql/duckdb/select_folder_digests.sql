-- Per folder of the manifest: files, bytes, the sum of modification times in µs (NULL while any
-- time is unknown) and its batches, to compare with the stage's folders without a lookup per file.
SELECT
    parse_dirpath(file_path, 'posix') AS folder,
    count(*) AS files,
    sum(size_bytes) AS bytes,
    CASE WHEN count(last_modified) = count(*) THEN sum(epoch_us(last_modified)) END AS mtime_us,
    list(DISTINCT batch_key) AS batch_keys
FROM audio_files
GROUP BY 1;
