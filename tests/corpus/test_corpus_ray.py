"""``run_corpus(..., backend="ray")`` (``videomt_cli.corpus.ray_backend``) on a real local Ray
cluster: 2 CPUs, started once for this module in-process, on 127.0.0.1, and shut down after.

- The outputs are byte for byte the local backend's, the manifest holds the same records
  (timings aside; lines in completion order), the returned records are in source order, the
  progress hooks see every video, and a local run afterwards skips them all (same fingerprint,
  same resume rules).
- A worker process killed (SIGKILL) in the middle of a video: Ray restarts the actor and runs the
  video again; the corpus completes, with one line per video, and outputs equal to the local
  backend's; the killed try's temporary is gone. With no retries left the video is one failed
  line (the worker replaced, the other videos done) and the next run redoes it.
- How many actors and what each asks of the cluster (GPUs, shares of GPUs, CPUs).
- The CLI's ``--backend ray`` (its predictor function travels to the workers), a corpus from S3
  to S3 on the workers (moto on 127.0.0.1; the endpoint reaches them through Ray), the
  missing-extra message and the refused options.

Every worker is a CPU actor with 1 CPU (so one torch thread, as the tests' local runs).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

if "ray" not in sys.modules:  # read when ray is imported: every Ray service on 127.0.0.1
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no report to Ray's servers from a test cluster
ray = pytest.importorskip("ray")

from media import make_video  # noqa: E402
from videomt_cli.corpus import MANIFEST_NAME, CorpusProgress, Record, run_corpus  # noqa: E402
from videomt_cli.errors import InputError  # noqa: E402
from videomt_cli.inference.predictor import Predictor  # noqa: E402

SIZE = (96, 64)
TIMING = ("seconds", "fps", "finished")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray for the module. The dummy S3 credentials are set first: workers inherit the
    environment Ray starts with (the endpoint is passed to them by the backend)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # "local": a new Ray even where a `ray start` cluster (or its stale address file) is on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_model(None, device="cpu")


def video(path, frames: int = 3) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_video(path, frames=frames, size=SIZE)


def without_timing(record: Record) -> dict:
    d = json.loads(record.to_line())
    return {k: v for k, v in d.items() if k not in TIMING}


def manifest(out: Path) -> list[Record]:
    return [Record.from_json(json.loads(line)) for line in (out / MANIFEST_NAME).read_bytes().splitlines()]


def same_bytes(a: Path, b: Path, names) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


class Events(CorpusProgress):
    def __init__(self) -> None:
        self.planned_jobs, self.started, self.done = None, [], []

    def planned(self, jobs) -> None:
        self.planned_jobs = [j.output for j in jobs]

    def video_started(self, index, total, job) -> None:
        self.started.append(index)

    def video_done(self, index, total, record) -> None:
        self.done.append((index, record.output))


def test_ray_writes_the_local_backends_bytes_and_records(tmp_path, predictor):
    root = tmp_path / "in"
    for name, frames in (("cam1/walk.mp4", 3), ("cam2/walk.mp4", 4), ("run.mp4", 3)):
        video(root / name, frames)
    (root / "notes.mp4").write_text("not a video")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{root}\n{root / 'gone.mp4'}\n")
    out, local = tmp_path / "ray", tmp_path / "local"

    events = Events()
    records = run_corpus([f"@{listing}"], out, backend="ray", workers=2, device="cpu", progress=events)
    reference = run_corpus([f"@{listing}"], local, predictor=predictor)
    assert [(r.output, r.status) for r in records] == [(r.output, r.status) for r in reference] == [
        ("cam1/walk.json", "ok"), ("cam2/walk.json", "ok"), ("notes.json", "failed"), ("run.json", "ok"),
        ("gone.json", "failed")]
    assert [without_timing(r) for r in records] == [without_timing(r) for r in reference]
    same_bytes(out, local, ["cam1/walk.json", "cam2/walk.json", "run.json"])
    # The driver wrote the manifest: the same records, a line each, in the order they ended.
    lines = manifest(out)
    assert sorted(map(json.dumps, map(without_timing, lines))) == sorted(map(json.dumps, map(without_timing, records)))
    assert events.planned_jobs == [r.output for r in records]
    assert sorted(events.started) == list(range(5)) and sorted(events.done) == list(enumerate(events.planned_jobs))
    assert [o for _, o in events.done] == [r.output for r in lines]
    assert not [p for p in out.rglob(".*") if p.name != ".videomt.lock"]
    # The same fingerprint and resume rules: a local run skips what Ray did.
    again = run_corpus([f"@{listing}"], out, predictor=predictor)
    assert [r.status for r in again] == ["skipped", "skipped", "failed", "skipped", "failed"]


def run_and_kill(root: Path, out: Path, stem: str) -> tuple[list[Record], float]:
    """Run the corpus on Ray in a thread; SIGKILL the worker process in the middle of ``stem``'s
    video; return the records and when the kill was sent. The video's sink opens its temporary
    (named by the worker's pid) before the first frame is read; 24 frames take ~1.5 s."""
    result: dict = {}

    def drive():
        try:
            result["records"] = run_corpus([root], out, backend="ray", workers=2, device="cpu")
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            result["error"] = e

    driver = threading.Thread(target=drive)
    driver.start()
    pattern = re.compile(rf"\.{stem}\.tmp-[0-9a-f]+-(\d+)-[0-9a-f]{{8}}\.json")
    deadline = time.monotonic() + 60
    pid = None
    while pid is None:
        assert driver.is_alive(), result
        assert time.monotonic() < deadline, f"the run never started {stem}"
        found = [m for m in map(pattern.fullmatch, os.listdir(out) if out.is_dir() else []) if m]
        if found:
            pid = int(found[0][1])
        else:
            time.sleep(0.01)
    assert pid != os.getpid()
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    driver.join(timeout=90)
    assert not driver.is_alive() and "error" not in result, result
    return result["records"], killed


def test_a_worker_killed_in_the_middle_of_a_video_is_retried(tmp_path, predictor):
    root = tmp_path / "in"
    video(root / "a.mp4"), video(root / "b.mp4", frames=24), video(root / "c.mp4")
    out = tmp_path / "out"
    records, killed = run_and_kill(root, out, "b")
    assert [(r.output, r.status) for r in records] == [("a.json", "ok"), ("b.json", "ok"), ("c.json", "ok")]
    assert records[1].frames == 24
    assert os.stat(out / "b.json").st_mtime > killed  # b was written by the retry, after the kill
    assert sorted(r.output for r in manifest(out)) == ["a.json", "b.json", "c.json"]  # one line each
    reference = tmp_path / "reference"
    run_corpus([root], reference, predictor=predictor)
    same_bytes(out, reference, ["a.json", "b.json", "c.json"])
    assert not [p for p in out.rglob(".*") if p.name != ".videomt.lock"]  # the killed try's temporary too


def test_a_video_that_kills_its_worker_on_every_try_fails_alone(tmp_path, predictor, monkeypatch):
    from videomt_cli.corpus import ray_backend

    monkeypatch.setattr(ray_backend, "MAX_TASK_RETRIES", 0)  # one try: the first kill is final
    root = tmp_path / "in"
    video(root / "a.mp4", frames=24), video(root / "b.mp4"), video(root / "c.mp4")
    out = tmp_path / "out"
    records, _ = run_and_kill(root, out, "a")
    assert [(r.output, r.status) for r in records] == [("a.json", "failed"), ("b.json", "ok"), ("c.json", "ok")]
    assert records[0].error.startswith("the Ray worker running this video died (1 try; killed, out of memory, or "
                                       "a crash in native code): ")
    assert "\n" not in records[0].error and not (out / "a.json").exists()
    # the next run (here the local backend) retries it and leaves the rest
    again = run_corpus([root], out, predictor=predictor)
    assert [r.status for r in again] == ["ok", "skipped", "skipped"]
    assert not [p for p in out.rglob(".*") if p.name != ".videomt.lock"]


def test_the_cli_runs_a_corpus_on_ray(tmp_path):
    from typer.testing import CliRunner

    from videomt_cli import cli

    root = tmp_path / "in"
    video(root / "a.mp4"), video(root / "b.mp4")
    (root / "bad.mp4").write_text("no")
    out = tmp_path / "out"
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        result = CliRunner().invoke(cli.app, ["segment", str(root), "-o", str(out), "--device", "cpu",
                                              "--backend", "ray", "--workers", "1"])
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert result.exit_code == 1, result.output
    assert result.output.count("Failed:") == 1
    assert result.output.count("Note: videomt-mini-synth is a small demo model") == 1  # once, from a worker
    assert result.output.splitlines()[-1].startswith(f"Wrote {out / MANIFEST_NAME}  (2 ok, 1 failed, 0 skipped;")
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]


def test_ray_workers_read_and_write_a_bucket(tmp_path, predictor, monkeypatch):
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")  # the workers get it from the backend
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        bucket = f"vmt-{uuid.uuid4().hex[:12]}"
        fs.mkdir(bucket)
        root = tmp_path / "in"
        video(root / "a.mp4"), video(root / "sub" / "b.mp4", frames=4)
        (root / "bad.mp4").write_text("no")
        fs.put(str(root) + "/", f"{bucket}/in/", recursive=True)

        records = run_corpus([f"s3://{bucket}/in/"], f"s3://{bucket}/out/", backend="ray", workers=2, device="cpu")
        assert [(r.output, r.status) for r in records] == [("a.json", "ok"), ("bad.json", "failed"),
                                                           ("sub/b.json", "ok")]
        assert records[1].error.startswith(f"s3://{bucket}/in/bad.mp4 is not a video")
        local = tmp_path / "local"
        run_corpus([root], local, predictor=predictor)
        fs.invalidate_cache()
        for name in ("a.json", "sub/b.json"):
            assert fs.cat_file(f"{bucket}/out/{name}") == (local / name).read_bytes(), name
        lines = fs.cat_file(f"{bucket}/out/{MANIFEST_NAME}").splitlines()
        assert sorted(json.loads(line)["output"] for line in lines) == ["a.json", "bad.json", "sub/b.json"]
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_without_ray_the_backend_says_how_to_install_it(tmp_path, monkeypatch, predictor):
    video(tmp_path / "a.mp4"), video(tmp_path / "b.mp4")
    with pytest.raises(InputError, match="backend='ray' loads the model in each worker"):
        run_corpus([tmp_path], tmp_path / "o1", backend="ray", predictor=predictor)
    with pytest.raises(InputError, match="--ray-address and --workers apply to --backend ray"):
        run_corpus([tmp_path], tmp_path / "o2", workers=2, device="cpu")
    with pytest.raises(InputError, match="Unknown backend 'spark'"):
        run_corpus([tmp_path], tmp_path / "o3", backend="spark", device="cpu")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(InputError, match=r'^--backend ray needs Ray: pip install "videomt\[ray\]"$'):
        run_corpus([tmp_path], tmp_path / "o4", backend="ray", device="cpu")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))  # refused before anything was made


def test_workers_get_a_gpu_each_or_a_share_or_cpus():
    from videomt_cli.corpus.ray_backend import MAX_TASK_RETRIES, actor_resources

    retries = dict(max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
    node = {"CPU": 96.0, "GPU": 8.0, "memory": 1e12}
    assert actor_resources(node, None, None) == (8, dict(retries, num_gpus=1.0, num_cpus=1))
    assert actor_resources(node, 24, "auto") == (24, dict(retries, num_gpus=0.3333, num_cpus=1))  # 3 per GPU
    assert actor_resources(node, 4, "cuda:0") == (4, dict(retries, num_gpus=1.0, num_cpus=1))
    assert actor_resources(node, 4, "cpu") == (4, dict(retries, num_gpus=0, num_cpus=24))  # --device cpu: no GPU
    assert actor_resources({"CPU": 2.0}, None, None) == (1, dict(retries, num_gpus=0, num_cpus=2))
    assert actor_resources({"CPU": 2.0}, 2, None) == (2, dict(retries, num_gpus=0, num_cpus=1))
    assert actor_resources({"CPU": 16.0, "GPU": 0.5}, None, None)[1]["num_gpus"] == 0  # no whole GPU: CPU actors
