"""The one place the environment is read: ``AUDIO_PIPELINE_PROFILE`` → resources.

``local`` (default) needs no account and no network: a stage folder, a DuckDB file and a Ray
cluster on this machine, all under ``AUDIO_PIPELINE_HOME`` (default ``./.audio_pipeline``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .transcription.librispeech import OPENSLR_BASE_URL

PROFILES = ("local", "snowflake")
# The Snowflake connector's per-request retry window (SNOWFLAKE_NETWORK_TIMEOUT overrides it).
NETWORK_TIMEOUT_S = 300


@dataclass(frozen=True)
class LocalSettings:
    home: Path
    mirror: str
    ray_address: str | None
    gcs_port: int
    dashboard_port: int

    @property
    def stage_root(self) -> Path:
        return self.home / "stage"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"


def active_profile(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    profile = env.get("AUDIO_PIPELINE_PROFILE", "local").strip().lower() or "local"
    if profile not in PROFILES:
        raise ValueError(f"AUDIO_PIPELINE_PROFILE={profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


def local_settings(env: dict | None = None) -> LocalSettings:
    env = os.environ if env is None else env
    home = Path(env.get("AUDIO_PIPELINE_HOME") or ".audio_pipeline").expanduser().resolve()
    return LocalSettings(
        home=home,
        mirror=env.get("LIBRISPEECH_MIRROR") or OPENSLR_BASE_URL,
        ray_address=env.get("RAY_ADDRESS") or None,
        gcs_port=int(env.get("AUDIO_PIPELINE_RAY_PORT", "6379")),
        dashboard_port=int(env.get("AUDIO_PIPELINE_RAY_DASHBOARD_PORT", "8265")),
    )


def librispeech_mirror(env: dict | None = None) -> str | None:
    """``LIBRISPEECH_MIRROR`` as given (None: openslr); its local subsets become partitions."""
    env = os.environ if env is None else env
    return env.get("LIBRISPEECH_MIRROR") or None


def dagster_home(env: dict | None = None) -> str | None:
    """``DAGSTER_HOME`` (None: the CLI uses an ephemeral instance)."""
    env = os.environ if env is None else env
    return env.get("DAGSTER_HOME") or None


# The new-file sensor's interval and full rescans per profile. On Snowflake an idle tick resumes
# no warehouse, but a tick with new files resumes it for at least a minute: every 5 minutes
# bounds that to about 5 XSMALL credits a day (README: Run on Snowflake), and the stage's stream
# sees every change, so a full pass there is a daily safety net.
SENSOR_DEFAULTS = {
    "local": {"interval_s": 60, "full_rescan_every": 60},
    "snowflake": {"interval_s": 300, "full_rescan_every": 288},
}


def sensor_interval_s(env: dict | None = None) -> int:
    env = os.environ if env is None else env
    default = SENSOR_DEFAULTS[active_profile(env)]["interval_s"]
    return int(env.get("AUDIO_PIPELINE_SENSOR_INTERVAL_S", str(default)))


def new_files_settings(env: dict | None = None, profile: str = "local"):
    from .sensors import NewFilesSettings

    env = os.environ if env is None else env
    return NewFilesSettings(
        max_files_per_batch=int(env.get("AUDIO_PIPELINE_MAX_FILES_PER_BATCH", "5000")),
        # well inside Dagster's sensor deadline (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS, 60 s)
        tick_budget_s=float(env.get("AUDIO_PIPELINE_SENSOR_TICK_BUDGET_S", "10")),
        max_files_per_tick=int(env.get("AUDIO_PIPELINE_SENSOR_FILES_PER_TICK", "100000")),
        full_rescan_every=int(
            env.get(
                "AUDIO_PIPELINE_SENSOR_FULL_RESCAN_EVERY",
                str(SENSOR_DEFAULTS[profile]["full_rescan_every"]),
            )
        ),
    )


def local_resources(settings: LocalSettings, env: dict | None = None) -> dict:
    from .resources.compute import LocalRayCompute
    from .resources.librispeech_source import LibriSpeechSource
    from .resources.stage import LocalStage
    from .resources.warehouse import DuckDBStore

    return {
        "stage": LocalStage(root=str(settings.stage_root)),
        "store": DuckDBStore(path=str(settings.warehouse_path)),
        "compute": LocalRayCompute(
            home=str(settings.home),
            address=settings.ray_address,
            gcs_port=settings.gcs_port,
            dashboard_port=settings.dashboard_port,
        ),
        "librispeech_source": LibriSpeechSource(
            mirror=settings.mirror,
            work_dir=str(settings.home / "librispeech"),
        ),
        "new_files": new_files_settings(env),
    }


def resources_for(profile: str | None = None, env: dict | None = None) -> dict:
    profile = profile or active_profile(env)
    if profile == "local":
        return local_resources(local_settings(env), env)
    return snowflake_resources(os.environ if env is None else env)


def snowflake_connection(env: dict):
    """Credentials through ``dg.EnvVar`` (resolved at run time, never copied), or a named
    connection of ``~/.snowflake/connections.toml`` (``SNOWFLAKE_CONNECTION_NAME``).

    ``env`` only decides which settings exist; no secret value is read here.
    """
    import dagster as dg
    from dagster_snowflake import SnowflakeResource

    from .resources.snowflake_connection import (
        DEFAULT_DATABASE,
        DEFAULT_SCHEMA,
        DEFAULT_WAREHOUSE,
        SnowflakeConnection,
    )

    def setting(name: str, default: str):
        return dg.EnvVar(name) if env.get(name) else default

    names = {
        "database": setting("SNOWFLAKE_DATABASE", DEFAULT_DATABASE),
        "schema_name": setting("SNOWFLAKE_SCHEMA", DEFAULT_SCHEMA),
        "warehouse": setting("SNOWFLAKE_WAREHOUSE", DEFAULT_WAREHOUSE),
    }
    if env.get("SNOWFLAKE_CONNECTION_NAME"):
        return SnowflakeConnection(connection_name=dg.EnvVar("SNOWFLAKE_CONNECTION_NAME"), **names)
    optional = {
        "role": "SNOWFLAKE_ROLE",
        "private_key_path": "SNOWFLAKE_PRIVATE_KEY_PATH",
        "private_key_password": "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    }
    auth = {k: dg.EnvVar(v) for k, v in optional.items() if env.get(v)}
    if not env.get("SNOWFLAKE_PRIVATE_KEY_PATH"):
        auth["password"] = dg.EnvVar("SNOWFLAKE_PASSWORD")
    # Non-secret endpoint overrides (PrivateLink hosts, a local test server).
    endpoint = {
        k: int(env[v]) if k == "port" else env[v]
        for k, v in (
            ("host", "SNOWFLAKE_HOST"),
            ("port", "SNOWFLAKE_PORT"),
            ("protocol", "SNOWFLAKE_PROTOCOL"),
        )
        if env.get(v)
    }
    if endpoint:
        auth["additional_snowflake_connection_args"] = endpoint
    # How long one request is retried, in seconds: the connector's default retries a failing
    # request without end, which would hold a process open at exit when the account is gone.
    auth["network_timeout"] = int(env.get("SNOWFLAKE_NETWORK_TIMEOUT") or NETWORK_TIMEOUT_S)
    resource = SnowflakeResource(
        account=dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        user=dg.EnvVar("SNOWFLAKE_USER"),
        database=names["database"],
        schema=names["schema_name"],
        warehouse=names["warehouse"],
        **auth,
    )
    return SnowflakeConnection(resource=resource, **names)


def snowflake_resources(env: dict) -> dict:
    """Stage, store and compute on Snowflake; nothing connects until a run uses them."""
    from .resources.compute import SnowflakeMLJobCompute
    from .resources.librispeech_source import LibriSpeechSource
    from .resources.stage import SnowflakeStage
    from .resources.warehouse import SnowflakeStore

    connection = snowflake_connection(env)
    home = Path(env.get("AUDIO_PIPELINE_HOME") or ".audio_pipeline").expanduser().resolve()
    return {
        "stage": SnowflakeStage(connection=connection),
        "store": SnowflakeStore(connection=connection),
        "compute": SnowflakeMLJobCompute(
            connection=connection,
            # nodes per transcription job (the pool's MAX_NODES bounds it)
            target_instances=int(env.get("AUDIO_PIPELINE_JOB_NODES", "5")),
        ),
        "librispeech_source": LibriSpeechSource(
            mirror=env.get("LIBRISPEECH_MIRROR") or OPENSLR_BASE_URL,
            work_dir=str(home / "librispeech"),
            run_as_job=env.get("AUDIO_PIPELINE_INGEST_AS_JOB", "0").lower() in ("1", "true"),
        ),
        "new_files": new_files_settings(env, "snowflake"),
    }
