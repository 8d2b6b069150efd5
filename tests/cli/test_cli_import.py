"""The way back through the command line: CVAT XML / COCO from ``segment`` -> ``import`` -> a
YouTube-VIS dataset; ``train`` and ``eval`` straight on the XML with the frames decoded from the
video; bad files are one line and write nothing. (The readers: tests/io/test_cvat_import.py,
test_coco_import.py, test_roundtrip.py.)"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from media import make_video
from videomt_cli import cli
from videomt_cli.errors import VideoMTError
from videomt_cli.io import masks, ytvis


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def one_line_error(result):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, VideoMTError) and "\n" not in str(result.exception)
    return str(result.exception)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 6-frame video and the bundled model's results on it as YouTube-VIS results, CVAT XML
    (polygons) and COCO (polygons)."""
    root = tmp_path_factory.mktemp("exported")
    video = make_video(root / "walk.mp4", frames=6, size=(96, 64))
    ok(invoke("segment", video, "-o", root / "r.json", "-q", "--score-threshold", "0.3"))
    ok(invoke("segment", video, "--from", root / "r.json", "-o", root / "walk.xml", "-q"))
    ok(invoke("segment", video, "--from", root / "r.json", "-o", root / "walk.coco.json", "--format", "coco",
              "--coco-shape", "polygon", "-q"))
    results = json.loads((root / "r.json").read_text())
    assert results, "the bundled model finds the moving squares"
    return root, video, results


@pytest.mark.parametrize("name", ["walk.xml", "walk.coco.json"])
def test_import_writes_a_dataset_whose_tracks_are_the_results(exported, tmp_path, name):
    root, video, results = exported
    out = tmp_path / "gt.json"
    ok(invoke("import", root / name, "--video", video, "-o", out, "-q"))
    dataset = ytvis.read(out)
    assert [v.length for v in dataset.videos] == [6]
    # every result with pixels is one track with the same category; polygons fill holes only
    with_pixels = [r for r in results if masks.areas([m for m in r["segmentations"] if m]).sum() > 0]
    assert sorted(a.category_id for a in dataset.annotations) == sorted(r["category_id"] for r in with_pixels)
    scored = json.loads(ok(invoke("eval", root / "r.json", out, "--json")).stdout)
    assert scored["AP50"] == 100.0


def test_eval_and_train_read_the_cvat_xml_itself(exported, tmp_path):
    root, video, _ = exported
    direct = json.loads(ok(invoke("eval", root / "r.json", root / "walk.xml", "--json")).stdout)
    ok(invoke("import", root / "walk.xml", "-o", tmp_path / "gt.json", "-q"))  # the video named in the XML
    imported = json.loads(ok(invoke("eval", root / "r.json", tmp_path / "gt.json", "--json")).stdout)
    assert direct == imported
    run = tmp_path / "run"
    ok(invoke("train", root / "walk.xml", "--video", video, "-o", run, "--init", "tiny", "--steps", "2",
              "--batch-size", "1", "--clip-frames", "2", "--crop", "64x96", "--short-side", "64,64",
              "--num-points", "128", "--save-every", "0", "-q"))
    assert (run / "model.safetensors").is_file()


def test_bad_annotation_files_are_one_line_and_write_nothing(exported, tmp_path):
    root, video, _ = exported
    out = tmp_path / "gt.json"
    (tmp_path / "other.xml").write_text("<?xml version='1.0'?><svg><rect/></svg>")
    assert "CVAT" in one_line_error(invoke("import", tmp_path / "other.xml", "--video", video, "-o", out))
    text = (root / "walk.xml").read_text()
    first_label = text.split("<track ", 1)[1].split('label="', 1)[1].split('"', 1)[0]
    (tmp_path / "nolabel.xml").write_text(text.replace(f"<name>{first_label}</name>", "<name>renamed</name>"))
    assert first_label in one_line_error(invoke("import", tmp_path / "nolabel.xml", "--video", video, "-o", out))
    short = make_video(tmp_path / "short.mp4", frames=3, size=(96, 64))
    assert "frame" in one_line_error(invoke("import", root / "walk.xml", "--video", short, "-o", out))
    coco = json.loads((root / "walk.coco.json").read_text())
    for image in coco["images"]:
        image.pop("frame_index")
        image["file_name"] = "picture.jpg"
    (tmp_path / "nomatch.json").write_text(json.dumps(coco))
    assert "picture.jpg" in one_line_error(invoke("import", tmp_path / "nomatch.json", "--video", video, "-o", out))
    ok(invoke("segment", video, "--from", root / "r.json", "-o", tmp_path / "ds.json", "--format", "ytvis-dataset"))
    assert "already a YouTube-VIS dataset" in one_line_error(invoke("import", tmp_path / "ds.json", "-o", out))
    assert sorted(os.listdir(tmp_path)) == ["ds.json", "nolabel.xml", "nomatch.json", "other.xml", "short.mp4"]


def test_import_refuses_an_existing_output_and_the_input_itself(exported, tmp_path):
    root, video, _ = exported
    (tmp_path / "gt.json").write_text("{}")
    assert "--overwrite" in one_line_error(invoke("import", root / "walk.xml", "-o", tmp_path / "gt.json"))
    assert "never writes over what it reads" in one_line_error(invoke("import", root / "walk.xml", "-o", root / "walk.xml",
                                                                     "--overwrite"))
    assert (tmp_path / "gt.json").read_text() == "{}"
