-- The payload's content hashes (from the temporary table "incoming" of transcript rows) into the manifest,
-- for the content version each row describes.
UPDATE audio_files AS f
SET content_md5 = s.content_md5
FROM (SELECT file_path, content_version, content_md5 FROM incoming
      WHERE content_md5 IS NOT NULL) AS s
WHERE f.file_path = s.file_path AND f.content_version = s.content_version;
