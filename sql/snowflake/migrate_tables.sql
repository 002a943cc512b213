-- Schema migrations: tables created by earlier versions gain the columns added since. ALTER TABLE
-- needs the tables' OWNERSHIP, so only `make snowflake-setup` (as their owner) runs this; jobs,
-- sensor ticks and asset runs only CREATE ... IF NOT EXISTS (no ownership needed).
ALTER TABLE {transcripts} ADD COLUMN IF NOT EXISTS QUALITY_FLAGS VARIANT;
ALTER TABLE {audio_files} ADD COLUMN IF NOT EXISTS CONTENT_VERSION NUMBER(38, 0) DEFAULT 1;
ALTER TABLE {audio_files} ADD COLUMN IF NOT EXISTS CHANGED_AT TIMESTAMP_NTZ;
ALTER TABLE {audio_files} ADD COLUMN IF NOT EXISTS PREVIOUS_MD5 VARCHAR;
ALTER TABLE {transcripts} ADD COLUMN IF NOT EXISTS CONTENT_VERSION NUMBER(38, 0) DEFAULT 1;
ALTER TABLE {transcripts} ADD COLUMN IF NOT EXISTS CONTENT_MD5 VARCHAR;
