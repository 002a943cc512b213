"""What the asset sends the payload (the Pipes extra ``job``): typed here, each default once.

The Dagster side builds a :class:`JobSettings` and sends :meth:`JobSettings.to_extras`; the payload
reads it back with :meth:`JobSettings.from_extras`, refusing unknown keys. The asset's config
takes its defaults from these dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .engine import DecodingOptions

MIB = 1024 * 1024


@dataclass
class JobSettings:
    """Everything the payload needs, sent by the asset in the Pipes extras."""

    batch_keys: list[str]
    model: str
    engine: str
    home: str
    source: dict
    sink: dict
    model_id: str | None = None
    model_path: str | None = None
    model_revision: str | None = None
    # Hub models: the stage they are copied to once and loaded from (model_stage.py); None:
    # downloaded from the Hub where they run (outside Snowflake)
    model_stage: str | None = None
    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    force: bool = False
    retry_errors: bool = False
    run_id: str = "manual"
    actors: int | None = None
    threads_per_actor: int | None = None
    calls_per_actor: int | None = None
    max_file_bytes: int = 512 * MIB
    max_duration_s: float = 4 * 3600.0
    decode_batch_size: int = 4
    long_file_s: float | None = 30.0  # longer files are cut at pauses into pieces; None: never
    piece_s: float = 28.0  # a piece's length where a pause allows it
    progress_interval_s: float = 10.0
    stall_timeout_s: float | None = 900.0

    @classmethod
    def from_extras(cls, extras: dict) -> JobSettings:
        data = dict(extras)
        data["decoding"] = DecodingOptions(**(data.get("decoding") or {}))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown job settings: {sorted(unknown)}")
        return cls(**data)

    def to_extras(self) -> dict:
        """Plain JSON values, as :meth:`from_extras` reads them."""
        return asdict(self)


def default(cls, name: str):
    """The default of dataclass field ``name`` (for configs that expose it)."""
    (f,) = [f for f in fields(cls) if f.name == name]
    return f.default
