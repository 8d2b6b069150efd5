"""videomt_cli.io.atomic: outputs written into a hidden temporary beside the destination and
renamed onto it only when complete; a failed write leaves the destination as it was and nothing
else behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from videomt_cli.errors import OutputError
from videomt_cli.io.atomic import AtomicPath, atomic_path, temp_name


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (relative) with its bytes, None for folders."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def test_temp_name_is_hidden_beside_the_path_and_keeps_the_suffix(tmp_path):
    path = tmp_path / "sub" / "out.mp4"
    a, b = temp_name(path), temp_name(path)
    assert a != b
    assert a.parent == path.parent and a.name.startswith(".out.tmp-") and a.suffix == ".mp4"
    assert temp_name(path, ".old").name.endswith(".mp4.old")


def test_atomic_path_commits_a_file(tmp_path):
    out = tmp_path / "r.json"
    with atomic_path(out) as tmp:
        assert tmp.is_file() and tmp.read_bytes() == b""  # created at once, empty
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        assert not out.exists()
        tmp.write_text("[1, 2]")
    assert out.read_text() == "[1, 2]"
    assert not tmp.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_path_replaces_an_existing_file(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old")
    with atomic_path(out) as tmp:
        assert out.read_text() == "old"  # untouched until the commit
        tmp.write_text("new")
    assert out.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("is_dir", [False, True])
def test_atomic_path_discards_on_an_exception(tmp_path, exc, is_dir):
    out = tmp_path / "out"
    with pytest.raises(exc):
        with atomic_path(out, is_dir=is_dir) as tmp:
            if is_dir:
                (tmp / "a.png").write_bytes(b"x")
            else:
                tmp.write_text("half")
            raise exc()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("is_dir", [False, True])
def test_atomic_path_exception_keeps_the_old_output(tmp_path, is_dir):
    out = tmp_path / "out"
    if is_dir:
        out.mkdir()
        (out / "old.png").write_bytes(b"old")
    else:
        out.write_text("old")
    before = _tree(tmp_path)
    with pytest.raises(RuntimeError):
        with atomic_path(out, is_dir=is_dir) as tmp:
            (tmp / "new.png").write_bytes(b"new") if is_dir else tmp.write_text("new")
            raise RuntimeError("interrupted")
    assert _tree(tmp_path) == before


def test_a_folder_replaces_a_folder(tmp_path):
    out = tmp_path / "pngs"
    out.mkdir()
    (out / "00000.png").write_bytes(b"old")
    (out / "old-only.png").write_bytes(b"old")
    (out / "nested").mkdir()
    (out / "nested" / "x").write_bytes(b"old")
    with atomic_path(out, is_dir=True) as tmp:
        assert tmp.is_dir() and list(tmp.iterdir()) == []
        (tmp / "00000.png").write_bytes(b"new")
        (tmp / "meta.json").write_text("{}")
    assert _tree(tmp_path) == {"pngs": None, "pngs/00000.png": b"new", "pngs/meta.json": b"{}"}


def test_a_folder_replaces_a_file_and_a_file_a_folder(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert _tree(tmp_path) == {"out": None, "out/meta.json": b"{}"}
    with atomic_path(out) as tmp:
        tmp.write_text("a file again")
    assert _tree(tmp_path) == {"out": b"a file again"}


def test_overwrite_false_refuses_a_destination_that_appeared(tmp_path):
    out = tmp_path / "r.json"
    with pytest.raises(OutputError, match="--overwrite"):
        with atomic_path(out, overwrite=False) as tmp:
            tmp.write_text("mine")
            out.write_text("someone else's")  # appears while we write
    assert out.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    # a folder likewise
    folder = tmp_path / "pngs"
    a = AtomicPath(folder, is_dir=True, overwrite=False)
    (a.tmp / "x.png").write_bytes(b"mine")
    folder.mkdir()
    with pytest.raises(OutputError, match="already exists"):
        a.commit()
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pngs", "r.json"]


def test_overwrite_false_writes_a_new_destination(tmp_path):
    out = tmp_path / "r.json"
    with atomic_path(out, overwrite=False) as tmp:
        tmp.write_text("ok")
    assert out.read_text() == "ok"


def test_commit_and_discard_by_hand(tmp_path):
    out = tmp_path / "a" / "b" / "out.txt"  # parent folders are created
    a = AtomicPath(out)
    assert a.tmp.is_file() and a.tmp.parent == out.parent
    a.tmp.write_text("done")
    assert a.commit() == out and out.read_text() == "done"
    assert a.tmp is None
    with pytest.raises(OutputError, match="already committed"):
        a.commit()
    a.discard()  # a no-op now
    assert out.read_text() == "done"

    b = AtomicPath(out)
    b.tmp.write_text("abandoned")
    b.discard()
    b.discard()
    assert out.read_text() == "done" and [p.name for p in out.parent.iterdir()] == ["out.txt"]
    with pytest.raises(OutputError):
        b.commit()


def test_create_false_only_reserves_the_name(tmp_path):
    out = tmp_path / "ov.mp4"
    a = AtomicPath(out, create=False)
    assert not a.tmp.exists() and a.tmp.suffix == ".mp4"
    a.tmp.write_bytes(b"muxed")  # what FFmpeg's muxer does
    a.commit()
    assert out.read_bytes() == b"muxed" and [p.name for p in tmp_path.iterdir()] == ["ov.mp4"]
    b = AtomicPath(out, create=False)
    b.discard()  # nothing was created: nothing to remove, no error
    assert [p.name for p in tmp_path.iterdir()] == ["ov.mp4"]


def test_committed_file_has_the_usual_permissions(tmp_path):
    out = tmp_path / "r.json"
    with atomic_path(out) as tmp:
        tmp.write_text("x")
    old = os.umask(0)
    os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o666 & ~old


def test_unwritable_destinations_are_output_errors(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Cannot write") as e:
        AtomicPath(blocker / "sub" / "out.json")
    assert "\n" not in str(e.value)
    with pytest.raises(OutputError, match="Cannot write"):
        with atomic_path("/proc/videomt-atomic-test.json"):
            pass
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Cannot write"):
            AtomicPath(ro / "r.json")
    finally:
        ro.chmod(0o755)


# ----------------------------------------------------------------------------- failed writes, named


def test_a_failed_write_names_its_cause_and_the_destination(tmp_path):
    import errno

    from videomt_cli.io.atomic import output_error, write_cause

    out = tmp_path / "r.json"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert write_cause(full, out) == f"no space left on the device of {out}"
    message = str(output_error(full, out))
    assert message.startswith(f"Cannot write {out}: no space left on the device of {out}; free some space")
    for code, words in [(errno.EDQUOT, "quota"), (errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
                        (errno.EFBIG, "larger than")]:
        assert words in str(output_error(OSError(code, os.strerror(code)), out)), code
    assert "Weird" in write_cause(OSError(errno.ENXIO, "Weird"), out)


def test_a_full_disk_inside_atomic_path_is_one_output_error_and_leaves_nothing(tmp_path):
    out = tmp_path / "r.json"
    with pytest.raises(OutputError, match="no space left on the device of") as e:
        with atomic_path(out) as tmp:
            tmp.write_text("partial")
            with open("/dev/full", "wb") as f:  # every write: ENOSPC
                f.write(b"x")
                f.flush()
    assert str(out) in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_discard_never_raises(tmp_path, monkeypatch):
    a = AtomicPath(tmp_path / "masks", is_dir=True)
    (a.tmp / "x.png").write_bytes(b"x")

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("shutil.rmtree", broken)
    monkeypatch.setattr(Path, "unlink", broken)
    a.discard()  # the device failed: the cleanup gives up quietly, the real error goes on
    assert a.tmp is None


# ----------------------------------------------------------------------------- leftovers of killed runs


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(path: Path, pid: int, suffix: str = "") -> Path:
    """The temporary name process ``pid`` would have used for ``path``."""
    mine = temp_name(path, suffix)
    return mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{pid}-"))


def test_temp_names_carry_the_writers_pid(tmp_path):
    assert f"-{os.getpid()}-" in temp_name(tmp_path / "r.json").name


def test_a_new_write_removes_the_leftovers_of_dead_runs_only(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "r.json"
    dead = _leftover(out, _dead_pid())
    dead.write_text("killed mid-write")
    dead_dir = _leftover(tmp_path / "masks", _dead_pid())
    dead_dir.mkdir()
    (dead_dir / "00000.png").write_bytes(b"x")
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = _leftover(out, live_proc.pid)
        live.write_text("another run, still writing")
        other = tmp_path / ".r.tmp-0000-1-00000000.json"  # another machine's: not ours to judge
        other.write_text("x")
        foreign = tmp_path / ".rr.tmp-x.json"
        foreign.write_text("not videomt's")
        with atomic_path(out) as tmp:
            tmp.write_text("new")
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == sorted([live.name, other.name, foreign.name, dead_dir.name, "r.json"])
        with atomic_path(tmp_path / "masks", is_dir=True):
            pass
        assert not dead_dir.exists() and (tmp_path / "masks").is_dir()
    finally:
        live_proc.kill()
        live_proc.wait()


def test_an_old_output_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    from videomt_cli.io.atomic import remove_leftovers

    out = tmp_path / "masks"
    pid = _dead_pid()
    old = _leftover(out, pid, ".old")  # killed between moving the old output aside and the new in place
    old.mkdir()
    (old / "meta.json").write_text("{}")
    new = _leftover(out, pid)
    new.mkdir()
    remove_leftovers(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]
    assert (out / "meta.json").read_text() == "{}"


def test_leftovers_of_the_overlay_muxer_are_recognised(tmp_path):
    from videomt_cli.io.atomic import remove_leftovers

    out = tmp_path / "o.mp4"
    pid = _dead_pid()
    sink_tmp = _leftover(out, pid)  # the sink's temporary name; the muxer writes to a temporary of that
    muxed = _leftover(sink_tmp, pid)
    muxed.write_bytes(b"half a video")
    assert muxed.name.startswith("..o.tmp-")
    remove_leftovers(out)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- outputs that are inputs


def test_an_output_that_is_an_input_is_refused(tmp_path):
    from videomt_cli.io.atomic import refuse_input_as_output

    video = tmp_path / "a.mp4"
    video.write_bytes(b"video")
    (tmp_path / "s.mp4").symlink_to(video)
    os.link(video, tmp_path / "h.mp4")
    frames = tmp_path / "frames"
    frames.mkdir()
    for output, source in [(video, video), (tmp_path / "s.mp4", video), (video, tmp_path / "s.mp4"),
                           (tmp_path / "h.mp4", video), (tmp_path / "sub" / ".." / "a.mp4", video),
                           (frames, frames), (frames / "r.json", frames), (tmp_path, video)]:
        with pytest.raises(OutputError, match="output"):
            refuse_input_as_output(output, [source])
    refuse_input_as_output(tmp_path / "a.json", [video, None, "videomt-s-ytvis19"])  # fine
    refuse_input_as_output(tmp_path / "frames.json", [frames])


def test_a_discarded_write_removes_the_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a" / "b" / "r.json"):
            raise RuntimeError("failed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a" / "b" / "r.json"):
            raise RuntimeError("failed")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["keep.txt"]
