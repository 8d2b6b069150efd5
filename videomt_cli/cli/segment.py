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


_FROM_PANEL = "Re-writing results (--from)"
_FORMAT_PANEL = "Format options"
_CORPUS_PANEL = "Many videos"
# The format options: CLI flag -> (the sink's argument, the formats that take it).
FORMAT_OPTIONS = {
    "--cvat-shape": ("shape", ("cvat",)),
    "--coco-shape": ("shape", ("coco",)),
    "--frame-names": ("frame_names", ("coco",)),
    "--rle": ("rle", ("ytvis", "ytvis-dataset")),
    "--empty": ("empty", ("ytvis",)),
    "--ls-kind": ("kind", ("labelstudio",)),
    "--video-url": ("video_url", ("labelstudio",)),
}


def format_options(fmt: str, given: dict) -> dict:
    """The sink arguments of the format options given on the command line; an option meant for
    another format is an error (it would be silently ignored)."""
    options = {}
    for flag, value in given.items():
        if value is None:
            continue
        argument, formats = FORMAT_OPTIONS[flag]
        if fmt not in formats:
            raise InputError(f"{flag} applies to --format {' or '.join(formats)}, and this output is {fmt}.")
        options[argument] = value
    return options
_LIVE_PANEL = "Live streams"
_LABELS_HELP = ("Label table naming the ids of a --from file (ytvis2019, ytvis2021, ovis, vipseg, vspw); "
                "default: the --model's.")


def _read_from(results: Path, source: str, model: Optional[str], table: Optional[str], classes: Optional[str],
               score_threshold: float, video_id: Optional[int]):
    """The ``VideoResult`` of an existing results file (``--from``), named by ``--labels`` or the model's table."""
    from videomt_cli import sinks
    from videomt_cli.inference.predictor import model_categories
    from videomt_cli.modeling import labels as label_tables

    cats = label_tables.categories(table) if table else model_categories(model)
    wanted = label_tables.resolve_classes(classes.split(","), cats) if classes else None
    return sinks.read_results(results, source, cats, video_id=video_id, score_threshold=score_threshold,
                              class_ids=wanted)


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
    sources: Optional[list[str]] = typer.Argument(None, help="Video file or folder of frame images (none with "
                                                  "--dataset); several, a folder of videos, a glob or @list.txt: "
                                                  "one output per video in the folder -o."),
    # a str, not a Path: pathlib would fold udp://host:port and s3://bucket/ to a single slash
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output file or folder (default: "
                                          "<input>.json beside the input); a folder for several videos."),
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (several videos: run "
                                   "them all again)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Run every video of this YouTube-VIS dataset "
                                           "JSON into one results file for eval (then give no SOURCE)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="With --dataset: the folder its "
                                              "file_names are relative to (default: found beside the JSON)."),
    results: Optional[Path] = typer.Option(None, "--from", help="Write an existing results file in another format "
                                           "instead of running the model.", rich_help_panel=_FROM_PANEL),
    label_table: Optional[str] = typer.Option(None, "--labels", help=_LABELS_HELP, rich_help_panel=_FROM_PANEL),
    video_id: Optional[int] = typer.Option(None, "--video-id", help="Which video of a multi-video --from file.",
                                           rich_help_panel=_FROM_PANEL),
    realtime: bool = typer.Option(False, "--realtime", help="Live sources: when the model is slower than the "
                                  "stream, keep the newest frame and drop the ones between (counted, null).",
                                  rich_help_panel=_LIVE_PANEL),
    reconnect: int = typer.Option(0, "--reconnect", min=0, max=1000, help="Live sources: retry a dropped "
                                  "connection N times with backoff, continuing the same video.",
                                  rich_help_panel=_LIVE_PANEL),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, max=3600.0, help="Live sources: seconds to wait "
                                  "for a stream to answer or for its next packet.", rich_help_panel=_LIVE_PANEL),
    backend: str = typer.Option("local", "--backend", help="Several videos: local (this process) or ray (a Ray "
                                "cluster; pip install 'videomt[ray]').", rich_help_panel=_CORPUS_PANEL),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="--backend ray: the cluster to join "
                                              "(default: a local Ray started for the run).",
                                              rich_help_panel=_CORPUS_PANEL),
    batch_videos: int = typer.Option(1, "--batch-videos", min=1, max=256, help="Several videos: run B videos "
                                     "through the network together (same results; faster on a GPU).",
                                     rich_help_panel=_CORPUS_PANEL),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=100000, help="--backend ray: model "
                                          "actors (default: one per GPU, else 1 per 2 CPUs).",
                                          rich_help_panel=_CORPUS_PANEL),
    cvat_shape: Optional[str] = typer.Option(None, "--cvat-shape", help="cvat: polygon (default) or box tracks.",
                                             rich_help_panel=_FORMAT_PANEL),
    coco_shape: Optional[str] = typer.Option(None, "--coco-shape", help="coco: rle (default) or polygon "
                                             "segmentations (polygons become CVAT tracks).",
                                             rich_help_panel=_FORMAT_PANEL),
    frame_names: Optional[str] = typer.Option(None, "--frame-names", help="coco: cvat (frame_000000.jpg, the "
                                              "default: CVAT video tasks) or ytvis (<video>/00000.jpg).",
                                              rich_help_panel=_FORMAT_PANEL),
    rle: Optional[str] = typer.Option(None, "--rle", help="ytvis, ytvis-dataset: compressed (default) or "
                                      "uncompressed masks (TrackEval's ground truth).", rich_help_panel=_FORMAT_PANEL),
    empty: Optional[str] = typer.Option(None, "--empty", help="ytvis: rle (default) or null where a processed "
                                        "frame lacks the object (TrackEval).", rich_help_panel=_FORMAT_PANEL),
    ls_kind: Optional[str] = typer.Option(None, "--ls-kind", help="labelstudio: video (default: videorectangle "
                                          "tracks) or images (per-frame brush masks).", rich_help_panel=_FORMAT_PANEL),
    video_url: Optional[str] = typer.Option(None, "--video-url", help="labelstudio: the URL Label Studio loads "
                                            "the video from ({name}, {file} are filled in; default: its path).",
                                            rich_help_panel=_FORMAT_PANEL),
    quiet: bool = quiet_option(),
) -> None:
    """Segment and track objects in a video; write YouTube-VIS JSON, COCO JSON, PNG masks or an overlay.

    Output files appear only when the run succeeds (written to a temporary name, then renamed):
    an interrupted or failed run leaves nothing behind. With --from, the results of an earlier run
    are written in the chosen format without running the model.
    """
    from videomt_cli import corpus, sinks
    from videomt_cli.io.live import is_live
    from videomt_cli.io.probe import probe
    from videomt_cli.io.window import Window

    set_quiet(quiet)
    given = {"--cvat-shape": cvat_shape, "--coco-shape": coco_shape, "--frame-names": frame_names, "--rle": rle,
             "--empty": empty, "--ls-kind": ls_kind, "--video-url": video_url}
    sources = list(sources or [])
    if dataset is None and not sources:
        raise typer.BadParameter("give a video file or frame folder, or --dataset GT.json.", param_hint="SOURCES")
    if dataset is not None and sources not in ([], ["-"]):
        raise typer.BadParameter("give either SOURCES or --dataset, not both.", param_hint="SOURCES")

    def make_predictor():
        return _make_predictor(model, device=device, dtype=dtype, task=task, min_size=min_size,
                               chunk_size=chunk_size, max_num=max_num, score_threshold=score_threshold)

    if dataset is None and corpus.is_corpus(sources):
        if output is None:
            raise InputError("Several videos need -o FOLDER: one output per video goes there, with manifest.jsonl.")
        if results is not None or realtime or reconnect:
            raise InputError("--from, --realtime and --reconnect take one video; give one SOURCE.")
        Window.of(start, end, stride)
        from videomt_cli.cli.corpus import segment_corpus

        options = format_options(sinks.format_for(output, fmt or "ytvis"), given)
        segment_corpus(sources, output, fmt, overwrite, dict(start=start, end=end, stride=stride,
                       classes=_classes(classes)), make_predictor, options,
                       backend=dict(backend=backend, ray_address=ray_address, workers=workers,
                                    batch_videos=batch_videos))
        return
    source = sources[0] if sources else None
    # Cheap checks first, the model (seconds to load, maybe a download) last: a missing or unreadable
    # input, a bad --start, an unknown --format or an existing output fail at once.
    per_frame = (fmt or "").strip().lower() == "jsonl" or str(output) == "-" or str(output).endswith(".jsonl")
    if dataset is None and results is None and (is_live(source) or per_frame):
        from videomt_cli.cli.live import segment_live  # streams: results as they happen

        segment_live(source, output, fmt, overwrite=overwrite, window=dict(start=start, end=end, stride=stride,
                     classes=_classes(classes)), realtime=realtime, reconnect=reconnect, timeout=timeout,
                     make_predictor=make_predictor, format_options=lambda key: format_options(key, given))
        return
    output = None if output is None else Path(output)
    if backend != "local" or ray_address is not None or workers is not None or batch_videos != 1:
        raise InputError("--backend, --ray-address, --workers and --batch-videos apply to several videos (a corpus, "
                         "-o FOLDER).")
    if realtime or reconnect:
        raise InputError("--realtime and --reconnect apply to live sources (rtsp://, udp://, http://, a device, "
                         "- for stdin).")
    if dataset is None:
        probe(source)
    Window.of(start, end, stride)  # a bad --start/--end fails before the model loads
    window = dict(start=start, end=end, stride=stride, classes=_classes(classes))

    if dataset is not None:
        if output is None:
            raise InputError("--dataset needs -o RESULTS.json.")
        if results is not None:
            raise InputError("--from re-writes one video's results; give the video as SOURCE instead of --dataset.")
        if fmt is not None and sinks.format_for(output, fmt) != "ytvis":
            raise InputError("--dataset writes one YouTube-VIS results file (--format ytvis), for videomt eval.")
        refuse_input_as_output(output, [dataset], what="dataset")
        _segment_dataset(dataset, output, image_root, overwrite, make_predictor, window,
                         format_options("ytvis", given))
        return
    output = output or _default_output(source, ".json")
    refuse_input_as_output(output, [source, results])  # whatever --overwrite says: never write over an input
    if results is not None and (start is not None or end is not None or stride != 1):
        raise InputError("--from writes the results as they are; --start, --end and --stride apply only when "
                         "the model runs.")
    # Open (and so validate) the sink before the long run: a bad format or an existing output fails fast.
    options = format_options(sinks.format_for(output, fmt), given)
    with sinks.open_sink(output, fmt, overwrite=overwrite, **options) as sink:
        predictor = make_predictor() if results is None else None
        with progress_bar() as bar:
            if results is not None:
                result = _read_from(results, source, model, label_table, classes, score_threshold, video_id)
            else:
                result = _run_with_progress(bar, predictor, source, "segment", **window)
            with result:
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
    label_tables_name: Optional[str] = typer.Option(None, "--labels", help=_LABELS_HELP),
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
            result = _read_from(results, source, model, label_tables_name, classes, score_threshold, video_id)
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
                     window: dict, options: dict) -> None:
    """Run every video of a YouTube-VIS dataset into one results file whose video ids match it."""
    from videomt_cli import sinks
    from videomt_cli.io import ytvis

    videos = ytvis.videos(dataset, image_root)
    with sinks.open_sink(output, "ytvis", overwrite=overwrite, **options) as sink:
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


