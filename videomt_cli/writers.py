"""Result writers ("sinks"): YouTube-VIS JSON, COCO per-frame JSON, PNG folders, overlay videos.

Every sink is a context manager fed ``VideoResult`` records::

    with open_sink("results.json", fmt="ytvis") as sink:
        for result in results:
            sink.add(result)

and every sink writes atomically: it writes into a temporary file (or folder) beside the
destination and renames it into place only when the ``with`` block exits without an exception.
An interrupted or failed run leaves nothing behind and never touches an existing file at the
destination. An existing destination is refused unless ``overwrite=True``. The formats are
described in ``docs/formats.md``. No torch here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from videomt_cli import masks as mask_ops
from videomt_cli.errors import InputError, OutputError
from videomt_cli.labels import palette_color
from videomt_cli.records import RLE, Category, Segment, VideoResult

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
META_NAME = "meta.json"
SEGMENTS_NAME = "segments.json"


# ----------------------------------------------------------------------------- atomic destinations


def _tmp_name(path: Path, suffix: str = "") -> Path:
    # Hidden, unique, in the destination's folder (so the final rename stays on one file system),
    # keeping the real suffix last: muxers pick the container from it.
    return path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}{suffix}")


def _os_reason(err: OSError) -> str:
    return err.strerror or str(err)


class Sink:
    """Base of all sinks: destination checks, a temporary file or folder, commit or abort.

    Subclasses set ``is_dir`` and implement ``_begin`` (write the temporary output's start),
    ``add`` and ``_finish`` (complete the temporary output before the rename).
    """

    format = ""
    is_dir = False

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.count = 0  # videos added
        self._closed = False
        self._check_destination()

    # -- destination -----------------------------------------------------------------------

    def _check_destination(self) -> None:
        path = self.path
        if path.exists() or path.is_symlink():
            if not self.overwrite:
                raise OutputError(f"{path} already exists; use --overwrite to replace it.")
            if path.is_dir() and not path.is_symlink():
                if not self.is_dir:
                    raise OutputError(f"{path} is a folder; give a file name for the {self.format} output.")
                if any(path.iterdir()) and not (path / META_NAME).is_file():
                    raise OutputError(f"{path} is a folder that videomt did not write (no {META_NAME}); "
                                      f"refusing to replace it even with --overwrite. Choose another folder.")
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"Cannot write {path}: {parent} is not a folder.")

    def _make_tmp(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp_name(self.path)
            if self.is_dir:
                os.mkdir(tmp)
            else:
                with open(tmp, "xb"):
                    pass
        except OSError as err:
            raise OutputError(f"Cannot write {self.path}: {_os_reason(err)}. "
                              f"Check the folder exists and is writable, or choose another output.") from err
        self.tmp = tmp

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> "Sink":
        if self.tmp is None and not self._closed:
            self._make_tmp()
            try:
                self._begin()
            except BaseException:
                self.abort()
                raise
        return self

    def __enter__(self) -> "Sink":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def add(self, result: VideoResult) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Finish the temporary output and move it into place."""
        if self._closed:
            return
        self.open()
        try:
            self._finish()
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Remove the temporary output; the destination is left as it was."""
        self._closed = True
        self._release()
        tmp, self.tmp = self.tmp, None
        if tmp is None:
            return
        try:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass

    def _begin(self) -> None:
        pass

    def _finish(self) -> None:
        pass

    def _release(self) -> None:
        """Close open handles (called on abort)."""

    def _commit(self) -> None:
        assert self.tmp is not None
        path, tmp = self.path, self.tmp
        if (path.exists() or path.is_symlink()) and not self.overwrite:  # appeared while we wrote
            raise OutputError(f"{path} already exists; use --overwrite to replace it.")
        try:
            if self.is_dir and (path.exists() or path.is_symlink()):
                # Nothing can be renamed onto a non-empty folder (nor a folder onto a file):
                # move the old output aside, put the new one in place, then delete the old one.
                old = _tmp_name(path, ".old")
                os.replace(path, old)
                try:
                    os.replace(tmp, path)
                except OSError:
                    os.replace(old, path)
                    raise
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
        except OSError as err:
            raise OutputError(f"Cannot move the finished output to {path}: {_os_reason(err)}.") from err
        self.tmp = None


# ----------------------------------------------------------------------------- helpers


def _rle(rle: RLE | None) -> dict | None:
    """An RLE as plain JSON (str counts, int size), or None."""
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def num_frames(result: VideoResult) -> int:
    """The number of frames of the video the result covers."""
    if result.segments:
        return len(result.segments[0].masks)
    info = result.video
    for n in (info.num_frames, len(info.timestamps) or None, len(info.file_names) or None):
        if n:
            return int(n)
    return max(result.processed, default=-1) + 1


def _check_lengths(result: VideoResult) -> int:
    n = num_frames(result)
    for seg in result.segments:
        if len(seg.masks) != n:
            raise ValueError(f"segment {seg.track_id} has {len(seg.masks)} masks for a {n}-frame video")
    return n


def video_name(result: VideoResult) -> str:
    """A short name for the video: the folder's name for an image folder, else the file's stem."""
    info = result.video
    path = Path(info.path.rstrip("/\\"))
    return (path.name if info.is_image_folder else path.stem) or f"video{result.video_id}"


def frame_file_names(result: VideoResult) -> list[str]:
    """One image name per frame, YouTube-VIS style ``<video name>/<frame file>``: an image folder's
    own file names, else ``00000.jpg``, ``00001.jpg``, ..."""
    n = num_frames(result)
    name = video_name(result)
    files = result.video.file_names
    if len(files) == n:
        return [f if "/" in f else f"{name}/{f}" for f in files]
    return [f"{name}/{i:05d}.jpg" for i in range(n)]


def processed_frames(result: VideoResult) -> list[int]:
    """Indices of the frames the model saw: ``result.processed``, else frames with any mask."""
    n = num_frames(result)
    if result.processed:
        return sorted({i for i in result.processed if 0 <= i < n})
    if not result.segments:
        return list(range(n))
    return [i for i in range(n) if any(s.masks[i] is not None for s in result.segments)]


def _category_json(c: Category) -> dict:
    return {"id": c.id, "name": c.name, "supercategory": "thing" if c.isthing else "stuff",
            "isthing": int(c.isthing), "color": list(c.color)}


def _dump(obj, f) -> None:
    f.write(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def _dense(rle: RLE) -> np.ndarray:
    """One RLE -> (H, W) C-contiguous uint8 0/1 mask.

    pycocotools hands back a column-major array; ``cv2.transpose`` of its (W, H) C-ordered view
    makes the row-major copy about 3x faster than numpy (DESIGN 8: masks are the overlay's cost).
    """
    return cv2.transpose(np.ascontiguousarray(mask_ops.decode(rle).T))


def _paint(masks: list[np.ndarray], h: int, w: int):
    """Stack masks (each (H, W) 0/1 uint8 or bool) into one index picture, later masks on top.

    Returns ``(index, boxes)``: ``index`` (H, W) is 0 where no mask is and ``k + 1`` where mask
    ``k`` is the last one covering the pixel (uint8 up to 255 masks, else uint16); ``boxes[k]`` is
    mask ``k``'s ``(x, y, w, h)`` or None when it is empty. Painting in order with a running
    maximum of ``mask * (k + 1)`` is exact because ``k + 1`` grows, and OpenCV/numpy ufuncs keep it
    fast (no boolean indexing).
    """
    dtype = np.uint8 if len(masks) < 256 else np.uint16
    index = np.zeros((h, w), dtype)
    boxes: list[tuple[int, int, int, int] | None] = []
    for k, mask in enumerate(masks):
        m = np.asarray(mask)
        if m.shape != (h, w):
            raise ValueError(f"mask {k} is {m.shape}, the picture is {(h, w)}")
        m = np.ascontiguousarray(m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8))
        x, y, bw, bh = cv2.boundingRect(m)
        if bw == 0 or bh == 0:
            boxes.append(None)
            continue
        boxes.append((x, y, bw, bh))
        roi = index[y:y + bh, x:x + bw]
        np.maximum(roi, m[y:y + bh, x:x + bw].astype(dtype, copy=False) * dtype(k + 1), out=roi)
    return index, boxes


class _JsonSink(Sink):
    """A sink that builds one JSON document in memory and writes it at the end."""

    def __init__(self, path, overwrite: bool = False) -> None:
        super().__init__(path, overwrite)
        self.categories: dict[int, Category] = {}

    def _add_categories(self, result: VideoResult) -> None:
        for c in result.categories:
            self.categories.setdefault(c.id, c)

    def _document(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        with open(self.tmp, "wb") as f:
            _dump(self._document(), f)
            f.flush()
            os.fsync(f.fileno())


# ----------------------------------------------------------------------------- YouTube-VIS


class YtvisResultsSink(Sink):
    """YouTube-VIS results: a JSON list of ``{video_id, category_id, score, segmentations}``.

    ``segmentations`` has one entry per frame of the video, ``null`` for frames not processed.
    Streams to the temporary file, so many videos (``--dataset``) cost no extra memory.
    """

    format = "ytvis"

    def _begin(self) -> None:
        self._f = open(self.tmp, "wb")
        self._f.write(b"[")
        self._first = True

    def add(self, result: VideoResult) -> None:
        self.open()
        _check_lengths(result)
        for seg in result.segments:
            head = {"video_id": result.video_id, "category_id": int(seg.category_id), "score": float(seg.score)}
            self._f.write(b"\n" if self._first else b",\n")
            # The same bytes as dumping the whole entry, written mask by mask: a long video's
            # segmentations never sit in memory as one list.
            self._f.write(json.dumps(head, separators=(",", ":"), allow_nan=False)[:-1].encode("utf-8"))
            self._f.write(b',"segmentations":[')
            for i, mask in enumerate(seg.masks):
                if i:
                    self._f.write(b",")
                _dump(_rle(mask), self._f)
            self._f.write(b"]}")
            self._first = False
        self.count += 1

    def _finish(self) -> None:
        self._f.write(b"\n]\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def _release(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None and not f.closed:
            f.close()


class YtvisDatasetSink(_JsonSink):
    """A YouTube-VIS annotation (ground-truth style) file: ``videos``, ``annotations``, ``categories``.

    Like YouTube-VIS ground truth, a frame where a track is absent (empty mask) or that was not
    processed is ``null`` in ``segmentations``, ``areas`` and ``bboxes``. Tracks with no pixel in
    any frame are left out. ``score`` is kept on each annotation.
    """

    format = "ytvis-dataset"

    def __init__(self, path, overwrite: bool = False) -> None:
        super().__init__(path, overwrite)
        self.videos: list[dict] = []
        self.annotations: list[dict] = []

    def add(self, result: VideoResult) -> None:
        self.open()
        n = _check_lengths(result)
        if any(v["id"] == result.video_id for v in self.videos):
            raise OutputError(f"video_id {result.video_id} was already written to {self.path}; "
                              "each video needs its own id.")
        info = result.video
        self._add_categories(result)
        self.videos.append({"id": result.video_id, "width": info.width, "height": info.height, "length": n,
                            "file_names": frame_file_names(result)})
        for seg in result.segments:
            segms, areas, boxes = [], [], []
            for rle in seg.masks:
                area = mask_ops.area(rle) if rle is not None else 0
                if area == 0:
                    segms.append(None)
                    areas.append(None)
                    boxes.append(None)
                else:
                    segms.append(_rle(rle))
                    areas.append(area)
                    boxes.append(mask_ops.bbox(rle))
            if all(a is None for a in areas):
                continue
            self.annotations.append({
                "id": len(self.annotations) + 1, "video_id": result.video_id, "category_id": int(seg.category_id),
                "segmentations": segms, "areas": areas, "bboxes": boxes, "iscrowd": 0,
                "height": info.height, "width": info.width, "length": 1, "score": float(seg.score),
                "track_id": seg.track_id,
            })
        self.count += 1

    def _document(self) -> dict:
        return {"info": {"description": "VidEoMT results (YouTube-VIS dataset style)"}, "licenses": [],
                "videos": self.videos, "annotations": self.annotations,
                "categories": [_category_json(c) for c in sorted(self.categories.values(), key=lambda c: c.id)]}


# ----------------------------------------------------------------------------- COCO


class CocoSink(_JsonSink):
    """COCO per-frame: one image per frame, one annotation per track and processed frame where the
    track has pixels; the track in ``attributes.track_id`` (what CVAT reads to rebuild tracks)."""

    format = "coco"

    def __init__(self, path, overwrite: bool = False) -> None:
        super().__init__(path, overwrite)
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.videos: list[dict] = []

    def add(self, result: VideoResult) -> None:
        self.open()
        n = _check_lengths(result)
        info = result.video
        self._add_categories(result)
        self.videos.append({"id": result.video_id, "name": info.path, "width": info.width,
                            "height": info.height, "length": n})
        first = len(self.images) + 1
        for i, name in enumerate(frame_file_names(result)):
            self.images.append({"id": first + i, "file_name": name, "frame_index": i, "video_id": result.video_id,
                                "width": info.width, "height": info.height})
        for i in range(n):
            for seg in result.segments:
                rle = seg.masks[i]
                if rle is None:
                    continue
                area = mask_ops.area(rle)
                if area == 0:
                    continue
                self.annotations.append({
                    "id": len(self.annotations) + 1, "image_id": first + i, "category_id": int(seg.category_id),
                    "segmentation": _rle(rle), "area": area, "bbox": mask_ops.bbox(rle), "score": float(seg.score),
                    "iscrowd": 0, "attributes": {"track_id": seg.track_id},
                })
        self.count += 1

    def _document(self) -> dict:
        return {"info": {"description": "VidEoMT results (COCO per frame)"}, "licenses": [],
                "videos": self.videos, "images": self.images, "annotations": self.annotations,
                "categories": [_category_json(c) for c in sorted(self.categories.values(), key=lambda c: c.id)]}


# ----------------------------------------------------------------------------- PNG


def _paint_order(segments: Iterable[Segment]) -> list[Segment]:
    # Painted in this order, later wins: ascending score, and on equal scores the lower track id last.
    return sorted(segments, key=lambda s: (s.score, -s.track_id))


def render_ids(result: VideoResult, index: int) -> np.ndarray:
    """The id picture of frame ``index`` as the PNG sink writes it (see ``docs/formats.md``).

    instance/panoptic: uint16 track (segment) ids, 0 = background; where masks overlap the
    higher-score segment wins. semantic: dataset category ids, uint8 when every id is below 255
    (255 = no class) else uint16 (65535 = no class).
    """
    info = result.video
    h, w = info.height, info.width
    semantic = result.task == "semantic"
    segs = [seg for seg in _paint_order(result.segments)
            if seg.masks[index] is not None and not mask_ops.is_empty(seg.masks[index])]
    if semantic:
        dtype, background = _semantic_dtype(result)
        values = [seg.category_id for seg in segs]
    else:
        dtype, background = np.uint16, 0
        for seg in segs:
            if not 0 < seg.track_id < 65536:
                raise OutputError(f"track id {seg.track_id} does not fit a 16-bit PNG (1..65535).")
        values = [seg.track_id for seg in segs]
    painted, _ = _paint([_dense(seg.masks[index]) for seg in segs], h, w)
    lut = np.array([background] + values, dtype)
    return np.take(lut, painted)


def _semantic_dtype(result: VideoResult):
    ids = [c.id for c in result.categories] + [s.category_id for s in result.segments]
    if max(ids, default=0) < 255 and min(ids, default=0) >= 0:
        return np.uint8, 255
    if max(ids) >= 65535 or min(ids) < 0:
        raise OutputError("category ids must be in 0..65534 for a 16-bit PNG.")
    return np.uint16, 65535


class PngSink(Sink):
    """A folder with one PNG per processed frame (``00000.png`` = frame 0), ``meta.json`` and, for the
    instance and panoptic tasks, ``segments.json``. With ``subfolders=True`` each video goes to
    ``<folder>/<video stem>/`` (for ``--dataset``); otherwise the folder holds one video."""

    format = "png"
    is_dir = True

    def __init__(self, path, overwrite: bool = False, subfolders: bool = False) -> None:
        super().__init__(path, overwrite)
        self.subfolders = subfolders
        self.videos: list[dict] = []

    def add(self, result: VideoResult) -> None:
        self.open()
        _check_lengths(result)
        if self.subfolders:
            name = video_name(result)
            if any(v["folder"] == name for v in self.videos):
                name = f"{name}_{result.video_id}"
            folder = self.tmp / name
            folder.mkdir()
        else:
            if self.count:
                raise OutputError(f"{self.path} holds one video's PNGs; write each video to its own folder.")
            name, folder = ".", self.tmp
        frames = processed_frames(result)
        for i in frames:
            ids = render_ids(result, i)
            target = folder / f"{i:05d}.png"
            if not cv2.imwrite(str(target), ids):
                raise OutputError(f"Cannot write {target}.")
        meta = self._meta(result, frames)
        (folder / META_NAME).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if result.task != "semantic":
            segs = {str(s.track_id): {"category_id": int(s.category_id), "isthing": bool(s.isthing),
                                      "score": float(s.score), "name": _name(result, s.category_id)}
                    for s in result.segments}
            (folder / SEGMENTS_NAME).write_text(json.dumps(segs, indent=1), encoding="utf-8")
        self.videos.append({"video_id": result.video_id, "folder": name, "path": result.video.path})
        self.count += 1

    def _meta(self, result: VideoResult, frames: list[int]) -> dict:
        info = result.video
        meta = {"format": "videomt-png", "version": 1, "task": result.task, "video": info.path,
                "video_id": result.video_id, "width": info.width, "height": info.height,
                "num_frames": num_frames(result), "file_pattern": "{index:05d}.png", "frames": frames}
        if result.task == "semantic":
            dtype, fill = _semantic_dtype(result)
            meta.update(dtype=np.dtype(dtype).name, pixel="dataset category id", no_class=fill)
        else:
            meta.update(dtype="uint16", background=0,
                        pixel=("track id" if result.task == "instance" else "segment id")
                        + f"; see {SEGMENTS_NAME}; overlaps go to the higher score")
        meta["categories"] = [_category_json(c) for c in result.categories]
        return meta

    def _finish(self) -> None:
        if self.subfolders:
            (self.tmp / META_NAME).write_text(
                json.dumps({"format": "videomt-png", "version": 1, "videos": self.videos}, indent=1), encoding="utf-8")


def _name(result: VideoResult, category_id: int) -> str:
    try:
        return result.category(category_id).name
    except KeyError:
        return str(category_id)


# ----------------------------------------------------------------------------- overlay drawing


def track_color(track_id: int) -> tuple[int, int, int]:
    """The overlay colour of a track: stable across frames, runs and videos."""
    return palette_color(track_id)


def _segment_color(seg: Segment, cats: dict[int, Category], color_by: str) -> tuple[int, int, int]:
    by_category = color_by == "category" or (color_by == "auto" and not seg.isthing)
    if by_category and seg.category_id in cats:
        return tuple(int(v) for v in cats[seg.category_id].color)
    return track_color(seg.track_id)


def draw_overlay(
    frame_rgb: np.ndarray,
    masks_for_frame: list[tuple[Segment, np.ndarray]],
    categories: list[Category],
    alpha: float = 0.5,
    color_by: str = "auto",
) -> np.ndarray:
    """Draw masks on one RGB frame and return a new (H, W, 3) uint8 picture.

    ``masks_for_frame`` pairs each segment with its (H, W) bool mask in this frame. Each mask is
    filled with its colour blended at ``alpha``, outlined, and labelled ``"<track id> <name>
    <score>"`` (stuff and semantic segments: the name only) at the top of its bounding box.
    Colours: ``color_by="track"`` a stable colour per track id, ``"category"`` the category's
    colour (use it for semantic results), ``"auto"`` track colours for things, category colours
    for stuff. Higher-score segments are drawn over lower ones. Pixels outside every mask keep
    their values except under outlines and labels.
    """
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if color_by not in ("auto", "track", "category"):
        raise ValueError(f"color_by must be auto, track or category, not {color_by!r}")
    out = np.array(frame, copy=True, order="C")
    if not masks_for_frame:
        return out
    h, w = frame.shape[:2]
    cats = {c.id: c for c in categories}
    items = sorted(masks_for_frame, key=lambda sm: (sm[0].score, -sm[0].track_id))
    for seg, mask in items:
        if np.shape(mask) != (h, w):
            raise ValueError(f"mask of segment {seg.track_id} is {np.shape(mask)}, the frame is {(h, w)}")
    painted, boxes = _paint([mask for _, mask in items], h, w)
    colors = [_segment_color(seg, cats, color_by) for seg, _ in items]
    drawn = [(seg, mask, color, box) for (seg, mask), color, box in zip(items, colors, boxes) if box is not None]
    if not drawn:
        return out
    if alpha > 0:
        # Blend only inside the union of the boxes: colour lookup, one weighted sum, one masked copy.
        x0 = min(b[0] for *_, b in drawn)
        y0 = min(b[1] for *_, b in drawn)
        x1 = max(b[0] + b[2] for *_, b in drawn)
        y1 = max(b[1] + b[3] for *_, b in drawn)
        region = out[y0:y1, x0:x1]
        idx = painted[y0:y1, x0:x1]
        lut = np.array([(0, 0, 0)] + colors, np.uint8)
        fill = np.take(lut, idx, axis=0)
        blended = cv2.addWeighted(region, 1.0 - alpha, fill, alpha, 0.0)
        covered = (idx > 0).view(np.uint8)
        copied = cv2.copyTo(blended, covered, region)
        if copied is not region:  # OpenCV wrote a new array instead of into the view
            region[...] = copied
    short = min(h, w)
    line = max(1, round(short / 360))
    for _, mask, color, (x0, y0, bw, bh) in drawn:
        m = np.asarray(mask)[y0:y0 + bh, x0:x0 + bw]
        sub = np.ascontiguousarray(m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8))
        contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
        cv2.drawContours(out, contours, -1, color, line, lineType=cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.3, short / 900)
    text_thick = 1 if scale < 0.8 else 2
    for seg, _, _, (x0, y0, _, _) in drawn:
        name = cats[seg.category_id].name if seg.category_id in cats else str(seg.category_id)
        thing = seg.isthing and color_by != "category"
        text = f"{seg.track_id} {name} {seg.score:.2f}" if thing else name
        _label(out, text, int(x0), int(y0), font, scale, text_thick)
    return out


def _label(img: np.ndarray, text: str, x: int, y: int, font, scale: float, thick: int) -> None:
    """Text on a dark box whose bottom-left sits at (x, y), moved inside the picture if needed."""
    h, w = img.shape[:2]
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(1, thick)
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    left = min(max(0, x), max(0, w - bw))
    top = y - bh if y - bh >= 0 else y  # above the box when there is room, else just inside it
    top = min(top, max(0, h - bh))
    cv2.rectangle(img, (left, top), (left + bw - 1, top + bh - 1), (20, 20, 20), thickness=cv2.FILLED)
    cv2.putText(img, text, (left + pad, top + pad + th), font, scale, (255, 255, 255), thick, cv2.LINE_AA)


def masks_at(result: VideoResult, index: int) -> list[tuple[Segment, np.ndarray]]:
    """The non-empty masks of frame ``index`` as (segment, (H, W) bool) pairs for ``draw_overlay``."""
    segs = [s for s in result.segments
            if index < len(s.masks) and s.masks[index] is not None and not mask_ops.is_empty(s.masks[index])]
    if not segs:
        return []
    return [(s, _dense(s.masks[index]).view(np.bool_)) for s in segs]  # 0/1 bytes: bool is a free view


# ----------------------------------------------------------------------------- overlay video


class OverlaySink(Sink):
    """An overlay video: the source decoded again, masks drawn on the frames that have results,
    every other frame unchanged; same frame count, size, rate and timestamps; audio copied where
    the container allows (all through ``videomt_cli.video``)."""

    format = "overlay"

    def __init__(self, path, overwrite: bool = False, alpha: float = 0.5,
                 progress: Callable[[int, int | None], None] | None = None, color_by: str | None = None) -> None:
        if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"An overlay video needs one of the suffixes {', '.join(VIDEO_SUFFIXES)}; got {path}.")
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be in 0..1, got {alpha}")
        super().__init__(path, overwrite)
        self.alpha = alpha
        self.progress = progress
        self.color_by = color_by
        self.warnings: list[str] = []  # from the video writer (odd sizes, audio that could not be copied)

    def _begin(self) -> None:
        # The muxer creates the file itself; keep only the reserved name.
        self.tmp.unlink()

    def add(self, result: VideoResult, source_path: str | os.PathLike | None = None) -> None:
        from videomt_cli import video  # lazily: PyAV is only needed for overlays

        self.open()
        if self.count:
            raise OutputError(f"{self.path} holds one video's overlay; write each video to its own file.")
        _check_lengths(result)
        source = str(source_path if source_path is not None else result.video.path)
        color_by = self.color_by or ("category" if result.task == "semantic" else "auto")
        total = num_frames(result) or result.video.num_frames
        # Pass the path, not result.video: read_frames rebuilds the timestamps of a VideoInfo it is given.
        audio = source if result.video.has_audio and not result.video.is_image_folder else None
        with video.VideoWriter(self.tmp, result.video, audio_from=audio) as writer:
            for done, frame in enumerate(video.read_frames(source), start=1):
                image = frame.image
                pairs = masks_at(result, frame.index)
                if pairs:
                    image = draw_overlay(image, pairs, result.categories, self.alpha, color_by)
                writer.write(image, frame.pts)
                if self.progress is not None:
                    self.progress(done, total)
        self.warnings.extend(writer.warnings)
        self.count += 1


def write_overlay(
    result: VideoResult,
    source_path: str | os.PathLike,
    out_path: str | os.PathLike,
    alpha: float = 0.5,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Decode ``source_path`` again, draw ``result`` on it and write ``out_path`` atomically.

    ``progress(frames_done, total_or_None)`` is called after each frame.
    """
    with OverlaySink(out_path, overwrite=overwrite, alpha=alpha, progress=progress) as sink:
        sink.add(result, source_path=source_path)
    return Path(out_path)


def read_results(
    results_path: str | os.PathLike,
    source_path: str | os.PathLike,
    categories: list[Category],
    *,
    video_id: int | None = None,
    score_threshold: float = 0.0,
    class_ids: set[int] | None = None,
) -> VideoResult:
    """A YouTube-VIS results file (what ``segment`` writes) -> the ``VideoResult`` of one video, to
    draw it again without running the model. ``categories`` name the ids (the model's labels).

    The file may hold several videos: ``video_id`` picks one (needed only when it holds more).
    """
    from videomt_cli import video  # lazily: PyAV

    from videomt_cli.errors import DatasetError

    try:
        entries = json.loads(Path(results_path).read_text())
    except FileNotFoundError:
        raise DatasetError(f"Results file {results_path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{results_path} is not a readable JSON results file ({e}).") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "segmentations" in e for e in entries):
        raise DatasetError(f"{results_path} is not a YouTube-VIS results list "
                           f"([{{video_id, category_id, score, segmentations}}, ...]).")
    ids = sorted({e.get("video_id") for e in entries})
    if video_id is None:
        if len(ids) > 1:
            raise DatasetError(f"{results_path} holds {len(ids)} videos ({ids[:5]}...); pick one with --video-id.")
        video_id = ids[0] if ids else 1
    elif entries and video_id not in ids:
        raise DatasetError(f"{results_path} has no results for video id {video_id}; it has {ids[:10]}.")
    known = {c.id for c in categories}
    info = video.probe(source_path)
    segments = []
    for entry in sorted((e for e in entries if e.get("video_id") == video_id), key=lambda e: -e["score"]):
        if entry["score"] < score_threshold or (class_ids is not None and entry["category_id"] not in class_ids):
            continue
        if entry["category_id"] not in known:
            raise DatasetError(f"{results_path} uses category id {entry['category_id']}, which the labels "
                               f"do not have; pass the model that wrote it (--model).")
        masks = entry["segmentations"]
        if info.num_frames is not None and len(masks) != info.num_frames:
            raise DatasetError(f"{results_path} has {len(masks)} frames per result but {source_path} has "
                               f"{info.num_frames} frames: is it the results of another video?")
        segments.append(Segment(track_id=len(segments) + 1, category_id=entry["category_id"],
                                score=float(entry["score"]), masks=masks))
    processed = sorted({i for seg in segments for i, m in enumerate(seg.masks) if m is not None})
    return VideoResult(video=info, task="instance", categories=categories, segments=segments,
                       video_id=video_id, processed=processed)


# ----------------------------------------------------------------------------- factory

FORMATS: dict[str, type[Sink]] = {
    "ytvis": YtvisResultsSink,
    "ytvis-dataset": YtvisDatasetSink,
    "coco": CocoSink,
    "png": PngSink,
    "overlay": OverlaySink,
}


def format_for(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format name for ``--format`` ``fmt`` or, when None, for the output path's suffix."""
    if fmt is not None:
        key = fmt.strip().lower()
        if key not in FORMATS:
            raise InputError(f"Unknown --format {fmt!r}; valid formats: {', '.join(FORMATS)}.")
        return key
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    if text.endswith(("/", os.sep)) or suffix == "":
        return "png"
    if suffix == ".json":
        return "ytvis"
    if suffix in VIDEO_SUFFIXES:
        return "overlay"
    raise InputError(f"Cannot tell the output format of {text!r} from its suffix; use .json, a folder, "
                     f"or one of {', '.join(VIDEO_SUFFIXES)}, or pass --format ({', '.join(FORMATS)}).")


def open_sink(path: str | os.PathLike, fmt: str | None = None, overwrite: bool = False, **options) -> Sink:
    """A sink for ``path``: by ``fmt`` (a ``--format`` name) or by the path's suffix (``.json`` ->
    ytvis, no suffix or a trailing ``/`` -> png folder, ``.mp4``/``.mov``/``.mkv``/``.webm`` ->
    overlay). ``options`` go to the sink (``alpha``, ``progress``, ``color_by`` for overlays;
    ``subfolders`` for png). Checks the destination now (exists without ``overwrite`` ->
    ``OutputError``); the output appears when the ``with`` block exits cleanly."""
    key = format_for(path, fmt)
    return FORMATS[key](path, overwrite=overwrite, **options)


__all__ = [
    "Sink", "YtvisResultsSink", "YtvisDatasetSink", "CocoSink", "PngSink", "OverlaySink", "FORMATS",
    "open_sink", "format_for", "draw_overlay", "write_overlay", "read_results", "render_ids", "masks_at", "track_color",
    "num_frames", "processed_frames", "frame_file_names", "video_name",
]
