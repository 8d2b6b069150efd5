"""YouTube-VIS dataset files: the one reader (training, evaluation and ``segment --dataset``). No torch.

    dataset = ytvis.read("train.json")              # Dataset(videos, annotations, categories)
    dataset = ytvis.read("task.xml", video="clip.mp4")   # CVAT for video 1.1 XML (io.cvat)
    dataset = ytvis.read("coco.json", categories=model_labels)  # COCO with track ids (io.coco_video)
    root = dataset.image_root()                     # where the file_names are relative to
    media = dataset.media(dataset.videos[0], root)  # its frame files, or its video file

A dataset JSON holds

- ``videos``: ``{id, height, width, length, file_names}``; ``file_names`` are the frames, relative to
  an image root the file does not name: the JSON's folder (``videomt synth`` datasets),
  ``JPEGImages`` beside it, or ``<json stem>/JPEGImages`` (the official layout: ``train.json`` +
  ``train/JPEGImages``). A video may name one video file instead (``video_file``, or
  ``file_name``), used when its frame files are not there. ``length`` defaults to the number of
  ``file_names``, else to the number of per-frame segmentations of its annotations. With
  ``video_frames`` (ascending frame numbers of ``video_file``) the video is those frames of the file
  only: frame ``i`` of the dataset is frame ``video_frames[i]`` of the file (a CVAT task that starts
  later or keeps every Nth frame); without it frame ``i`` is the file's frame ``i``.
- ``annotations`` (optional: test splits have none): one per track, ``{id, video_id, category_id,
  segmentations, areas, iscrowd}`` with one segmentation per frame (RLE, polygons or ``null``).
- ``categories``: ``{id, name}``.

Ids are integers. Every error is a ``DatasetError`` that names the file and what to fix.

``read`` takes what annotation tools export, by content: CVAT for video 1.1 XML (``.xml``, or text
that starts with ``<``) goes to ``io.cvat.read_cvat``; a JSON with ``images`` and ``annotations``
but no per-track ``segmentations`` (COCO, one annotation per object and frame, the track in
``attributes.track_id``) to ``io.coco_video.read_coco_tracks``; anything else is read as
YouTube-VIS. Both readers return a YouTube-VIS document whose frames come from the video itself
(``video_file``, decoded on the fly) or a frame folder (``file_names``); see :class:`SourceVideo`.
What they had to leave out or assume is in ``Dataset.notes`` (one line each, for the CLI to show).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import pairwise
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
    video_frames: tuple[int, ...] = ()  # the file's frames that are this video's (empty: 0..length-1)


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
    """Where a video's pixels are: its frame files, or one video file (``frame_indices``: which of
    the file's frames are the video's frames 0, 1, ...; empty for all of them in order)."""

    frames: tuple[Path, ...] = ()
    file: Path | None = None
    frame_indices: tuple[int, ...] = ()

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
    notes: tuple[str, ...] = ()  # what a CVAT or COCO reader did that a user should know (one line each)

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
                return Media(file=path, frame_indices=video.video_frames)
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


def read(source: dict | str | os.PathLike, what: str = "dataset", video: str | os.PathLike | None = None,
         categories=None, *, name: str | None = None) -> Dataset:
    """A dataset from a YouTube-VIS JSON path (or the parsed dict), a CVAT for video 1.1 XML or a
    COCO JSON with track ids (see the module docstring for how the content is told apart).

    ``video``: the video file or frame folder of a CVAT or COCO file (default: the one it names,
    beside it). ``categories``: ``(id, name)`` pairs (or objects with ``.id`` and ``.name``, e.g.
    a model's label table) that give a CVAT or COCO file's label names their ids. ``name`` starts
    the messages (default ``'the {what} (path)'``).
    """
    path = Path(source).expanduser() if isinstance(source, (str, os.PathLike)) else None
    name = name or f"the {what}{where(source)}"
    doc, kind = _document(source, what, video, categories)
    if kind != "ytvis":
        return replace(parse(doc, name, path), notes=tuple(doc.get("notes", ())))
    if video is not None or categories is not None:
        given = "video" if video is not None else "categories"
        raise DatasetError(f"{name} is a YouTube-VIS dataset: it names its own frames and category ids, so "
                           f"{given}= (for CVAT XML and COCO files) does not apply; leave it out.")
    return parse(doc, name, path)


def document(source: str | os.PathLike, video: str | os.PathLike | None = None, categories=None) -> tuple[dict, str]:
    """The YouTube-VIS dataset document of an annotation file of any kind read here, and the kind
    (``"cvat"``, ``"coco"`` or ``"ytvis"``): what ``videomt import`` writes. CVAT and COCO documents
    name their frames or video file by absolute path and carry ``notes`` (what the reader assumed)."""
    doc, kind = _document(source, "annotation", video, categories)
    if kind == "ytvis":
        parse(doc, f"the annotation file{where(source)}", Path(source))  # checked, as the others are
    return doc, kind


def _document(source, what: str, video, categories) -> tuple[dict, str]:
    path = Path(source).expanduser() if isinstance(source, (str, os.PathLike)) else None
    if path is not None and _looks_like_xml(path):
        from videomt_cli.io.cvat import read_cvat

        return read_cvat(path, video=video, categories=categories), "cvat"
    doc = load_json(source, what)
    if is_coco(doc):
        from videomt_cli.io.coco_video import coco_document

        return coco_document(doc, path, video=video, categories=categories), "coco"
    return doc, "ytvis"


def _looks_like_xml(path: Path) -> bool:
    """A ``.xml`` name, or a file whose first non-blank character is ``<`` (a JSON file starts with
    ``{`` or ``[``). A missing or unreadable file is left to the JSON reader's messages."""
    if path.suffix.lower() == ".xml":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def is_coco(doc) -> bool:
    """A COCO-style document: ``images`` and ``annotations`` lists, but no YouTube-VIS per-track
    ``segmentations`` and no ``videos`` that list their ``file_names``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or \
            not isinstance(doc.get("annotations"), list):
        return False
    if any(isinstance(a, dict) and "segmentations" in a for a in doc["annotations"][:50]):
        return False
    videos = doc.get("videos")
    return not (isinstance(videos, list) and any(isinstance(v, dict) and v.get("file_names") for v in videos))


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
        picked = v.get("video_frames") or []
        if not isinstance(picked, list) or not all(is_int(i) and i >= 0 for i in picked) or \
                any(b <= a for a, b in pairwise(picked)):
            raise DatasetError(f"{name}: video {vid} has 'video_frames' that are not ascending frame numbers "
                               "of its video_file.")
        size = (v.get("height"), v.get("width"))
        if any(s is not None and not (is_int(s) and s > 0) for s in size):
            raise DatasetError(f"{name}: video {vid} has height {size[0]!r} and width {size[1]!r}; both must be "
                               "positive integers (pixels).")
        length = v.get("length")
        if length is not None and not (is_int(length) and length >= 0):
            raise DatasetError(f"{name}: video {vid} has length {length!r}; it must be a number of frames.")
        if length is None:
            length = len(names) or len(picked)
        if picked and len(picked) != length:
            raise DatasetError(f"{name}: video {vid} has {len(picked)} video_frames but length {length}; give one "
                               "frame number per frame.")
        out[vid] = dict(id=vid, length=int(length),
                        height=None if size[0] is None else int(size[0]),
                        width=None if size[1] is None else int(size[1]),
                        file_names=tuple(names), video_file=video_file, video_frames=tuple(int(i) for i in picked))
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
        if media.frame_indices:
            raise DatasetError(f"Video {video.id} is frames {describe_frames(media.frame_indices)} of {media.file}; "
                               f"videomt segment --dataset runs whole videos: segment the file with --start, --end "
                               f"and --stride instead.")
        if media.frames:
            folder = media.source
            if any(f.parent != folder for f in media.frames) or \
                    image_names(folder) != [f.name for f in media.frames]:
                raise DatasetError(f"Video {video.id}: the folder {folder} holds other frames than its "
                                   f"file_names list; videomt segment --dataset needs one folder per "
                                   f"video holding exactly its frames.")
        out.append(DatasetVideo(id=video.id, source=media.source, length=video.length))
    return out


# ----------------------------------------------------------------------------- videos of CVAT and COCO files

# CVAT names the frames of a task made from a video ``frame_000012.png``: the number is the video's frame.
_CVAT_FRAME = re.compile(r"frame_(\d{6,})")


@dataclass(frozen=True)
class SourceVideo:
    """The video file or frame folder an annotation file (CVAT XML, COCO) annotates, for its readers.

    ``count`` is the number of frames that decode (``io.read.count_frames``) or of images in the
    folder. In a folder, frame ``n`` is its ``n``-th image in natural order, unless every image is
    named as CVAT names a video's frames (``frame_000012.png``): then frame ``n`` is the file
    numbered ``n`` (the ``images/`` folder of a CVAT export, which holds only the task's frames).
    """

    path: Path  # absolute
    kind: str  # "video" | "folder"
    width: int
    height: int
    count: int
    names: tuple[str, ...] = ()  # a folder's images, natural order
    numbered: bool = False  # a folder of CVAT frame_NNNNNN names

    @classmethod
    def open(cls, path: str | os.PathLike) -> SourceVideo:
        """Probe ``path`` (``VideoError`` when it is missing or unreadable) and count its frames."""
        from videomt_cli.io.probe import probe  # lazily: PyAV
        from videomt_cli.io.read import count_frames

        p = Path(path).expanduser().absolute()
        info = probe(p)
        if info.kind == "folder":
            names = tuple(info.file_names)
            numbered = all(_CVAT_FRAME.fullmatch(Path(n).stem) for n in names)
            return cls(p, "folder", info.width, info.height, len(names), names, numbered)
        return cls(p, "video", info.width, info.height, count_frames(info).num_frames)

    @property
    def last_frame(self) -> int:
        """The highest frame number there is (-1 for none)."""
        return max(self._by_number, default=-1) if self.numbered else self.count - 1

    def has(self, frame: int) -> bool:
        if self.numbered:
            return frame in self._by_number
        return 0 <= frame < self.count

    def lacks(self, frame: int) -> str:
        """How to say that ``frame`` is not there: '<path> has 100 frames' (or, for a CVAT-named
        folder, '<path> has no frame_000120 image')."""
        if self.numbered:
            return f"{self.path} has no frame_{frame:06d} image"
        return f"{self.path} has {self.count} frames"

    def file_of(self, name: str) -> int | None:
        """The frame a file name (any folder part dropped) is in a folder, or None."""
        base = Path(name).name
        if self.numbered:
            m = _CVAT_FRAME.fullmatch(Path(base).stem)
            return int(m.group(1)) if m and base in self.names else None
        return self._positions.get(base)

    def entry(self, frames: list[int]) -> dict:
        """The ``videos`` fields of the dataset video made of these frames (ascending, all present):
        ``file_names`` (absolute) for a folder; ``video_file`` (absolute), with ``video_frames``
        unless the frames are 0, 1, ..., n-1, for a video file."""
        out = {"height": self.height, "width": self.width, "length": len(frames)}
        if self.kind == "folder":
            lookup = self._by_number if self.numbered else dict(enumerate(self.names))
            out["file_names"] = [str(self.path / lookup[f]) for f in frames]
        else:
            out["video_file"] = str(self.path)
            if list(frames) != list(range(len(frames))):
                out["video_frames"] = [int(f) for f in frames]
        return out

    @cached_property
    def _by_number(self) -> dict[int, str]:
        return {int(_CVAT_FRAME.fullmatch(Path(n).stem).group(1)): n for n in self.names}

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}


def describe_frames(frames) -> str:
    """Ascending frame numbers in a few words: '100..400, step 5', '3..9', or '2, 5, 7, ... (40 in all)'."""
    frames = list(frames)
    if len(frames) > 1:
        steps = {b - a for a, b in pairwise(frames)}
        if len(steps) == 1:
            step = steps.pop()
            return f"{frames[0]}..{frames[-1]}" + (f", step {step}" if step > 1 else "")
    return format_ids(frames)


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
