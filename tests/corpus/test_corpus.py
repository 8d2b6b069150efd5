"""Corpus mode (``videomt_cli.corpus``): many videos into one output folder, with a manifest, resume
and a lock.

- Expansion: files, folders of videos (searched), a frame folder as one video, globs, ``@list``
  files (comments, blanks, a missing path), duplicates, the output folder never searched.
- Output names: relative to the common root, the same stem in two folders kept apart, clashing
  names (``a.mp4`` / ``a.mov``, PNG folders inside one another) given whole names.
- The bad-input corpus of issue #12: a text file named ``.mp4``, a truncated video, a missing
  path in ``@list.txt`` and two good videos: the good ones written, byte for byte what the
  one-video path writes, the bad ones failed with their one-line reasons.
- Resume: a second run skips (outputs untouched), a changed option or source redoes, a failed
  video is retried, a torn last manifest line is ignored and the next line starts on its own.
- SIGKILL of a real run (a subprocess using the bundled model) in the middle of a video, then a
  rerun: completed videos are not redone and the outputs equal an uninterrupted run's bytes; a
  second run while the first holds the folder is refused (the lock).
- Interrupts propagate with nothing of the video in progress left behind.

Every run uses the bundled demo model on 3-frame 96x64 videos.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media import make_image_folder, make_video, truncate
from videomt_cli import open_sink
from videomt_cli.corpus import (LOCK_NAME, MANIFEST_NAME, CorpusItem, CorpusProgress, Manifest, Record, Summary,
                                expand_sources, folder_lock, is_corpus, output_names, run_corpus)
from videomt_cli.errors import InputError, OutputError
from videomt_cli.inference.predictor import Predictor

SIZE = (96, 64)  # (width, height) of every test video


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_model(None, device="cpu")


def video(path, frames: int = 3, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_video(path, frames=frames, size=SIZE, **kw)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_bytes().splitlines()]


def by_output(records) -> dict[str, Record]:
    return {r.output: r for r in records}


def leftovers(folder: Path) -> list[str]:
    """Hidden names (temporaries) anywhere under ``folder``, the lock aside."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name != LOCK_NAME)


# ----------------------------------------------------------------------------- expansion


def test_sources_expand_to_files_folders_of_videos_frame_folders_globs_and_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("data/b.mp4", "data/a10.mkv", "data/a2.mov", "data/deep/er/c.webm", "more/x.mp4"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"v")  # expansion goes by names: the reader judges the bytes later
    make_image_folder("data/clip", n=2)
    make_image_folder("data/clip/nested", n=2)  # inside a frame folder: not searched
    Path("data/notes.txt").write_text("skipped")
    Path("data/.hidden.mp4").write_bytes(b"v")
    Path("data/.cache").mkdir()
    Path("data/.cache/y.mp4").write_bytes(b"v")
    make_image_folder("data/mixed", n=1)
    Path("data/mixed/m.mp4").write_bytes(b"v")  # images and a video: the video, not a frame folder
    Path("more/list.txt").write_text("# corpus\n\n  data/b.mp4  \nmore/*.mp4\nnope/gone.mp4\nhttps://h/v.mp4\n")

    items = expand_sources(["data", "more/x.mp4", "@more/list.txt", "*/*.avi", "data/deep/**/*.webm"])
    assert [(i.source, i.kind) for i in items] == [
        ("data/a2.mov", "file"), ("data/a10.mkv", "file"), ("data/b.mp4", "file"), ("data/clip", "folder"),
        (os.path.join("data/deep/er", "c.webm"), "file"), (os.path.join("data/mixed", "m.mp4"), "file"),
        ("more/x.mp4", "file"),  # data/b.mp4 and more/x.mp4 again (list, glob): once each
        ("nope/gone.mp4", "none"), ("https://h/v.mp4", "url"), ("*/*.avi", "none")]
    assert all(i.path == os.path.abspath(i.source) for i in items if i.kind in ("file", "folder"))
    assert items[7].error == "nope/gone.mp4 does not exist: check the path (a video file or a folder of frame images)."
    assert "corpus mode reads files and store URLs (s3://, gs://, ...), not streams" in items[8].error \
        and items[8].path is None
    assert items[9].error == "No file matches */*.avi: check the pattern." and items[9].rel is None
    # The common root holds every path (the missing one too): here the current folder.
    assert [i.rel for i in items[:8]] == ["data/a2.mov", "data/a10.mkv", "data/b.mp4", "data/clip",
                                          "data/deep/er/c.webm", "data/mixed/m.mp4", "more/x.mp4", "nope/gone.mp4"]

    assert [i.rel for i in expand_sources(["data/deep"])] == ["c.webm"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (only,) = expand_sources([empty])
    assert only.kind == "none" and "holds no video" in only.error and "\n" not in only.error
    # The output folder is never searched, even inside an input folder.
    Path("data/out").mkdir()
    Path("data/out/old.mp4").write_bytes(b"v")
    assert "data/out/old.mp4" not in [i.source for i in expand_sources(["data"], exclude="data/out")]
    with pytest.raises(InputError, match="list file missing.txt does not exist"):
        expand_sources(["@missing.txt"])


def test_is_corpus_tells_one_video_from_many(tmp_path):
    one = video(tmp_path / "one.mp4")
    frames = make_image_folder(tmp_path / "frames", n=2)
    videos = tmp_path / "videos"
    video(videos / "a.mp4")
    assert not is_corpus([one]) and not is_corpus([frames]) and not is_corpus([tmp_path / "missing.mp4"])
    assert is_corpus([videos]) and is_corpus([one, frames]) and is_corpus([f"@{tmp_path / 'l.txt'}"])
    assert is_corpus([str(tmp_path / "*.mp4")])


# ----------------------------------------------------------------------------- output names


def items_at(*rels, kinds=None) -> list[CorpusItem]:
    kinds = kinds or ["file"] * len(rels)
    return [CorpusItem(r, "/r/" + r, k, rel=r) for r, k in zip(rels, kinds)]


def test_outputs_are_named_by_the_path_under_the_common_root(tmp_path):
    for rel in ("a/b.mp4", "c/b.mp4", "b.mp4"):
        video(tmp_path / "in" / rel)
    items = expand_sources([tmp_path / "in" / "a" / "b.mp4", tmp_path / "in" / "c" / "b.mp4"])
    assert output_names(items, "ytvis") == ["a/b.json", "c/b.json"]  # same stem, two folders: apart
    items = expand_sources([tmp_path / "in"])
    assert output_names(items, "ytvis") == ["a/b.json", "b.json", "c/b.json"]
    assert output_names(items, "overlay") == ["a/b.mp4", "b.mp4", "c/b.mp4"]
    assert output_names(items, "mot") == ["a/b.txt", "b.txt", "c/b.txt"]
    # PNG folders: b/ would hold nothing else here, so no clash
    assert output_names(items, "png") == ["a/b", "b", "c/b"]


def test_clashing_outputs_keep_their_whole_names():
    items = items_at("a.mp4", "A.mov", "x.v1.mp4", "clip", "clip.mp4", kinds=["file"] * 3 + ["folder", "file"])
    assert output_names(items, "ytvis") == ["a.mp4.json", "A.mov.json", "x.v1.json", "clip.json", "clip.mp4.json"]
    # a PNG folder that would hold another video's PNG folder
    assert output_names(items_at("a.mp4", "a/b.mp4"), "png") == ["a.mp4", "a/b"]
    assert output_names(items_at("a.mp4", "a/b.mp4"), "ytvis") == ["a.json", "a/b.json"]
    # the manifest's name is never an output; what still clashes gets a number
    assert output_names(items_at("manifest.jsonl.mp4"), "png") == ["manifest.jsonl.mp4"]
    assert output_names(items_at("c", "c", kinds=["folder", "folder"]), "ytvis") == ["c~2.json", "c~3.json"]
    with pytest.raises(InputError, match="cannot be written one output per video; with several videos use one of "
                                         "ytvis, ytvis-dataset, coco, png, overlay, mot, mots"):
        output_names(items, "jsonl")  # a per-frame stream: no file per video


# ----------------------------------------------------------------------------- the bad-input corpus


@pytest.fixture
def bad_corpus(tmp_path):
    """Two good videos (same stem, two folders), a text file named .mp4, a truncated video and a
    missing path, named by a list file."""
    root = tmp_path / "in"
    good = [video(root / "cam1" / "walk.mp4"), video(root / "cam2" / "walk.mp4", frames=4)]
    text = root / "cam1" / "notes.mp4"
    text.write_text("this is not a video\n")
    cut = truncate(video(tmp_path / "whole.mp4", frames=12), root / "cam2" / "cut.mp4", 0.5)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in [good[0], text, cut, root / "cam3" / "gone.mp4", good[1]]) + "\n")
    return f"@{listing}", good


def test_bad_videos_fail_with_their_reason_and_the_good_ones_are_written(bad_corpus, predictor, tmp_path):
    source, good = bad_corpus
    out = tmp_path / "out"
    records = run_corpus([source], out, predictor=predictor)
    got = {r.output: r for r in records}
    assert list(got) == ["cam1/walk.json", "cam1/notes.json", "cam2/cut.json", "cam3/gone.json", "cam2/walk.json"]
    assert [r.status for r in records] == ["ok", "failed", "failed", "failed", "ok"]
    assert "is not a video PyAV/FFmpeg can read" in got["cam1/notes.json"].error
    assert "cut before its index (moov atom)" in got["cam2/cut.json"].error
    assert got["cam3/gone.json"].error.endswith("gone.mp4 does not exist: check the path (a video file or a "
                                                "folder of frame images).")
    assert all("\n" not in r.error for r in records if r.error)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.json")) == ["cam1/walk.json", "cam2/walk.json"]
    # Each good output is byte for byte what the one-video path writes.
    for path, name in zip(good, ["cam1/walk.json", "cam2/walk.json"]):
        single = tmp_path / "single.json"
        with predictor.run(str(path)) as result, open_sink(single, overwrite=True) as sink:
            sink.add(result)
        assert (out / name).read_bytes() == single.read_bytes()
        assert got[name].frames == len(result.processed) == (3 if "cam1" in name else 4)
        assert got[name].segments == len(result.segments) and got[name].fps > 0
    summary = Summary.of(records)
    assert (summary.ok, summary.failed, summary.skipped, summary.frames, summary.exit_code) == (2, 3, 0, 7, 1)
    assert summary.line().startswith("2 ok, 3 failed, 0 skipped; 7 frames in ")
    assert leftovers(out) == []


def test_manifest_lines_say_what_became_of_each_video(bad_corpus, predictor, tmp_path):
    source, good = bad_corpus
    out = tmp_path / "out"
    records = run_corpus([source], out, predictor=predictor)
    rows = lines(out)
    assert [Record.from_json(row) for row in rows] == records  # one line per video, in order
    fields = ["source", "output", "status", "error", "frames", "seconds", "fps", "segments", "warnings", "model",
              "fingerprint", "settings", "stamp", "finished"]
    assert all(list(row) == fields for row in rows)
    ok = rows[0]
    assert ok["source"] == str(good[0]) and ok["model"] == "videomt-mini-synth" and ok["error"] is None
    assert ok["fps"] == pytest.approx(ok["frames"] / ok["seconds"], rel=0.01)
    assert ok["settings"] == {"weights": ok["settings"]["weights"], "task": "instance", "dtype": "float32",
                              "min_size": 160, "max_size": 1333, "max_num": 10, "score_threshold": 0.0,
                              "classes": None, "start": None, "end": None, "stride": 1, "format": "ytvis",
                              "format_options": {}}
    st = os.stat(good[0])
    assert ok["stamp"] == f"{st.st_size}-{st.st_mtime_ns}"
    assert len({row["fingerprint"] for row in rows}) == 1
    # A manifest that no reader can take apart is never written: every line is one JSON object.
    assert (out / MANIFEST_NAME).read_bytes().count(b"\n") == len(rows) == 5


def test_each_line_is_on_disk_before_the_next_video_starts(tmp_path, predictor, monkeypatch):
    root = tmp_path / "in"
    video(root / "a.mp4"), video(root / "b.mp4")
    out = tmp_path / "out"
    events = []
    real_fsync = os.fsync

    def fsync(fd):
        manifest = out / MANIFEST_NAME
        if manifest.exists() and os.path.samestat(os.fstat(fd), os.stat(manifest)):
            events.append(("fsync", manifest.read_bytes().count(b"\n")))
        return real_fsync(fd)

    class Watch(CorpusProgress):
        def video_started(self, index, total, job):
            events.append(("start", index))

    monkeypatch.setattr(os, "fsync", fsync)
    run_corpus([root], out, predictor=predictor, progress=Watch())
    assert events == [("fsync", 0), ("start", 0), ("fsync", 1), ("start", 1), ("fsync", 2)]


# ----------------------------------------------------------------------------- resume


def test_a_second_run_skips_what_is_done_and_redoes_what_changed(tmp_path, predictor):
    root = tmp_path / "in"
    video(root / "a.mp4")
    b = video(root / "b.mp4")
    bad = root / "c.mp4"
    bad.write_text("not yet")
    out = tmp_path / "out"
    first = run_corpus([root], out, predictor=predictor)
    assert [r.status for r in first] == ["ok", "ok", "failed"]
    before = {n: os.stat(out / n).st_mtime_ns for n in ("a.json", "b.json")}

    again = run_corpus([root], out, predictor=predictor)
    assert [r.status for r in again] == ["skipped", "skipped", "failed"]  # failed ones are tried again
    assert {n: os.stat(out / n).st_mtime_ns for n in before} == before
    assert again[0].frames == first[0].frames and Summary.of(again).line() == \
        "0 ok, 1 failed, 2 skipped; 0 frames in 0.0 s"
    assert [row["status"] for row in lines(out)] == ["ok", "ok", "failed", "skipped", "skipped", "failed"]

    video(bad)  # the failed one fixed; a changed source is redone; a deleted output is redone
    video(b, frames=4)
    (out / "a.json").unlink()
    fixed = run_corpus([root], out, predictor=predictor)
    assert [(r.output, r.status) for r in fixed] == [("a.json", "ok"), ("b.json", "ok"), ("c.json", "ok")]
    assert fixed[1].frames == 4

    changed = run_corpus([root], out, predictor=predictor, stride=2)  # options that change results are redone
    assert [(r.status, r.frames) for r in changed] == [("ok", 2)] * 3
    assert changed[0].fingerprint != fixed[0].fingerprint
    assert [r.status for r in run_corpus([root], out, predictor=predictor, stride=2)] == ["skipped"] * 3
    chunked = Predictor.from_model(None, device="cpu", chunk_size=1, read_ahead=2)  # results do not change
    assert [r.status for r in run_corpus([root], out, predictor=chunked, stride=2)] == ["skipped"] * 3
    stricter = Predictor.from_model(None, device="cpu", score_threshold=0.5)
    assert [r.status for r in run_corpus([root], out, predictor=stricter, stride=2)] == ["ok"] * 3
    assert [r.status for r in run_corpus([root], out, predictor=stricter, stride=2, overwrite=True)] == ["ok"] * 3
    other = run_corpus([root], out, predictor=stricter, stride=2, fmt="mot")
    assert [(r.output, r.status) for r in other] == [("a.txt", "ok"), ("b.txt", "ok"), ("c.txt", "ok")]
    with pytest.raises(InputError, match="either predictor= or model="):
        run_corpus([root], out, predictor=predictor, score_threshold=0.5)


def test_a_torn_last_line_is_ignored_and_the_next_starts_on_its_own(tmp_path, predictor):
    root = tmp_path / "in"
    video(root / "a.mp4"), video(root / "b.mp4")
    out = tmp_path / "out"
    run_corpus([root], out, predictor=predictor)
    whole = (out / MANIFEST_NAME).read_bytes()
    (out / MANIFEST_NAME).write_bytes(whole + whole.splitlines(keepends=True)[0][:57])  # a kill mid-append
    manifest = Manifest(out / MANIFEST_NAME)
    assert len(manifest.records()) == 2 and manifest.ignored == 1

    records = run_corpus([root], out, predictor=predictor)
    assert [r.status for r in records] == ["skipped", "skipped"]
    raw = (out / MANIFEST_NAME).read_bytes().splitlines()
    assert len(raw) == 5 and len(raw[2]) == 57  # the torn fragment stays a line of its own
    assert [json.loads(line)["status"] for line in raw[:2] + raw[3:]] == ["ok", "ok", "skipped", "skipped"]
    assert len(manifest.records()) == 4 and manifest.ignored == 1


# ----------------------------------------------------------------------------- the output folder


def test_an_output_folder_that_is_not_videomts_or_holds_an_input_is_refused(tmp_path, predictor):
    root = tmp_path / "in"
    a = video(root / "a.mp4")
    video(root / "b.mp4")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        run_corpus([root], theirs, predictor=predictor)
    assert sorted(os.listdir(theirs)) == ["thesis.tex"]
    with pytest.raises(OutputError, match="holds the input"):
        run_corpus([root], tmp_path, predictor=predictor)
    with pytest.raises(OutputError, match="is a file"):
        run_corpus([root], a, predictor=predictor)
    frames = make_image_folder(tmp_path / "frames", n=2)
    with pytest.raises(OutputError, match="inside the frame folder"):
        run_corpus([frames, a], frames / "out", predictor=predictor)
    # an output folder inside the input folder is fine: never searched, so never read back
    inside = root / "results"
    assert [r.status for r in run_corpus([root], inside, predictor=predictor)] == ["ok", "ok"]
    assert [r.status for r in run_corpus([root], inside, predictor=predictor)] == ["skipped", "skipped"]
    assert run_corpus([root], theirs, predictor=predictor, overwrite=True)[0].status == "ok"


def test_an_error_that_is_no_videomt_error_is_recorded_and_the_corpus_goes_on(tmp_path, predictor):
    root = tmp_path / "in"
    video(root / "a.mp4"), video(root / "b.mp4")
    calls = []

    class Flaky(CorpusProgress):
        def frames(self, done, total, pass_index, passes):
            calls.append(done)
            if len(calls) == 1:
                raise RuntimeError("boom\nsecond line")

    records = run_corpus([root], tmp_path / "out", predictor=predictor, progress=Flaky())
    assert [r.status for r in records] == ["failed", "ok"]
    assert records[0].error.startswith("internal error (a bug in videomt") and "RuntimeError: boom second line" in \
        records[0].error and "Traceback" in records[0].traceback
    assert not (tmp_path / "out" / "a.json").exists() and "traceback" in lines(tmp_path / "out")[0]


# ----------------------------------------------------------------------------- interrupts, SIGKILL, the lock


def test_an_interrupt_leaves_nothing_of_the_video_in_progress(tmp_path, predictor):
    root = tmp_path / "in"
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        video(root / name)
    out = tmp_path / "out"

    class CtrlC(CorpusProgress):
        def video_started(self, index, total, job):
            self.index = index

        def frames(self, done, total, pass_index, passes):
            if self.index == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_corpus([root], out, predictor=predictor, progress=CtrlC())
    assert sorted(os.listdir(out)) == [LOCK_NAME, "a.json", MANIFEST_NAME]
    assert [row["output"] for row in lines(out)] == ["a.json"]

    class Converted(CorpusProgress):  # C code turned the signal into another error: check() raises it
        def frames(self, done, total, pass_index, passes):
            raise TypeError("__array__() got an unexpected keyword argument 'copy'")

        def check(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_corpus([root], out, predictor=predictor, progress=Converted())
    assert [row["output"] for row in lines(out)] == ["a.json", "a.json"]  # a skipped, b not recorded as failed
    assert [r.status for r in run_corpus([root], out, predictor=predictor)] == ["skipped", "ok", "ok"]


def test_a_held_folder_is_refused_until_its_holder_is_gone(tmp_path, predictor):
    root = tmp_path / "in"
    video(root / "a.mp4"), video(root / "b.mp4")
    out = tmp_path / "out"
    out.mkdir()
    loads = []

    def load():  # the CLI passes a function: the model loads only once the folder is checked and held
        loads.append(1)
        return predictor

    with folder_lock(out):
        with pytest.raises(OutputError, match=rf"Another videomt run \(pid {os.getpid()}\) is writing to "):
            run_corpus([root], out, predictor=load)
    assert loads == []
    assert [r.status for r in run_corpus([root], out, predictor=load)] == ["ok", "ok"] and loads == [1]


_KILLED_RUN = """
import sys, time
import torch
torch.set_num_threads(1)  # as the tests: the same float rounding as the reference run
from videomt_cli.corpus import CorpusProgress, run_corpus

class Stall(CorpusProgress):
    def video_started(self, index, total, job):
        self.index = index

    def frames(self, done, total, pass_index, passes):
        if self.index == 1:  # the second video: its network has run, its output is not in place
            time.sleep(120)

run_corpus(sys.argv[2:], sys.argv[1], device="cpu", progress=Stall())
"""


def test_sigkill_in_the_middle_of_a_video_then_a_rerun_completes_the_corpus(tmp_path, predictor):
    root = tmp_path / "in"
    video(root / "a.mp4"), video(root / "b" / "b.mp4", frames=4), video(root / "c.mp4")  # a, b/b, c in that order
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(out), str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90

        def mid_second_video() -> bool:  # a's line written, b's temporary output there
            return ((out / MANIFEST_NAME).exists() and (out / MANIFEST_NAME).read_bytes().count(b"\n") == 1
                    and (out / "b").is_dir() and any(n.startswith(".b.tmp-") for n in os.listdir(out / "b")))

        while not mid_second_video():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached its second video"
            time.sleep(0.05)
        with pytest.raises(OutputError, match=rf"Another videomt run \(pid {proc.pid}\)"):  # the lock
            run_corpus([root], out, predictor=predictor)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -9
    assert [n for n in os.listdir(out / "b") if str(proc.pid) in n]  # what SIGKILL left
    done_first = os.stat(out / "a.json")

    records = run_corpus([root], out, predictor=predictor)  # the lock went with the process
    assert [(r.output, r.status) for r in records] == [("a.json", "skipped"), ("b/b.json", "ok"), ("c.json", "ok")]
    assert os.stat(out / "a.json").st_mtime_ns == done_first.st_mtime_ns  # not redone
    assert leftovers(out) == []
    assert [row["status"] for row in lines(out)] == ["ok", "skipped", "ok", "ok"]

    reference = tmp_path / "reference"
    run_corpus([root], reference, predictor=predictor)
    names = ["a.json", "b/b.json", "c.json"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.json")) == names
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


# ----------------------------------------------------------------------------- --batch-videos


def _same_results(a: Path, b: Path) -> None:
    """Two YouTube-VIS results files of one video: same entries, scores within 1e-6, masks equal but
    for pixels whose logit is near zero (the rounding a batched matmul brings, README)."""
    from videomt_cli.io import masks

    ea, eb = json.loads(a.read_text()), json.loads(b.read_text())
    assert [(e["category_id"]) for e in ea] == [(e["category_id"]) for e in eb]
    for x, y in zip(ea, eb):
        assert abs(x["score"] - y["score"]) < 1e-6
        for ma, mb in zip(x["segmentations"], y["segmentations"]):
            assert (ma is None) == (mb is None)
            if ma is not None:
                assert int((masks.decode(ma) != masks.decode(mb)).sum()) <= 2


@pytest.mark.parametrize("batch", [2, 3])
def test_batch_videos_give_each_videos_own_results_and_fail_alone(bad_corpus, predictor, tmp_path, batch):
    source, good = bad_corpus
    alone = run_corpus([source], tmp_path / "alone", predictor=predictor)
    out = tmp_path / "batched"
    records = run_corpus([source], out, predictor=predictor, batch_videos=batch)
    assert [(r.output, r.status, r.error) for r in records] == [(r.output, r.status, r.error) for r in alone]
    assert [r.frames for r in records] == [r.frames for r in alone]
    for name in ("cam1/walk.json", "cam2/walk.json"):
        _same_results(out / name, tmp_path / "alone" / name)
    assert sorted(line["output"] for line in lines(out)) == sorted(r.output for r in records)
    assert leftovers(out) == []
    again = run_corpus([source], out, predictor=predictor, batch_videos=batch)
    assert [r.status for r in again] == ["skipped", "failed", "failed", "failed", "skipped"]


def test_batch_videos_is_checked_and_local_only(tmp_path, predictor):
    with pytest.raises(InputError, match="batch_videos"):
        run_corpus([str(tmp_path)], tmp_path / "o", predictor=predictor, batch_videos=0)
    with pytest.raises(InputError, match="local backend"):
        run_corpus([str(tmp_path)], tmp_path / "o", model=None, backend="ray", batch_videos=2)
