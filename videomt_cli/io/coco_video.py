"""COCO with track ids (one annotation per object and frame) -> a YouTube-VIS dataset document. No torch.

    doc = read_coco_tracks("results.coco.json")          # what ``videomt segment --format coco`` writes
    doc = read_coco_tracks("instances_default.json", video="clip.mp4")   # CVAT's / datumaro's COCO export

This is the layout ``videomt segment --format coco`` writes and CVAT and datumaro export: ``images``
(one per frame), ``annotations`` (``image_id``, ``category_id``, ``segmentation``, ``bbox``, the track
in ``attributes.track_id``), ``categories``; ours adds ``videos`` (``id``, ``name`` = the video's
path) and each image's ``video_id`` and ``frame_index``. The document returned is what
``io.ytvis.parse`` reads (as ``io.cvat.read_cvat``'s), with ``notes``. Rules:

- **Frames.** An image's frame is its ``frame_index``; else its ``frame`` (or ``attributes.frame``);
  else, with a frame folder, the folder's file of that name; else the number in its file name
  (``frame_000120.PNG`` as CVAT names a video's frames, or ``00120.jpg``). The dataset video is the
  frames that have an image, ascending (frames without one are not annotated: a video of every
  Nth frame is those frames, ``video_frames``). Two images on one frame, an image whose frame cannot
  be told and one beyond the video's end are a ``DatasetError`` naming the image.
- **The video.** ``video`` (a file or frame folder; a file with one video only); else the video's
  ``name`` in ``videos`` (absolute, or relative to the JSON's folder or the current folder); else
  the images themselves when they are files (beside the JSON, or in ``images/`` beside it or its
  folder, as CVAT and datumaro lay out ``annotations/instances_default.json``): their
  ``file_names`` in frame order. Its size is the frame size (the images' ``width``/``height``
  must agree).
- **Tracks.** Annotations with one ``attributes.track_id`` (or a top-level ``track_id``) in one
  video are one track; several of a track on one frame are joined (a multi-part object). Nothing is
  interpolated: CVAT's COCO export already lists every frame a track is visible on. A track whose
  annotations have different categories is a ``DatasetError``. An annotation without a track id is
  an object of its own frame only (CVAT imports it as a lone shape too).
- **Masks.** ``segmentation`` as compressed or uncompressed RLE or polygons; an annotation with an
  empty ``segmentation`` and a ``bbox`` becomes its box (a note says how many). ``iscrowd`` on any
  of a track's annotations makes the track a crowd region.
- **Categories.** The file's ``categories`` ids; or, with ``categories`` (``(id, name)`` pairs), the
  ids of the same names there (the document lists that whole table).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from pycocotools import mask as _coco

from videomt_cli.errors import DatasetError
from videomt_cli.io.cvat import _category_table, _label_ids, _names
from videomt_cli.io.cvat_tracks import box_polygon, rle_areas
from videomt_cli.io.images import natural_key
from videomt_cli.io.ytvis import SourceVideo, format_ids, is_coco, is_int, load_json, segmentation_rle

_NUMBERED = (re.compile(r"frame_(\d+)"), re.compile(r"(\d+)"))  # CVAT's frame_000120, or a bare 00120


def read_coco_tracks(path: str | os.PathLike | dict, video: str | os.PathLike | None = None, categories=None) -> dict:
    """A COCO file whose annotations carry track ids as a YouTube-VIS dataset document.

    Args:
        path: the COCO JSON (or its parsed dict; then image files and video names resolve from the
            current folder).
        video: the video file or frame folder its images are frames of (default: see the module
            docstring). Only for a file of one video.
        categories: ``(id, name)`` pairs (or objects with ``.id`` and ``.name``) whose ids the
            file's category names take.

    Returns:
        ``{"videos", "annotations", "categories", "notes"}``; masks are compressed RLEs with str
        ``counts`` at the video's size.
    """
    source = Path(path).expanduser() if isinstance(path, (str, os.PathLike)) else None
    doc = load_json(path, "COCO")
    if not is_coco(doc):
        raise DatasetError(f"the COCO file{_where(source)} is not COCO: it needs the lists 'images' and "
                           f"'annotations' (one annotation per object and frame).")
    return coco_document(doc, source, video=video, categories=categories)


def coco_document(doc: dict, path: Path | None, video=None, categories=None) -> dict:
    """The YouTube-VIS document of a parsed COCO file (``path``: where it was read from, or None)."""
    name = f"the COCO file{_where(path)}"
    here = path.parent if path is not None else Path.cwd()
    notes: list[str] = []
    file_cats = _file_categories(doc.get("categories") or [], name)
    table = _category_table(categories, name) if categories is not None else None
    if table is None:
        ids = {cid: cid for cid in file_cats}  # file category id -> the document's
    else:
        by_name = _label_ids(list(file_cats.values()), table)
        ids = {cid: by_name[n] for cid, n in file_cats.items() if n in by_name}

    images = [im for im in doc["images"] if isinstance(im, dict)]
    if len(images) != len(doc["images"]) or not all(is_int(im.get("id")) for im in images):
        raise DatasetError(f"{name} has an image without an integer 'id'.")
    groups = _videos(doc, images, name)
    if video is not None and len(groups) > 1:
        raise DatasetError(f"{name} holds {len(groups)} videos: leave video= out and keep them where its 'videos' "
                           f"names say.")
    by_image: dict[int, tuple[int, int]] = {}  # image id -> (video number, dataset frame)
    videos, sources = [], {}
    for number, (vid, entry, ims) in enumerate(groups, start=1):
        src, frames, files = _media(entry, ims, here, video, name)
        order = sorted(frames.values())  # the dataset video: the frames that have an image
        position = {f: k for k, f in enumerate(order)}
        for im in ims:
            by_image[int(im["id"])] = (number, position[frames[int(im["id"])]])
        size = _frame_size(src, ims, files, name)
        out = {"id": vid, **(src.entry(order) if src is not None else
                              {"height": size[0], "width": size[1], "length": len(order),
                               "file_names": [files[f] for f in order]})}
        if entry.get("name"):
            out["name"] = str(entry["name"])
        videos.append(out)
        sources[number] = (size, len(order))

    tracks: dict[tuple, dict] = {}
    boxes = lone = 0
    for n, a in enumerate(doc["annotations"]):
        label = f"{name}: annotation {a.get('id', f'#{n}') if isinstance(a, dict) else f'#{n}'}"
        if not isinstance(a, dict) or not is_int(a.get("image_id")) or int(a["image_id"]) not in by_image:
            raise DatasetError(f"{label} is on image {a.get('image_id') if isinstance(a, dict) else None!r}, which "
                               f"the file's 'images' do not list.")
        if not is_int(a.get("category_id")) or int(a["category_id"]) not in file_cats:
            raise DatasetError(f"{label} has category {a.get('category_id')!r}, which the file's 'categories' do "
                               f"not list (ids {format_ids(file_cats)}).")
        cid = int(a["category_id"])
        if cid not in ids:
            raise DatasetError(f"{label} has category '{file_cats[cid]}', which the categories do not name "
                               f"({_names(table)}).")
        number, frame = by_image[int(a["image_id"])]
        (h, w), length = sources[number]
        rle, is_box = _mask(a, h, w, label)
        boxes += is_box
        track_id = _track_id(a)
        if track_id is None:
            lone += 1
            key = (number, "annotation", n)
        else:
            key = (number, "track", track_id)
        track = tracks.setdefault(key, {"video": number, "category": ids[cid], "file_category": cid,
                                        "track_id": track_id, "frames": defaultdict(list), "crowd": False})
        if track["category"] != ids[cid]:
            raise DatasetError(f"{label}: track {track_id} has annotations of categories "
                               f"'{file_cats[track['file_category']]}' and '{file_cats[cid]}'; a track is one object "
                               f"of one category.")
        track["crowd"] |= bool(a.get("iscrowd", 0))
        if rle is not None:
            track["frames"][frame].append(rle)

    annotations = []
    for track in tracks.values():
        _, length = sources[track["video"]]
        segs: list = [None] * length
        for frame, rles in track["frames"].items():
            rle = rles[0] if len(rles) == 1 else _coco.merge(rles)
            if _coco.area(rle) > 0:
                segs[frame] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        areas = iter(rle_areas([_bytes(s) for s in segs if s is not None]))
        ann = {"id": len(annotations) + 1, "video_id": videos[track["video"] - 1]["id"],
               "category_id": track["category"], "iscrowd": int(track["crowd"]), "segmentations": segs,
               "areas": [None if s is None else next(areas) for s in segs]}
        if track["track_id"] is not None:
            ann["track_id"] = track["track_id"]
        annotations.append(ann)
    if boxes:
        notes.append(f"{boxes} annotation(s) have only a bbox: their masks are the boxes.")
    if lone:
        notes.append(f"{lone} annotation(s) have no track_id: each is an object of its own frame only.")
    if table is None:
        cats = [{"id": i, "name": n} for i, n in file_cats.items()]
    else:
        cats = [{"id": i, "name": n} for i, n in table]
    return {"videos": videos, "annotations": annotations, "categories": cats, "notes": notes}


# ----------------------------------------------------------------------------- videos and frames


def _videos(doc: dict, images: list[dict], name: str) -> list[tuple[int, dict, list[dict]]]:
    """(video id, its ``videos`` entry or {}, its images) for each video of the file."""
    entries = [v for v in doc.get("videos") or [] if isinstance(v, dict) and is_int(v.get("id"))]
    if len(entries) > 1 or (entries and any("video_id" in im for im in images)):
        out = []
        for v in entries:
            ims = [im for im in images if im.get("video_id") == v["id"]]
            if ims:
                out.append((int(v["id"]), v, ims))
        stray = next((im for im in images if im.get("video_id") not in {v["id"] for v in entries}), None)
        if stray is not None:
            raise DatasetError(f"{name}: image {stray['id']} is of video {stray.get('video_id')!r}, which its "
                               f"'videos' do not list.")
        return out
    if not images:
        raise DatasetError(f"{name} has no images: nothing to read.")
    ids = sorted({im["video_id"] for im in images if is_int(im.get("video_id"))})
    if not entries and len(ids) > 1:  # video ids on the images only: one video each
        return [(int(v), {}, [im for im in images if im.get("video_id") == v]) for v in ids]
    return [(int(entries[0]["id"]) if entries else 1, entries[0] if entries else {}, images)]


def _media(entry: dict, ims: list[dict], here: Path, video, name: str):
    """-> (SourceVideo or None, {image id: video frame}, {frame: image file} when the images are
    the frames)."""
    src = None
    if video is not None:
        src = SourceVideo.open(video)
    else:
        named = entry.get("video_file") or entry.get("file_name") or entry.get("name")
        found = _resolve(named, here) if isinstance(named, str) and named else None
        if found is not None:
            src = SourceVideo.open(found)
        elif named and not _image_files(ims, here):
            raise DatasetError(f"{name}: its video '{named}' is not there (looked beside the file and in the current "
                               f"folder); pass the video file or frame folder (video=).")
    if src is None:  # the images are the frames
        files = _image_files(ims, here)
        if files is None:
            first = ims[0]
            raise DatasetError(f"{name}: image {first['id']} ({first.get('file_name')!r}) is no file beside it and "
                               f"the file names no video; pass the video file or frame folder (video=).")
        frames = _frames(ims, None, name)
        if frames is None:  # no frame numbers: the files' natural order
            ordered = sorted(ims, key=lambda im: natural_key(str(im.get("file_name", ""))))
            frames = {int(im["id"]): k for k, im in enumerate(ordered)}
        _no_two(frames, ims, name)
        by_frame = {frames[int(im["id"])]: str(files[int(im["id"])]) for im in ims}
        return None, frames, by_frame
    frames = _frames(ims, src, name)
    if frames is None:
        first = ims[0]
        raise DatasetError(f"{name}: image {first['id']} ({first.get('file_name')!r}) matches no frame of {src.path}: "
                           f"give images a 'frame_index', a frame number in their file name (frame_000012.jpg, "
                           f"00012.jpg) or the frame folder that holds them (video=).")
    _no_two(frames, ims, name)
    for im in ims:
        f = frames[int(im["id"])]
        if not src.has(f):
            raise DatasetError(f"{name}: image {im['id']} ({im.get('file_name')!r}) is frame {f} but "
                               f"{src.lacks(f)}.")
    return src, frames, {}


def _frames(ims: list[dict], src: SourceVideo | None, name: str) -> dict[int, int] | None:
    """Image id -> frame for every image, by the first rule that tells it for all of them (module
    docstring), or None when no rule does; an image the chosen rule cannot place is an error."""
    rules = [_frame_field, lambda im: src.file_of(str(im.get("file_name", ""))) if src is not None and
             src.kind == "folder" else None, _frame_in_name]
    for rule in rules:
        found = {int(im["id"]): rule(im) for im in ims}
        if all(f is not None for f in found.values()):
            return found
        if any(f is not None for f in found.values()) and rule is not rules[1]:
            im = next(im for im in ims if found[int(im["id"])] is None)
            raise DatasetError(f"{name}: image {im['id']} ({im.get('file_name')!r}) matches no frame: other images "
                               f"have frame numbers but it has none.")
    return None


def _frame_field(im: dict) -> int | None:
    for value in (im.get("frame_index"), im.get("frame"), (im.get("attributes") or {}).get("frame")):
        if is_int(value) and value >= 0:
            return int(value)
    return None


def _frame_in_name(im: dict) -> int | None:
    stem = Path(str(im.get("file_name", ""))).stem
    for pattern in _NUMBERED:
        m = pattern.fullmatch(stem)
        if m:
            return int(m.group(1))
    return None


def _no_two(frames: dict[int, int], ims: list[dict], name: str) -> None:
    seen: dict[int, dict] = {}
    for im in ims:
        f = frames[int(im["id"])]
        if f in seen:
            raise DatasetError(f"{name}: images {seen[f]['id']} and {im['id']} are both frame {f}.")
        seen[f] = im


def _resolve(named: str, here: Path) -> Path | None:
    p = Path(named).expanduser()
    for candidate in ([p] if p.is_absolute() else [here / p, Path.cwd() / p, here / p.name]):
        if candidate.exists():
            return candidate.absolute()
    return None


def _image_files(ims: list[dict], here: Path) -> dict[int, Path] | None:
    """Image id -> its file, when every image's ``file_name`` is a file under one root (the JSON's
    folder, ``images/`` beside it, or ``images/`` beside that folder: CVAT's and datumaro's layout)."""
    roots = [here, here / "images", here.parent / "images", here.parent / "images" / "default"]
    names = [str(im.get("file_name") or "") for im in ims]
    if not all(names):
        return None
    for root in roots:
        if all((root / n).is_file() for n in names):
            return {int(im["id"]): (root / n).absolute() for im, n in zip(ims, names)}
    return None


def _frame_size(src: SourceVideo | None, ims: list[dict], files: dict, name: str) -> tuple[int, int]:
    """(height, width) of the frames: the video's, or the first image file's; the images' own
    ``width``/``height`` must agree."""
    if src is not None:
        h, w, what = src.height, src.width, str(src.path)
    else:
        from videomt_cli.io.images import load_image

        first = files[min(files)]
        h, w = load_image(first).shape[:2]
        what = first
    for im in ims:
        if is_int(im.get("width")) and is_int(im.get("height")) and (im["height"], im["width"]) != (h, w):
            raise DatasetError(f"{name}: image {im['id']} is {im['width']}x{im['height']} but {what} is {w}x{h}; "
                               f"pass the video the file annotates (video=).")
    return h, w


# ----------------------------------------------------------------------------- annotations


def _mask(a: dict, h: int, w: int, label: str) -> tuple[dict | None, bool]:
    """(compressed RLE or None, whether it came from the bbox)."""
    seg = a.get("segmentation")
    if seg:
        return segmentation_rle(seg, h, w, label), False
    box = a.get("bbox")
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
        x, y, bw, bh = (float(v) for v in box)
        return segmentation_rle([box_polygon((x, y, x + bw, y + bh))], h, w, label), True
    raise DatasetError(f"{label} has neither a 'segmentation' nor a 'bbox'.")


def _track_id(a: dict):
    value = (a.get("attributes") or {}).get("track_id", a.get("track_id"))
    if value is None:
        return None
    if is_int(value) or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def _file_categories(raw: list, name: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for c in raw:
        if not isinstance(c, dict) or not is_int(c.get("id")):
            raise DatasetError(f"{name} has a category without an integer 'id': {c!r:.80}")
        out[int(c["id"])] = str(c.get("name", c["id"]))
    return out


def _bytes(s: dict) -> dict:
    return {"size": s["size"], "counts": s["counts"].encode("ascii")}


def _where(path: Path | None) -> str:
    return f" {path}" if path is not None else ""


__all__ = ["coco_document", "read_coco_tracks"]
