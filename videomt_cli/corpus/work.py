"""One video of a corpus: what changes its output (the fingerprint), whether to run it (the plan),
and running it (:func:`segment_one`, what a cluster worker calls with its loaded predictor).

Resume (:func:`plan`): a video is skipped when its output exists and the last manifest line for
that output is ``ok`` or ``skipped`` with the same source, stamp (size and mtime; for a frame
folder the folder's, which changes when frames are added or removed, not when one is rewritten
in place) and fingerprint; anything else runs again (failed ones are retried), replacing what
is there.

The fingerprint (:func:`settings_of`) covers the weights as loaded (a digest of the state dict,
so any copy of the same weights agrees and a retrained file does not), the task, dtype, min/max
size, max_num, score threshold, classes (as dataset ids), start/end/stride, the format and its
options; not the chunk size, device, read-ahead or progress.

Interrupts (``KeyboardInterrupt``, the CLI's signals) propagate out of :func:`segment_one`: the
video in progress leaves no output (sinks are atomic) and no record. torch is imported only by
:func:`weights_digest`.

Store URLs (``remote``): a store video is run from a local copy (deleted after), and its result
names the URL, not the copy (``VideoInfo.path``, messages), so every format writes what it
would for that video anywhere; an output in a store is written locally by its sink, then put
(``places``). The local backend and the Ray workers run this same function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from videomt_cli.corpus.manifest import MANIFEST_NAME, Record
from videomt_cli.corpus.sources import CorpusItem, output_names
from videomt_cli.errors import VideoMTError

# ----------------------------------------------------------------------------- what changes results


def weights_digest(model) -> str:
    """SHA-256 (first 16 hex digits) of a network's state dict as loaded: names, dtypes, shapes and
    bytes, so the same weights from any file or hub copy agree. Measured: 7 ms for the bundled
    model, 1.6 s for a ViT-L (1.27 GB of fp32 weights) on this 2-core machine."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def settings_of(predictor, fmt: str, *, start=None, end=None, stride: int = 1, classes=None,
                sink_options: dict | None = None, weights: str | None = None) -> dict:
    """Everything that changes a video's output: the weights and task, the preprocessing and
    selection settings, the window, the classes (as dataset ids), the format and its options.
    Not chunk size, device, read-ahead or progress (they change nothing, or only float rounding)."""
    from videomt_cli.io.window import Window
    from videomt_cli.modeling.labels import resolve_classes

    window = Window.of(start, end, stride)
    ids = None
    if classes is not None:
        spec = [classes] if isinstance(classes, (str, int)) else list(classes)
        ids = sorted(resolve_classes([str(c) for c in spec], list(predictor.categories))) or None
    options = {k: v for k, v in sorted((sink_options or {}).items()) if k != "progress"}
    options = json.loads(json.dumps(options, default=str))  # what the manifest line will hold
    return {"weights": weights or weights_digest(predictor.model), "task": predictor.task,
            "dtype": str(predictor.dtype).removeprefix("torch."), "min_size": predictor.min_size,
            "max_size": predictor.max_size, "max_num": predictor.max_num,
            "score_threshold": float(predictor.score_threshold), "classes": ids,
            "start": None if window.start is None else str(window.start),
            "end": None if window.end is None else str(window.end), "stride": window.stride,
            "format": fmt, "format_options": options}


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_name(predictor) -> str:
    return predictor.entry.name if predictor.entry is not None else predictor.loaded.source


# ----------------------------------------------------------------------------- plan and run


@dataclass(frozen=True)
class Job:
    """What a run does with one item: ``action`` is ``"run"``, ``"skip"`` (done before: ``previous``
    is that record) or ``"fail"`` (the item names no video: ``item.error``)."""

    item: CorpusItem
    output: str | None
    action: str
    previous: Record | None = None


def stamp(path: str | None) -> str | None:
    """The source's size and mtime (ns): a changed video is run again."""
    try:
        st = os.stat(path)
    except (OSError, TypeError):
        return None
    return f"{st.st_size}-{st.st_mtime_ns}"


def item_stamp(item: CorpusItem) -> str | None:
    """A store item's listed stamp, else the local file's (:func:`stamp`)."""
    return item.stamp if item.stamp is not None else stamp(item.path)


def plan(items: list[CorpusItem], output: str | os.PathLike, fmt: str, fp: str, latest: dict[str, Record],
         overwrite: bool = False, exists=None) -> list[Job]:
    """One :class:`Job` per item (the resume rule of the module docstring). ``exists``: a
    ``name -> bool`` telling whether an output is there (default: a path under ``output``; a
    store folder lists itself once, ``places``)."""
    if exists is None:
        exists = lambda name: os.path.lexists(Path(output) / name)  # noqa: E731
    jobs = []
    for item, name in zip(items, output_names(items, fmt)):
        if item.error is not None:
            jobs.append(Job(item, name, "fail"))
            continue
        prev = None if overwrite else latest.get(name)
        done = (prev is not None and prev.status in ("ok", "skipped") and prev.fingerprint == fp
                and prev.source == item.path and prev.stamp == item_stamp(item) and exists(name))
        jobs.append(Job(item, name, "skip" if done else "run", prev if done else None))
    return jobs


class CorpusProgress:
    """What :func:`run_corpus` reports; subclass the hooks you need (the CLI draws bars). An
    exception raised by a hook stops the run there. ``check`` is called before a failure is
    recorded: the CLI raises its pending signal there, so an interrupt that C code turned into
    another error is not recorded as the video's failure."""

    def planned(self, jobs: list[Job]) -> None: ...

    def video_started(self, index: int, total: int, job: Job) -> None: ...

    def frames(self, done: int, total: int | None, pass_index: int, passes: int) -> None: ...

    def video_done(self, index: int, total: int, record: Record) -> None: ...

    def check(self) -> None: ...

    def said(self, text: str) -> None:
        """What loading the model printed in a cluster worker (its notes and warnings), once."""
        sys.stderr.write(text)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _base(job: Job, model: str, fp: str, settings: dict) -> dict:
    return dict(source=job.item.path or job.item.source, output=job.output, model=model, fingerprint=fp,
                settings=settings, stamp=item_stamp(job.item))


def settled(job: Job, *, model: str, fp: str, settings: dict, error: str | None = None) -> Record:
    """The record of a job that runs nothing (``skip``, ``fail``), or, with ``error``, of one
    that failed where no worker could record it (its worker died): the driver of a cluster run
    writes these itself."""
    base = _base(job, model, fp, settings)
    if error is not None:
        return Record(status="failed", error=error, finished=_now(), **base)
    if job.action == "skip":
        prev = job.previous
        return Record(status="skipped", frames=prev.frames, segments=prev.segments, finished=_now(), **base)
    if job.action == "fail":
        return Record(status="failed", error=job.item.error, finished=_now(), **base)
    raise ValueError(f"job {job.output} has to run")


def segment_one(predictor, job: Job, output, fmt: str, *, fp: str, settings: dict,
                window: dict | None = None, sink_options: dict | None = None,
                progress: CorpusProgress | None = None) -> Record:
    """Run one job's video into ``output/job.output`` (atomically, replacing what is there) and
    return its record; a ``VideoMTError`` (a bad video, an unwritable place) is a ``failed``
    record with its message, any other ``Exception`` one with ``traceback`` (a bug). Interrupts
    propagate, leaving no output. ``output``: a local folder, a store URL or a ``places`` folder;
    ``window``: ``start``, ``end``, ``stride``, ``classes``."""
    progress = progress or CorpusProgress()
    if job.action != "run":
        return settled(job, model=model_name(predictor), fp=fp, settings=settings)
    base = _base(job, model_name(predictor), fp, settings)
    started = time.perf_counter()
    run = _Run(job)
    try:
        with job_output(job, output, fmt, sink_options, run) as sink:
            with predictor.run(run.local, video_id=1, progress=progress.frames, **(window or {})) as result:
                done = write_result(job, result, sink, run)
            progress.check()  # a pending interrupt stops here, before the commit
    except Exception as e:  # noqa: BLE001 - VideoMTError: a bad video; others: a bug, recorded (see failed_record)
        progress.check()
        return failed_record(e, base, started, run)
    return ok_record(base, started, *done)


def segment_batched(predictor, jobs: list[Job], output, fmt: str, *, fp: str, settings: dict, batch_videos: int,
                    window: dict | None = None, sink_options: dict | None = None,
                    progress: CorpusProgress | None = None):
    """Like :func:`segment_one` for every job, ``batch_videos`` videos through the network together
    (``inference.lockstep``): yields (job index, record) as each video ends. Each video's output is
    opened when it enters the batch and committed when it leaves; results are each video's own (to
    the rounding the README states for the chunk size)."""
    from contextlib import ExitStack

    from videomt_cli.inference.lockstep import LockstepJob, run_lockstep

    progress = progress or CorpusProgress()
    model = model_name(predictor)
    open_jobs: dict[int, tuple[ExitStack, _Run, object, dict, float]] = {}
    early: list[tuple[int, Record]] = []  # failed before reaching the batch (a missing store object)

    def entering():
        for index, job in enumerate(jobs):
            if job.action != "run":
                early.append((index, settled(job, model=model, fp=fp, settings=settings)))
                continue
            base, started, run, stack = _base(job, model, fp, settings), time.perf_counter(), _Run(job), ExitStack()
            try:
                sink = stack.enter_context(job_output(job, output, fmt, sink_options, run))
            except Exception as e:  # noqa: BLE001 - as segment_one
                stack.close()
                progress.check()
                early.append((index, failed_record(e, base, started, run)))
                continue
            progress.video_started(index, len(jobs), job)
            open_jobs[index] = (stack, run, sink, base, started)
            yield LockstepJob(index, run.local, dict(window or {}, video_id=1))

    try:
        for done_job, result, error in run_lockstep(predictor, entering(), batch_videos):
            while early:
                yield early.pop(0)
            index = done_job.key
            stack, run, sink, base, started = open_jobs.pop(index)
            try:
                if error is not None:
                    raise error
                with result:
                    done = write_result(jobs[index], result, sink, run)
                progress.check()
                stack.close()  # commits the output
            except Exception as e:  # noqa: BLE001 - as segment_one
                stack.__exit__(type(e), e, e.__traceback__)  # discards the output
                progress.check()
                yield index, failed_record(e, base, started, run)
                continue
            yield index, ok_record(base, started, *done)
        while early:
            yield early.pop(0)
    finally:
        for stack, *_ in open_jobs.values():  # an interrupt: nothing half-written stays
            stack.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


class _Run:
    """Where one job's video is read from: its path, or for a store URL its local copy."""

    def __init__(self, job: Job) -> None:
        from videomt_cli.corpus.remote import is_url

        self.source = job.item.path
        self.remote = is_url(self.source)
        self.local = None if self.remote else self.source

    def named(self, text: str) -> str:
        return _named(text, self.local if self.remote else None, self.source)


@contextmanager
def job_output(job: Job, output, fmt: str, sink_options: dict | None, run: _Run):
    """The job's open sink (its video copied locally first when it is a store URL, ``run.local``);
    the output is committed on a clean exit and removed on any error."""
    from videomt_cli.corpus.places import folder_of
    from videomt_cli.corpus.remote import local_copy
    from videomt_cli.sinks import open_sink

    place = folder_of(output)
    with (local_copy(run.source, job.item.kind) if run.remote else nullcontext(run.source)) as local, \
            place.output(job.output, source=None if run.remote else run.source) as target:
        run.local = local
        with open_sink(target, fmt, overwrite=True, **(sink_options or {})) as sink:
            yield sink


def write_result(job: Job, result, sink, run: _Run) -> tuple[int, int, tuple]:
    """Add the result to the sink; (frames processed, segments, warnings)."""
    if run.remote:  # the result names the video, not its temporary copy
        named = dataclasses.replace(result, video=dataclasses.replace(result.video, path=run.source))
        if sink.format == "overlay":
            sink.add(named, source=run.local)  # drawn on the copy's frames
        else:
            sink.add(named)
    else:
        sink.add(result)
    warnings = tuple(result.warnings) + tuple(getattr(sink, "warnings", ()))
    return len(result.processed), len(result.segments), tuple(run.named(w) for w in warnings)


def ok_record(base: dict, started: float, frames: int, segments: int, warnings: tuple) -> Record:
    seconds = time.perf_counter() - started
    return Record(status="ok", frames=frames, seconds=round(seconds, 3), fps=round(frames / max(seconds, 1e-9), 3),
                  segments=segments, warnings=warnings, finished=_now(), **base)


def failed_record(e: Exception, base: dict, started: float, run: _Run) -> Record:
    """A ``VideoMTError``'s one line; any other exception is a bug: its traceback goes in the
    record and the corpus goes on (one bug must not end a corpus of thousands)."""
    seconds = round(time.perf_counter() - started, 3)
    if isinstance(e, VideoMTError):
        return Record(status="failed", error=run.named(str(e)), seconds=seconds, finished=_now(), **base)
    return Record(status="failed", error=f"internal error (a bug in videomt; please report it with the traceback in "
                                         f"{MANIFEST_NAME}): {type(e).__name__}: {run.named(' '.join(str(e).split()))}",
                  seconds=seconds, finished=_now(), traceback="".join(traceback.format_exception(e)), **base)


def _named(text: str, local: str | None, source: str) -> str:
    """A message about a store video's local copy, naming the video's URL instead."""
    return text.replace(local, source) if local else text
