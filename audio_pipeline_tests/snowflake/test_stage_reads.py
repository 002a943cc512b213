"""How the job reads audio from the stage (transcription/sources.py) and sends Pipes messages
(transcription/pipes_stage.py), against the emulated account with no Ray: the real connector
logs in with a container's OAuth token file and runs GET and PUT; the only fake is Snowflake's
endpoint, and the faults are injected there (tools/snowflake_emulator/faults.py: statements
answered HTTP 503, tokens expired)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import numpy as np
import pytest

from audio_pipeline.resources.pipes_snowflake import PipesMLJobStageMessageReader
from audio_pipeline.resources.stage import SnowflakeStage
from audio_pipeline.transcription.librispeech import BUNDLED_ROOT
from audio_pipeline.transcription.pipeline import decode_batch
from audio_pipeline.transcription.pipes_stage import PipesSnowflakeStageMessageWriterChannel
from audio_pipeline.transcription.sources import (
    SnowflakeStageSource,
    StageUnreachableError,
    open_source,
)

from ..helpers import account_connection, container_env

# about a minute of connector timeouts and a 150 MB model through the account: end-to-end tier
pytestmark = pytest.mark.slow

FLACS = sorted(BUNDLED_ROOT.glob("sample/*/*/*.flac"))[:4]
PATHS = [f"sample/{f.name}" for f in FLACS]
MIB = 1024 * 1024


@pytest.fixture
def container(bare_account, tmp_path, monkeypatch):
    """A job container's view of a freshly set-up schema whose stage holds four FLAC files."""
    connection = account_connection(bare_account)
    stage = SnowflakeStage(connection=connection)
    for flac, path in zip(FLACS, PATHS, strict=True):
        assert stage.put_file(flac, path)
    stage.close()
    token = tmp_path / "token"
    # a token of this test's own: tests expire theirs on the session's account
    token.write_text(f"container-token-{uuid.uuid4().hex[:8]}")
    monkeypatch.delenv("SNOWFLAKE_CONNECTION_NAME", raising=False)
    for key, value in container_env(bare_account, connection, token).items():
        monkeypatch.setenv(key, value)
    yield {"account": bare_account, "connection": connection, "stage": stage, "token": token}
    bare_account.lift()


def batch(paths):
    return {
        "file_path": np.array(paths, dtype=object),
        "batch_key": np.array(["b"] * len(paths), dtype=object),
    }


def source_spec(container, **options) -> dict:
    return container["stage"].payload_spec() | options


def test_files_are_read_with_get_and_a_missing_file_is_one_error_row(container):
    out = decode_batch(
        batch([PATHS[0], "sample/gone-0001.flac", PATHS[1]]),
        source_spec(container),
        max_file_bytes=64 * MIB,
        max_duration_s=3600,
    )
    assert list(out["decode_error"][[0, 2]]) == ["", ""]
    assert out["content_md5"][0] == hashlib.md5(FLACS[0].read_bytes()).hexdigest()
    assert out["duration_s"][0] > 1 and len(out["pcm"][0]) > 0
    error = out["decode_error"][1]
    assert error.startswith("FileNotFoundError: sample/gone-0001.flac: not on the stage @")
    gets = [s for _r, s in container["account"].statements if s.upper().startswith("GET ")]
    assert len(gets) == 3 and all("/sample/" in s for s in gets)
    assert not [s for _r, s in container["account"].statements if "presigned" in s.lower()]


def test_a_blocked_endpoint_fails_the_job_fast_with_a_diagnosis(container):
    """Every GET refused: not an error row per file but StageUnreachableError (decode_batch
    lets it through, so Ray Data fails the job) after ``max_consecutive_failures`` files."""
    account = container["account"]
    refusal = account.refuse(r"^GET\s", seconds=None)
    spec = source_spec(
        container, network_timeout_s=1, attempts=2, backoff_s=0.1, max_consecutive_failures=2
    )
    logins = len(account.logins)
    with pytest.raises(StageUnreachableError) as failure:
        decode_batch(batch(PATHS), spec, max_file_bytes=64 * MIB, max_duration_s=3600)
    text = str(failure.value)
    assert "cannot be read: 2 file(s) in a row failed" in text
    assert "ServiceUnavailableError: 290503: HTTP 503" in text and "READ on the stage" in text
    # file 1: two attempts, file 2: one (the transport is known to be failing); each a new login
    assert refusal.hits >= 3 and len(account.logins) - logins == 3
    account.lift()
    # the transport back: the next read works (and resets the count)
    source = open_source(spec)
    assert source.read_bytes(PATHS[2]) == FLACS[2].read_bytes()


def test_a_blip_is_retried_on_a_new_connection_that_reads_the_token_again(container):
    account, token = container["account"], container["token"]
    spec = container["stage"].payload_spec()
    source = SnowflakeStageSource(
        spec["database"],
        spec["schema"],
        spec["stage"],
        network_timeout_s=1,
        attempts=6,
        backoff_s=0.5,
    )
    assert source.read_bytes(PATHS[0]) == FLACS[0].read_bytes()
    # the token is refreshed in place and the old one expires while the endpoint is away
    account.refuse(r"^GET\s", seconds=3)
    old = token.read_text()
    token.write_text(f"{old}-refreshed")
    account.expire_tokens([old])
    assert source.read_bytes(PATHS[1]) == FLACS[1].read_bytes()
    assert account.logins[-1] == f"oauth:{old}-refreshed"


def pipes_message(method: str, **params) -> dict:
    return {"__dagster_pipes_version": "0.1", "method": method, "params": params}


@pytest.mark.waits
def test_a_writer_that_loses_the_endpoint_for_a_while_still_delivers_closed(container):
    """The writer's connection is refused for 9 s (a lost minute, scaled down: several times the
    network timeout of 2 s and more than the longest backoff of 5 s) and the container's token is
    refreshed meanwhile, the old one expiring:
    the upload thread lives on, logs in again with the new token and every message arrives once,
    in order, ``closed`` last."""
    account, connection, token = container["account"], container["connection"], container["token"]
    database, schema = connection.schema_fqn
    prefix = f'@"{database}"."{schema}"."JOB_STAGE"/pipes/lost-minute'
    lines: list[str] = []
    channel = PipesSnowflakeStageMessageWriterChannel(
        prefix,
        interval=0.5,
        flush_timeout_s=120,
        network_timeout_s=2,
        max_backoff_s=5,
        log=lines.append,
    )
    sent = [pipes_message("opened")]
    with channel.buffered_upload_loop():
        channel.write_message(sent[0])
        time.sleep(1.5)  # a first chunk on the first connection
        refusal = account.refuse(r"^PUT\s.*/pipes/lost-minute/", seconds=9)
        old = token.read_text()
        token.write_text(f"{old}-refreshed")
        account.expire_tokens([old])
        for i in range(20):
            sent.append(pipes_message("log", message=f"message {i:02d}", level="INFO"))
            channel.write_message(sent[-1])
            time.sleep(0.2)
        sent.append(pipes_message("closed"))
        channel.write_message(sent[-1])
    assert refusal.hits > 0 and channel.failures > 0
    assert channel.connections >= 2 and account.logins[-1] == f"oauth:{old}-refreshed"
    assert any("could not be uploaded" in line for line in lines)
    assert any("delivered" in line and "final flush" in line for line in lines)

    with connection.snowpark_session() as session:
        reader = PipesMLJobStageMessageReader(session, prefix, interval_s=0.5)
        received, index = [], 1
        while (chunk := reader.download_messages_chunk(index, {})) is not None:
            received += [json.loads(line) for line in chunk.splitlines() if line.strip()]
            index += 1
    assert received == sent and reader.closed and index - 1 == channel.chunks


def test_the_reader_takes_a_failed_download_for_a_blip_and_says_for_how_long(container):
    connection = container["connection"]
    database, schema = connection.schema_fqn
    prefix = f'@"{database}"."{schema}"."JOB_STAGE"/pipes/blip'
    with connection.snowpark_session() as session:
        reader = PipesMLJobStageMessageReader(session, prefix, interval_s=0.5)
        assert reader.download_messages_chunk(1, {}) is None  # not written yet: no error
        assert reader.failing_for() == 0
        container["account"].refuse(r"^GET\s.*/pipes/blip/", seconds=None)
        assert reader.download_messages_chunk(1, {}) is None
        assert reader.failing_for() > 0 and "503" in reader.last_error
        container["account"].lift()
        assert reader.download_messages_chunk(1, {}) is None and reader.failing_for() == 0


def test_a_hub_model_is_copied_to_the_models_stage_once_and_nodes_get_it_from_there(
    container, tmp_path
):
    """model_stage on the emulated account with a Hub stand-in on 127.0.0.1 (HF_ENDPOINT): the
    first publish downloads from the Hub and PUTs to the stage; a second job's publish and a new
    node's copy ask the Hub for nothing; a node that has the model GETs nothing."""
    from audio_pipeline.transcription import model_stage, snowflake_auth
    from audio_pipeline.transcription.convert import ensure_converted
    from audio_pipeline.transcription.models import ModelError, bundled_ct2_path

    from ..helpers import FakeHub

    account, connection = container["account"], container["connection"]
    revision = "89abcdef0123456789abcdef0123456789abcdef"
    tiny = ensure_converted(bundled_ct2_path(), tmp_path / "tiny-hf")
    hub = FakeHub({"test-org/whisper-tiny.en": (revision, tiny)})
    location = "@{}.{}.JOB_STAGE/models".format(*connection.schema_fqn)
    model = model_stage.staged_model(f"test-org/whisper-tiny.en@{revision}", location)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HF_ENDPOINT", hub.url)
            mp.setenv("HF_HOME", str(tmp_path / "hf-home"))
            conn = snowflake_auth.connect()
            assert model_stage.publish(conn, model, home=tmp_path / "head", log=print) == "hub"
            downloads = len(hub.file_downloads())
            assert downloads >= 3
            assert model_stage.publish(conn, model, home=tmp_path / "head", log=print) == "stage"
            conn.close()
            before = len(account.statements)
            path = model_stage.ensure_local(
                model.model_path, tmp_path / "worker", snowflake_auth.connect
            )
            gets = [s for _r, s in account.statements[before:] if s.startswith("GET")]
            again = model_stage.ensure_local(
                model.model_path, tmp_path / "worker", snowflake_auth.connect
            )
            head = model_stage.ensure_local(
                model.model_path, tmp_path / "head", snowflake_auth.connect
            )
    finally:
        hub.close()
    assert len(hub.file_downloads()) == downloads  # the Hub was asked once, by the first publish
    assert again == path and head == model.local_dir(tmp_path / "head")
    assert len(gets) == len(list(tiny.iterdir())) + 1  # every file + the manifest, once
    assert len([s for _r, s in account.statements[before:] if s.startswith("GET")]) == len(gets)
    for f in tiny.iterdir():
        assert (path / f.name).read_bytes() == f.read_bytes()
    with pytest.raises(ModelError, match="pin a revision"):
        model_stage.staged_model("openai/whisper-large-v3", location)
