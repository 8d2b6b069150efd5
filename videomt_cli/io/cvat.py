"""CVAT for video 1.1 XML -> a YouTube-VIS dataset document, frames taken from the video itself. No torch.

    doc = read_cvat("annotations.xml")                  # the video: <source> beside the XML
    doc = read_cvat("job.xml", video="clip.mp4", categories=[(1, "person"), (3, "car")])
    dataset = ytvis.parse(doc, "the dataset")           # or simply ytvis.read("annotations.xml")

The document is what ``io.ytvis.parse`` reads: one video per CVAT task (``video_file``, or
``file_names`` for a frame folder), one annotation per object with one RLE (or ``null``) per frame,
``categories``; plus ``notes``, one line for each thing the reader left out or had to assume.
Rules, replayed from CVAT's own code (``cvat/apps/dataset_manager/formats/cvat.py``: the XML layout,
exporter and importer; ``bindings.py``: frame numbers; ``annotation.py``: ``TrackManager``, the
interpolation; ``formats/transformations.py``: masks, rotated boxes, ellipses), implemented here
independently:

- **Layout.** ``<annotations><version>1.1</version><meta>`` with ``<task>``, ``<job>`` or
  ``<project><tasks><task>...``; labels in ``<labels><label><name>`` (skeleton sub-labels, which have
  a ``<parent>``, are not categories); then ``<track id label [group_id] [task_id]>`` elements holding
  one shape per frame (``frame keyframe outside occluded z_order``, shape geometry) and, in CVAT for
  images files, ``<image id name>`` elements holding one-frame shapes and ``<tag>`` s.
- **Frames.** A shape's ``frame`` is the video's own frame number. A task keeps the video frames
  ``start_frame + k * step`` (``frame_filter`` ``step=N``) up to ``stop_frame``; task frame ``k`` is
  frame ``k`` of the dataset video, so a task that starts later or keeps every Nth frame is a
  video of those frames only (``video_frames``, or the matching ``file_names``). A job's
  ``start_frame``/``stop_frame`` are its own part of the video. In a project export the frames of
  each task come after those of the earlier tasks of its subset (CVAT adds ``start_frame + step *
  size`` of each earlier task); ``task_id`` says whose a track is. A shape on a frame that is not
  the task's (CVAT: "Unknown frame") or beyond the video's end is a ``DatasetError``.
- **Tracks.** Shapes with ``keyframe="0"`` are the interpolated frames CVAT wrote on export; its
  importer drops them and so do we, and the frames between keyframes are computed again as CVAT
  computes them (so a file reads as CVAT shows it after import). A track without any keyframe
  (what datumaro writes when its annotations carry no ``keyframe``) keeps every shape as a
  keyframe, as CVAT's ``SetKeyframeForEveryTrackShape`` does for datumaro data. Between two
  keyframes the shape is interpolated unless the first is ``outside="1"``: then the object is
  absent until the next keyframe. After the last keyframe the shape is repeated to the end of the
  task unless that keyframe is ``outside``. Before the first keyframe the object is absent.
- **Interpolation** (``TrackManager.get_interpolated_shapes``): boxes and ellipses linearly (points
  and ``rotation``, the angle the short way round); polygons by CVAT's point matching: both
  outlines (closed) are parametrised by arc length, every vertex of each is paired with the
  nearest one of the other by that fraction, the pairs are blended, and runs of blended points
  closer than half the mean vertex spacing are merged. Masks are not interpolated (CVAT raises on
  them): a mask keyframe holds until the next keyframe, as CVAT holds a multi-point shape.
- **Shapes.** Only area shapes make masks: ``box`` (``rotation`` turns it about its centre),
  ``polygon``, ``ellipse`` (filled as CVAT's ellipse-to-mask conversion does) and ``mask``
  (``rle`` ``left top width height``: run lengths over that box, row by row, starting with a run
  of 0). ``polyline``, ``points``, ``cuboid`` and ``skeleton`` tracks have no area and are left out
  (a note says how many); ``<tag>`` s are frame labels and are left out. One shape type per track
  (CVAT cannot interpolate across types). Polygons and boxes are filled by pycocotools, as a
  COCO polygon: a pixel is in when its centre is.
- **Objects.** A track is one object. Shapes outside tracks (``<image>`` shapes, CVAT for images)
  are one-frame objects; CVAT's video export writes such shapes as two-keyframe tracks (the shape,
  then ``outside`` on the next frame), which read back the same way. Tracks and shapes that share a
  nonzero ``group_id`` and a label are one object: their masks are joined frame by frame (a
  multi-part object). ``occluded``, ``z_order`` and attributes do not change a mask.
- **Categories.** Ids 1..K in ``<meta>`` label order; or, with ``categories`` (``(id, name)``
  pairs, e.g. a model's label table), each label takes the id of the category of that name
  (matched exactly, else ignoring case) and the document lists the whole table. A track whose label
  is not declared in ``<meta>`` (or not in ``categories``) is a ``DatasetError`` naming the label,
  the track and its line.
- **The video.** ``video`` (a file or a frame folder), else the task's ``<source>`` beside the XML,
  else an ``images/`` folder beside it (a CVAT export with images). Every shape must lie on one of
  its frames (its count is what decodes, ``io.read.count_frames``); a task declared longer than the
  video is cut where the video ends (a note says so). Its size is the frame size
  (``original_size`` must agree).
"""

from __future__ import annotations

import math
import os
import xml.parsers.expat
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from pycocotools import mask as _coco

from videomt_cli.errors import DatasetError
from videomt_cli.io import masks as mask_ops
from videomt_cli.io.ytvis import SourceVideo, describe_frames

AREA_SHAPES = ("box", "polygon", "ellipse", "mask")
OTHER_SHAPES = ("polyline", "points", "cuboid", "skeleton")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Shape:
    """One shape of a track (or an ``<image>`` shape), geometry as CVAT keeps it internally.

    ``points``: box ``(xtl, ytl, xbr, ybr)``; polygon ``(x0, y0, x1, y1, ...)``; ellipse ``(cx, cy,
    cx + rx, cy - ry)`` (CVAT's own form, rounded to 2 decimals as its importer does); mask
    ``(left, top, width, height)`` with the run lengths in ``rle``. ``frame`` is the task frame
    (0 = the task's first frame) once read, the XML's frame number before.
    """

    kind: str
    frame: int
    points: tuple[float, ...]
    rotation: float = 0.0
    outside: bool = False
    keyframe: bool = True
    rle: tuple[int, ...] = ()
    line: int = 0


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


@dataclass(frozen=True)
class Task:
    """A CVAT task (or job) of the file: which video frames it keeps and where its video is."""

    id: int | None
    name: str
    start: int  # video frame of task frame 0
    step: int
    size: int | None  # task frames, when the XML says (else: up to the video's end)
    offset: int = 0  # project exports number later tasks' frames after earlier ones'
    source: str | None = None  # the video's file name, as CVAT had it
    original_size: tuple[int, int] | None = None  # (width, height)

    def video_frame(self, xml_frame: int) -> int:
        return xml_frame - self.offset


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


# ----------------------------------------------------------------------------- reading


def read_cvat(path: str | os.PathLike, video: str | os.PathLike | None = None, categories=None) -> dict:
    """A CVAT for video 1.1 XML (task, job or project export) as a YouTube-VIS dataset document.

    Args:
        path: the XML file.
        video: the video file or frame folder of the task (default: its ``<source>`` beside the
            XML, else an ``images/`` folder beside it). Not for a project of several tasks: their
            videos are found beside the XML by their ``<source>`` names.
        categories: ``(id, name)`` pairs (or objects with ``.id`` and ``.name``) naming the ids
            of the labels; default ids 1..K in ``<meta>`` label order.

    Returns:
        ``{"videos", "annotations", "categories", "notes"}`` (see the module docstring); every
        mask is a compressed RLE with str ``counts`` at the video's size.

    Raises:
        DatasetError: not CVAT XML, an undeclared label, a shape on a frame that is not the
            task's or beyond the video's end, a video whose size is not ``original_size``, a
            malformed shape. VideoError: a video that cannot be read.
    """
    path = Path(path).expanduser()
    name = f"the CVAT file {path}"
    parsed = _parse(path, name)
    labels = _labels(parsed.meta, name)
    tasks = _tasks(parsed.meta, name)
    table = _category_table(categories, name) if categories is not None else None
    ids = _label_ids(labels, table)
    notes = list(parsed.notes)

    sources = _sources(tasks, path, video, name)
    declared = {t.id: _declared_frames(t, sources[t.id]) for t in tasks}
    objects: dict[tuple, _Object] = {}
    for track in parsed.tracks:
        task = _task_of(track, tasks, name)
        if track.label not in labels:
            raise DatasetError(f"{name}, line {track.line}: {track.what} has label '{track.label}', which <meta> "
                               f"does not declare (labels: {', '.join(labels) or 'none'}).")
        if track.label not in ids:
            raise DatasetError(f"{name}, line {track.line}: {track.what} has label '{track.label}', which the "
                               f"categories do not name ({_names(table)}).")
        key = (task.id, "group", track.group, track.label) if track.group else (task.id, "track", track.line)
        obj = objects.setdefault(key, _Object(task, ids[track.label]))
        obj.add(track, _task_frames(track, task, declared[task.id], sources[task.id], name))

    videos, annotations = [], []
    for number, task in enumerate(tasks, start=1):
        src = sources[task.id]
        frames = _present_frames(task, declared[task.id], src, name, notes)
        videos.append({"id": number, "name": task.name, **src.entry(frames)})
        for obj in (o for o in objects.values() if o.task is task):
            annotations.append(_annotation(len(annotations) + 1, number, obj, obj.masks(len(frames), src, name)))
    if table is None:
        cats = [{"id": i, "name": label} for label, i in ids.items()]
    else:
        cats = [{"id": i, "name": n} for i, n in table]
    boxes = sum(1 for o in objects.values() for t in o.tracks if t.shapes and t.shapes[0].kind == "box")
    if boxes:
        notes.append(f"{boxes} track(s) or shape(s) are boxes: their masks are the boxes.")
    return {"videos": videos, "annotations": annotations, "categories": cats, "notes": notes}


def _task_of(track: _Track, tasks: list[Task], name: str) -> Task:
    if len(tasks) == 1:
        return tasks[0]
    task = next((t for t in tasks if t.id is not None and t.id == track.task_id), None)
    if task is None:
        raise DatasetError(f"{name}, line {track.line}: {track.what} is of task {track.task_id}, which the project "
                           f"in <meta> does not list.")
    return task


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


# ----------------------------------------------------------------------------- meta


def _labels(meta: _Node, name: str) -> list[str]:
    """The label names of ``<meta>`` in order (the task's, the job's or the project's)."""
    holder = meta.child("task") or meta.child("job") or meta.child("project")
    if holder is None:
        raise DatasetError(f"{name} is not CVAT XML: its <meta> has no <task>, <job> or <project>; export the task "
                           f"from CVAT as 'CVAT for video 1.1'.")
    labels_node = holder.child("labels")
    out = []
    for label in labels_node.children if labels_node is not None else []:
        named = label.tag == "label" and label.value("name") is not None and label.value("parent") is None
        if named and label.value("name") not in out:
            out.append(label.value("name"))
    return out


def _tasks(meta: _Node, name: str) -> list[Task]:
    project = meta.child("project")
    if project is not None:
        nodes = [t for t in (project.child("tasks") or _Node("tasks", {}, 0)).children if t.tag == "task"]
        if not nodes:
            raise DatasetError(f"{name}: the project in <meta> lists no tasks.")
    else:
        nodes = [meta.child("task") or meta.child("job")]
    tasks, offset, subset = [], 0, None
    for node in nodes:
        start = _meta_int(node, "start_frame", name, 0)
        step = _step(node.value("frame_filter"), name)
        size = _meta_int(node, "size", name, None)
        stop = _meta_int(node, "stop_frame", name, None)
        if stop is not None and stop >= start:
            size = (stop - start) // step + 1 if size is None else min(size, (stop - start) // step + 1)
        # CVAT's ProjectData: later tasks of a subset are numbered after the earlier ones
        if project is not None and node.value("subset") != subset:
            offset, subset = 0, node.value("subset")
        source = node.value("source") or meta.value("source")
        sized = node.child("original_size") or meta.child("original_size")
        original = None
        if sized is not None and sized.value("width") and sized.value("height"):
            original = (_meta_int(sized, "width", name, 0), _meta_int(sized, "height", name, 0))
        tasks.append(Task(_meta_int(node, "id", name, None), node.value("name") or (source or f"task {len(tasks) + 1}"),
                          start, step, size, offset, source, original))
        if project is not None:
            offset += start + step * (size or 0)
    return tasks


def _meta_int(node: _Node, tag: str, name: str, default):
    text = node.value(tag)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        line = node.child(tag).line
        raise DatasetError(f"{name}, line {line}: <{tag}> is '{text}', not a whole number.") from None


def _step(frame_filter: str | None, name: str) -> int:
    """``step=N`` of CVAT's ``frame_filter`` (empty: every frame)."""
    if not frame_filter:
        return 1
    for part in frame_filter.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "step":
            try:
                step = int(value)
            except ValueError:
                step = 0
            if step < 1:
                raise DatasetError(f"{name}: frame_filter '{frame_filter}' needs a positive whole step.")
            return step
    return 1


def _category_table(categories, name: str) -> list[tuple[int, str]]:
    """``categories`` as ``[(id, name), ...]`` from pairs, ``{id, name}`` dicts or objects."""
    out = []
    for c in categories:
        if isinstance(c, dict):
            cid, cname = c.get("id"), c.get("name")
        elif hasattr(c, "id") and hasattr(c, "name"):
            cid, cname = c.id, c.name
        elif isinstance(c, (tuple, list)) and len(c) == 2:
            cid, cname = c
        else:
            raise DatasetError(f"the categories for {name} must be (id, name) pairs, not {c!r:.60}.")
        if not isinstance(cid, (int, np.integer)) or isinstance(cid, bool):
            raise DatasetError(f"the categories for {name} need integer ids, not {cid!r}.")
        out.append((int(cid), str(cname)))
    if len({i for i, _ in out}) != len(out):
        raise DatasetError(f"the categories for {name} list an id twice.")
    return out


def _label_ids(labels: list[str], table: list[tuple[int, str]] | None) -> dict[str, int]:
    """Label name -> category id: 1..K in order, or the id of the same name in ``table`` (exact,
    else ignoring case and spaces around it). Labels the table lacks are left out (an error if used)."""
    if table is None:
        return {label: i for i, label in enumerate(labels, start=1)}
    exact = {n: i for i, n in table}
    loose: dict[str, list[int]] = defaultdict(list)
    for i, n in table:
        loose[n.strip().casefold()].append(i)
    out = {}
    for label in labels:
        if label in exact:
            out[label] = exact[label]
        elif len(loose.get(label.strip().casefold(), [])) == 1:
            out[label] = loose[label.strip().casefold()][0]
    return out


def _names(table) -> str:
    names = [n for _, n in table or []]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


# ----------------------------------------------------------------------------- the video


def _sources(tasks: list[Task], path: Path, video, name: str) -> dict:
    """Task id -> its SourceVideo (``video``, else found beside the XML), its size checked."""
    if video is not None and len(tasks) > 1:
        raise DatasetError(f"{name} is a project of {len(tasks)} tasks: put their videos "
                           f"({', '.join(t.source or '?' for t in tasks)}) beside it instead of passing one video.")
    out = {}
    for task in tasks:
        src = SourceVideo.open(video if video is not None else _find_video(task, path, name))
        if task.original_size is not None and task.original_size != (src.width, src.height):
            w, h = task.original_size
            raise DatasetError(f"{name}: the task's original_size is {w}x{h} but {src.path} is {src.width}x"
                               f"{src.height}; pass the task's own video (video=).")
        out[task.id] = src
    return out


def _declared_frames(task: Task, src: SourceVideo) -> list[int]:
    """The video frames of the task's frames as the XML declares them (without a size or
    stop_frame: up to the video's end)."""
    size = task.size
    if size is None:
        size = max(0, (src.last_frame - task.start) // task.step + 1)
    return [task.start + k * task.step for k in range(size)]


def _present_frames(task: Task, declared: list[int], src: SourceVideo, name: str, notes: list[str]) -> list[int]:
    """The task's frames that the video has: the declared ones, cut where the video ends (a note);
    a frame missing before others that are there is an error (a frame folder with a gap)."""
    n = next((k for k, f in enumerate(declared) if not src.has(f)), len(declared))
    later = next((f for f in declared[n:] if src.has(f)), None)
    if later is not None:
        raise DatasetError(f"{name}: the task's frame {declared[n]} is missing ({src.lacks(declared[n])}) but "
                           f"frame {later} is there; pass the task's whole video (video=).")
    if n < len(declared):
        notes.append(f"the task's frames run to video frame {declared[-1]} but {src.lacks(declared[n])}: the "
                     f"dataset video stops at frame {declared[n - 1] if n else declared[0]} ({n} frames).")
    return declared[:n]


def _find_video(task: Task, path: Path, name: str) -> Path:
    """The task's ``<source>`` beside the XML, else an ``images/`` frame folder beside it."""
    here = path.parent
    if task.source:
        candidate = here / Path(task.source).name
        if candidate.exists():
            return candidate
    images = here / "images"
    if images.is_dir():
        return images
    if task.source:
        raise DatasetError(f"{name}: its video {task.source} is not beside it ({here}); pass the video file or "
                           f"frame folder (video=).")
    raise DatasetError(f"{name} does not name its video (no <source> in <meta>); pass the video file or frame "
                       f"folder (video=).")


# ----------------------------------------------------------------------------- objects


class _Object:
    """The tracks (and shapes) that make one object: one track, or all of a group with one label."""

    def __init__(self, task: Task, category_id: int):
        self.task = task
        self.category_id = category_id
        self.tracks: list[_Track] = []
        self.keys: list[list[Shape]] = []  # per track: its keyframes on task frames, sorted

    def add(self, track: _Track, keys: list[Shape]) -> None:
        self.tracks.append(track)
        self.keys.append(keys)

    def masks(self, length: int, src: SourceVideo, name: str) -> list[dict | None]:
        """One compressed RLE (or None) per task frame: the union of the tracks' shapes."""
        h, w = src.height, src.width
        per_frame: dict[int, list] = defaultdict(list)
        for track, keys in zip(self.tracks, self.keys):
            cache: dict[int, dict | None] = {}  # held and repeated shapes are one object: fill once
            for frame, shape in replay(keys, length, standalone=track.standalone):
                if id(shape) not in cache:
                    cache[id(shape)] = rasterise(shape, h, w, f"{name}, line {shape.line}")
                if cache[id(shape)] is not None:
                    per_frame[frame].append(cache[id(shape)])
        out: list[dict | None] = [None] * length
        for frame, rles in per_frame.items():
            rle = rles[0] if len(rles) == 1 else _coco.merge(rles)
            if _coco.area(rle) > 0:
                out[frame] = rle
        return out


def _task_frames(track: _Track, task: Task, declared: list[int], src: SourceVideo, name: str) -> list[Shape]:
    """The track's keyframes with ``frame`` as task frames, sorted; each frame checked: in the video,
    a frame of the task, not twice."""
    kinds = {s.kind for s in track.shapes}
    if len(kinds) > 1:
        raise DatasetError(f"{name}, line {track.line}: {track.what} mixes {' and '.join(sorted(kinds))} shapes; a "
                           f"CVAT track holds one shape type.")
    out, seen = [], {}
    for s in track.shapes:
        frame = task.video_frame(s.frame)
        if frame < 0 or not src.has(frame):
            raise DatasetError(f"{name}, line {s.line}: {track.what} has a shape on frame {frame} but "
                               f"{src.lacks(frame)}.")
        k, rest = divmod(frame - task.start, task.step)
        if rest or not 0 <= k < len(declared):
            raise DatasetError(f"{name}, line {s.line}: {track.what} has a shape on frame {frame}, which is not a "
                               f"frame of the task (video frames {describe_frames(declared)}).")
        if k in seen:
            raise DatasetError(f"{name}, line {s.line}: {track.what} has two shapes on frame {frame} (lines "
                               f"{seen[k]} and {s.line}).")
        seen[k] = s.line
        out.append(Shape(s.kind, k, s.points, s.rotation, s.outside, True, s.rle, s.line))
    return sorted(out, key=lambda s: s.frame)


def _annotation(ann_id: int, video_id: int, obj: _Object, segs: list) -> dict:
    present = [s for s in segs if s is not None]
    areas = rle_areas(present)
    boxes = _coco.toBbox(present).tolist() if present else []
    it_a, it_b = iter(areas), iter(boxes)
    return {"id": ann_id, "video_id": video_id, "category_id": obj.category_id, "iscrowd": 0,
            "segmentations": [None if s is None else {"size": s["size"], "counts": s["counts"].decode("ascii")}
                              for s in segs],
            "areas": [None if s is None else int(next(it_a)) for s in segs],
            "bboxes": [None if s is None else [float(v) for v in next(it_b)] for s in segs],
            "cvat_tracks": [t.id for t in obj.tracks]}


def rle_areas(rles: list[dict]) -> list[int]:
    """Pixel counts of compressed RLEs."""
    return mask_ops.areas(rles).tolist()


# ----------------------------------------------------------------------------- CVAT's track rule


def replay(keys: list[Shape], end: int, standalone: bool = False) -> list[tuple[int, Shape]]:
    """Every task frame a track is visible on, with its shape there (CVAT's
    ``TrackManager.get_interpolated_shapes``, frames with the object outside left out).

    ``keys``: the track's keyframes, sorted by task frame, all < ``end`` (the task's frame count).
    A held or repeated shape is the keyframe object itself (callers fill it once).
    ``standalone``: a shape outside any track (``<image>`` shapes): its own frame only.
    """
    if standalone:
        return [(k.frame, k) for k in keys if not k.outside]
    out: list[tuple[int, Shape]] = []
    for a, b in pairwise(keys):
        if a.outside:  # absent until the next keyframe
            continue
        out.append((a.frame, a))
        out.extend((f, between(a, b, f)) for f in range(a.frame + 1, b.frame))
    last = keys[-1]
    if not last.outside:  # repeated to the end of the task
        out.extend((f, last) for f in range(last.frame, end))
    return out


def between(a: Shape, b: Shape, frame: int) -> Shape:
    """The shape on ``frame``, strictly between keyframes ``a`` and ``b`` of one track."""
    t = (frame - a.frame) / (b.frame - a.frame)
    if a.kind == "mask":  # CVAT cannot interpolate masks: the keyframe holds
        return a
    if a.kind == "polygon":
        points = tuple(interpolate_polygon(np.array(a.points).reshape(-1, 2), np.array(b.points).reshape(-1, 2),
                                           t).reshape(-1).tolist())
        return Shape(a.kind, frame, points, a.rotation, False, False, (), a.line)
    p0, p1 = np.array(a.points), np.array(b.points)
    points = tuple((p0 + (p1 - p0) * t).tolist())
    rotation = (a.rotation + angle_step(b.rotation, a.rotation) * t + 360) % 360
    return Shape(a.kind, frame, points, rotation, False, False, (), a.line)


def angle_step(to: float, frm: float) -> float:
    """The signed turn from ``frm`` to ``to`` degrees, the short way (CVAT's ``find_angle_diff``,
    whose arithmetic makes an exact half turn +1 degree: kept, so files read as CVAT shows them)."""
    d = ((to - frm + 180) % 360) - 180
    return 1.0 if d == -180 else d


def interpolate_polygon(a: np.ndarray, b: np.ndarray, t: float, closed: bool = True) -> np.ndarray:
    """CVAT's interpolation of a polygon (or polyline, ``closed=False``) from vertices ``a`` (N, 2)
    to ``b`` (M, 2) at fraction ``t`` in (0, 1) -> (K, 2) vertices.

    The outlines (closed by repeating the first vertex) are parametrised by arc length (0..1).
    Every vertex of ``a`` is paired with the vertex of ``b`` nearest in that parameter, and every
    vertex of ``b`` left unpaired with the nearest of ``a`` (first on ties). The pairs, in order of
    ``a``'s vertices, are blended linearly. Then the blends are thinned: a run of ``a``'s vertices
    paired with one and the same vertex of ``b`` keeps a blended point only where it is at least
    ``L / 2n`` from the last kept one (``L`` the run's length along ``a``, ``n`` its vertices), and
    likewise the blends of one vertex of ``a`` paired with several of ``b`` (along ``b``); a run
    thinned to its two ends closer than that becomes their midpoint. The closing vertex is dropped.
    """
    if closed:
        a, b = np.vstack([a, a[:1]]), np.vstack([b, b[:1]])
    fa, fb = _arc_fractions(a), _arc_fractions(b)
    gap = np.abs(fa[:, None] - fb[None, :])  # (N, M); argmin takes the first of equal distances
    pairs = [[int(j)] for j in gap.argmin(axis=1)]
    unpaired = np.setdiff1d(np.arange(len(b)), gap.argmin(axis=1))
    for j, i in zip(unpaired.tolist(), gap[:, unpaired].argmin(axis=0).tolist()):
        pairs[i].append(j)
    pairs = [sorted(p) for p in pairs]
    ia = np.repeat(np.arange(len(a)), [len(p) for p in pairs])
    jb = np.array([j for p in pairs for j in p])
    blends = a[ia] + (b[jb] - a[ia]) * t  # blends of a's vertex i start at blends[first[i]]
    first = np.concatenate([[0], np.cumsum([len(p) for p in pairs])[:-1]]).tolist()

    kept: list[np.ndarray] = []

    def thin(length: float, n: int, p: int, q: int) -> None:
        limit = length / (2 * n)
        run, last = [blends[p]], p
        for k in range(p + 1, q):
            if _dist(blends[last], blends[k]) >= limit:
                run.append(blends[k])
                last = k
        run.append(blends[q])
        if len(run) == 2 and _dist(blends[p], blends[q]) < limit:
            run = [(blends[p] + blends[q]) / 2]
        kept.extend(run)

    def a_run(i0: int, i1: int) -> None:  # a's vertices i0..i1, each paired with one (the same) vertex of b
        p, q = first[i0], first[i1]
        if p == q:
            kept.append(blends[p])
        else:
            thin(_length(a[i0:i1 + 1]), i1 - i0 + 1, p, q)

    def b_run(i: int) -> None:  # a's vertex i, paired with b's vertices pairs[i][0]..pairs[i][-1]
        j0, j1 = pairs[i][0], pairs[i][-1]
        thin(_length(b[j0:j1 + 1]), j1 - j0 + 1, first[i], first[i] + len(pairs[i]) - 1)

    open_at = None
    for i, js in enumerate(pairs):
        if len(js) == 1:
            if open_at is None:
                open_at = i
            elif js[0] != pairs[open_at][0]:
                a_run(open_at, i - 1)
                open_at = i
        else:
            if open_at is not None:
                a_run(open_at, i - 1)
                open_at = None
            b_run(i)
    if open_at is not None:
        a_run(open_at, len(pairs) - 1)
    out = np.array(kept).reshape(-1, 2)
    return out[:-1] if closed else out


def _arc_fractions(points: np.ndarray) -> np.ndarray:
    steps = np.sqrt(((points[1:] - points[:-1]) ** 2).sum(axis=1))
    total = steps.sum()
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    # A zero-length outline (one point repeated): CVAT divides 0 by 0 and every comparison with
    # the NaNs fails, which pairs everything with vertex 0; all-zero fractions do the same.
    return cumulative / total if total > 0 else np.zeros(len(points))


def _length(points: np.ndarray) -> float:
    return float(np.sqrt(((points[1:] - points[:-1]) ** 2).sum(axis=1)).sum())


def _dist(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sqrt(((p - q) ** 2).sum()))


# ----------------------------------------------------------------------------- filling shapes


def rasterise(shape: Shape, h: int, w: int, where: str) -> dict | None:
    """A shape of an (h, w) frame -> a compressed pycocotools RLE (bytes counts), or None for no area."""
    if shape.kind == "polygon":
        return _fill(list(shape.points), h, w)
    if shape.kind == "box":
        return _fill(box_polygon(shape.points, shape.rotation), h, w)
    if shape.kind == "ellipse":
        return _ellipse(shape, h, w)
    return _mask(shape, h, w, where)


def _fill(polygon: list[float], h: int, w: int) -> dict | None:
    """pycocotools' polygon fill (a pixel is in when its centre is); None below 3 vertices."""
    if len(polygon) < 6:
        return None
    return _coco.frPyObjects([polygon], h, w)[0]


def box_polygon(points, rotation: float = 0.0) -> list[float]:
    """A box ``(xtl, ytl, xbr, ybr)`` turned ``rotation`` degrees (clockwise on screen) about its
    centre -> its corners ``[x0, y0, ...]`` (CVAT's ``RotatedBoxesToPolygons``)."""
    x0, y0, x1, y1 = points
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if rotation:
        a = math.radians(rotation)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        corners = [(cx + math.cos(a) * (x - cx) - math.sin(a) * (y - cy),
                    cy + math.sin(a) * (x - cx) + math.cos(a) * (y - cy)) for x, y in corners]
    return [v for xy in corners for v in xy]


def _ellipse(shape: Shape, h: int, w: int) -> dict | None:
    """Filled as CVAT's ``EllipsesToMasks``: OpenCV's ellipse at the rounded centre and semi-axes."""
    import cv2

    cx, cy, right, top = shape.points
    canvas = np.zeros((h, w), np.uint8)
    axes = (max(0, round(right - cx)), max(0, round(cy - top)))
    cv2.ellipse(canvas, (round(cx), round(cy)), axes, shape.rotation, 0, 360, 1, thickness=-1)
    return _coco.encode(np.asfortranarray(canvas))


def _mask(shape: Shape, h: int, w: int, where: str) -> dict | None:
    """CVAT's mask: run lengths over the box ``left, top, width, height``, row by row, from a run of 0."""
    left, top, bw, bh = (int(v) for v in shape.points)
    if bw < 1 or bh < 1 or left < 0 or top < 0 or left + bw > w or top + bh > h:
        raise DatasetError(f"{where}: the mask's box (left {left}, top {top}, {bw}x{bh}) is not inside the "
                           f"{w}x{h} frame.")
    runs = np.array(shape.rle, np.int64)
    if (runs < 0).any() or runs.sum() != bw * bh:
        raise DatasetError(f"{where}: the mask's rle covers {int(runs.sum())} pixels but its box is {bw}x{bh} = "
                           f"{bw * bh}.")
    values = np.arange(len(runs)) % 2  # 0, 1, 0, ...
    tight = np.repeat(values.astype(np.uint8), runs).reshape(bh, bw)
    canvas = np.zeros((h, w), np.uint8)
    canvas[top:top + bh, left:left + bw] = tight
    return _coco.encode(np.asfortranarray(canvas))


__all__ = ["AREA_SHAPES", "Shape", "Task", "angle_step", "between", "box_polygon", "interpolate_polygon", "rasterise",
           "read_cvat", "replay", "rle_areas"]
