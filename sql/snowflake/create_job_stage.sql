-- Where snowflake.ml.jobs uploads job payloads.
CREATE STAGE IF NOT EXISTS {stage}
    ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE');
