"""YouTube-VIS dataset files: the one reader (training, evaluation and ``segment --dataset``). No torch.

    dataset = ytvis.read("train.json")              # Dataset(videos, annotations, categories)
    root = dataset.image_root()                     # where the file_names are relative to
    media = dataset.media(dataset.videos[0], root)  # its frame files, or its video file

A dataset JSON holds

- ``videos``: ``{id, height, width, length, file_names}``; ``file_names`` are the frames, relative to
  an image root the file does not name: the JSON's folder (``videomt synth`` datasets),
  ``JPEGImages`` beside it, or ``<json stem>/JPEGImages`` (the official layout: ``train.json`` +
  ``train/JPEGImages``). A video may name one video file instead (``video_file``, or
  ``file_name``), used when its frame files are not there. ``length`` defaults to the number of
  ``file_names``, else to the number of per-frame segmentations of its annotations.
- ``annotations`` (optional: test splits have none): one per track, ``{id, video_id, category_id,
  segmentations, areas, iscrowd}`` with one segmentation per frame (RLE, polygons or ``null``).
- ``categories``: ``{id, name}``.

Ids are integers. Every error is a ``DatasetError`` that names the file and what to fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as _coco

from videomt_cli.errors import DatasetError
from videomt_cli.io.images import image_names

_SHOW = 8  # how many offending ids a message lists


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Category:
    id: int
    name: str


@dataclass(frozen=True)
class Video:
    """One ``videos`` entry. ``length`` is 0 when nothing tells it (a video file, no annotations)."""

    id: int
    length: int
    height: int | None = None
    width: int | None = None
    file_names: tuple[str, ...] = ()
    video_file: str | None = None


@dataclass(frozen=True)
class Annotation:
    """One track: ``segmentations`` has one entry per frame of its video (RLE dict, polygons, None)."""

    id: object  # as given, for messages ('#n', its position, when absent)
    video_id: int
    category_id: int
    segmentations: tuple
    iscrowd: bool = False
    areas: tuple | None = None  # the per-frame ``areas`` field, when the file has one

    @property
    def label(self) -> str:
        return f"annotation {self.id} of video {self.video_id}"


@dataclass(frozen=True)
class Media:
    """Where a video's pixels are: its frame files, or one video file."""

    frames: tuple[Path, ...] = ()
    file: Path | None = None

    @property
    def source(self) -> Path:
        """What ``read_frames`` / ``Predictor.run`` takes: the frame folder or the video file."""
        return self.frames[0].parent if self.frames else self.file


@dataclass(frozen=True)
class Dataset:
    name: str  # 'the dataset (path)': how messages name it
    path: Path | None
    videos: tuple[Video, ...]
    annotations: tuple[Annotation, ...]
    categories: tuple[Category, ...]

    def image_root(self, given: str | os.PathLike | None = None) -> Path:
        """The folder the file names are relative to: ``given``, else the first candidate (see the
        module docstring) that holds the first video's first frame or video file, else the JSON's folder."""
        if given is not None:
            return Path(given).expanduser()
        here = self.path.parent if self.path is not None else Path.cwd()
        candidates = [here, here / "JPEGImages"]
        if self.path is not None:
            candidates.append(here / self.path.stem / "JPEGImages")
        first = next((v for v in self.videos if v.file_names or v.video_file), None)
        if first is not None:
            probes = [n for n in (first.file_names[:1] + (first.video_file,)) if n]
            for root in candidates:
                if any((root / rel).exists() for rel in probes):
                    return root
        return here

    def media(self, video: Video, root: Path) -> Media:
        """The video's frame files when they all exist, else its video file; a ``DatasetError``
        saying which file is missing otherwise."""
        frames = tuple(root / n for n in video.file_names)
        missing = next(((i, f) for i, f in enumerate(frames) if not f.exists()), None)
        if frames and missing is None:
            if len(frames) != video.length:
                raise DatasetError(f"{self.name}: video {video.id} has {len(frames)} file_names but length "
                                   f"{video.length}; give one file name per frame.")
            return Media(frames=frames)
        if video.video_file:
            path = root / video.video_file
            if path.exists():
                return Media(file=path)
            if not frames:
                raise DatasetError(f"{self.name}: the video file of video {video.id} is missing: {path}; pass "
                                   f"the folder it is relative to as --image-root.")
        if missing is not None:
            i, path = missing
            raise DatasetError(f"{self.name}: frame {i} of video {video.id} is missing: {path}; pass the folder "
                               f"the file_names are relative to as --image-root.")
        raise DatasetError(f"{self.name}: video {video.id} has neither 'file_names' (frames) nor 'video_file' "
                           f"(a video file).")


# ----------------------------------------------------------------------------- reading


def where(source) -> str:
    """' (path)' for a file, '' for data given in memory: what messages put after 'the X'."""
    return f" ({source})" if isinstance(source, (str, os.PathLike)) else ""


def load_json(source, what: str):
    """A JSON file's content (``source`` a path), or ``source`` itself when it is a dict or list.
    ``what`` names the file in messages: 'the {what} file X is not valid JSON: ...'."""
    if isinstance(source, (dict, list)):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise DatasetError(f"the {what} must be a JSON file's path, a dict or a list, not {type(source).__name__}.")
    path = Path(source).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"the {what} file {path} does not exist.") from None
    except IsADirectoryError:
        raise DatasetError(f"the {what} path {path} is a folder; give the JSON file.") from None
    except UnicodeDecodeError:
        raise DatasetError(f"the {what} file {path} is not JSON text (not UTF-8).") from None
    except OSError as e:
        raise DatasetError(f"cannot read the {what} file {path}: {e.strerror or e}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"the {what} file {path} is not valid JSON: {e.msg} at line {e.lineno} "
                           f"column {e.colno}.") from None


def read(source: dict | str | os.PathLike, what: str = "dataset") -> Dataset:
    """A YouTube-VIS dataset from its JSON path (or the parsed dict)."""
    path = Path(source).expanduser() if isinstance(source, (str, os.PathLike)) else None
    return parse(load_json(source, what), f"the {what}{where(source)}", path)


def parse(doc, name: str, path: Path | None = None) -> Dataset:
    """Check a parsed dataset JSON and turn it into a :class:`Dataset`; ``name`` starts messages."""
    if not isinstance(doc, dict) or not isinstance(doc.get("videos"), list):
        raise DatasetError(f"{name} is not a YouTube-VIS dataset: it needs the lists 'videos', 'annotations' "
                           "and 'categories'.")
    if not doc["videos"]:
        raise DatasetError(f"{name} has no videos: it is an empty dataset.")
    raw_anns, raw_cats = doc.get("annotations") or [], doc.get("categories") or []
    if not isinstance(raw_anns, list) or not isinstance(raw_cats, list):
        raise DatasetError(f"{name}: 'annotations' and 'categories' must be lists.")
    if raw_anns and not raw_cats:
        raise DatasetError(f"{name} has no categories: list the classes as {{'id', 'name'}} entries.")
    categories = _categories(raw_cats, name)
    entries = _videos(doc["videos"], name)
    annotations = _annotations(raw_anns, entries, {c.id for c in categories}, name)
    videos = tuple(Video(**e) for e in entries.values())
    return Dataset(name, path, videos, annotations, categories)


def _categories(raw: list, name: str) -> tuple[Category, ...]:
    out: dict[int, Category] = {}
    for c in raw:
        if not isinstance(c, dict) or not is_int(c.get("id")):
            raise DatasetError(f"{name} has a category without an integer 'id': {c!r:.80}")
        if int(c["id"]) in out:
            raise DatasetError(f"{name} lists category id {c['id']} twice.")
        out[int(c["id"])] = Category(int(c["id"]), str(c.get("name", c["id"])))
    return tuple(out.values())


def _videos(raw: list, name: str) -> dict[int, dict]:
    """The video entries as Video fields by id (``length`` still 0 where only annotations tell it)."""
    out: dict[int, dict] = {}
    for v in raw:
        if not isinstance(v, dict) or not is_int(v.get("id")):
            raise DatasetError(f"{name} has a video without an integer 'id': {v!r:.80}")
        vid = int(v["id"])
        if vid in out:
            raise DatasetError(f"{name} lists video id {vid} twice.")
        names = v.get("file_names") or []
        video_file = v.get("video_file") or v.get("file_name")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or \
                not (video_file is None or isinstance(video_file, str)):
            raise DatasetError(f"{name}: video {vid} needs 'file_names' as a list of frame paths (or "
                               "'video_file' as one path).")
        size = (v.get("height"), v.get("width"))
        if any(s is not None and not (is_int(s) and s > 0) for s in size):
            raise DatasetError(f"{name}: video {vid} has height {size[0]!r} and width {size[1]!r}; both must be "
                               "positive integers (pixels).")
        length = v.get("length")
        if length is not None and not (is_int(length) and length >= 0):
            raise DatasetError(f"{name}: video {vid} has length {length!r}; it must be a number of frames.")
        out[vid] = dict(id=vid, length=int(length) if length is not None else len(names),
                        height=None if size[0] is None else int(size[0]),
                        width=None if size[1] is None else int(size[1]),
                        file_names=tuple(names), video_file=video_file)
    return out


def _annotations(raw: list, videos: dict[int, dict], category_ids: set[int], name: str) -> tuple[Annotation, ...]:
    out, bad_videos, bad_cats = [], [], []
    for n, a in enumerate(raw):
        if not isinstance(a, dict) or not isinstance(a.get("segmentations"), list):
            raise DatasetError(f"{name}: annotation #{n} has no 'segmentations' list.")
        vid, cat = a.get("video_id"), a.get("category_id")
        if not is_int(vid) or int(vid) not in videos:
            bad_videos.append(vid)
            continue
        if not is_int(cat) or int(cat) not in category_ids:
            bad_cats.append(cat)
            continue
        video = videos[int(vid)]
        if video["length"] == 0:  # a video file of unknown length: its annotations tell it
            video["length"] = len(a["segmentations"])
        ann = Annotation(id=a.get("id", f"#{n}"), video_id=int(vid), category_id=int(cat),
                         segmentations=tuple(a["segmentations"]), iscrowd=bool(a.get("iscrowd", 0)),
                         areas=tuple(a["areas"]) if isinstance(a.get("areas"), list) else None)
        check_frames(ann.segmentations, video["length"], f"{name}: {ann.label}")
        out.append(ann)
    if bad_videos:
        raise DatasetError(f"{name} has annotations of videos it does not list: ids {format_ids(bad_videos)}.")
    if bad_cats:
        raise DatasetError(f"{name} has annotations of categories it does not list: ids {format_ids(bad_cats)}.")
    return tuple(out)


def check_frames(segmentations, length: int, label: str) -> None:
    """A per-frame list must have one entry per frame of its video."""
    if len(segmentations) != length:
        raise DatasetError(f"{label} has {len(segmentations)} per-frame masks, but the video has {length} frames; "
                           "give one entry (or null) per frame.")


# ----------------------------------------------------------------------------- segmentations


def segmentation_rle(seg, h: int, w: int, label: str) -> dict | None:
    """One per-frame segmentation (compressed or uncompressed RLE, polygons, null) of an (h, w)
    frame -> a pycocotools RLE with bytes counts, or None for null / no polygon."""
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, list) or len(size) != 2 or counts is None:
            raise DatasetError(f"{label}: an RLE needs 'size' [h, w] and 'counts'.")
        if [int(size[0]), int(size[1])] != [h, w]:
            raise DatasetError(f"{label}: the mask is {size[0]}x{size[1]} (h x w) but the video is {h}x{w}; "
                               "masks must have the video's own size.")
        if isinstance(counts, list):  # uncompressed RLE
            try:
                return _coco.frPyObjects({"size": [h, w], "counts": counts}, h, w)
            except Exception as e:  # pycocotools raises bare exceptions on malformed input
                raise DatasetError(f"{label}: the uncompressed RLE is malformed ({e}).") from None
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes):
            raise DatasetError(f"{label}: RLE 'counts' must be a string or a list of run lengths.")
        return {"size": [h, w], "counts": counts}
    if isinstance(seg, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        if all(is_number(x) for x in seg):
            seg = [seg]
        polys = []
        for poly in seg:
            if not isinstance(poly, list) or not all(is_number(x) for x in poly):
                raise DatasetError(f"{label}: a polygon must be a list of numbers [x0, y0, x1, y1, ...].")
            # Fewer than 3 points has no area (and pycocotools would read 4 numbers as a box).
            if len(poly) >= 6 and len(poly) % 2 == 0:
                polys.append([float(x) for x in poly])
        if not polys:
            return None
        return _coco.merge(_coco.frPyObjects(polys, h, w))
    raise DatasetError(f"{label}: a segmentation must be an RLE dict, a list of polygons or null, "
                       f"not {type(seg).__name__}.")


# ----------------------------------------------------------------------------- segment --dataset


@dataclass(frozen=True)
class DatasetVideo:
    """One video of a dataset, ready for ``Predictor.run``: a frame folder or a video file."""

    id: int
    source: Path
    length: int


def videos(json_path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[DatasetVideo]:
    """Every video of a dataset as an input. A frame folder must hold exactly the listed frames
    (in natural order), so results line up with the dataset's frames one to one."""
    dataset = read(json_path)
    base = dataset.image_root(root)
    out = []
    for video in dataset.videos:
        media = dataset.media(video, base)
        if media.frames:
            folder = media.source
            if any(f.parent != folder for f in media.frames) or \
                    image_names(folder) != [f.name for f in media.frames]:
                raise DatasetError(f"Video {video.id}: the folder {folder} holds other frames than its "
                                   f"file_names list; videomt segment --dataset needs one folder per "
                                   f"video holding exactly its frames.")
        out.append(DatasetVideo(id=video.id, source=media.source, length=video.length))
    return out


# ----------------------------------------------------------------------------- small helpers


def is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def format_ids(values) -> str:
    """Ids read from JSON (of any type) as '1, 5, 9, ... (12 in all)': sorted, each once."""
    keys = {(0, int(v), "") if is_int(v) else (1, 0, repr(v)) for v in values}
    shown = [str(v) if kind == 0 else text for kind, v, text in sorted(keys)]
    return ", ".join(shown[:_SHOW]) + (f", ... ({len(shown)} in all)" if len(shown) > _SHOW else "")
