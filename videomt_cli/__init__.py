"""videomt: video segmentation and tracking with VidEoMT.

The public API::

    from videomt_cli import Predictor, FrameResult, VideoResult, load_model, open_sink, VideoMTError

    predictor = Predictor.from_model()                 # the bundled demo model; or a name, folder, file
    for frame in predictor.stream("input.mp4"):        # FrameResult per frame, as it happens
        ...
    with predictor.run("input.mp4") as result, open_sink("out.json") as sink:
        sink.add(result)

``import videomt_cli`` is cheap: the names load their modules (and torch) on first use.
"""

from __future__ import annotations

from videomt_cli.errors import VideoMTError

__version__ = "0.1.0"
__all__ = ["Predictor", "FrameResult", "VideoResult", "load_model", "open_sink", "VideoMTError", "__version__"]

_LAZY = {
    "Predictor": ("videomt_cli.inference.predictor", "Predictor"),
    "FrameResult": ("videomt_cli.records", "FrameResult"),
    "VideoResult": ("videomt_cli.records", "VideoResult"),
    "load_model": ("videomt_cli.modeling.checkpoint", "load_model"),
    "open_sink": ("videomt_cli.sinks", "open_sink"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'videomt_cli' has no attribute {name!r}")
