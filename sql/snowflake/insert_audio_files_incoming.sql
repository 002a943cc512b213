INSERT INTO {incoming} (FILE_PATH, SIZE_BYTES, CONTENT_MD5, LAST_MODIFIED, BATCH_KEY, SOURCE)
VALUES (%(file_path)s, %(size_bytes)s, %(content_md5)s, %(last_modified)s, %(batch_key)s,
        %(source)s);
