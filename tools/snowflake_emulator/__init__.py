"""An emulated Snowflake account: the real SDKs above, only Snowflake's SQL/REST endpoint faked.

Everything a job submission touches runs unchanged: the Snowflake connector, Snowpark,
``snowflake.ml.jobs.submit_directory``, ``MLJob`` (status, logs, cancel) and the job launcher
script that ships in the snowflake-ml-python wheel (``mljob_launcher.py``, uploaded by the SDK to
the job's stage and run from there). What answers them is one HTTP server speaking Snowflake's
query protocol:

* fakesnow (DuckDB) answers tables, MERGE, PUT and LIST, with its stage files in a local bucket;
* the statements fakesnow lacks are answered here, as Snowflake's documentation describes them:
  ``CALL SYSTEM$EXECUTE_ML_JOB`` (the SDK's job submission), ``DESCRIBE SERVICE`` going
  PENDING → RUNNING → DONE | FAILED (CANCELLING → CANCELLED after ``!spcs_cancel_job``),
  ``SHOW SERVICE INSTANCES``, ``SYSTEM$GET_SERVICE_LOGS`` (the last 100 KB of a container's
  output, start-up noise first, "Container Status: PENDING" before it starts, gone some time after
  it ends, when the SDK falls back to ``!spcs_get_logs``, an event-table source with its own line
  splitting), ``CREATE/ALTER/DESCRIBE/SHOW COMPUTE POOL`` with the grants setup gives,
  ``GET`` from a stage, ``USE ROLE`` and the setup DDL (network rule, integration, grants),
  checked against the documented grammar.

A job runs as the container would: instance 0 runs the launcher from the job's stage directory
(the stage mount) in a subprocess with the runtime's environment (``SNOWFLAKE_*`` variables, an
OAuth token file, ``SNOWFLAKE_JOBS_COUNT``, ``MLRS_*``), so that ``get_active_session()`` in the
payload is the launcher's Snowpark session (paramstyle ``qmark``), attached to the given Ray
cluster. Other instances are the worker containers: their logs hold the worker start-up lines.
"""

from .account import EmulatedAccount
from .wire import STAGE_MOUNT, SnowflakeError

__all__ = ["STAGE_MOUNT", "EmulatedAccount", "SnowflakeError"]
