"""A process that used a Snowpark session exits once its work is done, whatever the account does.

Snowpark closes every session again at interpreter exit and, when the account cannot be reached
by then, retries without end: CI once waited 90 minutes on a finished pytest for that reason.
Both cases run in a child process against a real fakesnow server (the SQL/REST layer) with the
real connector and Snowpark above it.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import os, sys
    from tools.snowflake_emulator import fakesnow_http
    from audio_pipeline import profiles

    patched = sys.argv[1] == "patched"
    if patched:
        server = fakesnow_http.server()
    else:  # fakesnow as it ships: no master token, so the connector cannot log out
        import fakesnow
        server = fakesnow.server()
        fakesnow_http.remove_bucket_at_exit()  # its stage folder, if this process exits
    with server as kwargs:
        os.environ.update({
            "SNOWFLAKE_ACCOUNT": kwargs["account"], "SNOWFLAKE_USER": kwargs["user"],
            "SNOWFLAKE_PASSWORD": kwargs["password"], "SNOWFLAKE_HOST": kwargs["host"],
            "SNOWFLAKE_PORT": str(kwargs["port"]), "SNOWFLAKE_PROTOCOL": kwargs["protocol"],
            "SNOWFLAKE_NETWORK_TIMEOUT": sys.argv[2],
        })
        resource = profiles.snowflake_connection(dict(os.environ))  # as the profile builds it
        with resource.process_config_and_initialize_cm() as connection:
            with connection.snowpark_session() as session:
                assert session.sql("select 41 + 1").collect()[0][0] == 42
        print("closed:", session.connection.is_closed(), flush=True)
    print("server stopped", flush=True)
    """
)

# Runs subprocesses: the end-to-end tier.
pytestmark = pytest.mark.slow


@pytest.mark.waits
@pytest.mark.parametrize("server", ["patched", "as-shipped"])
def test_the_process_exits_after_the_account_is_gone(server):
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, server, "4"],  # network timeout (s): bounds the exit
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,  # the defect this guards against never exits
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "server stopped" in proc.stdout
    if server == "patched":  # the emulated account logs out as Snowflake does
        assert "closed: True" in proc.stdout
