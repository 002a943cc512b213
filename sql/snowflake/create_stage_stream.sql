-- The sensor's two objects: a stream on the audio stage's directory table (what changed since the
-- sensor last consumed it; SYSTEM$STREAM_HAS_DATA on it needs no warehouse) and the table the
-- sensor moves those changes into before registering them, a page at a time.
CREATE STREAM IF NOT EXISTS {stream} ON STAGE {stage};
CREATE TABLE IF NOT EXISTS {pending} (
    RELATIVE_PATH VARCHAR NOT NULL,
    SIZE          NUMBER(38, 0),
    LAST_MODIFIED TIMESTAMP_NTZ,
    MD5           VARCHAR
);
