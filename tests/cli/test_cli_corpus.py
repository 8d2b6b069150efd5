"""``segment`` with several sources through the command line: one output per video, the manifest,
one ``Failed:`` line per bad video, the summary, exit codes, resume. (The corpus itself is tested
in tests/corpus/test_corpus.py.)"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from media import make_video
from videomt_cli import cli


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def test_a_corpus_with_a_bad_video_writes_the_good_ones_and_exits_1(tmp_path):
    videos = tmp_path / "in"
    (videos / "cam1").mkdir(parents=True)
    make_video(videos / "cam1" / "walk.mp4", frames=3, size=(64, 48))
    make_video(videos / "run.mp4", frames=3, size=(64, 48))
    (videos / "notes.mp4").write_text("not a video")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two more\n{videos / 'run.mp4'}\n{videos / 'missing.mp4'}\n")
    out = tmp_path / "out"

    result = invoke("segment", videos, f"@{listing}", "-o", out, "--format", "mot")
    assert result.exit_code == 1, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == ["cam1/walk.txt", "run.txt"]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted((line["output"], line["status"]) for line in lines) == [
        ("cam1/walk.txt", "ok"), ("missing.txt", "failed"), ("notes.txt", "failed"), ("run.txt", "ok")]
    assert result.output.count("Failed:") == 2
    assert "(2 ok, 2 failed, 0 skipped;" in result.output.splitlines()[-1]

    again = invoke("segment", videos, f"@{listing}", "-o", out, "--format", "mot")
    assert again.exit_code == 1
    assert "(0 ok, 2 failed, 2 skipped;" in again.output.splitlines()[-1]


def test_corpus_mode_needs_an_output_folder_and_one_video_options(tmp_path):
    make_video(tmp_path / "a.mp4", frames=2, size=(64, 48))
    make_video(tmp_path / "b.mp4", frames=2, size=(64, 48))
    result = invoke("segment", tmp_path / "a.mp4", tmp_path / "b.mp4")
    assert result.exit_code == 1 and "-o FOLDER" in str(result.exception)
    result = invoke("segment", tmp_path / "a.mp4", tmp_path / "b.mp4", "-o", tmp_path / "o", "--from", "x.json")
    assert result.exit_code == 1 and "--from" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_batch_videos_through_the_command_line(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        make_video(tmp_path / "in" / f"{name}.mp4", frames=3, size=(64, 48))
    result = invoke("segment", tmp_path / "in", "-o", tmp_path / "out", "--batch-videos", "2")
    assert result.exit_code == 0, result.output
    assert "(3 ok, 0 failed, 0 skipped;" in result.output.splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["a.json", "b.json", "c.json"]
    one = invoke("segment", tmp_path / "in" / "a.mp4", "-o", tmp_path / "x.json", "--batch-videos", "2")
    assert one.exit_code == 1 and "several videos" in str(one.exception)
