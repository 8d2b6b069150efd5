"""``segment --from``: any format from a results file, without the model, byte for byte what a run
of the model writes straight into that format."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videomt_cli import cli, sinks
from videomt_cli.inference.predictor import Predictor

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "example.mp4"
# Formats written from a video-level result (the per-frame jsonl has its own tests; the overlay's
# --from is tested in test_cli.py).
FORMATS = [f for f in sinks.FORMATS if f not in ("overlay", "jsonl")]


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """The bundled model's results on the first 6 frames of the example, in every format."""
    root = tmp_path_factory.mktemp("direct")
    ok(invoke("segment", EXAMPLE, "-o", root / "r.json", "--end", "6", "-q"))
    for fmt in FORMATS:
        ok(invoke("segment", EXAMPLE, "-o", root / f"out.{fmt}", "--format", fmt, "--end", "6", "-q"))
    return root


def same(a: Path, b: Path) -> bool:
    if a.is_dir():
        names = sorted(os.listdir(a))
        return names == sorted(os.listdir(b)) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    return a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_from_a_results_file_equals_a_run_of_the_model(direct, tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(Predictor, "from_model", lambda *a, **k: pytest.fail("--from must not load the model"))
    out = tmp_path / f"from.{fmt}"
    ok(invoke("segment", EXAMPLE, "--from", direct / "r.json", "-o", out, "--format", fmt, "-q"))
    assert same(direct / f"out.{fmt}", out)


def test_from_refuses_options_that_need_the_model_and_writes_nothing(direct, tmp_path):
    result = invoke("segment", EXAMPLE, "--from", direct / "r.json", "-o", tmp_path / "x.json", "--stride", "2")
    assert result.exit_code == 1 and "--stride" in str(result.exception)
    result = invoke("segment", EXAMPLE, "--from", direct / "r.json", "-o", direct / "r.json", "--overwrite")
    assert result.exit_code == 1 and "input" in str(result.exception).lower()
    assert os.listdir(tmp_path) == []


def test_from_keeps_the_score_threshold_and_classes_filters(direct, tmp_path):
    import json

    ok(invoke("segment", EXAMPLE, "--from", direct / "r.json", "-o", tmp_path / "t.json", "--score-threshold", "0.5",
              "--classes", "circle"))
    kept = json.loads((tmp_path / "t.json").read_text())
    every = json.loads((direct / "r.json").read_text())
    assert kept == [e for e in every if e["score"] >= 0.5 and e["category_id"] == 1]


@pytest.mark.parametrize("fmt, flags, check", [
    ("cvat", ["--cvat-shape", "box"], lambda text: "<box " in text and "<polygon " not in text),
    ("coco", ["--coco-shape", "polygon", "--frame-names", "ytvis"],
     lambda text: '"segmentation":[[' in text and '"file_name":"example/00000.jpg"' in text),
    ("ytvis", ["--rle", "uncompressed", "--empty", "null"], lambda text: '"counts":[' in text and '"counts":""' not in text),
    ("labelstudio", ["--ls-kind", "images"], lambda text: '"brushlabels"' in text),
])
def test_format_options_reach_their_sink(direct, tmp_path, fmt, flags, check):
    out = tmp_path / "out"
    ok(invoke("segment", EXAMPLE, "--from", direct / "r.json", "-o", out, "--format", fmt, *flags, "-q"))
    assert check(out.read_text())


def test_a_format_option_for_another_format_is_one_line_before_anything_runs(direct, tmp_path):
    result = invoke("segment", EXAMPLE, "-o", tmp_path / "x.xml", "--coco-shape", "polygon")
    assert result.exit_code == 1
    assert str(result.exception) == "--coco-shape applies to --format coco, and this output is cvat."
    assert os.listdir(tmp_path) == []
