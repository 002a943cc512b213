"""The new-file sensor on the emulated account (tools/snowflake_emulator): the real connector and
the real setup plan; only Snowflake's SQL endpoint is emulated (directory tables, streams on them,
SHOW TABLES row counts, as Snowflake's documentation describes them). No Ray is started.

An idle tick must run no statement that needs a warehouse (``costs.needs_warehouse``: the
emulator receives and records every statement); a backlog is registered over bounded ticks that
resume from the cursor, every file in exactly one batch.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from audio_pipeline.resources.stage import SnowflakeStage
from audio_pipeline.resources.warehouse import SnowflakeStore
from audio_pipeline.sensors import NewFilesSettings
from tools.snowflake_emulator import EmulatedAccount
from tools.snowflake_emulator.costs import needs_warehouse

from .. import helpers
from ..helpers import account_connection

SESSION = ("USE", "COMMIT", "ROLLBACK")  # what the connection wrapper sends around a tick


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    account = EmulatedAccount(tmp_path_factory.mktemp("sensor-account"))  # no jobs: no Ray
    account.start()
    yield account
    account.stop()


@pytest.fixture
def res(account):
    connection = account_connection(account)
    return {
        "stage": SnowflakeStage(connection=connection, page_size=2),
        "store": SnowflakeStore(connection=connection),
        "new_files": NewFilesSettings(min_age_s=0),
    }


def put(res, tmp_path, names):
    items = []
    for name in names:
        local = tmp_path / name.rpartition("/")[2]
        local.write_bytes(b"RIFF" + name.encode())
        items.append((local, name))
    assert res["stage"].put_files(items) == len(items)


def tick(res, instance, cursor=None):
    """One tick as the daemon runs it (helpers.tick): its result, its batches and the
    statements it sent."""
    account_log = res["account"].received
    start = len(account_log)
    result = helpers.tick(res["resources"], instance, cursor)
    keys = [r.partition_key for r in result.run_requests]
    return result, keys, account_log[start:]


def test_commands_classified_as_snowflake_documents():
    assert not needs_warehouse('ALTER STAGE "D"."S"."ST" REFRESH')
    assert not needs_warehouse('SELECT SYSTEM$STREAM_HAS_DATA(\'"D"."S"."X"\')')
    assert not needs_warehouse('SHOW TABLES LIKE \'P\' IN SCHEMA "D"."S"')
    assert not needs_warehouse("CREATE TABLE IF NOT EXISTS t (a INT)")
    assert needs_warehouse("SELECT A FROM T")
    assert needs_warehouse("MERGE INTO T USING S ON T.A = S.A WHEN MATCHED THEN DELETE")
    assert needs_warehouse("DELETE FROM T WHERE A = 1")
    assert needs_warehouse("CREATE TABLE T AS SELECT * FROM S")


def test_an_idle_tick_resumes_no_warehouse_and_new_files_still_come(account, res, tmp_path):
    both = {"account": account, "resources": res}
    db = res["store"].connection.database
    put(res, tmp_path, ["drop/a.flac", "drop/b.flac", "drop/c.flac"])
    with dg.instance_for_test() as instance:
        first, keys1, _ = tick(both, instance)  # the first pass: the whole directory table
        assert len(keys1) == 1
        rows = res["store"].query("SELECT file_path, batch_key FROM audio_files ORDER BY 1")
        assert rows == [(f"drop/{n}.flac", keys1[0]) for n in "abc"]
        # The stream still holds the first files: one pass consumes it (nothing new to register).
        second, keys2, _ = tick(both, instance, first.cursor)
        assert keys2 == []
        idle, keys3, statements = tick(both, instance, second.cursor)
        assert keys3 == [] and idle.skip_reason is not None
        assert statements, "the tick sent nothing: the emulator records every statement"
        assert [s for s in statements if needs_warehouse(s)] == []
        work = [s.split("(")[0].split(" IN ")[0] for s in statements if s.split()[0] not in SESSION]
        assert work == [
            f'ALTER STAGE "{db}"."AUDIO_TRANSCRIPTION_SCH"."AUDIO_FILES_STAGE" REFRESH',
            "SELECT SYSTEM$STREAM_HAS_DATA",
            "SHOW TABLES LIKE 'STAGE_PENDING_FILES'",
        ]

        put(res, tmp_path, ["drop/d.flac"])
        found, keys4, statements = tick(both, instance, idle.cursor)
        assert len(keys4) == 1 and keys4[0] != keys1[0]
        assert any(needs_warehouse(s) for s in statements)  # work: the warehouse, rightly
        assert res["store"].query(
            "SELECT file_path FROM audio_files WHERE batch_key = %s", (keys4[0],)
        ) == [("drop/d.flac",)]
        again, keys5, statements = tick(both, instance, found.cursor)
        assert keys5 == [] and [s for s in statements if needs_warehouse(s)] == []
        assert json.loads(again.cursor)["stage"]["pending_rows"] == 1  # d, until the next pass


def test_a_backlog_pages_over_bounded_ticks_each_file_in_one_batch(account, res, tmp_path):
    both = {"account": account, "resources": res}
    names = [f"bulk/f{i:02d}.flac" for i in range(7)]
    put(res, tmp_path, names)
    res["new_files"] = NewFilesSettings(min_age_s=0, max_files_per_tick=2, max_files_per_batch=2)
    with dg.instance_for_test() as instance:
        cursor, keys, positions = None, [], []
        for _ in range(10):
            result, new, statements = tick(both, instance, cursor)
            cursor = result.cursor
            keys += new
            state = json.loads(cursor)
            if "pass" not in state:
                break
            positions.append(state["pass"]["after"])
            pages = [s for s in statements if "DIRECTORY(" in s]
            assert pages and all("LIMIT 2" in s for s in pages)  # never the whole listing
        assert positions == sorted(positions) and len(positions) >= 3  # resumed, in order
        rows = res["store"].query("SELECT file_path, batch_key FROM audio_files ORDER BY 1")
        assert [r[0] for r in rows] == names  # every file, once (file_path is the key)
        assert sorted({r[1] for r in rows}) == sorted(keys)  # every batch requested
        assert len(keys) == len(set(keys))


def test_new_files_page_through_the_pending_table_across_ticks(account, res, tmp_path):
    both = {"account": account, "resources": res}
    put(res, tmp_path, ["old/a.flac"])
    with dg.instance_for_test() as instance:
        cursor = None
        for _ in range(3):  # the first pass, then the stream's first changes consumed
            cursor = tick(both, instance, cursor)[0].cursor
        names = [f"late/n{i}.flac" for i in range(5)]
        put(res, tmp_path, names)
        res["new_files"] = NewFilesSettings(min_age_s=0, max_files_per_tick=2)
        keys, passes = [], 0
        for _ in range(10):
            result, new, statements = tick(both, instance, cursor)
            cursor, keys = result.cursor, keys + new
            pages = [s for s in statements if "STAGE_PENDING_FILES" in s and "LIMIT" in s]
            assert all("LIMIT 2" in s for s in pages)
            passes += bool(pages)
            if "pass" not in json.loads(cursor) and new == []:
                break
        assert passes >= 3  # 5 files, 2 a tick
        rows = res["store"].query("SELECT file_path, batch_key FROM audio_files ORDER BY 1")
        assert [r[0] for r in rows] == [*names, "old/a.flac"]
        assert {r[1] for r in rows if r[0].startswith("late/")} == set(keys)
        # The handled pending rows are cleared by the next pass; then the tick is idle again.
        put(res, tmp_path, ["late/last.flac"])
        result, new, _ = tick(both, instance, cursor)
        assert len(new) == 1
        pending = res["store"].query("SELECT relative_path FROM STAGE_PENDING_FILES")
        assert pending == [("late/last.flac",)]
        _, new, statements = tick(both, instance, result.cursor)
        assert new == [] and [s for s in statements if needs_warehouse(s)] == []
