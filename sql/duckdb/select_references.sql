SELECT file_path, text FROM reference_transcripts WHERE list_contains($file_paths, file_path);
