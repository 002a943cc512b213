-- Session-scoped staging table for manifest rows (unqualified: temporary tables live in the
-- session's current schema).
CREATE OR REPLACE TEMPORARY TABLE {incoming} (
    FILE_PATH VARCHAR, SIZE_BYTES NUMBER(38, 0), CONTENT_MD5 VARCHAR, LAST_MODIFIED TIMESTAMP_NTZ,
    BATCH_KEY VARCHAR, SOURCE VARCHAR
);
