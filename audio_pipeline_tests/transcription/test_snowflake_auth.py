"""The payload's one place for Snowflake credentials (transcription/snowflake_auth.py)."""

from __future__ import annotations

import pytest

from audio_pipeline.transcription import snowflake_auth


@pytest.fixture
def container(tmp_path, monkeypatch):
    for key in snowflake_auth.CONTAINER_ENV + ("SNOWFLAKE_CONNECTION_NAME",):
        monkeypatch.delenv(key, raising=False)
    token = tmp_path / "token"
    token.write_text("token-1\n")
    monkeypatch.setenv("SNOWFLAKE_TOKEN_FILE", str(token))
    monkeypatch.setenv("SNOWFLAKE_HOST", "acct.snowflakecomputing.com")
    monkeypatch.setenv("SNOWFLAKE_ACCOUNT", "ACCT")
    monkeypatch.setenv("SNOWFLAKE_DATABASE", "DB")
    return token


def test_each_connection_reads_the_token_file_again(container):
    first = snowflake_auth.connect_args(schema="SCH", network_timeout_s=7)
    container.write_text("token-2\n")  # SPCS refreshes the file in place
    second = snowflake_auth.connect_args(schema="SCH")
    assert (first["token"], second["token"]) == ("token-1", "token-2")
    assert first["authenticator"] == "oauth" and first["host"] == "acct.snowflakecomputing.com"
    assert (first["database"], first["schema"]) == ("DB", "SCH")
    assert first["network_timeout"] == first["login_timeout"] == 7
    assert "network_timeout" not in second


def test_tasks_get_the_token_files_path_never_its_content(container):
    env = snowflake_auth.task_env()
    assert env["SNOWFLAKE_TOKEN_FILE"] == str(container)
    assert "token-1" not in "".join(env.values())


def test_outside_a_container_a_named_connection_or_a_clear_error(container, monkeypatch):
    container.unlink()
    assert snowflake_auth.task_env() is not None  # the variables alone say nothing secret
    with pytest.raises(snowflake_auth.NoSnowflakeSessionError, match="SNOWFLAKE_CONNECTION_NAME"):
        snowflake_auth.connect_args()
    monkeypatch.setenv("SNOWFLAKE_CONNECTION_NAME", "dev")
    assert snowflake_auth.connect_args("D2", "S2") == {
        "connection_name": "dev",
        "database": "D2",
        "schema": "S2",
    }
