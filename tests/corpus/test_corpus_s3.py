"""Corpus sources and outputs in S3 (``videomt_cli.corpus.remote``), against moto's S3 server on
127.0.0.1 (started and stopped by this module), through the real s3fs client.

- A bucket corpus (two videos, a bad one) run by the local backend into a bucket: each output
  object is byte for byte what a local run writes, the manifest in the bucket is readable and
  names the URLs (never the temporary copies), resume skips, a changed object is redone, no
  temporary copies stay behind.
- Expansion: prefixes searched by the folder rule (a frame-folder prefix is one video, hidden
  names and the output prefix skipped), globs, an ``@list`` in the bucket, a missing URL.
- No partial objects: a video failing mid-run, an upload failing (an injected error in the
  client's put), a PNG folder whose upload fails after its first file: nothing at the
  destination (a PNG folder without ``meta.json`` is removed), and the rerun completes.
- The output prefix rules (an object, a prefix holding inputs or objects videomt did not write,
  a second run on this machine), the CLI (``videomt segment s3://.../in/ -o s3://.../out/``),
  and the missing-extra message.

The endpoint reaches s3fs the way users give it, ``AWS_ENDPOINT_URL`` (botocore reads it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from media import make_image_folder, make_video  # noqa: E402
from videomt_cli.corpus import MANIFEST_NAME, CorpusProgress, Record, expand_sources, is_corpus, output_names, \
    run_corpus  # noqa: E402
from videomt_cli.corpus.remote import StoreFolder, is_url  # noqa: E402
from videomt_cli.errors import InputError, OutputError  # noqa: E402
from videomt_cli.inference.predictor import Predictor  # noqa: E402

SIZE = (96, 64)


@pytest.fixture(scope="module")
def s3():
    """moto's S3 on 127.0.0.1 (a free port), dummy credentials, the endpoint in ``AWS_ENDPOINT_URL``;
    yields an s3fs file system on it."""
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield s3fs.S3FileSystem()
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


@pytest.fixture
def bucket(s3):
    name = f"vmt-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_model(None, device="cpu")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR for this test alone: the local copies and outputs must not outlive the run."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def video(path, frames: int = 3) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_video(path, frames=frames, size=SIZE)


def upload_corpus(s3, bucket: str, root: Path) -> Path:
    """``in/cam1/walk.mp4``, ``in/cam2/walk.mp4`` (4 frames), ``in/cam2/notes.mp4`` (text) locally
    and under ``s3://bucket/in/``."""
    video(root / "cam1" / "walk.mp4")
    video(root / "cam2" / "walk.mp4", frames=4)
    (root / "cam2" / "notes.mp4").write_text("this is not a video\n")
    s3.put(str(root) + "/", f"{bucket}/in/", recursive=True)
    return root


def objects(s3, prefix: str) -> dict[str, bytes]:
    s3.invalidate_cache()
    return {k[len(prefix) + 1:]: s3.cat_file(k) for k in s3.find(prefix)}


def manifest_records(s3, prefix: str) -> list[Record]:
    s3.invalidate_cache()
    return [Record.from_json(json.loads(line)) for line in s3.cat_file(f"{prefix}/{MANIFEST_NAME}").splitlines()]


# ----------------------------------------------------------------------------- a bucket corpus


def test_a_bucket_corpus_writes_the_local_bytes_into_the_bucket_and_resumes(s3, bucket, predictor, tmp_path,
                                                                            private_tmp):
    root = upload_corpus(s3, bucket, tmp_path / "in")
    out = f"s3://{bucket}/out/"
    records = run_corpus([f"s3://{bucket}/in/"], out, predictor=predictor)
    assert [(r.output, r.status) for r in records] == [("cam1/walk.json", "ok"), ("cam2/notes.json", "failed"),
                                                       ("cam2/walk.json", "ok")]
    assert [r.source for r in records] == [f"s3://{bucket}/in/cam1/walk.mp4", f"s3://{bucket}/in/cam2/notes.mp4",
                                           f"s3://{bucket}/in/cam2/walk.mp4"]
    bad = records[1].error
    assert bad.startswith(f"s3://{bucket}/in/cam2/notes.mp4 is not a video PyAV/FFmpeg can read")
    assert "videomt-src-" not in bad and "\n" not in bad  # the URL, never the temporary copy

    # The objects are byte for byte what the local backend writes from the same videos.
    local = tmp_path / "local"
    reference = {r.output: r for r in run_corpus([root], local, predictor=predictor)}
    got = objects(s3, f"{bucket}/out")
    assert sorted(got) == ["cam1/walk.json", "cam2/walk.json", MANIFEST_NAME]
    for name in ("cam1/walk.json", "cam2/walk.json"):
        assert got[name] == (local / name).read_bytes(), name
        assert records[[r.output for r in records].index(name)].segments == reference[name].segments

    # The manifest in the bucket holds the same records (timings aside) and the objects' stamps.
    in_bucket = manifest_records(s3, f"{bucket}/out")
    assert in_bucket == records
    info = s3.info(f"{bucket}/in/cam1/walk.mp4")
    assert in_bucket[0].stamp == f"{info['size']}-{info['ETag'].strip(chr(34))}"
    assert sorted(os.listdir(private_tmp)) == ["videomt-locks"]  # no copy of a video or output left

    # Resume: skipped, objects untouched; a changed object and a deleted output run again.
    before = {k: s3.info(f"{bucket}/out/{k}")["ETag"] for k in ("cam1/walk.json", "cam2/walk.json")}
    again = run_corpus([f"s3://{bucket}/in/"], out, predictor=predictor)
    assert [r.status for r in again] == ["skipped", "failed", "skipped"]
    s3.invalidate_cache()
    assert {k: s3.info(f"{bucket}/out/{k}")["ETag"] for k in before} == before
    video(root / "cam1" / "walk.mp4", frames=5)
    s3.put_file(str(root / "cam1" / "walk.mp4"), f"{bucket}/in/cam1/walk.mp4")
    s3.rm_file(f"{bucket}/out/cam2/walk.json")
    redone = run_corpus([f"s3://{bucket}/in/"], out, predictor=predictor)
    assert [(r.status, r.frames) for r in redone] == [("ok", 5), ("failed", 0), ("ok", 4)]
    assert [r.status for r in manifest_records(s3, f"{bucket}/out")] == \
        ["ok", "failed", "ok", "skipped", "failed", "skipped", "ok", "failed", "ok"]


def test_store_urls_expand_like_folders(s3, bucket, tmp_path):
    root = tmp_path / "data"
    video(root / "b.mp4")
    video(root / "a10.mkv")
    video(root / "deep" / "er" / "c.webm")
    make_image_folder(root / "clip", n=2)
    (root / ".hidden.mp4").write_text("skipped")
    (root / "notes.txt").write_text("skipped")
    (root / "out" / "old.mp4").parent.mkdir()
    (root / "out" / "old.mp4").write_text("the output prefix is never searched")
    s3.put(str(root) + "/", f"{bucket}/data/", recursive=True)
    s3.pipe_file(f"{bucket}/list.txt", f"# urls\ns3://{bucket}/data/b.mp4\ns3://{bucket}/gone.mp4\n".encode())

    items = expand_sources([f"s3://{bucket}/data/", f"s3://{bucket}/data/*.mkv", f"@s3://{bucket}/list.txt",
                            f"s3://{bucket}/nothing/*.mp4"], exclude=f"s3://{bucket}/data/out/")
    url = f"s3://{bucket}/data"
    assert [(i.path, i.kind) for i in items] == [
        (f"{url}/a10.mkv", "file"), (f"{url}/b.mp4", "file"), (f"{url}/clip", "folder"),
        (f"{url}/deep/er/c.webm", "file"), (f"s3://{bucket}/gone.mp4", "none"), (None, "none")]
    assert all(i.stamp for i in items[:4]) and items[2].stamp.startswith("prefix-")
    assert items[4].error.endswith("does not exist: check the URL (an object or a prefix holding videos).")
    assert items[5].error == f"No object matches s3://{bucket}/nothing/*.mp4: check the pattern."
    # names under the URLs' common root, as for local folders
    assert output_names(items, "ytvis") == ["data/a10.json", "data/b.json", "data/clip.json",
                                            "data/deep/er/c.json", "gone.json", None]
    assert is_corpus([f"s3://{bucket}/data/b.mp4"]) and is_url(f"s3://{bucket}/x") and not is_url("https://h/v.mp4")


def test_a_frame_folder_prefix_runs_as_one_video(s3, bucket, predictor, tmp_path, private_tmp):
    frames = make_image_folder(tmp_path / "clip", n=3, size=SIZE)
    s3.put(str(frames) + "/", f"{bucket}/in/clip/", recursive=True)
    video(tmp_path / "v.mp4")
    s3.put_file(str(tmp_path / "v.mp4"), f"{bucket}/in/v.mp4")
    records = run_corpus([f"s3://{bucket}/in/"], f"s3://{bucket}/out", predictor=predictor, fmt="coco")
    assert [(r.output, r.status, r.frames) for r in records] == [("clip.json", "ok", 3), ("v.json", "ok", 3)]
    coco = json.loads(s3.cat_file(f"{bucket}/out/clip.json"))
    assert coco["videos"][0]["name"] == f"s3://{bucket}/in/clip"  # the result names the URL, not the copy
    assert sorted(os.listdir(private_tmp)) == ["videomt-locks"]


# ----------------------------------------------------------------------------- no partial objects


def patch_put(monkeypatch, put) -> None:
    """Replace s3fs' upload; file systems made from now on use it (s3fs caches its instances, and
    each binds its methods when made)."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", put)
    s3fs.S3FileSystem.clear_instance_cache()


def test_failures_leave_no_partial_object_and_the_rerun_completes(s3, bucket, predictor, tmp_path, private_tmp,
                                                                 monkeypatch):
    import s3fs

    upload_corpus(s3, bucket, tmp_path / "in")
    src, out = f"s3://{bucket}/in/", f"s3://{bucket}/out"

    class Crash(CorpusProgress):  # a bug in the middle of the first video
        def frames(self, done, total, pass_index, passes):
            if not hasattr(self, "once"):
                self.once = True
                raise RuntimeError("boom")

    records = run_corpus([src], out, predictor=predictor, progress=Crash())
    assert [r.status for r in records] == ["failed", "failed", "ok"]
    assert sorted(objects(s3, f"{bucket}/out")) == ["cam2/walk.json", MANIFEST_NAME]

    # The upload itself fails (the client's put raises): no object, one line naming the URL.
    real_put = s3fs.S3FileSystem._put_file

    async def failing_put(self, lpath, rpath, **kw):
        if rpath.endswith("cam1/walk.json"):
            raise ConnectionResetError("connection reset by peer")
        return await real_put(self, lpath, rpath, **kw)

    patch_put(monkeypatch, failing_put)
    records = run_corpus([src], out, predictor=predictor)
    assert [r.status for r in records] == ["failed", "failed", "skipped"]
    assert records[0].error == (f"Cannot write s3://{bucket}/out/cam1/walk.json: ConnectionResetError: connection "
                                f"reset by peer; check the URL, the endpoint and the credentials.")
    assert sorted(objects(s3, f"{bucket}/out")) == ["cam2/walk.json", MANIFEST_NAME]

    # A PNG folder is many objects: one failing after the first leaves no folder behind.
    calls = []

    async def fail_second(self, lpath, rpath, **kw):
        calls.append(rpath)
        if "/png/cam1/walk/" in rpath and len([c for c in calls if "/png/cam1/walk/" in c]) == 2:
            raise ConnectionResetError("connection reset by peer")
        return await real_put(self, lpath, rpath, **kw)

    patch_put(monkeypatch, fail_second)
    png = run_corpus([src], f"s3://{bucket}/png", predictor=predictor, fmt="png")
    assert [r.status for r in png] == ["failed", "failed", "ok"]
    left = sorted(objects(s3, f"{bucket}/png"))
    assert not [k for k in left if k.startswith("cam1/")]
    assert "cam2/walk/meta.json" in left and "cam2/walk/00000.png" in left

    patch_put(monkeypatch, real_put)
    assert [r.status for r in run_corpus([src], out, predictor=predictor)] == ["ok", "failed", "skipped"]
    assert [r.status for r in run_corpus([src], f"s3://{bucket}/png", predictor=predictor, fmt="png")] == \
        ["ok", "failed", "skipped"]
    assert sorted(os.listdir(private_tmp)) == ["videomt-locks"]


def test_the_output_prefix_rules_hold_in_a_bucket(s3, bucket, predictor, tmp_path):
    upload_corpus(s3, bucket, tmp_path / "in")
    src = f"s3://{bucket}/in/"
    s3.pipe_file(f"{bucket}/theirs/thesis.tex", b"mine")
    with pytest.raises(OutputError, match="holds objects that videomt did not write"):
        run_corpus([src], f"s3://{bucket}/theirs/", predictor=predictor)
    with pytest.raises(OutputError, match="is an object, not a prefix"):
        run_corpus([src], f"s3://{bucket}/theirs/thesis.tex", predictor=predictor)
    with pytest.raises(OutputError, match="holds the input"):
        run_corpus([src], f"s3://{bucket}/", predictor=predictor)
    assert sorted(objects(s3, f"{bucket}/theirs")) == ["thesis.tex"]
    loads = []

    def load():
        loads.append(1)
        return predictor

    with StoreFolder(f"s3://{bucket}/out/").lock():
        with pytest.raises(OutputError, match=rf"Another videomt run \(pid {os.getpid()}\) is writing to "
                                              rf"s3://{bucket}/out"):
            run_corpus([src], f"s3://{bucket}/out/", predictor=load)
    assert loads == []
    # a missing bucket: one line, at once (the empty manifest is put first)
    with pytest.raises(OutputError, match=rf"^Cannot write s3://{bucket}-gone/out/manifest.jsonl: no such bucket "
                                          rf"or container; check the URL, the endpoint and the credentials.$"):
        run_corpus([src], f"s3://{bucket}-gone/out/", predictor=load)
    assert loads == []


def test_the_cli_reads_and_writes_a_bucket(s3, bucket, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from videomt_cli import cli

    upload_corpus(s3, bucket, tmp_path / "in")
    result = CliRunner().invoke(cli.app, ["segment", f"s3://{bucket}/in/", "-o", f"s3://{bucket}/out/",
                                          "--device", "cpu", "--format", "mot"])
    assert result.exit_code == 1, result.output
    assert result.output.count("Failed:") == 1
    assert result.output.splitlines()[-1].startswith(f"Wrote s3://{bucket}/out/manifest.jsonl  (2 ok, 1 failed, "
                                                     f"0 skipped;")
    assert sorted(objects(s3, f"{bucket}/out")) == ["cam1/walk.txt", "cam2/walk.txt", MANIFEST_NAME]


def test_without_s3fs_the_url_says_what_to_install(monkeypatch, tmp_path):
    import fsspec.registry  # noqa: F401 - loaded, so that sys.modules holds it

    imported = sys.modules["fsspec.registry"]._registry  # the classes fsspec has imported already
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now raises ImportError
    monkeypatch.delitem(imported, "s3", raising=False)
    monkeypatch.delitem(imported, "s3a", raising=False)
    with pytest.raises(InputError, match=r'^s3:// URLs need s3fs: pip install "videomt\[s3\]".$'):
        run_corpus(["s3://bucket/in/"], tmp_path / "out", device="cpu")
