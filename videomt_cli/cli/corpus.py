"""``segment`` with several sources: a corpus into one folder, with ``manifest.jsonl``, resume and a lock.

The folder may be a store URL (``-o s3://bucket/out/``) and the videos may run on a Ray cluster
(``--backend ray``): ``videomt_cli.corpus``. With Ray several videos run at once: the bars show
the videos done and the last video handed to a worker (workers report no frames).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Union

import typer
from rich.markup import escape

from videomt_cli.cli.base import Signals, State, err, progress_bar, warn, wrote

def segment_corpus(sources: list[str], output: Union[str, Path], fmt: Optional[str], overwrite: bool, window: dict,
                   make_predictor, sink_options: Optional[dict] = None, backend: Optional[dict] = None) -> None:
    """Several videos into the folder ``output``: one output each, ``manifest.jsonl``, resume, a lock.
    One red ``Failed:`` line per failed video; the summary last; exit 1 when any failed."""
    from videomt_cli import corpus
    from videomt_cli.corpus.remote import is_url

    output = str(output)  # a str from segment: pathlib would fold the // of s3://

    class Bars(corpus.CorpusProgress):
        def __init__(self, bar) -> None:
            self.bar = bar
            self.videos = bar.add_task("videos", total=None, rate="")
            self.frames_bar = bar.add_task("", total=None, rate="")
            self.started = time.perf_counter()
            self.done = 0  # videos done (with Ray they end in any order)

        def planned(self, jobs) -> None:
            self.bar.update(self.videos, total=len(jobs))

        def video_started(self, index, total, job) -> None:
            self.started = time.perf_counter()
            if job.action == "run":
                self.bar.reset(self.frames_bar, total=None, description=escape(job.output), rate="")

        def frames(self, done, total, pass_index, passes) -> None:
            rate = done / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.frames_bar, completed=done, total=total, rate=f"{rate:.1f} frames/s")
            Signals.check()

        def video_done(self, index, total, record) -> None:
            self.done += 1
            self.bar.update(self.videos, completed=self.done)
            if self.done == total:
                self.bar.update(self.frames_bar, visible=False)
            if record.status == "failed":
                err.print(f"[red]Failed:[/red] {escape(record.error)}", soft_wrap=True, highlight=False)
            for warning in record.warnings:
                warn(f"{record.output}: {warning}")
            Signals.check()

        def check(self) -> None:
            Signals.check()

        def said(self, text) -> None:  # a Ray worker loaded the model: its notes and warnings, once
            for line in text.splitlines():
                if line.strip() and not (State.quiet and line.startswith("Note:")):
                    err.print(escape(line), soft_wrap=True, highlight=False)

    with progress_bar() as bar:
        records = corpus.run_corpus(sources, output, predictor=make_predictor, fmt=fmt, overwrite=overwrite,
                                    sink_options=sink_options, **_chosen(backend),
                                    progress=Bars(bar), **window)
    Signals.finished = True  # every record is in the manifest: a late signal changes nothing
    summary = corpus.Summary.of(records)
    manifest = f"{output.rstrip('/')}/{corpus.MANIFEST_NAME}" if is_url(output) else Path(output) / corpus.MANIFEST_NAME
    wrote(manifest, f"  ({summary.line()})")
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _chosen(backend: Optional[dict]) -> dict:
    """The backend options given (the local backend takes none)."""
    defaults = {"backend": "local", "ray_address": None, "workers": None, "batch_videos": 1}
    return {k: v for k, v in (backend or {}).items() if v != defaults.get(k)}
