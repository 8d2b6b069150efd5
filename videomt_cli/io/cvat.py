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

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as _coco

from videomt_cli.errors import DatasetError
from videomt_cli.io.cvat_tracks import (Shape, angle_step, between, box_polygon, interpolate_polygon, rasterise,
                                        replay, rle_areas)
from videomt_cli.io.cvat_xml import AREA_SHAPES, _Node, _parse, _Track
from videomt_cli.io.ytvis import SourceVideo, describe_frames


# ----------------------------------------------------------------------------- records


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


__all__ = ["AREA_SHAPES", "Shape", "Task", "angle_step", "between", "box_polygon", "interpolate_polygon", "rasterise",
           "read_cvat", "replay", "rle_areas"]
