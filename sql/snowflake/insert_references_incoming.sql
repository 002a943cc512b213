INSERT INTO {incoming} (UTTERANCE_ID, FILE_PATH, TEXT)
VALUES (%(utterance_id)s, %(file_path)s, %(text)s);
