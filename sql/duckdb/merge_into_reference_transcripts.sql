MERGE INTO reference_transcripts AS t
USING (SELECT * FROM incoming) AS s
ON t.utterance_id = s.utterance_id
WHEN MATCHED THEN UPDATE SET file_path = s.file_path, text = s.text
WHEN NOT MATCHED THEN INSERT (utterance_id, file_path, text)
    VALUES (s.utterance_id, s.file_path, s.text);
