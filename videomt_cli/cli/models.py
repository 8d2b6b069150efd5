"""Checkpoints and media: ``convert``, ``verify``, ``info``, ``models``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from videomt_cli.cli.base import Signals, State, app, err, out, parse_size, quiet_option, say, set_quiet, wrote
from videomt_cli.errors import InputError
from videomt_cli.io.atomic import refuse_input_as_output

@app.command(epilog="Example: videomt convert yt_2019_vit_small_52.8.pth -o videomt-s-ytvis19/")
def convert(
    source: str = typer.Argument(..., help="Official .pth, Hugging Face dir or hub id, or a videomt .safetensors."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (Hugging Face format), or a "
                                "file ending in .safetensors for videomt's single-file format."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    quiet: bool = quiet_option(),
) -> None:
    """Convert a VidEoMT checkpoint to a directory that videomt and transformers both load."""
    from videomt_cli.modeling import checkpoint, registry
    from videomt_cli.modeling import labels as label_tables

    set_quiet(quiet)
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
    Signals.finished = True  # written: a late signal changes nothing
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
    report = verifier.verify(loaded, frames=frames, size=parse_size(size), seed=seed)
    table = Table(title=f"videomt verify: {ckpt}  ({report.frames} frames, {report.size[0]}x{report.size[1]})")
    for column in ("stage", "max |diff|", "mean |diff|", "tolerance", ""):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in report.rows:
        mark = "[green]ok[/green]" if row.ok else "[red]FAIL[/red]"
        table.add_row(row.stage, f"{row.max_abs:.3g}", f"{row.mean_abs:.3g}", f"{row.tol:.3g}", mark)
    if not State.quiet:
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
def info(path: str = typer.Argument(..., help="A video file, a folder of frame images, or a live source "
                                    "(a stream URL, /dev/video0, - for stdin)."),
         timeout: float = typer.Option(10.0, "--timeout", min=0.1, max=3600.0, help="Live sources: seconds to "
                                       "wait for the stream to answer.")) -> None:
    """Print what a video holds: size, frames, frame rate, duration, codec, rotation, audio.

    A live source is opened and its first frame decoded: its length is unknown (it is not read to
    the end), the rest is what the stream announces."""
    from rich.text import Text

    from videomt_cli.io.live import is_live, live_info_lines
    from videomt_cli.io.probe import info_lines, probe
    from videomt_cli.io.read import count_frames

    if is_live(path):
        rows = live_info_lines(path, timeout)
    else:
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

