"""Which frames of a video a run reads: ``--start``, ``--end`` and ``--stride``. No torch.

A bound is a frame number (``120``) or a time (``4.5s``, ``1:02.5``). Times are compared with
each frame's own timestamp, so variable frame rate is kept exactly. The reader applies the
window while decoding: frames outside it are decoded (decoding needs them) but never converted
to RGB, the real cost of reading.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from videomt_cli.errors import InputError


@dataclass(frozen=True)
class TimeSpec:
    """A --start/--end value: a frame number ('120') or a time ('4.5s', '1:02.5', '0:01:02')."""

    frame: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: "str | int | float | TimeSpec | None", option: str = "--start") -> "TimeSpec | None":
        if text is None or isinstance(text, TimeSpec):
            return text
        if isinstance(text, bool):
            raise InputError(f"{option} must be a frame number or a time, got {text!r}.")
        if isinstance(text, int):
            if text < 0:
                raise InputError(f"{option} must be a frame number >= 0, got {text}.")
            return cls(frame=text)
        if isinstance(text, float):
            if text < 0:
                raise InputError(f"{option} must be a time >= 0, got {text}.")
            return cls(seconds=text)
        text = str(text).strip()
        if re.fullmatch(r"\d+", text):
            return cls(frame=int(text))
        m = re.fullmatch(r"(\d+(?:\.\d*)?)s", text)
        if m:
            return cls(seconds=float(m.group(1)))
        m = re.fullmatch(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)", text)
        if m:
            hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
            return cls(seconds=hours * 3600 + minutes * 60 + seconds)
        raise InputError(
            f"{option} {text!r} is neither a frame number (120) nor a time (4.5s, 1:02.5); "
            f"frame numbers count from 0."
        )

    def reached(self, index: int, time: float) -> bool:
        return index >= self.frame if self.frame is not None else time >= self.seconds - 1e-9

    def __str__(self) -> str:
        return str(self.frame) if self.frame is not None else f"{self.seconds:g}s"


@dataclass(frozen=True)
class Window:
    """Frames in [start, end) of the whole video, every ``stride``-th counted from the first kept."""

    start: TimeSpec | None = None
    end: TimeSpec | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise InputError(f"--stride must be a whole number >= 1, got {self.stride!r}.")
        s, e = self.start, self.end
        if s is not None and e is not None and (s.frame is not None) == (e.frame is not None):
            if (e.frame if e.frame is not None else e.seconds) <= (s.frame if s.frame is not None else s.seconds):
                raise InputError("--end must be after --start.")

    @classmethod
    def of(cls, start=None, end=None, stride: int = 1) -> "Window":
        """From option values: frame numbers, seconds (float), strings as ``TimeSpec.parse`` takes."""
        return cls(TimeSpec.parse(start, "--start"), TimeSpec.parse(end, "--end"), stride)

    def check_against(self, num_frames: int | None, duration: float | None) -> None:
        """Refuse a start after the video's end before anything is decoded (when the header says)."""
        s = self.start
        if s is None:
            return
        if s.frame is not None and num_frames is not None and s.frame >= num_frames:
            raise InputError(f"--start {s.frame} is after the end of the video ({num_frames} frames).")
        if s.seconds is not None and duration is not None and s.seconds >= duration:
            raise InputError(f"--start {s.seconds:g}s is after the end of the video ({duration:.2f} s).")

    def expected(self, num_frames: int | None, fps) -> int | None:
        """How many frames the window will hold, from the header (None when it cannot say)."""
        if num_frames is None:
            return None
        rate = float(fps) if fps else None
        first, last = 0, num_frames
        for spec, is_start in ((self.start, True), (self.end, False)):
            if spec is None:
                continue
            if spec.frame is not None:
                value = spec.frame
            elif rate is None:
                return None
            else:  # the first frame at or after the time, as the reader decides (TimeSpec.reached)
                value = math.ceil(spec.seconds * rate - 1e-9 * rate - 1e-9)
            if is_start:
                first = value
            else:
                last = value
        last = min(last, num_frames)
        return max(0, (last - first + self.stride - 1) // self.stride)

    def selector(self) -> "Selector":
        return Selector(self)


class Selector:
    """The window applied frame by frame (the reader's position in it)."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.first: int | None = None

    def ended(self, index: int, time: float) -> bool:
        end = self.window.end
        return end is not None and end.reached(index, time)

    def wants(self, index: int, time: float) -> bool:
        """Whether frame ``index`` (at ``time``) is in the window (call once per frame, in order)."""
        start = self.window.start
        if start is not None and not start.reached(index, time):
            return False
        if self.first is None:
            self.first = index
        return (index - self.first) % self.window.stride == 0

    def ended_by_index(self, index: int) -> bool:
        """True once no later frame can be wanted, judged by index alone (frame-number ends)."""
        end = self.window.end
        return end is not None and end.frame is not None and index >= end.frame
