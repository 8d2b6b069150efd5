"""The ``videomt`` command line. The only module that imports Typer and Rich.

Every command parses its options, calls the library, and renders progress and results. Library
errors (the ``VideoMTError`` family) become one red line and exit code 1; usage errors exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from videomt_cli.errors import InputError, VideoMTError

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


@app.callback()
def _main(quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and final paths.")) -> None:
    _State.quiet = quiet


def say(*args, **kwargs) -> None:
    if not _State.quiet:
        out.print(*args, **kwargs)


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
) -> None:
    """Convert a VidEoMT checkpoint to a directory that videomt and transformers both load."""
    from videomt_cli import checkpoint, labels as label_tables, registry

    if output.exists() and not overwrite and (output.is_file() or any(output.iterdir())):
        raise InputError(f"{output} already exists; pass --overwrite to replace it.")
    loaded = checkpoint.load_model(source)
    names = loaded.labels
    entry = registry.match(source)
    if entry is not None:  # a known model: the dataset's names in class-head order
        names = [c.name for c in label_tables.categories(entry.labels)]
    if output.suffix == ".safetensors":
        checkpoint.save(loaded.model, output, labels=names)
    else:
        checkpoint.save_hf(loaded.model, output, labels=names)
    for line in loaded.report.lines():
        say(f"  {line}")
    cfg = loaded.config
    say(f"[green]Wrote[/green] {output}  (C={cfg.hidden_size}, L={cfg.num_layers}, k={cfg.num_query_blocks}, "
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
    from videomt_cli import checkpoint
    from videomt_cli import verify as verifier

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
        say(f"[yellow]Reference comparison skipped:[/yellow] {report.reference_skipped}")
    if not report.ok:
        failed = [r.stage for r in report.rows if not r.ok]
        err.print(f"[red]verify failed at {len(failed)} stage(s): {', '.join(failed[:5])}[/red]")
        raise typer.Exit(1)
    say("[green]All stages within tolerance.[/green]")


# ----------------------------------------------------------------------------- info, models


@app.command(epilog="Example: videomt info input.mp4")
def info(path: str = typer.Argument(..., help="A video file or a folder of frame images.")) -> None:
    """Print what a video holds: size, frames, frame rate, duration, codec, rotation, audio."""
    from videomt_cli import video

    details = video.probe(path)
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in video.info_lines(details):
        table.add_row(key, value)
    out.print(table)


@app.command()
def models() -> None:
    """List the known models, their task and whether their weights are on this machine."""
    from videomt_cli import registry

    table = Table(title="videomt models")
    for column in ("name", "task", "labels", "min size", "weights", "description"):
        table.add_column(column)
    default = registry.default().name
    for entry in registry.entries():
        where = entry.hub or entry.file or ""
        cached = "[green]cached[/green]" if registry.is_cached(entry) else "[dim]download[/dim]"
        name = entry.name + (" (default)" if entry.name == default else "")
        table.add_row(name, entry.task, entry.labels, str(entry.min_size), f"{cached} {where}", entry.description)
    out.print(table)


# ----------------------------------------------------------------------------- segment, overlay

_MODEL_HELP = "Registry name (videomt models), hub id, directory or checkpoint file. Default: the registry's default."


def _progress_bar():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err, disable=_State.quiet, transient=False)


def _run_with_progress(predictor, source: str, label: str, **window):
    """Run the predictor with one bar per pass: frames/s and ETA, or a spinner if the length is unknown."""
    import time

    with _progress_bar() as bar:
        task_id = bar.add_task(label, total=None, rate="")
        started = [time.perf_counter(), -1]

        def progress(done, total, pass_index, passes):
            if pass_index != started[1]:
                started[:] = [time.perf_counter(), pass_index]
                suffix = f" (pass {pass_index + 1}/{passes})" if passes > 1 else ""
                bar.reset(task_id, total=total, description=label + suffix)
            rate = done / max(time.perf_counter() - started[0], 1e-9)
            bar.update(task_id, completed=done, total=total, rate=f"{rate:.1f} frames/s")

        return predictor.run(source, progress=progress, **window)


def _default_output(source: str, suffix: str) -> Path:
    path = Path(source)
    stem = path.name if path.is_dir() else path.stem
    return path.parent / f"{stem}{suffix}"


@app.command(epilog="Examples:\n\n  videomt segment input.mp4 -o out.json\n\n"
                    "  videomt segment input.mp4 -o masks/ --format png --stride 2 --start 10s --end 20s\n\n"
                    "  videomt segment frames_dir/ -o out.coco.json --format coco --classes person,dog")
def segment(
    source: str = typer.Argument(..., help="Video file or folder of frame images."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file or folder (default: "
                                          "<input>.json beside the input)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="ytvis, ytvis-dataset, coco, png or overlay "
                                      "(default: from the output suffix)."),
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
) -> None:
    """Segment and track objects in a video; write YouTube-VIS JSON, COCO JSON, PNG masks or an overlay."""
    from videomt_cli import writers
    from videomt_cli.predictor import Predictor, TimeSpec

    window = dict(start=TimeSpec.parse(start, "--start"), end=TimeSpec.parse(end, "--end"), stride=stride)
    output = output or _default_output(source, ".json")
    # Open (and so validate) the sink before the long run: a bad format or an existing output fails fast.
    with writers.open_sink(output, fmt, overwrite=overwrite) as sink:
        predictor = Predictor.from_model(model, device=device, dtype=dtype, task=task, min_size=min_size,
                                         chunk_size=chunk_size, max_num=max_num, score_threshold=score_threshold)
        predictor.select_classes([c for c in classes.split(",") if c.strip()] if classes else None)
        for warning in predictor.warnings:
            err.print(f"[yellow]Warning:[/yellow] {warning}")
        result = _run_with_progress(predictor, source, "segment", **window)
        for warning in result.video.warnings:
            err.print(f"[yellow]Warning:[/yellow] {warning}")
        sink.add(result)
    say(f"[green]Wrote[/green] {output}  ({len(result.segments)} results, {len(result.processed)} frames)")


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
) -> None:
    """Draw masks, contours and 'id label score' on the video (H.264, same frames, timing and audio)."""
    from videomt_cli import writers
    from videomt_cli.predictor import Predictor

    output = output or _default_output(source, ".overlay.mp4")
    if output.exists() and not overwrite:
        raise InputError(f"{output} already exists; pass --overwrite to replace it.")
    if results is not None:
        from videomt_cli import labels as label_tables, registry

        entry = registry.match(model) if model else registry.default()
        cats = label_tables.categories(label_tables_name) if label_tables_name else (
            label_tables.categories(entry.labels) if entry else label_tables.categories("ytvis2019"))
        wanted = label_tables.resolve_classes(classes.split(","), cats) if classes else None
        result = writers.read_results(results, source, cats, video_id=video_id,
                                      score_threshold=score_threshold, class_ids=wanted)
    else:
        predictor = Predictor.from_model(model, device=device, dtype=dtype, task=task, min_size=min_size,
                                         chunk_size=chunk_size, max_num=max_num, score_threshold=score_threshold)
        predictor.select_classes([c for c in classes.split(",") if c.strip()] if classes else None)
        result = _run_with_progress(predictor, source, "segment")
    with _progress_bar() as bar:
        task_id = bar.add_task("overlay", total=result.video.num_frames, rate="")

        def progress(done, total):
            bar.update(task_id, completed=done, total=total)

        writers.write_overlay(result, source, output, alpha=alpha, overwrite=overwrite, progress=progress)
    say(f"[green]Wrote[/green] {output}")


# ----------------------------------------------------------------------------- entry point


def main() -> None:
    """Console-script entry: one red line and exit 1 for user errors, 2 for usage, 130 on Ctrl-C."""
    try:
        app()  # standalone: Typer prints usage errors itself and exits 2
    except VideoMTError as e:
        err.print(f"[red]Error:[/red] {e}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("[red]Interrupted.[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
