-- The payload's content hashes (from {incoming}, transcript rows) into the manifest, for the
-- content version each row describes.
UPDATE {audio_files} AS f
SET CONTENT_MD5 = s.CONTENT_MD5
FROM (SELECT FILE_PATH, CONTENT_VERSION, CONTENT_MD5 FROM {incoming}
      WHERE CONTENT_MD5 IS NOT NULL) AS s
WHERE f.FILE_PATH = s.FILE_PATH AND f.CONTENT_VERSION = s.CONTENT_VERSION;
