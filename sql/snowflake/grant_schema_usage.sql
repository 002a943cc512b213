-- What the job role needs to run ML Jobs and write transcripts in the schema.
GRANT USAGE ON DATABASE {database} TO ROLE {role};
GRANT USAGE ON WAREHOUSE {warehouse} TO ROLE {role};
GRANT USAGE, CREATE TABLE, CREATE STAGE, CREATE SERVICE ON SCHEMA {schema} TO ROLE {role};
