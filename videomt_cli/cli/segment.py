"""``segment`` and ``overlay``: run the model on a video (or re-write existing results) into any format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from videomt_cli.cli.base import Signals, State, app, commit, err, progress_bar, quiet_option, set_quiet, warn, wrote
from videomt_cli.errors import InputError
from videomt_cli.io.atomic import refuse_input_as_output

_MODEL_HELP = "Registry name (videomt models), hub id, directory or checkpoint file. Default: the registry's default."


def _run_with_progress(bar, predictor, source: str, label: str, **run):
    """Run the predictor with one bar per pass: frames/s and ETA, or a spinner if the length is unknown.

    ``bar`` is the command's :func:`progress_bar`, open until its output is in place: a run that
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
        Signals.check()

    return predictor.run(source, progress=progress, **run)


def _make_predictor(model: Optional[str], **options):
    """Load the model for segment/overlay; print its warnings and notes (the demo model's)."""
    from videomt_cli.inference.predictor import Predictor  # imports torch: only once the inputs checked out

    predictor = Predictor.from_model(model, **options)
    for warning in predictor.warnings:
        warn(warning)
    for note in predictor.notes:  # information, not a warning: --quiet silences it
        if not State.quiet:
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
    quiet: bool = quiet_option(),
) -> None:
    """Segment and track objects in a video; write YouTube-VIS JSON, COCO JSON, PNG masks or an overlay.

    Output files appear only when the run succeeds (written to a temporary name, then renamed):
    an interrupted or failed run leaves nothing behind.
    """
    from videomt_cli import sinks
    from videomt_cli.io.probe import probe
    from videomt_cli.io.window import Window

    set_quiet(quiet)
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
        with progress_bar() as bar:
            with _run_with_progress(bar, predictor, source, "segment", **window) as result:
                for warning in result.warnings:
                    warn(warning)
                sink.add(result)
            for warning in getattr(sink, "warnings", []):  # the overlay writer's (odd sizes, audio)
                warn(warning)
            commit(sink)
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
    quiet: bool = quiet_option(),
) -> None:
    """Draw masks, contours and 'id label score' on the video (H.264, same frames, timing and audio)."""
    from videomt_cli import sinks
    from videomt_cli.io.probe import probe

    set_quiet(quiet)
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
        with progress_bar() as bar:  # open until the video is in place: a late failure leaves one line
            if results is None:
                result = _run_with_progress(bar, predictor, source, "segment", classes=_classes(classes))
                for warning in result.warnings:
                    warn(warning)
            task_id = bar.add_task("overlay", total=result.num_frames, rate="")

            def progress(done, total):
                bar.update(task_id, completed=done, total=total)
                Signals.check()

            sink.progress = progress
            with result:
                sink.add(result)  # the result knows its video
            for warning in sink.warnings:  # odd sizes, audio the container cannot hold
                warn(warning)
            commit(sink)
    wrote(output)



def _segment_dataset(dataset: Path, output: Path, image_root: Optional[Path], overwrite: bool, make_predictor,
                     window: dict) -> None:
    """Run every video of a YouTube-VIS dataset into one results file whose video ids match it."""
    from videomt_cli import sinks
    from videomt_cli.io import ytvis

    videos = ytvis.videos(dataset, image_root)
    with sinks.open_sink(output, "ytvis", overwrite=overwrite) as sink:
        predictor = make_predictor()
        with progress_bar() as bar:
            task_id = bar.add_task("videos", total=len(videos), rate="")
            for done, item in enumerate(videos, start=1):
                with predictor.run(str(item.source), video_id=item.id, **window) as result:
                    for warning in result.warnings:
                        warn(f"video {item.id}: {warning}")
                    sink.add(result)
                bar.update(task_id, completed=done)
                Signals.check()
            commit(sink)
    wrote(output, f"  ({len(videos)} videos)")


