"""``make bench``: the pipeline against faster-whisper's bare loop and the quickstart's actor.

One interleaved run on real speech (default: ``../shared/data/realspeech/LibriSpeech/dev-real``
beside the repository, or ``BENCH_DIR`` / ``--corpus``; any LibriSpeech-layout tree), in three
shapes of work (``--shapes``), each one job per variant:

* ``short``: the tree's utterances, repeated file by file until ``--min-minutes`` of audio (never
  time-stretched);
* ``long``: the long-form set (:mod:`tools.longform_corpus`: the tree's chapters joined into
  files of at least 3 minutes, references joined);
* ``large``: the utterances repeated until ``--large-minutes`` (30) of audio, in one job.

Each variant runs
in a fresh process, end to end for the job (model load and writes included; Python imports and
the warm Ray head excluded, as a running Dagster deployment has them already):

* ``pipeline``: materializing ``transcripts`` with the local profile's defaults (Ray Job through
  Dagster Pipes, model load in the actors, MERGE into DuckDB);
* ``faster_whisper``: faster-whisper's own ``transcribe`` loop, one file after another, same
  model, int8, greedy (``beam_size=1``), rows written to a JSON-lines file;
* ``seed_style``: the quickstart's actor: a Ray Data actor building a transformers ASR pipeline
  (``chunk_length_s=30``, ``batch_size=30``, ``max_new_tokens=128``, timestamps), writing each
  batch to temporary files and transcribing them (read back with libsndfile: the
  quickstart hands the paths to ffmpeg, which is not installed here); rows written to Parquet.

Peak memory is the largest sum of PSS (RSS where PSS is unreadable) over the variant's process
tree, plus every process of the Ray head for the variants that use Ray, sampled every 0.25 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from audio_pipeline.resources.compute.ray_head import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "realspeech" / "LibriSpeech" / "dev-real"
VARIANTS = ("pipeline", "faster_whisper", "seed_style")
SHAPES = ("short", "long", "large")
BATCH_KEY = "bench"
MODEL = "bundled:tiny.en"


@dataclass(frozen=True)
class BenchFile:
    path: str  # absolute path of the audio file
    stage_path: str  # path inside the bench stage (copies get their own folder)
    duration_s: float
    reference: str


def corpus_dir(explicit: str | None = None) -> Path:
    path = Path(explicit or os.environ.get("BENCH_DIR") or DEFAULT_CORPUS).expanduser()
    if not path.is_dir():
        raise SystemExit(
            f"bench corpus {path} not found: put the real-speech set at {DEFAULT_CORPUS} "
            "(a copy of shared/ beside the repository) or pass --corpus / BENCH_DIR"
        )
    return path


def build_corpus(tree: Path, min_s: float, max_files: int | None) -> list[BenchFile]:
    """The tree's utterances, then further copies of them until ``min_s`` seconds are reached."""
    import soundfile as sf

    from audio_pipeline.transcription.librispeech import iter_utterances, parse_transcripts

    refs: dict[str, str] = {}
    for trans in sorted(tree.glob("*/*/*.trans.txt")):
        refs.update(parse_transcripts(trans))
    base = [u for u in iter_utterances(tree) if u.utterance_id in refs][:max_files]
    if not base:
        raise SystemExit(f"{tree} holds no <speaker>/<chapter>/*.flac with a trans.txt reference")
    durations = {u.utterance_id: sf.info(str(u.audio)).duration for u in base}
    files: list[BenchFile] = []
    total, copy = 0.0, 0
    while not files or total < min_s:
        for u in base:
            rel = f"{u.speaker}/{u.chapter}/{u.audio.name}"
            files.append(
                BenchFile(
                    str(u.audio),
                    f"copy{copy}/{rel}",
                    durations[u.utterance_id],
                    refs[u.utterance_id],
                )
            )
            total += durations[u.utterance_id]
            if copy and total >= min_s:
                break
        copy += 1
    return files


def longform_files(tree: Path, work: Path) -> list[BenchFile]:
    """The long-form set built from ``tree`` under ``work``: whole chapters per file."""
    import soundfile as sf

    from tools.longform_corpus import build

    long_tree = build(tree, work / "longform", min_s=180)
    files = []
    for flac in sorted(long_tree.glob("*/*/*.flac")):
        reference = next(flac.parent.glob("*.trans.txt")).read_text().split(" ", 1)[1].strip()
        rel = flac.relative_to(long_tree)
        files.append(BenchFile(str(flac), f"long/{rel}", sf.info(str(flac)).duration, reference))
    return files


def shape_files(shape: str, tree: Path, work: Path, args) -> list[BenchFile]:
    if shape == "short":
        return build_corpus(tree, args.min_minutes * 60, args.files)
    if shape == "long":
        return longform_files(tree, work)
    if shape == "large":
        return build_corpus(tree, args.large_minutes * 60, args.files)
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


# --- memory ---------------------------------------------------------------------------------


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss // 1024
    except Exception:
        return 0


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]
    except psutil.Error:
        return []


class MemorySampler(threading.Thread):
    """Largest summed PSS of the process trees rooted at ``roots`` while running."""

    def __init__(self, roots: list[int], interval_s: float = 0.25):
        super().__init__(daemon=True)
        self.roots = roots
        self.interval_s = interval_s
        self.peak_kb = 0
        self._done = threading.Event()

    def sample(self) -> int:
        pids = {p for root in self.roots for p in _tree(root)}
        return sum(_pss_kb(p) for p in pids)

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, self.sample())
            self._done.wait(self.interval_s)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_kb / 1024


# --- variants (each runs in its own process: python -m ... --worker VARIANT) ----------------


def _texts_from_rows(rows: dict[str, str], files: list[BenchFile], key) -> list[str]:
    return [rows.get(key(f), "") or "" for f in files]


def run_pipeline(spec: dict) -> dict:
    import dagster as dg

    from audio_pipeline.definitions import ASSETS
    from audio_pipeline.partitions import transcript_batches
    from audio_pipeline.profiles import LocalSettings, local_resources

    files = [BenchFile(**f) for f in spec["files"]]
    home = Path(spec["work"]) / "pipeline"
    settings = LocalSettings(
        home=home, mirror="unused://", ray_address=None, gcs_port=0, dashboard_port=0
    )
    resources = local_resources(settings)
    # The bench's warm head (found up, so nothing is started); the job runs this interpreter.
    resources["compute"] = type(resources["compute"])(**spec["compute"])
    stage_root = settings.stage_root
    for f in files:  # the stage as librispeech_audio leaves it (not timed)
        dest = stage_root / f.stage_path
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f.path, dest)
    store = resources["store"]
    store.ensure_tables()
    store.register_files(
        [
            {
                "file_path": f.stage_path,
                "size_bytes": os.path.getsize(f.path),
                "batch_key": BATCH_KEY,
                "source": "bench",
            }
            for f in files
        ]
    )
    store.load_references(
        [
            {"utterance_id": f"{f.stage_path}", "file_path": f.stage_path, "text": f.reference}
            for f in files
        ]
    )
    config = {"force": True, "model": spec["model"]} | spec.get("pipeline_config", {})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(transcript_batches.name, [BATCH_KEY])
        started = time.perf_counter()
        result = dg.materialize(
            ASSETS,
            selection=["transcripts"],
            partition_key=BATCH_KEY,
            resources=resources,
            instance=instance,
            run_config={"ops": {"transcripts": {"config": config}}},
            raise_on_error=False,
        )
        wall = time.perf_counter() - started
        if not result.success:
            raise SystemExit("materializing transcripts failed")
        meta = {
            k: v.value
            for k, v in result.asset_materializations_for_node("transcripts")[-1].metadata.items()
        }
    rows = dict(
        store.query(
            "SELECT file_path, text FROM transcripts WHERE status = 'ok' AND batch_key = $b",
            {"b": BATCH_KEY},
        )
    )
    errors = store.query("SELECT count(*) FROM transcripts WHERE status <> 'ok'")[0][0]
    return {
        "wall_s": wall,
        "texts": _texts_from_rows(rows, files, lambda f: f.stage_path),
        "errors": errors,
        "job_wall_s": meta.get("wall_seconds"),
    }


def run_faster_whisper(spec: dict) -> dict:
    from faster_whisper import WhisperModel

    from audio_pipeline.transcription.models import resolve_model

    files = [BenchFile(**f) for f in spec["files"]]
    model_path = resolve_model(spec["model"], "ctranslate2", spec["work"]).path
    out = Path(spec["work"]) / "faster_whisper.jsonl"
    started = time.perf_counter()
    model = WhisperModel(
        model_path, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1
    )
    texts = []
    with open(out, "w") as sink:
        for f in files:
            segments, _ = model.transcribe(f.path, beam_size=1, language="en", vad_filter=False)
            text = " ".join(s.text.strip() for s in segments).strip()
            texts.append(text)
            sink.write(json.dumps({"file_path": f.stage_path, "text": text}) + "\n")
    return {"wall_s": time.perf_counter() - started, "texts": texts, "errors": 0}


def run_seed_style(spec: dict) -> dict:
    import logging

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback head, as ours

    import pandas as pd
    import ray

    from audio_pipeline.transcription.models import resolve_model

    files = [BenchFile(**f) for f in spec["files"]]
    model_dir = resolve_model(spec["model"], "transformers", spec["work"]).path  # converted already
    out = Path(spec["work"]) / "seed_style.parquet"

    class Transcriber:  # as in the quickstart, minus the hub download
        def __init__(self):
            import torch
            from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

            model = AutoModelForSpeechSeq2Seq.from_pretrained(model_dir, dtype=torch.float32)
            processor = AutoProcessor.from_pretrained(model_dir)
            self.pipe = pipeline(
                "automatic-speech-recognition",
                model=model,
                tokenizer=processor.tokenizer,
                feature_extractor=processor.feature_extractor,
                max_new_tokens=128,
                chunk_length_s=30,
                batch_size=30,
                return_timestamps=True,
                dtype=torch.float32,
                device="cpu",
            )

        def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
            import soundfile as sf

            with tempfile.TemporaryDirectory() as tmp:
                inputs = []
                for i, data in enumerate(batch["bytes"]):
                    path = os.path.join(tmp, f"{i}.flac")
                    with open(path, "wb") as f:
                        f.write(data)
                    # The quickstart passes the paths (decoded by ffmpeg, absent here): read back.
                    audio, sr = sf.read(path, dtype="float32")
                    inputs.append({"raw": audio, "sampling_rate": sr})
                outputs = self.pipe(inputs)
            return pd.DataFrame(
                {"path": batch["path"], "outputs": [o["text"].strip() for o in outputs]}
            )

    started = time.perf_counter()
    address = f"127.0.0.1:{spec['compute']['gcs_port']}"
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.read_binary_files([f.path for f in files], include_paths=True)
    ds = ds.map_batches(
        Transcriber, batch_size=30, batch_format="pandas", concurrency=1, num_cpus=1
    )
    frame = ds.to_pandas()
    frame.to_parquet(out)
    wall = time.perf_counter() - started
    ray.shutdown()
    by_path: dict[str, list[str]] = {}
    for path, text in zip(frame["path"], frame["outputs"], strict=True):
        by_path.setdefault(path.lstrip("/"), []).append(text)
    texts = [by_path[f.path.lstrip("/")].pop() for f in files]
    return {"wall_s": wall, "texts": texts, "errors": 0}


WORKERS = {
    "pipeline": run_pipeline,
    "faster_whisper": run_faster_whisper,
    "seed_style": run_seed_style,
}


# --- driver ---------------------------------------------------------------------------------


def _run_variant(variant: str, spec_path: Path, ray_roots: list[int], result_path: Path) -> dict:
    cmd = [sys.executable, "-m", "tools.bench.throughput", "--worker", variant]
    cmd += ["--spec", str(spec_path), "--result", str(result_path)]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    log_path = result_path.with_suffix(".log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = MemorySampler([proc.pid] + (ray_roots if variant != "faster_whisper" else []))
    sampler.start()
    rc = proc.wait()
    peak_mb = sampler.stop()
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"bench variant {variant} failed with exit code {rc}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["peak_memory_mb"] = peak_mb
    return result


def run(args) -> dict:
    from audio_pipeline.profiles import LocalSettings, local_resources
    from audio_pipeline.transcription.models import resolve_model
    from audio_pipeline.transcription.quality import corpus_wer

    tree = corpus_dir(args.corpus)
    work = Path(tempfile.mkdtemp(prefix="audio-bench-"))
    try:
        shapes = {shape: shape_files(shape, tree, work, args) for shape in args.shapes}
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    variants = [v for v in VARIANTS if v in args.variants]
    for shape, files in shapes.items():
        audio_s = sum(f.duration_s for f in files)
        print(f"shape {shape}: {len(files)} files, {audio_s / 60:.1f} min of audio", flush=True)
    print(
        f"corpus {tree}; variants {', '.join(variants)}; {args.rounds} round(s); work dir {work}",
        flush=True,
    )
    # A Ray temp dir of its own: a job's driver finds its cluster through
    # <temp dir>/ray_current_cluster, which every head on the machine sharing /tmp/ray rewrites.
    ray_tmp = Path(tempfile.mkdtemp(prefix="apb-"))
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    settings = LocalSettings(
        home=work / "ray-home", mirror="unused://", ray_address=None, gcs_port=0, dashboard_port=0
    )
    base = local_resources(settings)["compute"]
    compute = type(base)(
        home=str(settings.home),
        gcs_port=free_port(),
        dashboard_port=free_port(),
        object_store_memory_mb=args.object_store_mb,
    )
    results: dict[str, dict[str, list[dict]]] = {s: {v: [] for v in variants} for s in shapes}
    idle_ray_mb = 0.0

    def report() -> dict:
        return {
            "model": args.model,
            "cpus": os.cpu_count(),
            "ray_head_idle_mb": round(idle_ray_mb, 1),
            "shapes": {
                shape: summarize(results[shape], files, tree, args)
                for shape, files in shapes.items()
            },
        }

    try:
        # One-time conversion / assembly of the weights, not timed.
        resolve_model(args.model, "ctranslate2", work)
        if "seed_style" in variants:
            resolve_model(args.model, "transformers", work)
        compute.ensure_pool()  # a warm head, as transcription_compute_pool leaves it
        head_pid = int(compute.head.pid_file.read_text())
        idle_ray_mb = MemorySampler([head_pid]).sample() / 1024  # before any job
        for r in range(args.rounds):
            for shape, files in shapes.items():
                if shape == "large" and r >= args.large_rounds:
                    continue  # one job of 30 minutes is its own average
                audio_s = sum(f.duration_s for f in files)
                spec = {
                    "files": [f.__dict__ for f in files],
                    "work": str(work / shape),
                    "ray_address": compute.dashboard_url,
                    "model": args.model,
                    "pipeline_config": json.loads(args.pipeline_config),
                    "compute": {
                        "home": compute.home,
                        "gcs_port": compute.gcs_port,
                        "dashboard_port": compute.dashboard_port,
                    },
                }
                (work / shape).mkdir(exist_ok=True)
                spec_path = work / shape / "spec.json"
                spec_path.write_text(json.dumps(spec))
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for variant in order:
                    out = work / shape / f"{variant}-{r}.json"
                    load = os.getloadavg()[0]
                    res = _run_variant(variant, spec_path, [head_pid], out)
                    texts = zip(files, res["texts"], strict=True)
                    wer = corpus_wer((f.reference, t) for f, t in texts)
                    res |= {"round": r, "wer": wer, "x_real_time": audio_s / res["wall_s"]}
                    res["load_1m"] = round(max(load, os.getloadavg()[0]), 2)
                    results[shape][variant].append(res)
                    print(
                        f"round {r + 1}/{args.rounds} {shape:5s} {variant:15s} "
                        f"wall {res['wall_s']:7.1f} s  x-real-time {res['x_real_time']:6.2f}  "
                        f"WER {wer * 100:5.2f} %  peak {res['peak_memory_mb']:6.0f} MB  "
                        f"load {res['load_1m']:.1f}",
                        flush=True,
                    )
            if args.partial_out:
                Path(args.partial_out).write_text(json.dumps(report(), indent=2) + "\n")
    finally:
        compute.stop()
        if args.keep_work:
            print(f"kept {work} and {ray_tmp}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(ray_tmp, ignore_errors=True)
    return report()


def summarize(results, files, tree, args) -> dict:
    """One shape's figures: per variant medians, peak memory and machine load; ratios."""
    audio_s = sum(f.duration_s for f in files)
    results = {v: runs for v, runs in results.items() if runs}
    summary = {}
    for variant, runs in results.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        summary[variant] = {
            "median_wall_s": round(wall, 2),
            "x_real_time": round(audio_s / wall, 2),
            "wer": round(statistics.median(r["wer"] for r in runs), 5),
            "peak_memory_mb": round(max(r["peak_memory_mb"] for r in runs), 1),
            "errors": max(r["errors"] for r in runs),
            "walls_s": [round(r["wall_s"], 2) for r in runs],
            "load_1m": [r.get("load_1m") for r in runs],
        }
        job_walls = [r["job_wall_s"] for r in runs if r.get("job_wall_s")]
        if job_walls:  # the payload's own clock (pipeline): submission and Pipes excluded
            summary[variant]["job_wall_s"] = round(statistics.median(job_walls), 2)
    ratios = {}
    if "pipeline" in summary:
        for other in ("faster_whisper", "seed_style"):
            if other in summary:
                ratios[f"pipeline_over_{other}"] = round(
                    summary["pipeline"]["x_real_time"] / summary[other]["x_real_time"], 3
                )
    return {
        "corpus": {
            "path": str(tree),
            "name": tree.name,
            "files": len(files),
            "unique_files": len({f.path for f in files}),
            "audio_s": round(audio_s, 2),
        },
        "rounds": min(len(runs) for runs in results.values()) if results else 0,
        "variants": summary,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.throughput")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--corpus", default=None, help="a LibriSpeech-layout subset folder")
    parser.add_argument("--files", type=int, default=None, help="use only the first N files")
    parser.add_argument("--min-minutes", type=float, default=10.0, help="short clips' audio")
    parser.add_argument("--large-minutes", type=float, default=30.0, help="the large job's audio")
    parser.add_argument(
        "--large-rounds", type=int, default=1, help="rounds of the large shape (at most --rounds)"
    )
    parser.add_argument("--shapes", default=",".join(SHAPES), help="short, long, large")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--pipeline-config",
        default="{}",
        help="the pipeline variant's transcripts config, JSON (e.g. '{\"actors\": 2}')",
    )
    parser.add_argument("--object-store-mb", type=int, default=512)
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the work dir (each variant's log)"
    )
    parser.add_argument("--model", default=MODEL, help="model reference (seed_style: English-only)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        Path(args.result).write_text(json.dumps(WORKERS[args.worker](spec)))
        return 0
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.shapes = [v.strip() for v in args.shapes.split(",") if v.strip()]
    if set(args.shapes) - set(SHAPES):
        parser.error(f"unknown shapes {args.shapes}; choose from {', '.join(SHAPES)}")
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    args.partial_out = str(out) if args.rounds > 1 else None  # rewritten after every round
    report = run(args)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for shape, figures in report["shapes"].items():
        print(
            shape, json.dumps({k: figures[k] for k in ("corpus", "variants", "ratios")}, indent=2)
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from tools import exit_on_sigterm

    exit_on_sigterm()
    sys.exit(main())
