"""Result writers ("sinks"), one module per format family on one atomic base (``sinks.base``).

Every sink is a context manager fed ``VideoResult`` records::

    with open_sink("results.json") as sink:      # the format from the suffix, or fmt="coco", ...
        sink.add(result)

The formats are described in ``docs/formats.md``. No torch here.
"""

from __future__ import annotations

import os
from pathlib import Path

from videomt_cli.errors import InputError
from videomt_cli.sinks.base import Sink, frame_file_names, video_name
from videomt_cli.sinks.coco import CocoSink
from videomt_cli.sinks.cvat import CvatSink
from videomt_cli.sinks.jsonl import JsonlSink
from videomt_cli.sinks.labelstudio import LabelStudioSink
from videomt_cli.sinks.live_overlay import LiveOverlaySink
from videomt_cli.sinks.mot import MotSink, MotsSink
from videomt_cli.sinks.overlay import VIDEO_SUFFIXES, OverlaySink, draw_overlay, track_color, write_overlay
from videomt_cli.sinks.png import PngSink
from videomt_cli.sinks.ytvis import YtvisDatasetSink, YtvisResultsSink, read_results

FORMATS: dict[str, type[Sink]] = {
    "ytvis": YtvisResultsSink,
    "ytvis-dataset": YtvisDatasetSink,
    "coco": CocoSink,
    "png": PngSink,
    "overlay": OverlaySink,
    "mot": MotSink,
    "mots": MotsSink,
    "cvat": CvatSink,
    "labelstudio": LabelStudioSink,
    "jsonl": JsonlSink,
}


def format_for(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format name for ``--format`` ``fmt`` or, when None, for the output path's suffix."""
    if fmt is not None:
        key = fmt.strip().lower()
        if key not in FORMATS:
            raise InputError(f"Unknown --format {fmt!r}; valid formats: {', '.join(FORMATS)}.")
        return key
    text = os.fspath(path)
    if text == "-":
        return "jsonl"  # stdout: per-frame lines as they happen
    suffix = Path(text).suffix.lower()
    if text.endswith(("/", os.sep)) or suffix == "":
        return "png"
    if suffix == ".json":
        return "ytvis"
    if suffix in VIDEO_SUFFIXES:
        return "overlay"
    if suffix == ".txt":
        return "mot"
    if suffix == ".xml":
        return "cvat"
    if suffix == ".jsonl":
        return "jsonl"
    raise InputError(f"Cannot tell the output format of {text!r} from its suffix; use .json, .txt, .xml, .jsonl, "
                     f"a folder, or one of {', '.join(VIDEO_SUFFIXES)}, or pass --format ({', '.join(FORMATS)}).")


def open_sink(path: str | os.PathLike, fmt: str | None = None, overwrite: bool = False, **options) -> Sink:
    """A sink for ``path``: by ``fmt`` (a ``--format`` name) or by the path's suffix (``.json`` ->
    ytvis, ``.txt`` -> MOT, no suffix or a trailing ``/`` -> png folder, ``.mp4``/``.mov``/``.mkv``/
    ``.webm`` -> overlay, ``.jsonl`` and ``-`` (stdout) -> JSON lines; MOTS by ``fmt="mots"``).
    ``options`` go to the sink (``alpha``, ``progress``, ``color_by`` for overlays; ``subfolders`` for
    png). Checks the destination now (exists without ``overwrite`` -> ``OutputError``); the output
    appears when the ``with`` block exits cleanly."""
    key = format_for(path, fmt)
    return FORMATS[key](path, overwrite=overwrite, **options)


__all__ = ["Sink", "YtvisResultsSink", "YtvisDatasetSink", "CocoSink", "CvatSink", "LabelStudioSink", "PngSink", "OverlaySink", "MotSink",
           "MotsSink", "JsonlSink", "LiveOverlaySink", "FORMATS",
           "open_sink", "format_for", "draw_overlay", "write_overlay", "read_results", "track_color",
           "frame_file_names", "video_name", "VIDEO_SUFFIXES"]
