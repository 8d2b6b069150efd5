"""The ``videomt`` command line. The only module that imports Typer and Rich.

Every command parses its options, calls the library, and renders progress and results. Library
errors (the ``VideoMTError`` family) become one red line and exit code 1; usage errors exit 2.

Signals: Ctrl-C (SIGINT), SIGTERM and SIGHUP all unwind the same way, as an :class:`Interrupted`
(a ``KeyboardInterrupt``) raised in the main thread, so every ``with`` block removes its
temporary output; the run then ends with one line ("Interrupted.", "Terminated.", "Hangup.")
and exit code 128 + the signal's number (130, 143, 129). Whatever exception surfaces after a
signal (C code can turn the interrupt into another one) is reported as that signal.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from videomt_cli.errors import InputError, VideoMTError
from videomt_cli.io.atomic import WRITE_ERRNOS, refuse_input_as_output, write_cause

app = typer.Typer(
    name="videomt",
    help="Video segmentation and tracking with VidEoMT: video in, masks and tracks out.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


class _State:
    quiet = False


# ----------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) turned into an exception that unwinds the run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_SIGNAL_LINES = {signal.SIGINT: "Interrupted.", signal.SIGTERM: "Terminated."}
if hasattr(signal, "SIGHUP"):
    _SIGNAL_LINES[signal.SIGHUP] = "Hangup."


class _Signals:
    """The one place signals become a clean unwind (installed by :func:`main`).

    The first signal raises :class:`Interrupted` in the main thread. Another one during the
    unwind is ignored, so the cleanup finishes (unless the unwind takes more than 2 seconds, or
    the first was swallowed: then it raises again). A swallowed one (by C code, or by a callback
    that cannot raise, where Python would print "Exception ignored") is raised again by
    :meth:`check` at the next chunk, frame or commit. While the output is being moved
    into place (:meth:`deferred`) a signal only waits; once the output is in place
    (``finished``) the command has succeeded and a late signal changes nothing.
    """

    received: int | None = None
    at = 0.0
    deferring = False
    finished = False

    installed: list[int] = []

    @classmethod
    def install(cls) -> None:
        cls.received, cls.at, cls.deferring, cls.finished = None, 0.0, False, False
        cls.installed = []
        if sys.unraisablehook != cls._unraisable:
            cls._next_hook = sys.unraisablehook
        sys.unraisablehook = cls._unraisable
        for signum in _SIGNAL_LINES:
            try:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # nohup, a background job: the signal is meant to be ignored
                signal.signal(signum, cls._handle)
                cls.installed.append(signum)
            except (ValueError, OSError):  # not the main thread (embedded use): leave it alone
                pass

    @classmethod
    def ignore(cls) -> None:
        """The run is over: ignore the signals until the process is gone. (Python puts the default
        handlers back while it shuts down, and a signal then would kill the finished run silently.)"""
        cls.finished = True
        for signum in cls.installed:
            try:
                signal.signal(signum, signal.SIG_IGN)
            except (ValueError, OSError):
                pass
        if sys.unraisablehook == cls._unraisable:
            sys.unraisablehook = cls._next_hook

    _next_hook = staticmethod(sys.__unraisablehook__)

    @classmethod
    def _unraisable(cls, unraisable) -> None:
        # The signal came while Python ran a callback that cannot raise (a weakref callback of the
        # import system, a __del__): Python would print "Exception ignored in ..." and a traceback.
        # Stay silent; the next check() (every chunk, every frame, before the commit) raises it.
        if isinstance(unraisable.exc_value, Interrupted) or (
                cls.received is not None and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            return
        cls._next_hook(unraisable)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        now = time.monotonic()
        if cls.finished:
            return
        if cls.received is None:
            cls.received, cls.at = signum, now
            if not cls.deferring:
                raise Interrupted(signum)
        elif not cls.deferring and now - cls.at > 2.0:
            cls.at = now
            raise Interrupted(cls.received)

    @classmethod
    def check(cls) -> None:
        """Raise the signal received (one that C code swallowed, or one deferred) now."""
        if cls.received is not None and not cls.finished:
            raise Interrupted(cls.received)

    @classmethod
    @contextmanager
    def deferred(cls):
        cls.deferring = True
        try:
            yield
        finally:
            cls.deferring = False


def _commit(sink) -> None:
    """Move a sink's output into place: a signal received before stops it; one during waits."""
    _Signals.check()
    with _Signals.deferred():
        sink.close()
    _Signals.finished = True


_QUIET_HELP = "Print only errors and final paths (no progress bars)."


@app.callback()
def _main(quiet: bool = typer.Option(False, "--quiet", "-q", help=_QUIET_HELP)) -> None:
    _State.quiet = quiet  # reset on every invocation: the CLI may run many times in one process (tests)


def _quiet_option():
    # The same flag on the commands that print progress, so `videomt segment x.mp4 -q` works as well
    # as `videomt -q segment x.mp4` (people put it after the command).
    return typer.Option(False, "--quiet", "-q", help=_QUIET_HELP)


def _set_quiet(quiet: bool) -> None:
    _State.quiet = _State.quiet or quiet


def say(*args, **kwargs) -> None:
    # soft_wrap: a long path must stay on one line that scripts can copy, not be folded at 80 columns.
    if not _State.quiet:
        out.print(*args, soft_wrap=True, **kwargs)


def wrote(path, details: str = "") -> None:
    """The final line of a command that writes something: the bare path under --quiet (for scripts)."""
    if _State.quiet:
        out.print(escape(str(path)), soft_wrap=True, highlight=False)
    else:
        out.print(f"[green]Wrote[/green] {escape(str(path))}{escape(details)}", soft_wrap=True)


def warn(message: str) -> None:
    # Messages hold paths and lists like [1, 2]: escape them so Rich never reads them as markup.
    err.print(f"[yellow]Warning:[/yellow] {escape(str(message))}", soft_wrap=True, highlight=False)


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """'448x800', '448,800' or '640' -> (h, w)."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--size {text!r} is not HxW or a single number, e.g. 448x800 or 640.") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise InputError(f"--size {text!r} must be two positive numbers HxW, e.g. 448x800.")
    return values[0], values[1]


# ----------------------------------------------------------------------------- convert


@app.command(epilog="Example: videomt convert yt_2019_vit_small_52.8.pth -o videomt-s-ytvis19/")
def convert(
    source: str = typer.Argument(..., help="Official .pth, Hugging Face dir or hub id, or a videomt .safetensors."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (Hugging Face format), or a "
                                "file ending in .safetensors for videomt's single-file format."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    quiet: bool = _quiet_option(),
) -> None:
    """Convert a VidEoMT checkpoint to a directory that videomt and transformers both load."""
    from videomt_cli.modeling import checkpoint, registry
    from videomt_cli.modeling import labels as label_tables

    _set_quiet(quiet)
    refuse_input_as_output(output, [source], what="checkpoint")
    if output.exists() and not overwrite and (output.is_file() or any(output.iterdir())):
        raise InputError(f"{output} already exists; pass --overwrite to replace it.")
    loaded = checkpoint.load_model(source)
    names = loaded.labels
    entry = registry.match(source)
    if entry is not None and label_tables.has_table(entry.labels):  # the dataset's names in head order
        names = [c.name for c in label_tables.categories(entry.labels)]
    if output.suffix == ".safetensors":
        # dataset category ids (written by `videomt train`) travel with the names they belong to
        ids = loaded.meta.get("category_ids") if names == loaded.labels else None
        checkpoint.save(loaded.model, output, labels=names, **({"category_ids": ids} if ids else {}))
    else:
        checkpoint.save_hf(loaded.model, output, labels=names)
    _Signals.finished = True  # written: a late signal changes nothing
    for line in loaded.report.lines():
        say(f"  {escape(line)}")
    cfg = loaded.config
    wrote(output, f"  (C={cfg.hidden_size}, L={cfg.num_layers}, k={cfg.num_query_blocks}, "
                  f"Q={cfg.num_queries}, K={cfg.num_classes}, image_size={cfg.image_size})")


# ----------------------------------------------------------------------------- verify


@app.command(epilog="Example: videomt verify --ckpt videomt-s-ytvis19/ --frames 3 --size 448x800")
def verify(
    ckpt: str = typer.Option(..., "--ckpt", help="Checkpoint path or hub id."),
    frames: int = typer.Option(3, "--frames", min=1, max=64, help="Frames in the random test clip."),
    size: Optional[str] = typer.Option(None, "--size", help="Frame size HxW (default: the stored square size; "
                                       "the reference only runs at that size)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random clip."),
) -> None:
    """Prove stage by stage that our network computes what the reference computes."""
    from videomt_cli import verify as verifier
    from videomt_cli.modeling import checkpoint

    loaded = checkpoint.load_model(ckpt)
    report = verifier.verify(loaded, frames=frames, size=_parse_size(size), seed=seed)
    table = Table(title=f"videomt verify: {ckpt}  ({report.frames} frames, {report.size[0]}x{report.size[1]})")
    for column in ("stage", "max |diff|", "mean |diff|", "tolerance", ""):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in report.rows:
        mark = "[green]ok[/green]" if row.ok else "[red]FAIL[/red]"
        table.add_row(row.stage, f"{row.max_abs:.3g}", f"{row.mean_abs:.3g}", f"{row.tol:.3g}", mark)
    if not _State.quiet:
        out.print(table)
    if report.reference_skipped:
        say(f"[yellow]Reference comparison skipped:[/yellow] {escape(str(report.reference_skipped))}")
    if not report.ok:
        failed = [r.stage for r in report.rows if not r.ok]
        err.print(f"[red]verify failed at {len(failed)} stage(s): {', '.join(failed[:5])}[/red]")
        raise typer.Exit(1)
    say("[green]All stages within tolerance.[/green]")


# ----------------------------------------------------------------------------- info, models


@app.command(epilog="Example: videomt info input.mp4")
def info(path: str = typer.Argument(..., help="A video file or a folder of frame images.")) -> None:
    """Print what a video holds: size, frames, frame rate, duration, codec, rotation, audio."""
    from rich.text import Text

    from videomt_cli.io.probe import info_lines, probe
    from videomt_cli.io.read import count_frames

    details = probe(path)
    # The frame count every command agrees on is what decodes, not the header's: decode the whole
    # video without RGB conversion (about 2-5 s per 1000 frames of 720p-1080p H.264 here).
    rows = info_lines(details, count_frames(details))
    width = max(len(key) for key, _ in rows)
    # Plain lines, not a table: a table cuts or folds a long path to the terminal's width (80
    # columns when piped); a path must stay whole and copyable.
    for key, value in rows:
        line = Text(key.ljust(width), style="bold")
        line.append(f"  {value}")
        out.print(line, soft_wrap=True, highlight=False)


@app.command()
def models() -> None:
    """List the known models, their task and whether their weights are on this machine."""
    from videomt_cli.modeling import registry

    # Hub ids are 40 characters: beside the other columns they fit only a wide terminal. On a
    # narrow one each source goes on its own line under its model, so nothing is cut or folded.
    default = registry.default().name
    rows = [(e.name + (" *" if e.name == default else ""), e.task, e.labels, str(e.min_size),
             "cached" if registry.is_cached(e) else "download", e.hub_ref or f"bundled: {e.file}")
            for e in registry.entries()]
    head = ("name", "task", "labels", "min size", "weights", "source")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    wide = out.width >= sum(widths) + 2 * 5 + max(len(r[5]) for r in rows)

    def line(cells) -> str:
        text = "  ".join(c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return f"{text}  {cells[5]}" if wide and len(cells) > 5 else text.rstrip()

    out.print("[bold]videomt models[/bold]")
    out.print(line(head), style="bold", markup=False, highlight=False)
    for row in rows:
        out.print(line(row), markup=False, highlight=False)
        if not wide:
            out.print(f"  {row[5]}", style="dim", markup=False, highlight=False)
    say("* the default: a demo model of synthetic shapes; --model NAME picks another.")
    say("Descriptions: weights/registry.json.")


# ----------------------------------------------------------------------------- segment, overlay

_MODEL_HELP = "Registry name (videomt models), hub id, directory or checkpoint file. Default: the registry's default."


@contextmanager
def _progress_bar():
    """A Rich progress bar on stderr (silent under --quiet).

    When the block fails the bar is erased, so a user error leaves exactly one red line on stderr
    (the error), not a half-drawn bar above it.
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=err, disable=_State.quiet, transient=False)
    with bar:
        try:
            yield bar
        except BaseException:
            bar.live.transient = True  # a terminal: erase the bar
            bar.live.stop()
            bar.disable = True  # so Progress.stop adds no blank line (it does on pipes and files)
            raise


def _run_with_progress(bar, predictor, source: str, label: str, **run):
    """Run the predictor with one bar per pass: frames/s and ETA, or a spinner if the length is unknown.

    ``bar`` is the command's :func:`_progress_bar`, open until its output is in place: a run that
    fails at the very end (a full disk at the commit) still leaves only the red line."""
    task_id = bar.add_task(label, total=None, rate="")
    started = [time.perf_counter(), -1]

    def progress(done, total, pass_index, passes):
        if pass_index != started[1]:
            started[:] = [time.perf_counter(), pass_index]
            suffix = f" (pass {pass_index + 1}/{passes})" if passes > 1 else ""
            bar.reset(task_id, total=total, description=label + suffix)
        rate = done / max(time.perf_counter() - started[0], 1e-9)
        bar.update(task_id, completed=done, total=total, rate=f"{rate:.1f} frames/s")
        _Signals.check()

    return predictor.run(source, progress=progress, **run)


def _make_predictor(model: Optional[str], **options):
    """Load the model for segment/overlay; print its warnings and notes (the demo model's)."""
    from videomt_cli.inference.predictor import Predictor  # imports torch: only once the inputs checked out

    predictor = Predictor.from_model(model, **options)
    for warning in predictor.warnings:
        warn(warning)
    for note in predictor.notes:  # information, not a warning: --quiet silences it
        if not _State.quiet:
            err.print(f"[dim]Note: {escape(note)}[/dim]", soft_wrap=True, highlight=False)
    return predictor


def _classes(text: Optional[str]) -> Optional[list[str]]:
    return [c for c in text.split(",") if c.strip()] if text else None


def _default_output(source: str, suffix: str) -> Path:
    path = Path(source)
    stem = path.name if path.is_dir() else path.stem
    return path.parent / f"{stem}{suffix}"


@app.command(epilog="Examples:\n\n  videomt segment input.mp4 -o out.json\n\n"
                    "  videomt segment input.mp4 -o masks/ --format png --stride 2 --start 10s --end 20s\n\n"
                    "  videomt segment frames_dir/ -o out.coco.json --format coco --classes person,dog\n\n"
                    "  videomt segment --dataset valid.json -o results.json  (then: videomt eval results.json valid.json)")
def segment(
    source: Optional[str] = typer.Argument(None, help="Video file or folder of frame images (none with --dataset)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file or folder (default: "
                                          "<input>.json beside the input)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="ytvis, ytvis-dataset, coco, png, overlay, "
                                      "mot or mots (default: from the output suffix)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=_MODEL_HELP),
    task: Optional[str] = typer.Option(None, "--task", help="instance, panoptic or semantic (default: the model's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16."),
    chunk_size: int = typer.Option(8, "--chunk-size", min=1, max=4096, help="Frames per network call; "
                                   "results do not depend on it."),
    min_size: Optional[int] = typer.Option(None, "--min-size", min=32, max=4096, help="Short side fed to the "
                                           "network (default: the model's, 448 for YouTube-VIS)."),
    stride: int = typer.Option(1, "--stride", min=1, help="Process every Nth frame; the others get null."),
    start: Optional[str] = typer.Option(None, "--start", help="First frame: a frame number (120) or a time (4.5s, 1:02)."),
    end: Optional[str] = typer.Option(None, "--end", help="Stop before this frame number or time."),
    max_num: Optional[int] = typer.Option(None, "--max-num", min=1, max=10000, help="Results kept per video "
                                          "(instance task; default: the model's, 10 for YouTube-VIS)."),
    score_threshold: float = typer.Option(0.0, "--score-threshold", min=0.0, max=1.0, help="Drop results below this score."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names or ids to keep."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Run every video of this YouTube-VIS dataset "
                                           "JSON into one results file for eval (then give no SOURCE)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="With --dataset: the folder its "
                                              "file_names are relative to (default: found beside the JSON)."),
    quiet: bool = _quiet_option(),
) -> None:
    """Segment and track objects in a video; write YouTube-VIS JSON, COCO JSON, PNG masks or an overlay.

    Output files appear only when the run succeeds (written to a temporary name, then renamed):
    an interrupted or failed run leaves nothing behind.
    """
    from videomt_cli import sinks
    from videomt_cli.io.probe import probe
    from videomt_cli.io.window import Window

    _set_quiet(quiet)
    if dataset is None and source is None:
        raise typer.BadParameter("give a video file or frame folder, or --dataset GT.json.", param_hint="SOURCE")
    if dataset is not None and source not in (None, "-"):
        raise typer.BadParameter("give either SOURCE or --dataset, not both.", param_hint="SOURCE")
    # Cheap checks first, the model (seconds to load, maybe a download) last: a missing or unreadable
    # input, a bad --start, an unknown --format or an existing output fail at once.
    if dataset is None:
        probe(source)
    Window.of(start, end, stride)  # a bad --start/--end fails before the model loads
    window = dict(start=start, end=end, stride=stride, classes=_classes(classes))

    def make_predictor():
        return _make_predictor(model, device=device, dtype=dtype, task=task, min_size=min_size,
                               chunk_size=chunk_size, max_num=max_num, score_threshold=score_threshold)

    if dataset is not None:
        if output is None:
            raise InputError("--dataset needs -o RESULTS.json.")
        if fmt is not None and sinks.format_for(output, fmt) != "ytvis":
            raise InputError("--dataset writes one YouTube-VIS results file (--format ytvis), for videomt eval.")
        refuse_input_as_output(output, [dataset], what="dataset")
        _segment_dataset(dataset, output, image_root, overwrite, make_predictor, window)
        return
    output = output or _default_output(source, ".json")
    refuse_input_as_output(output, [source])  # whatever --overwrite says: never write over the input
    # Open (and so validate) the sink before the long run: a bad format or an existing output fails fast.
    with sinks.open_sink(output, fmt, overwrite=overwrite) as sink:
        predictor = make_predictor()
        with _progress_bar() as bar:
            with _run_with_progress(bar, predictor, source, "segment", **window) as result:
                for warning in result.warnings:
                    warn(warning)
                sink.add(result)
            for warning in getattr(sink, "warnings", []):  # the overlay writer's (odd sizes, audio)
                warn(warning)
            _commit(sink)
    wrote(output, f"  ({len(result.segments)} results, {len(result.processed)} frames)")


@app.command(epilog="Examples:\n\n  videomt overlay input.mp4\n\n  videomt overlay input.mp4 --from out.json -o drawn.mp4")
def overlay(
    source: str = typer.Argument(..., help="Video file or folder of frame images."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output video (default: <input>.overlay.mp4)."),
    results: Optional[Path] = typer.Option(None, "--from", help="Draw an existing YouTube-VIS results file "
                                           "instead of running the model."),
    label_tables_name: Optional[str] = typer.Option(None, "--labels", help="Label table naming the ids of a "
                                                    "--from file (ytvis2019, ytvis2021, ovis, vipseg, vspw); "
                                                    "default: the --model's."),
    video_id: Optional[int] = typer.Option(None, "--video-id", help="Which video of a multi-video --from file."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Opacity of the mask fill."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=_MODEL_HELP),
    task: Optional[str] = typer.Option(None, "--task", help="instance, panoptic or semantic (default: the model's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16."),
    chunk_size: int = typer.Option(8, "--chunk-size", min=1, max=4096, help="Frames per network call."),
    min_size: Optional[int] = typer.Option(None, "--min-size", min=32, max=4096, help="Short side fed to the network."),
    max_num: Optional[int] = typer.Option(None, "--max-num", min=1, max=10000, help="Results kept per video."),
    score_threshold: float = typer.Option(0.3, "--score-threshold", min=0.0, max=1.0, help="Draw only results "
                                          "scoring at least this."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names or ids to draw."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    quiet: bool = _quiet_option(),
) -> None:
    """Draw masks, contours and 'id label score' on the video (H.264, same frames, timing and audio)."""
    from videomt_cli import sinks
    from videomt_cli.io.probe import probe

    _set_quiet(quiet)
    probe(source)  # a missing or unreadable input fails before any model loads
    output = output or _default_output(source, ".overlay.mp4")
    refuse_input_as_output(output, [source, results])  # whatever --overwrite says
    # Open (and so validate: suffix, existing file, folder) the destination before the model runs,
    # as segment does: a bad -o must not cost a whole run.
    with sinks.open_sink(output, "overlay", overwrite=overwrite, alpha=alpha) as sink:
        if results is not None:
            from videomt_cli.modeling import labels as label_tables
            from videomt_cli.inference.predictor import model_categories

            cats = (label_tables.categories(label_tables_name) if label_tables_name
                    else model_categories(model))
            wanted = label_tables.resolve_classes(classes.split(","), cats) if classes else None
            result = sinks.read_results(results, source, cats, video_id=video_id,
                                          score_threshold=score_threshold, class_ids=wanted)
        else:
            predictor = _make_predictor(model, device=device, dtype=dtype, task=task, min_size=min_size,
                                        chunk_size=chunk_size, max_num=max_num, score_threshold=score_threshold)
        with _progress_bar() as bar:  # open until the video is in place: a late failure leaves one line
            if results is None:
                result = _run_with_progress(bar, predictor, source, "segment", classes=_classes(classes))
                for warning in result.warnings:
                    warn(warning)
            task_id = bar.add_task("overlay", total=result.num_frames, rate="")

            def progress(done, total):
                bar.update(task_id, completed=done, total=total)
                _Signals.check()

            sink.progress = progress
            with result:
                sink.add(result)  # the result knows its video
            for warning in sink.warnings:  # odd sizes, audio the container cannot hold
                warn(warning)
            _commit(sink)
    wrote(output)


# ----------------------------------------------------------------------------- datasets: segment --dataset, eval, synth, train


def _segment_dataset(dataset: Path, output: Path, image_root: Optional[Path], overwrite: bool, make_predictor,
                     window: dict) -> None:
    """Run every video of a YouTube-VIS dataset into one results file whose video ids match it."""
    from videomt_cli import sinks
    from videomt_cli.io import ytvis

    videos = ytvis.videos(dataset, image_root)
    with sinks.open_sink(output, "ytvis", overwrite=overwrite) as sink:
        predictor = make_predictor()
        with _progress_bar() as bar:
            task_id = bar.add_task("videos", total=len(videos), rate="")
            for done, item in enumerate(videos, start=1):
                with predictor.run(str(item.source), video_id=item.id, **window) as result:
                    for warning in result.warnings:
                        warn(f"video {item.id}: {warning}")
                    sink.add(result)
                bar.update(task_id, completed=done)
                _Signals.check()
            _commit(sink)
    wrote(output, f"  ({len(videos)} videos)")


@app.command("eval", epilog="Example: videomt eval results.json valid.json --json")
def evaluate_command(
    predictions: Path = typer.Argument(..., help="YouTube-VIS results JSON (what segment writes)."),
    ground_truth: Path = typer.Argument(..., help="YouTube-VIS dataset JSON with the true annotations."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (AP, AP50, AP75, AR1, AR10 in percent)."),
) -> None:
    """Score video instance segmentation results: YouTube-VIS AP, AP50, AP75, AR1, AR10."""
    import json
    import math

    from videomt_cli.evaluate import evaluate

    metrics = evaluate(predictions, ground_truth)
    keys = ("AP", "AP50", "AP75", "AR1", "AR10")
    if as_json:
        print(json.dumps({k: (None if math.isnan(metrics[k]) else round(metrics[k], 3)) for k in keys}))
        return
    table = Table(title=f"YouTube-VIS evaluation of {predictions.name}")
    for k in keys:
        table.add_column(k, justify="right")
    table.add_row(*(f"{metrics[k]:.1f}" for k in keys))
    out.print(table)


@app.command(epilog="Example: videomt synth -o data/train --videos 400 --seed 1")
def synth(
    output: Path = typer.Option(..., "--output", "-o", help="Dataset folder to create."),
    videos: int = typer.Option(100, "--videos", min=1, max=100000, help="How many videos."),
    seed: int = typer.Option(0, "--seed", help="Seed; use different seeds for train and held-out splits."),
    frames: int = typer.Option(24, "--frames", min=2, max=10000, help="Frames per video."),
    size: str = typer.Option("192x256", "--size", help="Frame size HxW."),
    mp4: bool = typer.Option(False, "--mp4", help="Also write each video as an H.264 mp4."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset."),
    quiet: bool = _quiet_option(),
) -> None:
    """Generate a synthetic video instance segmentation dataset (YouTube-VIS format) of moving shapes."""
    from videomt_cli.training import synth as generator

    _set_quiet(quiet)
    with _progress_bar() as bar:
        bar.add_task("synth", total=None, rate="")
        path = generator.generate(output, videos=videos, seed=seed, frames=frames, size=_parse_size(size),
                                  write_mp4=mp4, overwrite=overwrite)
        _Signals.finished = True
    wrote(path)


@app.command(epilog="Examples:\n\n  videomt train data/train/annotations.json -o runs/a --init mini --steps 2000\n\n"
                    "  videomt train my.json -o runs/ft --init videomt-s-ytvis19 --steps 5000\n\n"
                    "  videomt train my.json -o runs/ft --resume runs/ft")
def train(
    data: Path = typer.Argument(..., help="YouTube-VIS-format annotation JSON (frames or videos beside it)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for checkpoints (model.safetensors at the end)."),
    init: str = typer.Option("small", "--init", help="A preset (tiny, mini, small, base, large: from scratch) or "
                             "a checkpoint / registry name to fine-tune; the class head follows the dataset."),
    steps: int = typer.Option(40000, "--steps", min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Clips per step."),
    clip_frames: int = typer.Option(5, "--clip-frames", min=1, help="Consecutive frames per clip."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="Peak learning rate."),
    llrd: float = typer.Option(0.6, "--llrd", min=0.0, max=1.0, help="Layer-wise lr decay of the ViT blocks."),
    crop: str = typer.Option("640x640", "--crop", help="Training crop HxW (multiples of 32)."),
    short_side: str = typer.Option("320,640", "--short-side", help="Random short-side range before the crop."),
    max_long_side: int = typer.Option(768, "--max-long-side", min=32, help="Cap of the long side."),
    num_points: int = typer.Option(12544, "--num-points", min=16, help="Points sampled per mask for the mask losses."),
    grad_clip: float = typer.Option(0.01, "--grad-clip", min=0.0, help="Max gradient norm (0: off)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder the file_names are relative to."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16."),
    workers: int = typer.Option(0, "--workers", min=0, help="Data loader processes."),
    save_every: int = typer.Option(1000, "--save-every", min=0, help="Checkpoint every N steps (0: only the last)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the run (data order, augmentation, init)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue exactly from a run folder or checkpoint."),
    quiet: bool = _quiet_option(),
) -> None:
    """Train or fine-tune VidEoMT on a YouTube-VIS-format dataset."""
    from videomt_cli.training.loop import TrainConfig, train as run_training

    _set_quiet(quiet)
    low, high = (int(v) for v in (short_side.replace("x", ",").split(",") * 2)[:2])
    cfg = TrainConfig(data=str(data), output=str(output), init=init, image_root=str(image_root) if image_root else None,
                      steps=steps, batch_size=batch_size, lr=lr, llrd=llrd, grad_clip=grad_clip,
                      clip_frames=clip_frames, crop_size=_parse_size(crop), short_side=(low, high),
                      max_long_side=max_long_side, num_workers=workers, num_points=num_points, device=device,
                      precision=precision, seed=seed, save_every=save_every,
                      resume=str(resume) if resume else None)
    with _progress_bar() as bar:
        task_id = bar.add_task("train", total=steps, rate="")

        def progress(step, total, losses, current_lr):
            bar.update(task_id, completed=step, total=total,
                       rate=f"loss {losses['loss']:.3f}  lr {current_lr:.2e}")

        path = run_training(cfg, progress=progress)
        _Signals.finished = True
    wrote(path)


# ----------------------------------------------------------------------------- entry point


def _error_line(message: str) -> None:
    # escape: messages quote paths and lists ([1, 2], a folder named [old]) that Rich would eat as markup.
    try:
        err.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    except OSError:  # stderr is gone (a closed terminal): the exit code still says it
        pass


def _signal_exit(signum: int) -> int:
    try:
        err.print(f"[red]{_SIGNAL_LINES.get(signum, 'Interrupted.')}[/red]", highlight=False)
    except OSError:
        pass
    return 128 + int(signum)


def _os_error_message(e: OSError) -> str:
    cause = write_cause(e, e.filename)
    if e.filename is None or str(e.filename) in cause:
        return cause[:1].upper() + cause[1:] + "."
    return f"{e.filename}: {cause}."


def _run() -> int:
    """Run the app; return the exit code, with the one line for errors and signals printed."""
    try:
        from videomt_cli.modeling.device import keep_heap  # imports torch: a signal may come meanwhile

        keep_heap()
        app()  # standalone: Typer prints usage errors itself and exits 2
        return 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if _Signals.received is not None and not _Signals.finished:
            return _signal_exit(_Signals.received)
        if isinstance(e.code, str):  # sys.exit("message"): Python would print it
            _error_line(e.code)
        if code == 130:  # Typer turns a KeyboardInterrupt inside a command into a silent exit 130
            return _signal_exit(signal.SIGINT)
        return code
    except KeyboardInterrupt as e:  # raised outside Typer's own handling (e.g. while importing)
        return _signal_exit(_Signals.received or getattr(e, "signum", signal.SIGINT))
    except VideoMTError as e:
        if _Signals.received is not None and not _Signals.finished:
            return _signal_exit(_Signals.received)
        _error_line(str(e))
        return 1
    except OSError as e:
        if _Signals.received is not None and not _Signals.finished:
            return _signal_exit(_Signals.received)
        if e.errno not in WRITE_ERRNOS:
            raise
        _error_line(_os_error_message(e))  # a full disk or a read-only place the library did not name
        return 1
    except BaseException:
        if _Signals.received is not None and not _Signals.finished:
            # C code (pycocotools, numpy) can turn the interrupt into another exception
            return _signal_exit(_Signals.received)
        raise


def main() -> None:
    """Console-script entry: one red line and exit 1 for user errors, 2 for usage; a signal
    (Ctrl-C, SIGTERM, SIGHUP) cleans up, prints one line and exits 128 + its number.

    Once the run is over, SIGINT, SIGTERM and SIGHUP are ignored until the process is gone (it
    is exiting): a late signal never kills a finished run silently. In-process callers (tests)
    restore their own handlers afterwards.
    """
    _Signals.install()
    try:
        code = _run()
    finally:
        _Signals.ignore()  # the run is over: a late signal changes nothing
    sys.exit(code)


if __name__ == "__main__":
    main()
