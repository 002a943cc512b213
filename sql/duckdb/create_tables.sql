CREATE TABLE IF NOT EXISTS audio_files (
    file_path     VARCHAR PRIMARY KEY,
    size_bytes    BIGINT NOT NULL,
    content_md5   VARCHAR,
    last_modified TIMESTAMP,
    batch_key     VARCHAR NOT NULL,
    discovered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    source        VARCHAR,
    content_version INTEGER NOT NULL DEFAULT 1,
    changed_at    TIMESTAMP,
    previous_md5  VARCHAR
);
CREATE TABLE IF NOT EXISTS reference_transcripts (
    utterance_id VARCHAR PRIMARY KEY,
    file_path    VARCHAR NOT NULL,
    text         VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS transcripts (
    file_path      VARCHAR NOT NULL,
    model_id       VARCHAR NOT NULL,
    engine         VARCHAR NOT NULL,
    status         VARCHAR NOT NULL CHECK (status IN ('ok', 'error')),
    error          VARCHAR,
    text           VARCHAR,
    language       VARCHAR,
    duration_s     DOUBLE,
    segments       JSON,
    quality_flags  JSON,
    run_id         VARCHAR,
    batch_key      VARCHAR,
    transcribed_at TIMESTAMP NOT NULL,
    content_version INTEGER NOT NULL DEFAULT 1,
    content_md5    VARCHAR,
    PRIMARY KEY (file_path, model_id)
);
-- Tables created by earlier versions gain the columns added since.
ALTER TABLE transcripts ADD COLUMN IF NOT EXISTS quality_flags JSON;
ALTER TABLE audio_files ADD COLUMN IF NOT EXISTS content_version INTEGER DEFAULT 1;
ALTER TABLE audio_files ADD COLUMN IF NOT EXISTS changed_at TIMESTAMP;
ALTER TABLE audio_files ADD COLUMN IF NOT EXISTS previous_md5 VARCHAR;
ALTER TABLE transcripts ADD COLUMN IF NOT EXISTS content_version INTEGER DEFAULT 1;
ALTER TABLE transcripts ADD COLUMN IF NOT EXISTS content_md5 VARCHAR;
