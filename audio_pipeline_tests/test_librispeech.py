"""Ingest against a tarball served over HTTP on 127.0.0.1 (openslr itself is unreachable here)."""

import io
import tarfile

import dagster as dg
import pytest

from audio_pipeline.definitions import ASSETS
from audio_pipeline.partitions import transcript_batches
from audio_pipeline.transcription import librispeech

from .helpers import SAMPLE_TREE, make_resources, make_subset_tarball


def ingest(resources, instance, subset="dev-clean"):
    return dg.materialize(
        ASSETS,
        selection=["librispeech_audio"],
        partition_key=subset,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def test_ingest_from_http_mirror_verifies_md5_and_fills_stage_and_tables(
    http_mirror, home, instance
):
    base, www, handler = http_mirror
    md5 = make_subset_tarball(www / "dev-clean.tar.gz", "dev-clean", n_chapters=2)
    res = make_resources(home, mirror=base, md5=md5)
    result = ingest(res, instance)
    assert result.success
    meta = result.asset_materializations_for_node("librispeech_audio")[0].metadata
    assert meta["files"].value == 8 and meta["copied"].value == 8
    assert meta["audio_hours"].value > 0
    staged = sorted(f.path for f in res["stage"].list_files())
    assert len(staged) == 8 and all(p.startswith("dev-clean/1001/") for p in staged)
    rows = res["store"].query("SELECT batch_key, count(*) FROM audio_files GROUP BY 1")
    assert rows == [("librispeech-dev-clean", 8)]
    refs = res["store"].query(
        "SELECT count(*) FROM reference_transcripts r JOIN audio_files f USING (file_path)"
    )
    assert refs == [(8,)]
    assert instance.get_dynamic_partitions(transcript_batches.name) == ["librispeech-dev-clean"]
    # Second run: the download is cached and verified, every file is skipped as identical.
    again = ingest(res, instance)
    meta2 = again.asset_materializations_for_node("librispeech_audio")[0].metadata
    assert meta2["copied"].value == 0 and meta2["skipped_existing"].value == 8
    assert [p for p, _ in handler.requests_seen] == ["/dev-clean.tar.gz"]


def test_corrupted_tarball_is_rejected_and_nothing_is_copied(http_mirror, home, instance):
    base, www, _ = http_mirror
    good = make_subset_tarball(www / "dev-clean.tar.gz", "dev-clean", n_chapters=1)
    data = bytearray((www / "dev-clean.tar.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (www / "dev-clean.tar.gz").write_bytes(bytes(data))
    res = make_resources(home, mirror=base, md5=good)
    result = ingest(res, instance)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "md5 mismatch" in failure.to_string() and good in failure.to_string()
    assert list(res["stage"].list_files()) == []
    assert not (home / "librispeech" / "downloads" / "dev-clean.tar.gz").exists()
    assert not (home / "librispeech" / "downloads" / "dev-clean.tar.gz.part").exists()
    assert instance.get_dynamic_partitions(transcript_batches.name) == []


def test_download_resumes_after_a_dropped_connection(http_mirror, tmp_path):
    base, www, handler = http_mirror
    md5 = make_subset_tarball(www / "dev-other.tar.gz", "dev-other", n_chapters=1)
    handler.drop_after = 200_000
    dest = tmp_path / "dl" / "dev-other.tar.gz"
    librispeech.download(f"{base}/dev-other.tar.gz", dest, md5, progress=False)
    assert librispeech.md5_of(dest) == md5
    ranges = [r for _, r in handler.requests_seen]
    assert ranges[0] is None and ranges[1].startswith("bytes=")
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 200_000 and len(ranges) == 2


def test_local_mirror_with_extracted_tree(sample_copy, home, instance):
    res = make_resources(home, mirror=str(sample_copy.parent.parent))
    # "sample" always comes from the bundle; an extracted mirror tree serves the real subsets.
    renamed = sample_copy.parent / "test-other"
    sample_copy.rename(renamed)
    result = ingest(res, instance, subset="test-other")
    assert result.success
    assert len(list(res["stage"].list_files("test-other"))) == 22


def test_local_mirror_tarball_is_md5_checked(tmp_path, home, instance):
    mirror = tmp_path / "m"
    mirror.mkdir()
    make_subset_tarball(mirror / "test-clean.tar.gz", "test-clean", n_chapters=1)
    res = make_resources(home, mirror=str(mirror))  # catalogue md5: the real archive's
    result = ingest(res, instance, subset="test-clean")
    assert not result.success
    assert (
        "md5 mismatch" in result.get_step_failure_events()[0].event_specific_data.error.to_string()
    )


def test_extraction_refuses_escaping_members(tmp_path):
    bad = tmp_path / "evil.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises((librispeech.LibriSpeechError, tarfile.TarError)):
        librispeech.extract(bad, tmp_path / "out" / "x")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "x").exists()

    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("LibriSpeech/dev-clean/passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(librispeech.LibriSpeechError, match="link member"):
        librispeech.extract(link, tmp_path / "out" / "y")


def test_transcript_parsing_and_layout():
    tree = SAMPLE_TREE
    utts = list(librispeech.iter_utterances(tree))
    refs = list(librispeech.iter_references(tree))
    assert len(utts) == len(refs) == 22
    assert {u.relative_path for u in utts} == {p for _, p, _ in refs}
    assert all(t == t.upper() for _, _, t in refs)
    with pytest.raises(librispeech.LibriSpeechError, match="unknown LibriSpeech subset"):
        librispeech.get_subset("dev-dirty")
