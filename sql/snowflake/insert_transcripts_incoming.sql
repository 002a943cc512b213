INSERT INTO {incoming} (FILE_PATH, MODEL_ID, ENGINE, STATUS, ERROR, TEXT, LANGUAGE, DURATION_S,
                        SEGMENTS, QUALITY_FLAGS, RUN_ID, BATCH_KEY, TRANSCRIBED_AT,
                        CONTENT_VERSION, CONTENT_MD5)
VALUES (%(file_path)s, %(model_id)s, %(engine)s, %(status)s, %(error)s, %(text)s, %(language)s,
        %(duration_s)s, %(segments)s, %(quality_flags)s, %(run_id)s, %(batch_key)s,
        %(transcribed_at)s, %(content_version)s, %(content_md5)s);
