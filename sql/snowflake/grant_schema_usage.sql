-- What the job role needs to run ML Jobs and write transcripts in the schema: the database,
-- warehouse and schema; the audio stage (read by jobs, written by ingest jobs) and the job stage
-- (payload upload, Pipes message chunks); the tables that exist (the owner grants them; the
-- tables of later versions: grant_future_tables.sql).
GRANT USAGE ON DATABASE {database} TO ROLE {role};
GRANT USAGE ON WAREHOUSE {warehouse} TO ROLE {role};
GRANT USAGE, CREATE TABLE, CREATE STAGE, CREATE SERVICE ON SCHEMA {schema} TO ROLE {role};
GRANT READ, WRITE ON STAGE {audio_stage} TO ROLE {role};
GRANT READ, WRITE ON STAGE {job_stage} TO ROLE {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO ROLE {role};
