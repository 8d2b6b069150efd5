"""The ``videomt`` command line: video in, annotations out, and one red line for every user mistake.

Most tests drive ``videomt_cli.cli.app`` through Typer's ``CliRunner`` (a library error then shows
up as ``result.exception`` with exit code 1, which ``main()`` turns into the red line); one test
runs the real console entry in a subprocess to see exactly what a user sees. Models are tiny
random networks; videos are synthesized with ``media.make_video``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from conftest import make_model
from media import make_video, truncate
from videomt_cli import cli
from videomt_cli.modeling import checkpoint
from videomt_cli.training import synth
from videomt_cli.errors import CheckpointError, InputError, OutputError, VideoError, VideoMTError
from videomt_cli.inference.predictor import Predictor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random VidEoMT (5 classes, 8 queries) in our single-file format."""
    return checkpoint.save(make_model(seed=1), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, dict]:
    """Small synthetic videos: (path, frames, displayed width x height, exact fps, audio)."""
    root = tmp_path_factory.mktemp("videos")
    specs = {
        "odd": dict(frames=10, size=(97, 71), fps=Fraction(25)),
        "ntsc": dict(frames=12, size=(64, 48), fps=Fraction(30000, 1001), audio=True),
        "rotated": dict(frames=8, size=(64, 48), fps=Fraction(25), rotation=90, audio=True),
        "vfr": dict(frames=10, size=(64, 48), vfr=True),
    }
    out = {}
    for name, spec in specs.items():
        path = make_video(root / f"{name}.mp4", **spec)
        w, h = spec["size"]
        if spec.get("rotation") in (90, 270):
            w, h = h, w
        out[name] = dict(path=path, frames=spec["frames"], size=(w, h), fps=spec.get("fps"),
                         audio=spec.get("audio", False))
    return out


@pytest.fixture(autouse=True)
def _restore_signals():
    """cli.main() keeps its signal handlers (then ignores the signals): give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def invoke(*args: str):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def segment(tiny, source, output, *extra):
    """``videomt segment`` with the tiny model at a tiny network size."""
    return invoke("segment", source, "-o", output, "--model", tiny, "--min-size", "64", "--device", "cpu", *extra)


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def user_error(result, kind=VideoMTError):
    """Exit 1 with one library error whose message is one line (what main() prints in red)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, kind), repr(result.exception)
    assert "\n" not in str(result.exception)
    return str(result.exception)


def files_in(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden temporary files included."""
    return sorted(os.listdir(folder))


def rle_to_mask(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})


# ----------------------------------------------------------------------------- help, progress, info


def test_segment_help_shows_examples():
    result = ok(invoke("segment", "--help"))
    assert "Examples" in result.output
    assert "videomt segment input.mp4 -o out.json" in result.output
    assert "--stride" in result.output and "--chunk-size" in result.output


def test_progress_goes_to_stderr_and_quiet_silences_it(tiny, videos, tmp_path):
    loud = ok(segment(tiny, videos["ntsc"]["path"], tmp_path / "a.json"))
    assert "segment" in loud.stderr and "frames/s" in loud.stderr
    assert "Wrote" in loud.stdout and "frames/s" not in loud.stdout
    # --quiet after the command (or before it): no bar, only the written path on stdout.
    quiet = ok(segment(tiny, videos["ntsc"]["path"], tmp_path / "b.json", "--quiet"))
    assert quiet.stderr == ""
    assert quiet.stdout.strip() == str(tmp_path / "b.json")
    before = ok(invoke("-q", "segment", videos["ntsc"]["path"], "-o", tmp_path / "c.json", "--model", tiny,
                       "--min-size", "64"))
    assert before.stderr == "" and before.stdout.strip() == str(tmp_path / "c.json")


def test_info_prints_size_frames_fps_duration_codec_rotation(videos):
    out = ok(invoke("info", videos["rotated"]["path"])).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "48x64" in lines["size"]  # the displayed size, after the rotation
    assert lines["frames"].split()[1] == "8"
    assert lines["fps"].split()[1] == "25"
    assert "0.320 s" in lines["duration"]
    assert "h264" in lines["codec"]
    assert "90" in lines["rotation"]
    assert "yes" in lines["audio"]
    ntsc = ok(invoke("info", videos["ntsc"]["path"])).stdout
    assert "30000/1001" in ntsc


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(tmp: Path, videos) -> dict:
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "text.mp4").write_text("this is not a video\n")
    (tmp / "no_images").mkdir()
    (tmp / "no_images" / "notes.txt").write_text("no frames here\n")
    good = str(videos["odd"]["path"])
    return {
        "missing path": ([str(tmp / "missing.mp4")], VideoError, "does not exist"),
        "empty file": ([str(tmp / "empty.mp4")], VideoError, "empty"),
        "text file named .mp4": ([str(tmp / "text.mp4")], VideoError, "not a video"),
        "folder without images": ([str(tmp / "no_images")], VideoError, "no images"),
        "unknown format": ([good, "--format", "xml"], InputError, "Unknown --format"),
        "start after the end": ([good, "--start", "10"], InputError, "after the end"),
        "start after the end, seconds": ([good, "--start", "0.5s"], InputError, "after the end"),
        "bad start": ([good, "--start", "soon"], InputError, "--start"),
        "unknown class": ([good, "--classes", "class_2,unicorn"], InputError, "unicorn"),
    }


@pytest.mark.parametrize("case", ["missing path", "empty file", "text file named .mp4", "folder without images",
                                  "unknown format", "start after the end", "start after the end, seconds",
                                  "bad start", "unknown class"])
def test_bad_input_is_one_line_and_exit_1_and_writes_nothing(tiny, videos, tmp_path, case):
    args, kind, words = _bad_inputs(tmp_path, videos)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    message = user_error(segment(tiny, args[0], out_dir / "result.json", *args[1:]), kind)
    assert words in message
    assert files_in(out_dir) == []


def test_stride_zero_is_a_usage_error(tiny, videos, tmp_path):
    result = segment(tiny, videos["odd"]["path"], tmp_path / "r.json", "--stride", "0")
    assert result.exit_code == 2
    assert "--stride" in result.output
    assert files_in(tmp_path) == []


def test_missing_source_is_a_usage_error(tmp_path):
    assert invoke("segment", "-o", tmp_path / "r.json").exit_code == 2


def test_truncated_mp4_without_index_is_a_clear_error(tiny, videos, tmp_path):
    cut = truncate(videos["odd"]["path"], tmp_path / "cut.mp4", 0.6)  # moov atom at the end: lost
    message = user_error(segment(tiny, cut, tmp_path / "r.json"), VideoError)
    assert "cut.mp4" in message
    assert files_in(tmp_path) == ["cut.mp4"]


def test_truncated_mp4_with_index_is_processed_up_to_the_cut_with_a_warning(tiny, tmp_path):
    whole = make_video(tmp_path / "whole.mp4", frames=10, size=(64, 48), faststart=True)
    cut = truncate(whole, tmp_path / "cut.mp4", 0.6)
    result = ok(segment(tiny, cut, tmp_path / "r.json"))
    assert "Warning" in result.stderr and "stopped after" in result.stderr
    decoded = int(result.stderr.split("stopped after ")[1].split()[0])
    assert 0 < decoded < 10
    entries = json.loads((tmp_path / "r.json").read_text())
    assert entries and all(len(e["segmentations"]) == decoded for e in entries)


def test_unwritable_output_is_one_line(tiny, videos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder\n")
    message = user_error(segment(tiny, videos["odd"]["path"], blocker / "r.json"), OutputError)
    assert "not a folder" in message
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            user_error(segment(tiny, videos["odd"]["path"], locked / "r.json"), OutputError)
            assert files_in(locked) == []
        finally:
            locked.chmod(0o755)


def test_existing_output_is_refused_unless_overwrite(tiny, videos, tmp_path):
    target = tmp_path / "r.json"
    target.write_text("keep me\n")
    assert "--overwrite" in user_error(segment(tiny, videos["odd"]["path"], target), OutputError)
    assert target.read_text() == "keep me\n"
    ok(segment(tiny, videos["odd"]["path"], target, "--overwrite"))
    assert len(json.loads(target.read_text())) == 10
    overlay = tmp_path / "o.mp4"
    overlay.write_bytes(b"old")
    user_error(invoke("overlay", videos["odd"]["path"], "-o", overlay, "--model", tiny, "--min-size", "64"),
               OutputError)
    assert overlay.read_bytes() == b"old"
    assert files_in(tmp_path) == ["o.mp4", "r.json"]


def test_overlay_checks_its_output_before_running_the_model(tiny, videos, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(Predictor, "from_model", no_model)
    user_error(invoke("overlay", videos["odd"]["path"], "-o", tmp_path / "o.avi", "--model", tiny), InputError)
    user_error(invoke("overlay", tmp_path / "missing.mp4", "-o", tmp_path / "o.mp4", "--model", tiny), VideoError)
    assert files_in(tmp_path) == []


def _same_file_cases(tmp: Path, video: Path) -> dict[str, tuple[list, Path]]:
    """(arguments, the input that must survive) for every way an output can be an input."""
    (tmp / "link.mp4").symlink_to(video)
    os.link(video, tmp / "hard.mp4")
    frames = tmp / "frames"
    frames.mkdir()
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(frames / f"{i:05d}.png")
    results = tmp / "results.mp4"  # an overlay drawn from the results file it writes over
    gt = tmp / "gt.json"
    gt.write_text(json.dumps({"videos": [{"id": 1, "file_names": ["frames/00000.png"], "width": 97, "height": 71,
                                          "length": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    results.write_bytes(b"[]")
    return {
        "segment, the same path": (["segment", video, "-o", video, "--format", "overlay"], video),
        "overlay, the same path": (["overlay", video, "-o", video], video),
        "overlay, another spelling": (["overlay", video, "-o", video.parent / "." / video.name], video),
        "overlay, through a symlink": (["overlay", tmp / "link.mp4", "-o", video], video),
        "overlay, onto a symlink": (["overlay", video, "-o", tmp / "link.mp4"], video),
        "overlay, onto a hard link": (["overlay", video, "-o", tmp / "hard.mp4"], video),
        "segment, a frame folder onto itself": (["segment", frames, "-o", frames, "--format", "png"], frames),
        "segment, into the frame folder": (["segment", frames, "-o", frames / "r.json"], frames),
        "segment, a folder holding the input": (["segment", video, "-o", video.parent, "--format", "png"], video),
        "overlay --from the output": (["overlay", video, "--from", results, "-o", results], results),
        "segment --dataset onto the dataset": (["segment", "--dataset", gt, "-o", gt], gt),
    }


@pytest.mark.parametrize("case", ["segment, the same path", "overlay, the same path", "overlay, another spelling",
                                  "overlay, through a symlink", "overlay, onto a symlink", "overlay, onto a hard link",
                                  "segment, a frame folder onto itself", "segment, into the frame folder",
                                  "segment, a folder holding the input", "overlay --from the output",
                                  "segment --dataset onto the dataset"])
def test_an_output_that_is_an_input_is_refused_whatever_the_flags(tiny, videos, tmp_path, monkeypatch, case):
    """``overlay a.mp4 -o a.mp4 --overwrite`` used to exit 0 with the video gone."""
    import shutil

    video = Path(shutil.copy(videos["odd"]["path"], tmp_path / "a.mp4"))
    args, kept = _same_file_cases(tmp_path, video)[case]

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(Predictor, "from_model", no_model)

    def snapshot():
        return sorted((str(p), p.read_bytes()) for p in kept.rglob("*")) if kept.is_dir() else kept.read_bytes()

    before = snapshot()
    message = user_error(invoke(*args, "--overwrite", "--model", tiny), OutputError)
    assert "output" in message
    assert snapshot() == before
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


@pytest.mark.parametrize("name", ["r.json", "masks", "o.mp4"])
def test_ctrl_c_leaves_no_partial_output_and_exits_130(tiny, videos, tmp_path, monkeypatch, capsys, name):
    calls = []
    original = Predictor.forward

    def interrupted(self, images, geometry, state):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, mid-video
        return original(self, images, geometry, state)

    monkeypatch.setattr(Predictor, "forward", interrupted)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["videomt", "segment", str(videos["ntsc"]["path"]), "-o", str(out_dir / name), "--model", str(tiny),
            "--min-size", "64", "--chunk-size", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    assert len(calls) == 2
    assert files_in(out_dir) == []  # neither the output nor a hidden temporary file
    assert "Interrupted" in capsys.readouterr().err


def test_the_console_script_prints_one_red_line_and_no_traceback(tmp_path):
    """The real entry point, as a user runs it: exit codes and exactly what lands on stderr."""
    missing = tmp_path / "[bold]holiday.mp4"  # brackets: must not be eaten as Rich markup
    run = subprocess.run([sys.executable, "-m", "videomt_cli.cli", "segment", str(missing), "-o",
                          str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: ") and str(missing) in lines[0]
    assert "Traceback" not in run.stderr and run.stdout == ""
    usage = subprocess.run([sys.executable, "-m", "videomt_cli.cli", "segment", str(missing), "--stride", "0"],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr and "--stride" in usage.stderr
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------------------- bad checkpoints


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-ckpt")
    (root / "text.pth").write_text("not a checkpoint\n")
    torch.save({"model": torch.nn.Conv2d(3, 8, 3).state_dict()}, root / "conv.pth")  # another network
    eomt = checkpoint.save_official(make_model(seed=2), root / "eomt.pth")
    state = torch.load(eomt, weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if "query_updater" not in k}
    torch.save(state, eomt)  # an image EoMT: no query propagation
    return {"missing": root / "missing.pth", "text": root / "text.pth", "other network": root / "conv.pth",
            "image model": eomt}


@pytest.mark.parametrize("kind", ["missing", "text", "other network", "image model"])
@pytest.mark.parametrize("command", ["convert", "segment"])
def test_bad_checkpoint_is_one_line_and_exit_1(bad_checkpoints, videos, tmp_path, command, kind):
    ckpt = bad_checkpoints[kind]
    if command == "convert":
        result = invoke("convert", ckpt, "-o", tmp_path / "converted")
    else:
        result = invoke("segment", videos["odd"]["path"], "-o", tmp_path / "r.json", "--model", ckpt)
    message = user_error(result, CheckpointError)
    assert ckpt.name in message or "VidEoMT" in message
    if kind == "image model":
        assert "query_updater" in message
    assert files_in(tmp_path) == []


def test_convert_writes_a_directory_segment_loads(videos, tmp_path):
    model = make_model(seed=1, num_heads=1)  # official files do not store heads: C / 64 = 1 here
    official = checkpoint.save_official(model, tmp_path / "official.pth")
    ours = checkpoint.save(model, tmp_path / "ours.safetensors")
    ok(invoke("convert", official, "-o", tmp_path / "hf"))
    assert sorted(files_in(tmp_path / "hf")) == ["config.json", "model.safetensors"]
    assert "--overwrite" in user_error(invoke("convert", official, "-o", tmp_path / "hf"), VideoMTError)
    ok(segment(tmp_path / "hf", videos["odd"]["path"], tmp_path / "a.json"))
    ok(segment(ours, videos["odd"]["path"], tmp_path / "b.json"))
    # The same weights through the converted folder and our own file give the same results.
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())


# ----------------------------------------------------------------------------- results on synthetic videos


@pytest.mark.parametrize("name", ["odd", "ntsc", "rotated", "vfr"])
def test_one_entry_per_frame_and_masks_at_the_displayed_size(tiny, videos, tmp_path, name):
    spec = videos[name]
    ok(segment(tiny, spec["path"], tmp_path / "r.json"))
    entries = json.loads((tmp_path / "r.json").read_text())
    assert len(entries) == 10  # the generic model keeps 10 results per video
    w, h = spec["size"]
    for entry in entries:
        assert set(entry) == {"video_id", "category_id", "score", "segmentations"}
        assert entry["category_id"] in range(1, 6) and 0 < entry["score"] <= 1
        assert len(entry["segmentations"]) == spec["frames"]
        for rle in entry["segmentations"]:
            assert rle["size"] == [h, w]
            assert rle_to_mask(rle).shape == (h, w)


def test_written_json_depends_on_the_chunk_size_only_by_rounding(tiny, videos, tmp_path):
    """The README's guarantee (the exact rule is tests/inference/test_predictor.py's): the same
    results in the same order, scores within 1e-6, masks that differ in at most a few pixels."""
    docs = []
    for chunk in (1, 3, 100):
        path = tmp_path / f"chunk{chunk}.json"
        ok(segment(tiny, videos["ntsc"]["path"], path, "--chunk-size", str(chunk)))
        docs.append(json.loads(path.read_text()))
    for doc in docs[1:]:
        assert [e["category_id"] for e in doc] == [e["category_id"] for e in docs[0]]
        for a, b in zip(doc, docs[0]):
            assert abs(a["score"] - b["score"]) <= 1e-6
            for ma, mb in zip(a["segmentations"], b["segmentations"]):
                assert (ma is None) == (mb is None)
                if ma is not None and ma != mb:
                    h, w = ma["size"]
                    assert (_decode(ma) != _decode(mb)).sum() <= max(1, 1e-4 * h * w)


def _decode(rle) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})


def _processed(path: Path) -> list[int]:
    entries = json.loads(path.read_text())
    kept = {tuple(i for i, m in enumerate(e["segmentations"]) if m is not None) for e in entries}
    assert len(kept) == 1  # every result has the same frames
    return list(kept.pop())


@pytest.mark.parametrize("options, kept", [
    (["--stride", "2"], [0, 2, 4, 6, 8, 10]),
    (["--start", "3", "--end", "7"], [3, 4, 5, 6]),
    (["--start", "2", "--stride", "4"], [2, 6, 10]),
    # 30000/1001 fps: frame i at i * 0.03337 s; [0.1 s, 0.25 s) holds frames 3..7.
    (["--start", "0.1s", "--end", "0.25s"], [3, 4, 5, 6, 7]),
    (["--start", "0:00.2", "--stride", "3"], [6, 9]),
])
def test_skipped_frames_are_null(tiny, videos, tmp_path, options, kept):
    ok(segment(tiny, videos["ntsc"]["path"], tmp_path / "r.json", *options))
    assert _processed(tmp_path / "r.json") == kept
    assert all(len(e["segmentations"]) == 12 for e in json.loads((tmp_path / "r.json").read_text()))


def test_start_and_end_in_seconds_follow_the_frame_times_of_variable_rate_video(tiny, videos, tmp_path):
    # vfr frame times: 0, 0.04, 0.08, 0.20, 0.22, 0.30, 0.333, ... s
    ok(segment(tiny, videos["vfr"]["path"], tmp_path / "r.json", "--start", "0.1s", "--end", "0.3s"))
    assert _processed(tmp_path / "r.json") == [3, 4]


def _video_facts(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return dict(frames=frames, size=(stream.width, stream.height), fps=Fraction(stream.average_rate),
                    audio=len(container.streams.audio) > 0)


@pytest.mark.parametrize("name", ["ntsc", "rotated", "odd"])
def test_overlay_keeps_frames_size_rate_and_audio(tiny, videos, tmp_path, name):
    spec = videos[name]
    out = tmp_path / "drawn.mp4"
    ok(invoke("overlay", spec["path"], "-o", out, "--model", tiny, "--min-size", "64", "--score-threshold", "0"))
    facts = _video_facts(out)
    assert facts == dict(frames=spec["frames"], size=spec["size"], fps=spec["fps"], audio=spec["audio"])
    assert files_in(tmp_path) == ["drawn.mp4"]


def test_overlay_from_a_results_file_draws_without_the_model(tiny, videos, tmp_path, monkeypatch):
    spec = videos["ntsc"]
    ok(segment(tiny, spec["path"], tmp_path / "r.json"))
    monkeypatch.setattr(Predictor, "run", lambda *a, **k: pytest.fail("--from must not run the model"))
    drawn = ok(invoke("overlay", spec["path"], "-o", tmp_path / "from.mp4", "--from", tmp_path / "r.json",
                      "--model", tiny, "--score-threshold", "0"))
    assert "Wrote" in drawn.stdout
    assert _video_facts(tmp_path / "from.mp4") == dict(frames=12, size=(64, 48), fps=spec["fps"], audio=True)
    # Results of another video (12 frames per result, the video has 10): refused, nothing written.
    message = user_error(invoke("overlay", videos["odd"]["path"], "-o", tmp_path / "x.mp4", "--from",
                                tmp_path / "r.json", "--model", tiny), VideoMTError)
    assert "frames" in message
    assert files_in(tmp_path) == ["from.mp4", "r.json"]


def test_overlay_labels_come_from_the_model_of_a_results_file(tiny, videos, tmp_path, monkeypatch):
    from videomt_cli import sinks

    ok(segment(tiny, videos["ntsc"]["path"], tmp_path / "r.json"))
    seen = {}
    original = sinks.read_results

    def spy(results, source, categories, **kwargs):
        seen["names"] = [c.name for c in categories]
        return original(results, source, categories, **kwargs)

    monkeypatch.setattr(sinks, "read_results", spy)
    ok(invoke("overlay", videos["ntsc"]["path"], "-o", tmp_path / "d.mp4", "--from", tmp_path / "r.json",
              "--model", tiny))
    assert seen["names"] == [f"class_{i}" for i in range(1, 6)]


def test_overlay_from_results_of_the_default_model_names_its_classes(videos, tmp_path, monkeypatch):
    """The bundled default model keeps its class names in the checkpoint (no label table)."""
    from videomt_cli import sinks

    results = tmp_path / "r.json"
    ok(invoke("segment", videos["ntsc"]["path"], "-o", results, "--quiet"))
    seen = {}
    original = sinks.read_results

    def spy(results, source, categories, **kwargs):
        seen["categories"] = [(c.id, c.name) for c in categories]
        return original(results, source, categories, **kwargs)

    monkeypatch.setattr(sinks, "read_results", spy)
    ok(invoke("overlay", videos["ntsc"]["path"], "-o", tmp_path / "d.mp4", "--from", results))
    assert seen["categories"] == [(1, "circle"), (2, "square"), (3, "triangle")]


def test_convert_the_bundled_model_keeps_names_and_dataset_ids(tmp_path):
    ok(invoke("convert", "videomt-mini-synth", "-o", tmp_path / "copy.safetensors"))
    loaded = checkpoint.load_model(tmp_path / "copy.safetensors")
    assert loaded.labels == ["circle", "square", "triangle"] and loaded.meta["category_ids"] == [1, 2, 3]


@pytest.mark.parametrize("output, fmt, kind", [
    ("r.coco.json", "coco", "coco"),
    ("masks", "png", "png"),
    ("r.dataset.json", "ytvis-dataset", "ytvis-dataset"),
    ("by_suffix.json", None, "ytvis"),
    ("by_suffix_folder/", None, "png"),
    ("by_suffix.mp4", None, "overlay"),
])
def test_formats_by_option_and_by_suffix(tiny, videos, tmp_path, output, fmt, kind):
    spec = videos["odd"]
    target = tmp_path / output
    ok(segment(tiny, spec["path"], str(target) + ("/" if output.endswith("/") else ""),
               *(["--format", fmt] if fmt else [])))
    assert files_in(tmp_path) == [output.rstrip("/")]
    w, h = spec["size"]
    if kind == "coco":
        doc = json.loads(target.read_text())
        assert len(doc["images"]) == 10 and [im["frame_index"] for im in doc["images"]] == list(range(10))
        assert doc["annotations"] and all(rle_to_mask(a["segmentation"]).shape == (h, w)
                                          for a in doc["annotations"])
        assert {c["id"] for c in doc["categories"]} == set(range(1, 6))
    elif kind == "png":
        pngs = sorted(p for p in files_in(target) if p.endswith(".png"))
        assert len(pngs) == 10
        from PIL import Image

        with Image.open(target / pngs[0]) as im:
            assert im.size == (w, h)
    elif kind == "ytvis-dataset":
        doc = json.loads(target.read_text())
        assert set(doc) >= {"videos", "annotations", "categories"}
        assert doc["videos"][0]["length"] == 10
    elif kind == "ytvis":
        assert all(len(e["segmentations"]) == 10 for e in json.loads(target.read_text()))
    else:
        assert _video_facts(target)["frames"] == 10


# ----------------------------------------------------------------------------- datasets and eval


def test_segment_a_dataset_then_eval(tmp_path):
    gt = synth.generate(tmp_path / "data", videos=2, seed=0, frames=6, size=(64, 96))
    classes = len(json.loads(gt.read_text())["categories"])
    model = checkpoint.save(make_model(seed=4, num_classes=classes), tmp_path / "m.safetensors")
    results = tmp_path / "results.json"
    ok(invoke("segment", "--dataset", gt, "-o", results, "--model", model, "--min-size", "64"))
    entries = json.loads(results.read_text())
    dataset = json.loads(gt.read_text())
    assert {e["video_id"] for e in entries} == {v["id"] for v in dataset["videos"]}
    lengths = {v["id"]: len(v["file_names"]) for v in dataset["videos"]}
    assert all(len(e["segmentations"]) == lengths[e["video_id"]] for e in entries)
    scored = ok(invoke("eval", results, gt, "--json"))
    metrics = json.loads(scored.stdout)
    assert set(metrics) >= {"AP", "AP50", "AP75", "AR1", "AR10"}
    assert all(v is None or 0 <= v <= 100 for v in metrics.values())


def test_synth_then_train_then_segment_with_the_trained_model(tmp_path):
    data = tmp_path / "data"
    ok(invoke("synth", "-o", data, "--videos", "2", "--seed", "0", "--frames", "4", "--size", "64x96"))
    gt = data / "annotations.json"
    run = tmp_path / "run"
    ok(invoke("train", gt, "-o", run, "--init", "tiny", "--steps", "2", "--batch-size", "1", "--clip-frames", "2",
              "--crop", "64x96", "--short-side", "64,64", "--num-points", "128", "--save-every", "0"))
    weights = run / "model.safetensors"
    assert weights.exists() and (run / "model.resume.pt").exists()
    results = tmp_path / "results.json"
    ok(invoke("segment", "--dataset", gt, "-o", results, "--model", weights, "--min-size", "64"))
    dataset = json.loads(gt.read_text())
    known = {c["id"] for c in dataset["categories"]}
    entries = json.loads(results.read_text())
    # The trained checkpoint carries the dataset's category ids, so eval accepts its results.
    assert entries and {e["category_id"] for e in entries} <= known
    ok(invoke("eval", results, gt, "--json"))


def test_fine_tune_from_a_registry_name(tmp_path):
    """`--init NAME` takes registry names (README, fine-tuning): here the bundled model, on a
    dataset with one class it knows and one it does not."""
    data = tmp_path / "data"
    gt = synth.generate(data, videos=1, seed=0, frames=3, size=(64, 96), classes=("square", "star"))
    run = tmp_path / "run"
    result = ok(invoke("train", gt, "-o", run, "--init", "videomt-mini-synth", "--steps", "1", "--batch-size", "1",
                       "--clip-frames", "2", "--crop", "64x96", "--short-side", "64,64", "--num-points", "64",
                       "--save-every", "0"))
    loaded = checkpoint.load_model(run / "model.safetensors")
    assert loaded.labels == ["square", "star"] and loaded.config.patch_size == 8
    assert "Wrote" in result.stdout


def test_train_refuses_a_dataset_that_does_not_exist(tmp_path):
    user_error(invoke("train", tmp_path / "nope.json", "-o", tmp_path / "run", "--init", "tiny", "--steps", "1"))


@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_two_pass_tasks_read_the_video_twice_and_write_id_pictures(tiny, videos, tmp_path, task):
    spec = videos["odd"]
    result = ok(segment(tiny, spec["path"], tmp_path / "masks", "--format", "png", "--task", task))
    assert "pass 2/2" in result.stderr  # one bar per pass
    pngs = sorted(p for p in files_in(tmp_path / "masks") if p.endswith(".png"))
    assert len(pngs) == spec["frames"]
    from PIL import Image

    with Image.open(tmp_path / "masks" / pngs[0]) as im:
        assert im.size == spec["size"]


def _cli_at_width(columns: int, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    run = subprocess.run([sys.executable, "-m", "videomt_cli.cli", *map(str, args)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    return run


@pytest.mark.parametrize("columns", [80, 140])
def test_models_fits_the_terminal_without_breaking_names(columns):
    from videomt_cli.modeling import registry

    out = _cli_at_width(columns, "models").stdout
    assert max(len(line) for line in out.splitlines()) <= columns
    words = set(out.split())
    for entry in registry.entries():  # every name and source whole, on one line
        assert entry.name in words and (entry.hub_ref or f"{entry.file}") in words


def test_info_fits_80_columns(videos):
    out = _cli_at_width(80, "info", videos["rotated"]["path"]).stdout
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("columns", [40, 80])
def test_info_prints_a_long_path_whole_on_one_line(videos, tmp_path, columns):
    """Piped (80 columns) or in a narrow terminal, a long path used to be cut with an ellipsis."""
    import shutil

    folder = tmp_path / ("a_long_folder_name_" * 4) / "[bold]more"
    folder.mkdir(parents=True)
    path = Path(shutil.copy(videos["ntsc"]["path"], folder / "a clip with a long name.mp4"))
    out = _cli_at_width(columns, "info", path).stdout
    assert len(str(path)) > 100
    (line,) = [line for line in out.splitlines() if line.startswith("path")]
    assert line.split(None, 1)[1] == str(path)
    assert "…" not in out and "30000/1001" in out


def test_the_demo_model_says_so_once_on_stderr(videos, tmp_path):
    run = _cli_at_width(80, "segment", videos["ntsc"]["path"], "-o", tmp_path / "a.json")
    notes = [line for line in run.stderr.splitlines() if "demo model" in line]
    assert len(notes) == 1 and "videomt models" in notes[0]
    assert "demo model" not in run.stdout
    quiet = _cli_at_width(80, "segment", videos["ntsc"]["path"], "-o", tmp_path / "b.json", "-q")
    assert quiet.stderr == "" and quiet.stdout.strip() == str(tmp_path / "b.json")
