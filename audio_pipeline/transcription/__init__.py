"""The transcription payload: runs remotely (Ray Job, Snowflake ML Job), knows Dagster only
through ``dagster_pipes``."""
