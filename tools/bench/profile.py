"""``make bench-profile``: where the time of one transcription job goes, on real speech.

Runs the stages of the payload in this process on the bench corpus, with the actor's settings
(ctranslate2, tiny.en int8, defaults of ``transcripts``, one actor, the threads of one of its
concurrent calls, the same calls one after another), timing each: read + decode, resample,
log-mel features, encoder, decoder, the clips redone by faster-whisper's loop, rows MERGEd into
DuckDB; the job runs that many calls at once, so each stage counts for its seconds / calls.
Then it runs the same files as one real job (``pipeline`` variant of :mod:`.throughput`) and
reports the rest of its wall time as job overhead: submission, driver start and ``ray.init``,
actor start and model load, Ray Data scheduling and the hand-over of blocks. Writes
``bench/profile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from .throughput import build_corpus, corpus_dir


def profile_stages(files, threads: int, slots: int = 1) -> dict[str, float]:
    import numpy as np
    import soundfile as sf

    from audio_pipeline.transcription import engine as eng
    from audio_pipeline.transcription.audio import SAMPLE_RATE, decode_audio
    from audio_pipeline.transcription.models import resolve_model
    from audio_pipeline.transcription.pipeline import Transcriber, rows_per_call
    from audio_pipeline.transcription.sinks import open_sink

    times: dict[str, float] = defaultdict(float)
    pcm, durations = [], []
    for f in files:
        started = time.perf_counter()
        data = Path(f.path).read_bytes()
        audio = decode_audio(data, f.path)
        times["read + decode"] += time.perf_counter() - started
        pcm.append(audio.samples)
        durations.append(audio.duration_s)
        if sf.info(f.path).samplerate != SAMPLE_RATE:  # decode_audio resampled: time it alone
            raw, rate = sf.read(f.path, dtype="float32")
            started = time.perf_counter()
            import librosa

            librosa.resample(raw, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
            times["resample"] += time.perf_counter() - started
    times.setdefault("resample", 0.0)

    model_path = resolve_model("bundled:tiny.en", "ctranslate2", None).path
    started = time.perf_counter()
    transcriber = Transcriber(
        "ctranslate2",
        model_path,
        "whisper-tiny.en",
        eng.DecodingOptions(pack=True),
        "profile",
        threads=threads,
    )
    times["model load"] = time.perf_counter() - started
    engine = transcriber.engine
    model = engine.model

    inside_loop = [False]

    def timed(name, fn, loop=False):
        def wrapper(*a, **kw):
            if inside_loop[0] and not loop:  # counted with faster-whisper's loop
                return fn(*a, **kw)
            inside_loop[0] = loop
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[name] += time.perf_counter() - t
                inside_loop[0] = False

        return wrapper

    model.feature_extractor = timed("features", model.feature_extractor)
    model.encode = timed("encoder", model.encode)
    engine._generate = timed("generate", engine._generate)
    loop = "faster-whisper loop (redone clips)"
    engine._transcribe_long = timed(loop, engine._transcribe_long, loop=True)

    from audio_pipeline.transcription.pipeline import JobSettings

    settings = JobSettings(["b"], "bundled:tiny.en", "ctranslate2", "", {}, {})
    per_call = rows_per_call(settings, len(files), slots)
    order = sorted(range(len(files)), key=lambda i: len(pcm[i]), reverse=True)
    rows = []
    started = time.perf_counter()
    for s in range(0, len(order), per_call):
        idx = order[s : s + per_call]
        batch = {
            "file_path": np.array([files[i].stage_path for i in idx], dtype=object),
            "batch_key": np.array(["b"] * len(idx), dtype=object),
            "content_version": np.ones(len(idx), dtype=np.int64),
            "content_md5": np.array([""] * len(idx), dtype=object),
            "pcm": np.array([pcm[i].tobytes() for i in idx], dtype=object),
            "duration_s": np.array([durations[i] for i in idx]),
            "rms_dbfs": np.array([-20.0] * len(idx)),
            "decode_error": np.array([""] * len(idx), dtype=object),
        }
        out = transcriber(batch)
        rows += [{k: out[k][j] for k in out} for j in range(len(idx))]
    transcribe_s = time.perf_counter() - started
    # generate = features + encoder + decoder (greedy token loop)
    times["decoder"] = max(0.0, times.pop("generate") - times["features"] - times["encoder"])
    accounted = sum(times[k] for k in ("features", "encoder", "decoder", loop))
    times["packing, token decoding, rows"] = max(0.0, transcribe_s - accounted)

    with tempfile.TemporaryDirectory() as tmp:
        sink = open_sink({"kind": "duckdb", "path": str(Path(tmp) / "w.duckdb")})
        sink.ensure_tables()
        started = time.perf_counter()
        for s in range(0, len(rows), per_call):
            sink.merge_transcripts(rows[s : s + per_call])
        times["MERGE into DuckDB"] = time.perf_counter() - started
    return dict(times)


def main(argv: list[str] | None = None) -> int:
    from audio_pipeline.transcription.pipeline import plan_actors, plan_calls

    from . import throughput

    parser = argparse.ArgumentParser(prog="python -m tools.bench.profile")
    parser.add_argument("--corpus", default=None)
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--out", default="bench/profile.json")
    args = parser.parse_args(argv)
    files = build_corpus(corpus_dir(args.corpus), 0, args.files)
    audio_s = sum(f.duration_s for f in files)
    _, threads, _ = plan_actors(os.cpu_count() or 1, 0, None, None)
    calls, call_threads = plan_calls("ctranslate2", 0, threads, None)
    stages = profile_stages(files, call_threads, calls)
    job = throughput.run(
        argparse.Namespace(
            corpus=args.corpus,
            files=args.files,
            min_minutes=0,
            large_minutes=0,
            shapes=["short"],
            rounds=1,
            variants=["pipeline"],
            object_store_mb=512,
            model="bundled:tiny.en",
            partial_out=None,
            pipeline_config="{}",
            keep_work=False,
        )
    )["shapes"]["short"]["variants"]["pipeline"]
    wall = job["median_wall_s"]
    in_job = job.get("job_wall_s") or wall
    # The job runs `calls` of these calls at once: its wall time holds 1/calls of their seconds.
    work = (sum(stages.values()) - stages["model load"]) / calls
    breakdown = {k: v if k == "model load" else v / calls for k, v in stages.items()}
    breakdown["submission + Pipes (outside the job's own clock)"] = max(0.0, wall - in_job)
    breakdown["driver start, ray.init, actor start, Ray Data scheduling (rest)"] = max(
        0.0, in_job - work - stages["model load"]
    )
    report = {
        "files": len(files),
        "audio_s": round(audio_s, 2),
        "job_wall_s": wall,
        "calls_at_once": calls,
        "threads_per_call": call_threads,
        "stages_s": {k: round(v, 2) for k, v in breakdown.items()},
        "note": "stages timed in one process, call after call, divided by the calls the job "
        "runs at once; the rest is the job's wall time minus them",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(files)} files, {audio_s:.0f} s of audio; job wall {wall:.1f} s")
    for name, secs in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"  {name:70s} {secs:7.2f} s  {100 * secs / wall:5.1f} %")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from tools import exit_on_sigterm

    exit_on_sigterm()
    sys.exit(main())
