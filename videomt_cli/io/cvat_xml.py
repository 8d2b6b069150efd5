"""The CVAT XML file, streamed: its ``<meta>`` as a tree and each track's keyframes as ``Shape`` s. No torch.

    parsed = _parse(Path("annotations.xml"), "the CVAT file annotations.xml")
    parsed.meta        # _Node: <meta> and all below it (task, job or project; labels)
    parsed.tracks      # _Track s: a <track>'s keyframes, or one <image> shape each
    parsed.notes       # what was left out (shapes without an area, <tag> s) or assumed

The layout is CVAT's (``cvat/apps/dataset_manager/formats/cvat.py``: exporter and importer), as
``io.cvat``'s module docstring states it (**Layout**, **Tracks**: only keyframes are kept, every shape
of a track without any). Frame numbers are the XML's own; ``io.cvat`` checks them against the task
and the video.
"""

from __future__ import annotations

import math
import xml.parsers.expat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from videomt_cli.errors import DatasetError
from videomt_cli.io.cvat_tracks import Shape

AREA_SHAPES = ("box", "polygon", "ellipse", "mask")
OTHER_SHAPES = ("polyline", "points", "cuboid", "skeleton")


# ----------------------------------------------------------------------------- records


@dataclass
class _Track:
    """A ``<track>`` (or one ``<image>`` shape) as parsed: its area shapes, nothing else."""

    id: str
    label: str
    group: int
    task_id: int | None
    line: int
    shapes: list[Shape] = field(default_factory=list)
    standalone: bool = False  # an <image> shape: visible on its own frame only

    @property
    def what(self) -> str:
        return f"the <{self.shapes[0].kind}> of image frame {self.shapes[0].frame}" if self.standalone \
            else f"track {self.id}"



@dataclass
class _Node:
    tag: str
    attrs: dict
    line: int
    children: list = field(default_factory=list)
    text: str = ""

    def child(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def value(self, tag: str) -> str | None:
        c = self.child(tag)
        return c.text.strip() if c is not None and c.text.strip() else None



# ----------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    meta: _Node
    tracks: list[_Track]
    notes: list[str]


class _Reader:
    """Streams the XML with expat (line numbers for messages). Only ``<meta>`` and each track's
    keyframes are kept: the interpolated shapes a CVAT export lists go as soon as their track ends."""

    def __init__(self, name: str):
        self.name = name
        self.parser = xml.parsers.expat.ParserCreate()
        self.parser.buffer_text = True
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._text
        self.depth = 0
        self.meta: _Node | None = None
        self.meta_stack: list[_Node] = []
        self.track: _Track | None = None
        self.image: dict | None = None
        self.skip_depth: int | None = None  # inside an element whose content is not read
        self.tracks: list[_Track] = []
        self.ignored: dict[str, int] = defaultdict(int)
        self.tags = 0
        self.images = 0
        self.no_keyframes = 0

    def _start(self, tag: str, attrs: dict) -> None:
        line = self.parser.CurrentLineNumber
        depth, self.depth = self.depth, self.depth + 1
        if self.skip_depth is not None:
            return
        if depth == 0:
            if tag != "annotations":
                raise _NotCvat(f"its root element is <{tag}>, not <annotations>")
        elif self.meta_stack:
            node = _Node(tag, attrs, line)
            self.meta_stack[-1].children.append(node)
            self.meta_stack.append(node)
        elif depth == 1:
            if tag == "meta":
                self.meta = _Node(tag, attrs, line)
                self.meta_stack = [self.meta]
            elif tag == "track":
                self._need_meta(tag, line)
                self.track = _Track(attrs.get("id", "?"), attrs.get("label", ""),
                                    _int(attrs.get("group_id", 0), self.name, line),
                                    _int(attrs["task_id"], self.name, line) if attrs.get("task_id") else None, line)
            elif tag == "image":
                self._need_meta(tag, line)
                self.images += 1
                if "id" not in attrs:
                    raise DatasetError(f"{self.name}, line {line}: an <image> needs its frame number as 'id'.")
                self.image = {"frame": _int(attrs["id"], self.name, line),
                              "task_id": _int(attrs["task_id"], self.name, line) if attrs.get("task_id") else None}
            elif tag != "version":
                self.skip_depth = depth
        elif depth == 2 and (self.track is not None or self.image is not None):
            if tag in AREA_SHAPES:
                self._shape(tag, attrs, line)
            elif tag in OTHER_SHAPES:
                if self.track is not None:
                    self.track.shapes.append(Shape(tag, 0, ()))  # a marker: this track has no area
                else:
                    self.ignored[tag] += 1
            elif tag == "tag":
                self.tags += 1
            self.skip_depth = depth  # attributes, skeleton elements: not read
        else:
            self.skip_depth = depth

    def _end(self, tag: str) -> None:
        self.depth -= 1
        if self.skip_depth is not None:
            if self.depth == self.skip_depth:
                self.skip_depth = None
            return
        if self.meta_stack:
            self.meta_stack.pop()
        elif self.depth == 1 and tag == "track" and self.track is not None:
            self._finish_track(self.track)
            self.track = None
        elif self.depth == 1 and tag == "image":
            self.image = None

    def _text(self, text: str) -> None:
        if self.meta_stack and self.skip_depth is None:
            self.meta_stack[-1].text += text

    def _need_meta(self, tag: str, line: int) -> None:
        if self.meta is None:
            raise _NotCvat(f"<{tag}> at line {line} comes before any <meta>")

    def _shape(self, tag: str, a: dict, line: int) -> None:
        where = f"{self.name}, line {line}"
        try:
            if tag == "box":
                points = tuple(float(a[k]) for k in ("xtl", "ytl", "xbr", "ybr"))
            elif tag == "ellipse":
                cx, cy, rx, ry = (float(a[k]) for k in ("cx", "cy", "rx", "ry"))
                # CVAT's importer keeps (cx, cy, cx + rx, cy - ry), the last two rounded to 2 decimals
                points = (cx, cy, float(f"{cx + rx:.2f}"), float(f"{cy - ry:.2f}"))
            elif tag == "polygon":
                points = _points(a["points"])
            else:  # mask
                points = tuple(float(int(a[k])) for k in ("left", "top", "width", "height"))
            rle = tuple(int(v) for v in a["rle"].split(",")) if tag == "mask" else ()
            rotation = float(a.get("rotation", 0) or 0)
            if self.track is not None:
                frame = _int(a["frame"], self.name, line)
                outside, keyframe = a.get("outside", "0") == "1", a.get("keyframe", "1") == "1"
            else:
                frame, outside, keyframe = self.image["frame"], False, True
        except KeyError as e:
            raise DatasetError(f"{where}: a <{tag}> needs the attribute '{e.args[0]}'.") from None
        except ValueError:
            raise DatasetError(f"{where}: a <{tag}> has a value that is not a number.") from None
        if not all(math.isfinite(v) for v in points + (rotation,)):
            raise DatasetError(f"{where}: a <{tag}> has a coordinate that is not finite.")
        shape = Shape(tag, frame, points, rotation, outside, keyframe, rle, line)
        if self.track is not None:
            self.track.shapes.append(shape)
        else:  # an <image> shape: an object of its own frame (CVAT: a labeled shape)
            track = _Track(f"line {line}", a.get("label", ""), _int(a.get("group_id", 0), self.name, line),
                           self.image["task_id"], line, [shape], standalone=True)
            self.tracks.append(track)

    def _finish_track(self, track: _Track) -> None:
        kinds = {s.kind for s in track.shapes}
        if kinds & set(OTHER_SHAPES):
            self.ignored[min(kinds & set(OTHER_SHAPES))] += 1
            return
        if not track.shapes:
            return
        keys = [s for s in track.shapes if s.keyframe]
        if not keys:  # datumaro-made: every shape a keyframe (CVAT's SetKeyframeForEveryTrackShape)
            self.no_keyframes += 1
            keys = track.shapes
        track.shapes = keys
        self.tracks.append(track)


class _NotCvat(Exception):
    pass


def _parse(path: Path, name: str) -> _Parsed:
    reader = _Reader(name)
    hint = "export the task from CVAT as 'CVAT for video 1.1'"
    try:
        with open(path, "rb") as f:
            reader.parser.ParseFile(f)
    except FileNotFoundError:
        raise DatasetError(f"{name} does not exist.") from None
    except IsADirectoryError:
        raise DatasetError(f"{name} is a folder; give the XML file.") from None
    except OSError as e:
        raise DatasetError(f"cannot read {name}: {e.strerror or e}.") from None
    except xml.parsers.expat.ExpatError as e:
        reason = xml.parsers.expat.errors.messages[e.code] if e.code else str(e)
        raise DatasetError(f"{name} is not CVAT XML: the XML parser stops at line {e.lineno} column {e.offset + 1} "
                           f"({reason}); {hint}.") from None
    except _NotCvat as e:
        raise DatasetError(f"{name} is not CVAT XML: {e}; {hint}.") from None
    if reader.meta is None:
        raise DatasetError(f"{name} is not CVAT XML: <annotations> has no <meta> (the task and its labels); {hint}.")
    notes = []
    ignored = sum(reader.ignored.values())
    if ignored:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(reader.ignored.items()))
        notes.append(f"left out {ignored} track(s) or shape(s) without an area ({kinds}).")
    if reader.tags:
        notes.append(f"left out {reader.tags} <tag>(s): frame labels have no pixels.")
    if reader.no_keyframes:
        notes.append(f"{reader.no_keyframes} track(s) have no keyframe: every shape of theirs was read as one.")
    if reader.images and not any(not t.standalone for t in reader.tracks):
        notes.append("the file has no tracks (CVAT for images layout): every shape is an object of its own "
                     "frame; export 'CVAT for video 1.1' to keep the tracks.")
    return _Parsed(reader.meta, reader.tracks, notes)


def _points(text: str) -> tuple[float, ...]:
    """CVAT's ``points="x0,y0;x1,y1;..."``."""
    out = []
    for pair in text.split(";"):
        if pair.strip():
            x, y = pair.split(",")
            out += [float(x), float(y)]
    return tuple(out)


def _int(value, name: str, line: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DatasetError(f"{name}, line {line}: '{value}' is not a whole number.") from None
