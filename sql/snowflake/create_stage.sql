-- The audio stage: server-side encryption (needed to read files from containers) and a directory
-- table (listing with sizes, MD5 and last-modified times).
CREATE STAGE IF NOT EXISTS {stage}
    DIRECTORY = (ENABLE = TRUE)
    ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE');
