"""Datasets: ``eval``, ``synth``, ``train``, and ``import`` (annotation tools' files -> a YouTube-VIS dataset).

``eval``, ``train`` and ``import`` read a YouTube-VIS dataset, a CVAT for video 1.1 XML or a COCO
JSON with track ids alike (``io.ytvis.read``); ``--video`` names a CVAT/COCO file's video when it is
not the one the file names beside it, ``--labels``/``--model`` give its label names their ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from videomt_cli.cli.base import (Signals, State, app, err, out, parse_size, progress_bar, quiet_option,
                                  set_quiet, wrote)
from videomt_cli.errors import InputError
from videomt_cli.io.atomic import refuse_input_as_output

_VIDEO_HELP = ("A CVAT or COCO file's video file or frame folder (default: the one the file names, "
               "beside it).")
_LABELS_HELP = ("Give a CVAT or COCO file's label names the ids of this label table (ytvis2019, "
                "ytvis2021, ovis, vipseg, vspw) (default: 1..K in the file's order).")


def _categories(table: Optional[str], model: Optional[str]):
    """The (id, name) table naming a CVAT/COCO file's labels: --labels, else --model's, else None."""
    if table is not None and model is not None:
        raise InputError("give --labels or --model, not both: either names the label ids.")
    if table is not None:
        from videomt_cli.modeling import labels as label_tables

        return label_tables.categories(table)
    if model is not None:
        from videomt_cli.inference.predictor import model_categories

        return model_categories(model)
    return None


def _notes(dataset_notes) -> None:
    """What a CVAT/COCO reader left out or assumed: information, silenced by --quiet."""
    if not State.quiet:
        for note in dataset_notes:
            err.print(f"[dim]Note: {escape(note)}[/dim]", soft_wrap=True, highlight=False)

@app.command("eval", epilog="Example: videomt eval results.json valid.json --json")
def evaluate_command(
    predictions: Path = typer.Argument(..., help="YouTube-VIS results JSON (what segment writes)."),
    ground_truth: Path = typer.Argument(..., help="The true annotations: a YouTube-VIS dataset JSON, a CVAT for "
                                        "video 1.1 XML or a COCO JSON with track ids."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (AP, AP50, AP75, AR1, AR10 in percent)."),
    video: Optional[Path] = typer.Option(None, "--video", help=_VIDEO_HELP),
    label_table: Optional[str] = typer.Option(None, "--labels", help=_LABELS_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Give a CVAT or COCO file's label names the ids "
                                        "of this model's labels (the model that wrote the results)."),
) -> None:
    """Score video instance segmentation results: YouTube-VIS AP, AP50, AP75, AR1, AR10."""
    import json
    import math

    from videomt_cli.evaluate import evaluate

    metrics = evaluate(predictions, ground_truth, video=video, categories=_categories(label_table, model))
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
    quiet: bool = quiet_option(),
) -> None:
    """Generate a synthetic video instance segmentation dataset (YouTube-VIS format) of moving shapes."""
    from videomt_cli.training import synth as generator

    set_quiet(quiet)
    with progress_bar() as bar:
        bar.add_task("synth", total=None, rate="")
        path = generator.generate(output, videos=videos, seed=seed, frames=frames, size=parse_size(size),
                                  write_mp4=mp4, overwrite=overwrite)
        Signals.finished = True
    wrote(path)


@app.command(epilog="Examples:\n\n  videomt train data/train/annotations.json -o runs/a --init mini --steps 2000\n\n"
                    "  videomt train my.json -o runs/ft --init videomt-s-ytvis19 --steps 5000\n\n"
                    "  videomt train my.json -o runs/ft --resume runs/ft")
def train(
    data: Path = typer.Argument(..., help="YouTube-VIS dataset JSON (frames or videos beside it), CVAT for video "
                                "1.1 XML or COCO JSON with track ids (frames decoded from the video)."),
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
    video: Optional[Path] = typer.Option(None, "--video", help=_VIDEO_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16."),
    workers: int = typer.Option(0, "--workers", min=0, help="Data loader processes."),
    save_every: int = typer.Option(1000, "--save-every", min=0, help="Checkpoint every N steps (0: only the last)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the run (data order, augmentation, init)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue exactly from a run folder or checkpoint."),
    quiet: bool = quiet_option(),
) -> None:
    """Train or fine-tune VidEoMT on a YouTube-VIS-format dataset."""
    from videomt_cli.training.loop import TrainConfig, train as run_training

    set_quiet(quiet)
    low, high = (int(v) for v in (short_side.replace("x", ",").split(",") * 2)[:2])
    cfg = TrainConfig(data=str(data), output=str(output), init=init, image_root=str(image_root) if image_root else None,
                      video=str(video) if video else None,
                      steps=steps, batch_size=batch_size, lr=lr, llrd=llrd, grad_clip=grad_clip,
                      clip_frames=clip_frames, crop_size=parse_size(crop), short_side=(low, high),
                      max_long_side=max_long_side, num_workers=workers, num_points=num_points, device=device,
                      precision=precision, seed=seed, save_every=save_every,
                      resume=str(resume) if resume else None)
    with progress_bar() as bar:
        task_id = bar.add_task("train", total=steps, rate="")

        def progress(step, total, losses, current_lr):
            bar.update(task_id, completed=step, total=total,
                       rate=f"loss {losses['loss']:.3f}  lr {current_lr:.2e}")

        path = run_training(cfg, progress=progress)
        Signals.finished = True
    wrote(path)


@app.command("import", epilog="Examples:\n\n  videomt import task.xml -o train.json  (the video beside the XML)\n\n"
                              "  videomt import instances_default.json --video walk.mp4 --labels ytvis2019 -o gt.json")
def import_command(
    annotations: Path = typer.Argument(..., help="A CVAT for video 1.1 XML or a COCO JSON with track ids."),
    output: Path = typer.Option(..., "--output", "-o", help="The YouTube-VIS dataset JSON to write."),
    video: Optional[Path] = typer.Option(None, "--video", help=_VIDEO_HELP),
    label_table: Optional[str] = typer.Option(None, "--labels", help=_LABELS_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Give the label names the ids of this model's "
                                        "labels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    quiet: bool = quiet_option(),
) -> None:
    """Turn what annotators export (CVAT for video XML, COCO with tracks) into a YouTube-VIS dataset file.

    Tracks are read as the tool shows them (CVAT's interpolation between keyframes, outside frames);
    the dataset names the video file (or frame folder) by absolute path, so train and eval decode
    the frames from it. The output appears only when complete.
    """
    import json

    from videomt_cli.io import ytvis
    from videomt_cli.io.atomic import atomic_path

    set_quiet(quiet)
    refuse_input_as_output(output, [annotations, video], what="annotation file")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise InputError(f"{output} already exists; use --overwrite to replace it.")
    doc, kind = ytvis.document(annotations, video=video, categories=_categories(label_table, model))
    if kind == "ytvis":
        raise InputError(f"{annotations} is already a YouTube-VIS dataset; train and eval read it as it is.")
    _notes(doc.get("notes", ()))
    dataset = {k: v for k, v in doc.items() if k != "notes"}
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(dataset, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8")
        Signals.check()
    Signals.finished = True  # in place: a late signal changes nothing
    frames = sum(v.get("length", 0) for v in dataset["videos"])
    wrote(output, f"  ({len(dataset['videos'])} video{'s' * (len(dataset['videos']) != 1)}, "
                  f"{len(dataset['annotations'])} tracks, {frames} frames)")
