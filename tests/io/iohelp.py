"""Small helpers of the ``videomt_cli.io`` tests (``from iohelp import ...``)."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from media import make_video  # noqa: E402

N = 12  # frames of the shared short videos (``media_fixture``)
_MEDIA: dict[str, Path] = {}


def close_to(a: np.ndarray, b: np.ndarray, tol: float = 6.0) -> bool:
    """Lossy codecs: the mean absolute difference stays small for the same picture."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < tol


def one_line(e: pytest.ExceptionInfo) -> str:
    """The error's message, checked to be one non-empty line."""
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def read_all(source, **kwargs):
    """Every frame of ``source`` and the reader's timeline: ``(frames, timeline)``."""
    from videomt_cli.io.read import read_frames

    reader = read_frames(source, **kwargs)
    frames = list(reader)
    return frames, reader.timeline


@pytest.fixture(scope="session", name="media")
def media_fixture(tmp_path_factory):
    """The videos most tests share, made once per session (about 0.3 s). A test module takes it
    with ``media = iohelp.media_fixture`` (not a conftest.py: other tests import the top-level
    ``conftest`` by name, which a second conftest module would shadow)."""
    if _MEDIA and all(p.exists() for p in _MEDIA.values()):
        return _MEDIA
    d = tmp_path_factory.mktemp("media")
    _MEDIA.update({
        "mp4": make_video(d / "a.mp4", frames=N),
        "ntsc_odd": make_video(d / "ntsc_odd.mp4", frames=N, size=(97, 71), fps=Fraction(30000, 1001), audio=True),
        "bframes": make_video(d / "bframes.mp4", frames=N, options={"preset": "veryfast", "bf": "2"}),
        "vfr": make_video(d / "vfr.mp4", frames=N, vfr=True, audio=True),
        "rot90": make_video(d / "rot90.mp4", frames=4, size=(64, 48), rotation=90),
        "mkv": make_video(d / "b.mkv", frames=30, audio=True),
        "faststart": make_video(d / "fs.mp4", frames=30, faststart=True),
        "plain30": make_video(d / "plain30.mp4", frames=30),
        "avi": make_video(d / "c.avi", frames=30, audio=True),  # audio: data, not the header, dominates
    })
    return _MEDIA
