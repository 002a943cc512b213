"""LibriSpeech: the subset catalogue, resumable verified downloads, safe extraction, layout.

Subsets come from openslr resource 12 (``<base>/<subset>.tar.gz``), from a local mirror directory
holding the tarball or an extracted ``LibriSpeech/<subset>/`` tree, or, for ``sample``, from the
synthetic corpus bundled with this package (see :mod:`tools.sample_corpus`). A local
mirror folder may also hold subsets the catalogue does not list (``LibriSpeech/dev-real/``): they
become partitions too (:func:`subset_names`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

OPENSLR_BASE_URL = "https://www.openslr.org/resources/12"
SAMPLE_SUBSET = "sample"
BUNDLED_ROOT = Path(__file__).parents[1] / "data" / "LibriSpeech"


@dataclass(frozen=True)
class Subset:
    name: str
    md5: str | None
    size_bytes: int | None
    utterances: int

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.name}.tar.gz"


# md5s from openslr's md5sum.txt; sizes from the resource listing (progress totals only).
CATALOGUE: dict[str, Subset] = {
    s.name: s
    for s in (
        Subset("dev-clean", "42e2234ba48799c1f50f24a7926300a1", 337_926_286, 2703),
        Subset("dev-other", "c8d0bcc9cca99d4f8b62fcc847357931", 314_305_928, 2864),
        Subset("test-clean", "32fa31d27d2e1cad72775fee3f4849a9", 346_663_984, 2620),
        Subset("test-other", "fb5a50374b501bb3bac4815ee91d3135", 328_757_843, 2939),
        Subset("train-clean-100", "2a93770f6d5c6c964bc36631d331a522", 6_387_309_499, 28539),
        Subset("train-clean-360", "c0e676e450a7ff2f54aeade5171606fa", 23_049_477_885, 104014),
        Subset("train-other-500", "d1a0fd59409feb2c614ce4d30c387708", 30_593_501_606, 148688),
        Subset(SAMPLE_SUBSET, None, None, 22),
    )
}


class LibriSpeechError(RuntimeError):
    """A subset cannot be fetched, verified or extracted."""


@dataclass(frozen=True)
class Utterance:
    utterance_id: str
    speaker: str
    chapter: str
    audio: Path  # absolute path of the FLAC
    relative_path: str  # "<subset>/<speaker>/<chapter>/<id>.flac"


_SUBSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def mirror_subsets(mirror: str | None) -> list[str]:
    """Subsets a local mirror folder holds beyond the catalogue: ``LibriSpeech/<name>/`` trees
    with at least one ``<speaker>/<chapter>/*.flac`` (URLs and missing folders give none)."""
    if not mirror or urlparse(mirror).scheme in ("http", "https"):
        return []
    parsed = urlparse(mirror)
    root = Path(parsed.path if parsed.scheme == "file" else mirror).expanduser() / "LibriSpeech"
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir()
        and d.name not in CATALOGUE
        and _SUBSET_NAME.match(d.name)
        and next(d.glob("*/*/*.flac"), None) is not None
    )


def subset_names(mirror: str | None = None) -> list[str]:
    """The catalogue's subsets, then the extra ones of a local ``mirror`` folder."""
    return list(CATALOGUE) + mirror_subsets(mirror)


def get_subset(name: str, mirror: str | None = None) -> Subset:
    if name in CATALOGUE:
        return CATALOGUE[name]
    if name in mirror_subsets(mirror):
        return Subset(name, None, None, 0)  # a local tree: nothing to download or verify
    raise LibriSpeechError(
        f"unknown LibriSpeech subset {name!r}; choose one of {', '.join(subset_names(mirror))}"
    )


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    expected_md5: str | None,
    *,
    timeout_s: float = 60.0,
    attempts: int = 5,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``.part`` file, then verify its md5.

    A mismatching download is deleted, so that the next attempt starts clean.
    """
    import requests
    from tqdm import tqdm

    if dest.exists() and (expected_md5 is None or md5_of(dest) == expected_md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for _ in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as r:
                if r.status_code == 416:  # already complete
                    break
                r.raise_for_status()
                if have and r.status_code != 206:  # server ignored Range: start over
                    have = 0
                total = int(r.headers.get("Content-Length", 0)) + have or None
                mode = "ab" if have else "wb"
                with (
                    open(part, mode) as f,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        disable=not progress,
                        desc=dest.name,
                    ) as bar,
                ):
                    for block in r.iter_content(chunk_size=1 << 16):
                        f.write(block)
                        bar.update(len(block))
            break
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            last_error = exc
            continue
        except requests.HTTPError as exc:
            raise LibriSpeechError(f"download of {url} failed: {exc}") from exc
    else:
        raise LibriSpeechError(f"download of {url} failed after {attempts} attempts: {last_error}")
    if expected_md5 is not None:
        actual = md5_of(part)
        if actual != expected_md5:
            part.unlink()
            raise LibriSpeechError(
                f"md5 mismatch for {url}: expected {expected_md5}, found {actual}; "
                f"removed the corrupt download {part}. Run again to download it afresh."
            )
    part.rename(dest)
    return dest


def verify_tarball(path: Path, expected_md5: str | None) -> None:
    if expected_md5 is not None:
        actual = md5_of(path)
        if actual != expected_md5:
            raise LibriSpeechError(
                f"md5 mismatch for {path}: expected {expected_md5}, found {actual}; "
                "the file is left as it is (it is the mirror's): replace it"
            )


def extract(tarball: Path, dest: Path) -> Path:
    """Extract ``tarball`` into ``dest`` atomically, refusing links and paths that escape.

    Returns ``dest``. Extraction goes to a temporary sibling first: a corrupt archive leaves
    nothing behind.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        staging = Path(tmp) / "x"
        staging.mkdir()
        try:
            with tarfile.open(tarball, "r:*") as tar:
                for member in tar:
                    if member.islnk() or member.issym():
                        raise LibriSpeechError(f"{tarball}: link member {member.name!r} refused")
                    tar.extract(member, staging, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise LibriSpeechError(f"{tarball} is not a valid tar.gz archive: {exc}") from exc
        staging.rename(dest)
    return dest


def find_subset_tree(root: Path, subset: str) -> Path | None:
    """Locate ``<subset>/`` under an extracted mirror: ``LibriSpeech/<subset>`` or ``<subset>``."""
    for candidate in (root / "LibriSpeech" / subset, root / subset):
        if candidate.is_dir():
            return candidate
    return None


def fetch_subset(
    subset: str, mirror: str, work_dir: Path, *, md5: str | None = None, progress: bool = True
) -> Path:
    """Return the directory of the extracted subset (``.../LibriSpeech/<subset>``).

    Args:
        subset: a catalogue name.
        mirror: base URL (http, https, file) or local directory.
        work_dir: where downloads and extractions are kept.
        md5: overrides the catalogue checksum (mirrors that repackage the tarballs).
    """
    info = get_subset(subset, mirror)
    if subset == SAMPLE_SUBSET:
        tree = find_subset_tree(BUNDLED_ROOT, subset)
        if tree is None:
            raise LibriSpeechError(f"bundled sample corpus missing under {BUNDLED_ROOT}")
        return tree
    expected = md5 or info.md5
    parsed = urlparse(mirror)
    if parsed.scheme in ("http", "https"):
        tarball = download(
            info.url(mirror),
            work_dir / "downloads" / f"{subset}.tar.gz",
            expected,
            progress=progress,
        )
    else:
        local = Path(parsed.path if parsed.scheme == "file" else mirror).expanduser()
        if not local.is_dir():
            raise LibriSpeechError(
                f"LIBRISPEECH_MIRROR: no directory {local}. Point it at a directory holding "
                f"{subset}.tar.gz or LibriSpeech/{subset}/, or at a URL serving {subset}.tar.gz"
            )
        tree = find_subset_tree(local, subset)
        if tree is not None:
            return tree
        tarball = local / f"{subset}.tar.gz"
        if not tarball.is_file():
            raise LibriSpeechError(
                f"{local} holds neither LibriSpeech/{subset}/ nor {subset}.tar.gz"
            )
        verify_tarball(tarball, expected)
    extracted = extract(tarball, work_dir / "extracted" / f"{subset}-{expected or 'nomd5'}")
    tree = find_subset_tree(extracted, subset)
    if tree is None:
        shutil.rmtree(extracted, ignore_errors=True)
        raise LibriSpeechError(f"{tarball} does not contain LibriSpeech/{subset}/")
    return tree


def parse_transcripts(path: Path) -> dict[str, str]:
    """Read a ``<speaker>-<chapter>.trans.txt`` file: ``{utterance_id: text}``."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        utt, _, text = line.strip().partition(" ")
        if not text:
            raise LibriSpeechError(f"{path}:{n}: expected '<utterance-id> <text>'")
        out[utt] = text
    return out


def iter_utterances(tree: Path) -> Iterator[Utterance]:
    """Yield every FLAC of a subset tree laid out ``<speaker>/<chapter>/<id>.flac``.

    Hidden files (macOS ``._*`` resource forks that tar copies along) are not utterances.
    """
    subset = tree.name
    for flac in sorted(tree.glob("*/*/*.flac")):
        if any(part.startswith(".") for part in flac.relative_to(tree).parts):
            continue
        chapter_dir = flac.parent
        yield Utterance(
            utterance_id=flac.stem,
            speaker=chapter_dir.parent.name,
            chapter=chapter_dir.name,
            audio=flac,
            relative_path=f"{subset}/{chapter_dir.parent.name}/{chapter_dir.name}/{flac.name}",
        )


@dataclass
class Manifest:
    """A subset's ``audio_files`` and ``reference_transcripts`` rows."""

    files: list[dict]
    references: list[dict]
    utterances: list[Utterance]

    @property
    def total_bytes(self) -> int:
        return sum(r["size_bytes"] for r in self.files)


def build_manifest(tree: Path, batch_key: str) -> Manifest:
    """The manifest and reference rows of a subset tree: the one place they are built, for the
    ``librispeech_audio`` asset and the ingest job alike. Reads no audio header (a corrupt FLAC is
    registered like any other and becomes an error row when transcribed); hashes each file in
    this bulk pass, so the manifest knows its content."""
    from .sinks import manifest_row

    utterances = list(iter_utterances(tree))
    source = f"librispeech:{tree.name}"
    files = [
        manifest_row(u.relative_path, u.audio.stat().st_size, batch_key, source, md5_of(u.audio))
        for u in utterances
    ]
    references = [
        {"utterance_id": u, "file_path": p, "text": t} for u, p, t in iter_references(tree)
    ]
    return Manifest(files, references, utterances)


def iter_references(tree: Path) -> Iterator[tuple[str, str, str]]:
    """Yield ``(utterance_id, stage-relative FLAC path, text)`` from the trans.txt files."""
    subset = tree.name
    for trans in sorted(tree.glob("*/*/*.trans.txt")):
        if any(part.startswith(".") for part in trans.relative_to(tree).parts):
            continue
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        for utt, text in parse_transcripts(trans).items():
            yield utt, f"{subset}/{speaker}/{chapter}/{utt}.flac", text
