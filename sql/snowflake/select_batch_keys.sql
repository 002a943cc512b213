-- Distinct batch keys of the manifest, in order of first registration.
SELECT BATCH_KEY FROM {audio_files} GROUP BY BATCH_KEY ORDER BY MIN(DISCOVERED_AT), 1;
