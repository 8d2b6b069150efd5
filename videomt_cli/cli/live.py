"""``segment`` on a live source, or to per-frame output: results as they happen.

``segment`` hands over here for a live SOURCE (``io.live.is_live``: a URL, a device, ``-``) and
for per-frame output (``--format jsonl``, ``-o x.jsonl``, ``-o -``) of any source. The order of
work: the output is checked (nothing is written yet), the model loads, the format is checked
against the task (panoptic and semantic results of a live source can only be per-frame), then
the source opens (``--timeout``) and the stream runs.

Outputs
- per-frame: ``jsonl`` (``sinks.jsonl``: a file written in place, line by line, or ``-`` for
  stdout) and ``overlay`` on a live source (``sinks.live_overlay``: fragmented MP4 or MPEG-TS
  written in place, ``udp://``/``tcp://``/``srt://`` targets, ``-`` for MPEG-TS on stdout), fed
  each frame's online results as it is processed.
- video-level (every other format, instance task): written when the stream ends, atomically,
  from the frames seen (dropped ones are ``null``).
- no ``-o``: ``<name>.jsonl`` in the current folder for a live source (``stdin.jsonl``,
  ``video0.jsonl``, the URL's last path part or host_port), beside the input for a file; with
  ``--format``, that format's usual suffix.

While it runs, stderr shows a spinner with frames/s, latency and drops (a bar for a file);
warnings (a full buffer, a lost connection, a reconnect) are printed as they happen. At the end
one line gives frames processed and dropped, frames/s and the arrival-to-result latency (median,
p95), then the ``Wrote`` line (on stderr when stdout carries the data).

Signals: the first Ctrl-C / SIGTERM / SIGHUP ends the stream as at its end (what has arrived is
processed, every output is completed: the ``end`` line, a closed overlay, the video-level file of
the frames seen), then the run exits 130 / 143 / 129; a second one aborts at once (per-frame
files keep their complete lines, an overlay stays playable, video-level outputs are not written).
A reader of stdout that goes away (``| head``) ends the stream the same way, with exit code 0.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape

from videomt_cli.cli.base import Signals, State, err, exit_if_signalled, warn, wrote
from videomt_cli.errors import InputError

PER_FRAME = ("jsonl", "overlay")
_SUFFIXES = {"jsonl": ".jsonl", "overlay": ".overlay.mp4", "mot": ".txt", "mots": ".mots.txt", "cvat": ".xml",
             "png": ".masks"}
_REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
if hasattr(signal, "SIGHUP"):
    _REASONS[signal.SIGHUP] = "hangup"


def _is_url(target: str) -> bool:
    return "://" in target


def _plan(source: str, output, fmt: str | None, live: bool) -> tuple[str, str]:
    """(format key, target) from the options, with the defaults of the module docstring."""
    from videomt_cli import sinks

    key = sinks.format_for("x", fmt) if fmt is not None else None  # an unknown --format fails here
    target = None if output is None else os.fspath(output)  # a str from segment: udp:// kept whole
    if target is None:
        key = key or "jsonl"
        suffix = _SUFFIXES.get(key, ".json")
        if live:
            from videomt_cli.io.live import stream_name

            target = stream_name(source) + suffix
        else:
            from videomt_cli.cli.segment import _default_output

            target = str(_default_output(source, suffix))
        return key, target
    if target == "-":
        key = key or "jsonl"
        if key not in PER_FRAME:
            raise InputError(f"-o - writes per-frame output to stdout: JSON lines (--format jsonl) or an overlay "
                             f"(--format overlay, MPEG-TS); --format {key} needs a file.")
        return key, target
    if _is_url(target):
        if key not in (None, "overlay"):
            raise InputError(f"a network target ({target}) takes the overlay video (MPEG-TS); --format {key} needs a "
                             f"file.")
        return "overlay", target
    if key is None and Path(target).suffix.lower() == ".ts":
        return "overlay", target  # MPEG-TS: a live overlay format only
    return sinks.format_for(target, fmt), target


def _make_sink(key: str, target: str, overwrite: bool, per_frame: bool, options: dict):
    from videomt_cli import sinks

    if key == "overlay" and per_frame:
        return sinks.LiveOverlaySink(target, overwrite=overwrite)
    return sinks.open_sink(target, key, overwrite=overwrite, **options)


def segment_live(source, output, fmt, *, overwrite, window, realtime, reconnect, timeout, make_predictor,
                 format_options=None) -> None:
    """Run ``segment`` on a live source or to per-frame output (see the module docstring).

    window: dict(start, end, stride, classes) as ``Predictor.stream`` takes them; make_predictor():
    loads the model; format_options(format name): the sink arguments of the format options given. Exits 128 + n after a signal that ended the stream."""
    from videomt_cli.io.atomic import refuse_input_as_output
    from videomt_cli.io.live import LiveSource, is_live
    from videomt_cli.io.probe import probe
    from videomt_cli.io.window import Window

    source = os.fspath(source)
    live = is_live(source)
    if not live:
        probe(source)  # a missing or unreadable file fails before anything else
        if reconnect:
            raise InputError("--reconnect applies to live sources (rtsp://, udp://, http://, a device, - for stdin).")
    Window.of(window.get("start"), window.get("end"), window.get("stride", 1))
    key, target = _plan(source, output, fmt, live)
    per_frame = key in PER_FRAME
    if not (target == "-" or _is_url(target)):
        refuse_input_as_output(target, [source] if not live else [])
    options = format_options(key) if format_options is not None else {}  # --cvat-shape, --rle, ...
    sink = _make_sink(key, target, overwrite, per_frame, options)  # checks the destination; writes nothing yet
    predictor = make_predictor()
    if not per_frame and predictor.task != "instance" and (live or realtime):
        raise InputError(f"{predictor.task} results need every frame twice (the class scores of the whole video "
                         f"decide each mask), and a live stream is read once: use --format jsonl or --format overlay "
                         f"for its per-frame results.")
    use_live = live or realtime
    src = (LiveSource(source, timeout=timeout, reconnect=reconnect, realtime=realtime, on_warning=warn)
           if use_live else source)
    try:
        stream = predictor.stream(src, final=not per_frame, **window)
        try:
            _run(stream, src if use_live else None, sink, key, target, per_frame, predictor)
        finally:
            stream.close()
    finally:
        if use_live:
            src.close()
    exit_if_signalled()


class _Stop:
    """What ended the run early: a signal's number, or stdout's reader going away."""

    signum: int | None = None
    broken = False
    announced = False


def _run(stream, live, sink, key: str, target: str, per_frame: bool, predictor) -> None:
    """Stream into the sink; commit; print the stats and the ``Wrote`` line."""
    stop = _Stop()

    def on_signal(signum: int) -> None:  # in the signal handler: set flags only
        stop.signum = signum
        if live is not None:
            live.stop()

    info = stream.info
    started = time.perf_counter()
    processed = 0
    with Signals.soft(on_signal), _progress(live is not None, stream) as update, sink:
        if per_frame:
            if key == "jsonl":
                sink.start(info, predictor.task, predictor.categories, live=live is not None)
            else:
                sink.start(info, predictor.categories, predictor.task)
                for warning in sink.warnings:
                    warn(warning)
        for result in stream:
            if per_frame:
                if live is not None and key == "jsonl":
                    for drop in live.take_drops(before=result.index):
                        sink.dropped(drop.index, drop.time)
                if key == "jsonl":
                    sink.frame(result, latency=live.latency(result.index) if live is not None else None)
                else:
                    sink.frame(result)
            processed += 1
            update(processed, time.perf_counter() - started)
            if (stop.signum is not None or getattr(sink, "broken", False)) and not stop.announced:
                stop.announced = True
                stop.broken = stop.signum is None
                if live is None:
                    break  # a file: end here
                live.stop()
                if stop.signum is not None and not State.quiet:
                    _tell("[yellow]Stopping:[/yellow] finishing the frames that have arrived (press Ctrl-C again to "
                          "abort).")
        if live is not None and key == "jsonl":
            for drop in live.take_drops():
                sink.dropped(drop.index, drop.time)
        stats = live.stats() if live is not None else None
        if per_frame and key == "jsonl":
            reason = _REASONS.get(stop.signum, "stopped") if stop.signum is not None else (
                "stopped" if stop.broken else (stats.ended if stats is not None else "end of stream"))
            if stats is not None:
                sink.end(reason, stats.processed, stats.dropped, stats.reconnects, stats.fps, stats.latency)
            else:
                seconds = time.perf_counter() - started
                sink.end(reason, processed, fps=processed / seconds if seconds > 0 else None)
        result = None
        if not per_frame:
            result = stream.result
            with result:
                already = set(live.warnings) if live is not None else set()
                for warning in result.warnings:
                    if warning not in already:
                        warn(warning)
                sink.add(result)
                for warning in getattr(sink, "warnings", []):
                    warn(warning)
                with Signals.deferred():
                    sink.close()  # the atomic rename: a signal now waits
        else:
            with Signals.deferred():
                sink.close()
        if Signals.received is None:
            Signals.finished = True  # the outputs are in place: a late signal changes nothing
    if stats is not None and not State.quiet:
        _tell(f"Live: {escape(stats.line())}.")
    dropped = f", {stats.dropped} dropped" if stats is not None and stats.dropped else ""
    details = (f"  ({len(result.segments)} results, {len(result.processed)} frames{dropped})" if result is not None
               else f"  ({processed} frames{dropped})")
    if target == "-":
        if not State.quiet:  # stdout is the data: the last line goes to stderr
            _tell(f"[green]Wrote[/green] stdout{escape(details)}")
    else:
        wrote(target, details)


def _tell(line: str) -> None:
    """One line on stderr; a terminal that went away (SIGHUP) does not fail the run."""
    try:
        err.print(line, highlight=False, soft_wrap=True)
    except OSError:
        pass


@contextmanager
def _progress(live: bool, stream):
    """A spinner with frames/s, latency and drops for a live source; a bar for a file. Yields
    ``update(processed, seconds)``. Erased when the block fails, as ``progress_bar`` is."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    total = None if live else stream.window.expected(stream.info.num_frames, stream.info.fps)
    if live or total is None:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn()]
    else:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    bar = Progress(*columns, console=err, disable=State.quiet, transient=False)
    source = stream.source
    task = bar.add_task("live" if live else "segment", total=total, info="")
    last = [0.0]

    def update(processed: int, seconds: float) -> None:
        now = time.perf_counter()
        if now - last[0] < 0.1:  # Rich refreshes 10 times a second: do not build the text more often
            return
        last[0] = now
        if live:
            s = source.stats()
            text = f"{s.processed} frames  {s.fps:.1f} frames/s"
            if s.latency is not None:
                text += f"  latency {1000 * s.latency[0]:.0f} ms"
            if s.dropped:
                text += f"  dropped {s.dropped}"
        else:
            text = f"{processed / max(seconds, 1e-9):.1f} frames/s"
        bar.update(task, completed=processed, info=text)

    with bar:
        try:
            yield update
        except BaseException:
            bar.live.transient = True
            bar.live.stop()
            bar.disable = True
            raise
