"""The faults real files, disks and signals bring: one line, no traceback, nothing left behind.

- A full disk (a real, small tmpfs: root only) at random points of a run, for every kind of
  output (YouTube-VIS and COCO JSON, PNG folders, overlay videos) and for the spill file in the
  temporary folder: exit 1, one ``Error:`` line naming the cause, no file left.
- SIGINT, SIGTERM and SIGHUP at random (seeded) moments of real ``python -m videomt_cli.cli``
  runs of ``segment`` and ``overlay``: one line ("Interrupted.", "Terminated.", "Hangup."), exit
  130 / 143 / 129, nothing left in the output folder. A run the signal reaches only after it
  finished must have written its whole output.
- SIGKILL, which nothing can catch: the next run into the same place removes what it left.
- C code that turns the interrupt into another exception (pycocotools' ``TypeError``).

Every run uses the bundled demo model (no ``--model``) on tiny videos.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media import make_video
from videomt_cli import cli

EXAMPLE = Path(__file__).parents[1] / "examples" / "example.mp4"  # 64 frames: masks that fill a few pages
MESSAGES = {signal.SIGINT: "Interrupted.", signal.SIGTERM: "Terminated.", signal.SIGHUP: "Hangup."}
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _restore_signals():
    """cli.main() keeps its handlers (then ignores the signals); give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in MESSAGES}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("faults") / "clip.mp4", frames=16, size=(64, 48))


SEGMENT_SECONDS = []  # how long a whole `segment` of `video` took here (the results fixture's run)


@pytest.fixture(scope="module")
def results(video, tmp_path_factory) -> Path:
    """A results file of the demo model on ``video``, for ``overlay --from``."""
    out = tmp_path_factory.mktemp("results") / "clip.json"
    began = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "videomt_cli.cli", "-q", "segment", str(video), "-o", str(out)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    SEGMENT_SECONDS.append(time.monotonic() - began)
    assert run.returncode == 0, run.stderr
    return out


def error_lines(text: str) -> list[str]:
    """stderr without the demo model's note and blank lines (a progress bar erases itself)."""
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("Note:")]


def run_main(capfd, monkeypatch, *args: str) -> tuple[int, str]:
    """``videomt ARGS`` in this process through the console entry; (exit code, fd-level stderr):
    libpng or FFmpeg printing to the C stderr shows up here too."""
    monkeypatch.setattr(sys, "argv", ["videomt", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capfd.readouterr().err


def _handlers_installed(pid: int) -> bool:
    """Whether the process catches SIGTERM yet (cli.main installs its handlers)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return False


def start(*args: str) -> subprocess.Popen:
    # One torch thread each: a few runs share the CPU cores at once.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "videomt_cli.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_until(predicate, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (or hung) before the moment the test waits for: {err[-2000:]}")
        time.sleep(0.005)


@contextlib.contextmanager
def tmpfs(folder: Path, kib: int):
    """A real tmpfs of ``kib`` KiB mounted on ``folder``; always unmounted."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


needs_root = pytest.mark.skipif(not ROOT or not sys.platform.startswith("linux"),
                                reason="mounting a small tmpfs needs root on Linux")


# ----------------------------------------------------------------------------- a full disk


@needs_root
@pytest.mark.parametrize("name, fmt", [("r.json", "ytvis"), ("masks", "png")])
def test_a_full_disk_is_one_line_that_names_the_cause_and_leaves_nothing(video, tmp_path, capfd, monkeypatch,
                                                                         name, fmt):
    # 4 KiB: the temporary is created, the first real write fails (libpng used to print its own
    # line first, and the JSON sink raised again from its cleanup).
    with tmpfs(tmp_path / "disk", 4) as disk:
        code, err = run_main(capfd, monkeypatch, "segment", video, "-o", disk / name, "--format", fmt, "-q")
        assert code == 1
        lines = error_lines(err)
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("Error: ") and f"no space left on the device of {disk / name}" in lines[0]
        assert os.listdir(disk) == []


@needs_root
def test_a_full_temporary_folder_names_tmpdir(video, tmp_path, capfd, monkeypatch):
    import tempfile

    out = tmp_path / "out"
    out.mkdir()
    with tmpfs(tmp_path / "tmp", 4) as spill:
        monkeypatch.setenv("TMPDIR", str(spill))
        monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
        code, err = run_main(capfd, monkeypatch, "segment", EXAMPLE, "-o", out / "r.json", "-q")
        assert code == 1
        lines = error_lines(err)
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"no space left on the device of {spill}" in lines[0] and "TMPDIR" in lines[0]
        assert os.listdir(spill) == [] and os.listdir(out) == []
    monkeypatch.setattr(tempfile, "tempdir", None)


def _output_kib(path: Path) -> int:
    """KiB a finished output takes on a tmpfs (whole pages per file)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(-(-p.stat().st_size // 4096) * 4 for p in files) + 4


@needs_root
def test_a_disk_that_fills_at_random_points_never_leaves_a_file_behind(video, results, tmp_path, capfd, monkeypatch):
    """Each output kind on a tmpfs smaller than it needs, at seeded random sizes (so the disk fills at
    a different write each time), and the spill file in a small TMPDIR: always exit 1, one line
    that says no space is left, and the tmpfs empty afterwards."""
    import tempfile

    rng = random.Random(5)
    cases = {
        "json": ["segment", video, "-o", "{disk}/r.json"],
        "coco": ["segment", video, "-o", "{disk}/r.json", "--format", "coco"],
        "png": ["segment", video, "-o", "{disk}/masks"],
        "mots": ["segment", EXAMPLE, "-o", "{disk}/t.txt", "--format", "mots"],  # big enough to fill a disk
        "overlay": ["overlay", video, "--from", results, "-o", "{disk}/o.mp4"],
    }
    sizes = {}
    for kind, args in cases.items():  # how much room each output needs
        whole = tmp_path / "whole" / kind
        whole.mkdir(parents=True)
        code, err = run_main(capfd, monkeypatch, *[str(a).format(disk=whole) for a in args], "-q")
        assert code == 0, err
        (produced,) = list(whole.iterdir())
        sizes[kind] = _output_kib(produced)
    trials = [(kind, rng.randrange(4, max(5, sizes[kind] - 4), 4)) for kind in cases for _ in range(2)]
    trials += [("spill", kib) for kib in (4, rng.randrange(8, 48, 4))]
    out = tmp_path / "out"
    out.mkdir()
    for kind, kib in trials:
        with tmpfs(tmp_path / f"disk-{kind}-{kib}", kib) as disk:
            if kind == "spill":
                monkeypatch.setenv("TMPDIR", str(disk))
                monkeypatch.setattr(tempfile, "tempdir", None)
                args = ["segment", EXAMPLE, "-o", out / "r.json"]
            else:
                args = [str(a).format(disk=disk) for a in cases[kind]]
            try:
                code, err = run_main(capfd, monkeypatch, *args, *(["-q"] if rng.random() < 0.5 else []))
            finally:
                monkeypatch.delenv("TMPDIR", raising=False)
                monkeypatch.setattr(tempfile, "tempdir", None)
            lines = error_lines(err)
            where = f"{kind} on {kib} KiB (needs {sizes.get(kind, '?')})"
            assert "Traceback" not in err, (where, err)
            assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (where, err)
            named = disk if kind == "spill" else Path(str(cases[kind][cases[kind].index("-o") + 1]).format(disk=disk))
            assert f"no space left on the device of {named}" in lines[0], (where, lines[0])
            assert os.listdir(disk) == [], (where, os.listdir(disk))
            assert os.listdir(out) == [], where


# ----------------------------------------------------------------------------- signals


def _signal_outcome(proc: subprocess.Popen, err: str, sig: int, out_dir: Path, where: str) -> str:
    """Check a run that was sent ``sig``: the signal's one line, its exit code and nothing left; or,
    if the run was already through when the signal came, a whole output and exit 0."""
    assert "Traceback" not in err, (where, err)
    left = sorted(os.listdir(out_dir))
    if proc.returncode == 0:  # the signal came after the output was in place
        assert left and not any(name.startswith(".") for name in left), (where, left)
        return "finished"
    assert proc.returncode == 128 + sig, (where, proc.returncode, err)
    assert error_lines(err) == [MESSAGES[sig]], (where, err)
    assert left == [], (where, left)
    return "stopped"


def _signalled_run(args: list, sig: int, delay: float | None = None, when=None) -> tuple[subprocess.Popen, str]:
    """Start a run, wait for its handlers, then ``delay`` seconds (or until ``when()``), send ``sig``."""
    proc = start(*args)
    wait_until(lambda: _handlers_installed(proc.pid), proc)
    if when is not None:
        wait_until(when, proc)
    else:
        time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, err


def _in_parallel(jobs: list, workers: int = 3) -> list:
    """Run (function, args) jobs a few at a time (each is mostly a subprocess that waits)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: job[0](*job[1]), jobs))


def test_signals_at_random_points_of_segment_and_overlay_end_in_one_line_and_leave_nothing(video, results,
                                                                                           tmp_path):
    """SIGINT, SIGTERM and SIGHUP at seeded random moments (from the handlers' installation to the
    end of a clean run: the imports, the model, the frames, the writing) of ``segment`` into a
    random output kind and of ``overlay`` (from results or with the model); three runs at a time."""
    rng = random.Random(7)
    segment_outputs = [["{out}/r.json"], ["{out}/masks"], ["{out}/c.json", "--format", "coco"], ["{out}/s.mp4"]]
    duration = SEGMENT_SECONDS[0]
    plan = []
    for i, sig in enumerate([signal.SIGINT, signal.SIGTERM, signal.SIGHUP] * 2):
        if i < 3:
            name, args = "segment", ["segment", video, "-o", *rng.choice(segment_outputs)]
        elif rng.random() < 0.5:
            name, args = "overlay --from", ["overlay", video, "--from", results, "-o", "{out}/o.mp4"]
        else:
            name, args = "overlay", ["overlay", video, "-o", "{out}/o.mp4"]
        delay = rng.uniform(0.0, duration * (1.3 if name == "overlay" else 1.0))
        out = tmp_path / f"run{i}"
        out.mkdir()
        args = [str(a).format(out=out) for a in args] + (["-q"] if rng.random() < 0.5 else [])
        plan.append((f"{' '.join(args[:1] + args[2:])} {signal.Signals(sig).name} after {delay:.2f} s", sig, out,
                     (_signalled_run, (args, sig, delay))))
    done = _in_parallel([job for *_, job in plan])
    outcomes = [_signal_outcome(proc, err, sig, out, where) for (where, sig, out, _), (proc, err) in zip(plan, done)]
    print([w for w, *_ in plan], outcomes, SEGMENT_SECONDS)  # DEBUG
    assert outcomes.count("stopped") >= len(outcomes) // 2, outcomes  # the moments fell inside the runs


def test_a_signal_while_the_output_is_written_removes_the_temporary(video, results, tmp_path):
    """The moment a hidden temporary exists: SIGTERM and SIGHUP used to leave it behind (JSON, a
    PNG folder, the overlay's partial mp4) and exit silently by the signal."""
    jobs, checks = [], []
    for name, sig in [("r.json", signal.SIGTERM), ("masks", signal.SIGHUP), ("o.mp4", signal.SIGTERM)]:
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        args = (["overlay", video, "--from", results, "-o", out / name] if name == "o.mp4"
                else ["segment", video, "-o", out / name])
        hidden = (lambda folder: lambda: any(n.startswith(".") for n in os.listdir(folder)))(out)
        jobs.append((_signalled_run, (args, sig, None, hidden)))
        checks.append((sig, out, name))
    for (sig, out, name), (proc, err) in zip(checks, _in_parallel(jobs)):
        assert _signal_outcome(proc, err, sig, out, name) == "stopped"


def test_after_sigkill_the_next_run_removes_the_leftovers(video, tmp_path):
    out = tmp_path / "masks"
    proc = start("segment", video, "-o", out)
    wait_until(lambda: any(n.startswith(".masks.tmp-") for n in os.listdir(tmp_path)), proc)
    proc.kill()
    proc.communicate()
    left = [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert left and str(proc.pid) in left[0]  # SIGKILL: nothing could clean up
    run = subprocess.run([sys.executable, "-m", "videomt_cli.cli", "-q", "segment", str(video), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert os.listdir(tmp_path) == ["masks"]


def test_an_interrupt_that_c_code_turns_into_another_error_is_still_an_interrupt(video, results, tmp_path, capfd,
                                                                                monkeypatch):
    """Ctrl-C inside pycocotools can surface as ``TypeError: __array__() got an unexpected keyword
    argument 'copy'``: after a signal, whatever comes up is reported as the signal."""
    from videomt_cli.io import masks

    real = masks.dense
    calls = []

    def dense(rle):
        calls.append(1)
        if len(calls) == 3:
            try:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C, delivered inside the C call
            except KeyboardInterrupt:
                raise TypeError("__array__() got an unexpected keyword argument 'copy'") from None
        return real(rle)

    monkeypatch.setattr(masks, "dense", dense)
    out = tmp_path / "out"
    out.mkdir()
    code, err = run_main(capfd, monkeypatch, "overlay", video, "--from", results, "-o", out / "o.mp4", "-q")
    assert code == 130 and error_lines(err) == ["Interrupted."] and "Traceback" not in err, err
    assert os.listdir(out) == []


def test_a_finished_run_ignores_a_late_signal(video, tmp_path, capfd, monkeypatch):
    """Once the output is in place the command has succeeded: a signal then changes nothing."""
    code, err = run_main(capfd, monkeypatch, "-q", "segment", video, "-o", tmp_path / "r.json")
    assert code == 0
    os.kill(os.getpid(), signal.SIGTERM)  # ignored now, until the process is gone
    assert json.loads((tmp_path / "r.json").read_text())


def test_write_errors_the_library_did_not_name_are_one_line(capfd, monkeypatch, tmp_path):
    """An OSError of the place (full, read-only) that escapes a command: one line, exit 1."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "data" / "x.jpg"))

    from videomt_cli.training import synth

    monkeypatch.setattr(synth, "generate", full)
    code, err = run_main(capfd, monkeypatch, "synth", "-o", tmp_path / "data", "--videos", "1", "-q")
    assert code == 1
    assert error_lines(err) == [f"Error: No space left on the device of {tmp_path / 'data' / 'x.jpg'}."]


def test_a_signal_inside_a_callback_that_cannot_raise_still_stops_the_run(video, tmp_path):
    """A signal that lands in a weakref callback or a ``__del__`` (the import system has both) is
    swallowed there, and Python printed "Exception ignored in ... Traceback" (seen at random
    moments): it must stay silent and stop the run at the next chunk. A real process: pytest
    catches unraisable exceptions itself."""
    out = tmp_path / "out"
    out.mkdir()
    script = f"""
import signal, sys, weakref
from videomt_cli import cli
from videomt_cli.inference.predictor import Predictor

real, calls = Predictor.forward, []

class Thing:
    pass

def forward(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
        thing = Thing()
        ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGTERM))
        del thing  # the callback runs now; the handler's exception cannot leave it
    assert len(calls) == 1, "the run went on after the signal"
    return real(self, *args, **kwargs)

Predictor.forward = forward
sys.argv = ["videomt", "segment", {str(video)!r}, "-o", {str(out / "r.json")!r}, "-q", "--chunk-size", "2"]
cli.main()
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 143 and run.stderr == "Terminated.\n", run.stderr
    assert os.listdir(out) == []
