"""The transcription payload: runs remotely (Ray Job, Snowflake ML Job), knows Dagster only
through ``dagster_pipes``."""

import os as _os

# The GCS of the cluster the job was submitted to, when the submitter knows it: Ray's job
# supervisor resolves RAY_ADDRESS from the temp dir's "current cluster", which is whichever
# cluster started last on a machine running several.
if _os.environ.get("AUDIO_PIPELINE_RAY_GCS"):
    _os.environ["RAY_ADDRESS"] = _os.environ["AUDIO_PIPELINE_RAY_GCS"]
if _os.environ.get("RAY_ADDRESS", "").split("://")[-1].startswith(("127.", "localhost")):
    # A loopback cluster (ours, started on 127.0.0.1). Without this, Ray replaces 127.0.0.1 by
    # the host's IP and waits for a GCS and raylet there. Ray reads it once, at import time, so
    # it is set before anything in this package imports ray.
    _os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
