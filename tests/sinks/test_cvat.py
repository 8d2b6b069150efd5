"""CVAT for video 1.1 XML (``sinks.cvat``) and the mask -> polygon conversion (``io.polygons``).

Checked against: pycocotools (the rasteriser COCO and CVAT consumers use) for the polygons;
datumaro's own ``cvat`` reader (the engine CVAT imports through) reading our XML back; and CVAT's
import rules replayed from its source (no CVAT server can run here):
``cvat/apps/dataset_manager/formats/cvat.py`` (``load_anno``), ``cvat/apps/dataset_manager/
bindings.py`` (``CommonData._import_track``, ``rel_frame_id``, ``_get_label_id``, attribute
filtering), ``cvat/apps/dataset_manager/annotation.py`` (``TrackManager.get_interpolated_shapes``:
what a track shows on each frame) and ``cvat-ui/src/components/labels-editor/label-form.tsx``
(what a number attribute's values must be).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

sys.path.insert(0, str(Path(__file__).parent))
from sinkhelp import CATS, H, T, W, box, instance_result  # noqa: E402

from videomt_cli.errors import InputError, OutputError  # noqa: E402
from videomt_cli.io import masks  # noqa: E402
from videomt_cli.io.polygons import flat, mask_polygons, polygons_rle  # noqa: E402
from videomt_cli.records import Category, Segment, VideoInfo, VideoResult  # noqa: E402
from videomt_cli.sinks.cvat import CvatSink  # noqa: E402

EMPTY = np.zeros((H, W), bool)


def make_result(tracks, processed=None, n=T, cats=CATS, path="/data/clips/walk.mp4", h=H, w=W):
    """tracks: {track_id: (category_id, score, [mask (h, w) bool per frame])}; frames not in
    ``processed`` get None."""
    processed = list(range(n)) if processed is None else list(processed)
    info = VideoInfo(path=path, width=w, height=h, fps=Fraction(25), num_frames=n)
    pairs = []
    for tid, (cat, score, ms) in tracks.items():
        rles = [masks.encode(m)[0] if t in processed else None for t, m in enumerate(ms)]
        pairs.append((Segment(tid, cat, score, query=tid), rles))
    return VideoResult.from_masks(info, "instance", cats, pairs, processed=processed)


def write_xml(tmp_path, result, name="out.xml", **kw) -> Path:
    out = tmp_path / name
    with CvatSink(out, **kw) as sink:
        sink.add(result)
    return out


def tracks_of(path: Path) -> dict[int, dict]:
    """Our XML parsed plainly: {id: {label, group, shapes: [(frame, outside, keyframe, element)]}}."""
    root = ET.parse(path).getroot()
    out = {}
    for tr in root.findall("track"):
        shapes = [(int(s.get("frame")), s.get("outside") == "1", s.get("keyframe") == "1", s) for s in tr]
        out[int(tr.get("id"))] = {"label": tr.get("label"), "group": int(tr.get("group_id", 0)), "shapes": shapes}
    return out


def points(el) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in el.get("points").split(";")])


def raster(polys, h=H, w=W) -> np.ndarray:
    return coco_mask.decode(polygons_rle(polys, h, w)).astype(bool)


def filled(m: np.ndarray) -> np.ndarray:
    """The mask with its holes filled (what outer outlines can carry)."""
    cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(m.shape, np.uint8)
    cv2.drawContours(out, cs, -1, 1, -1)
    return out.astype(bool)


def blobs(rng, h, w, density=0.6, cell=4):
    """Smooth random blobs (several parts, some holes) of a (h, w) picture."""
    noise = rng.random((h // cell + 2, w // cell + 2))
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR) > density


# ----------------------------------------------------------------------------- polygons


def test_polygons_rasterise_back_to_the_mask_exactly():
    """Vertices on pixel corners: pycocotools' frPyObjects gives back each part's pixels with
    holes filled, on smooth blobs, pixel noise (pinches, specks) and masks touching the border."""
    rng = np.random.default_rng(3)
    for i in range(150):
        h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        m = blobs(rng, h, w) if i % 2 else rng.random((h, w)) > rng.uniform(0.3, 0.9)
        polys = mask_polygons(m)
        assert np.array_equal(raster(polys, h, w), filled(m)), i
        areas = [abs(cv2.contourArea(p)) for p in polys]
        assert areas == sorted(areas, reverse=True)  # largest part first
        assert sum(areas) == filled(m).sum()  # the outline's area is the pixel count: corners exact
        for p in polys:
            assert p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 2 and len(p) >= 3
            assert np.array_equal(p, np.round(p))  # integer pixel corners


def test_pixel_centre_contours_would_lose_half_a_pixel_all_round():
    """Why corners: OpenCV's own contour of the mask runs through the border pixels' centres, so a
    7 x 11 box rasterises to 6 x 10 (half a pixel lost on every side); the corner outline does not."""
    m = box(2, 9, 3, 14)
    c, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    naive = raster([c[0][:, 0, :].astype(float)])
    assert naive.sum() == 6 * 10 and (naive & ~m).sum() == 0
    assert np.array_equal(raster(mask_polygons(m)), m)


def test_specks_pinches_and_holes():
    m = np.zeros((6, 7), bool)
    m[0, 0] = True  # a one-pixel speck: its square
    m[4, 5] = m[5, 6] = True  # two pixels touching at a corner: one part through the shared corner
    polys = mask_polygons(m)
    assert len(polys) == 2
    assert sorted(map(tuple, polys[1].tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert abs(cv2.contourArea(polys[0])) == 2
    assert list(map(tuple, polys[0].tolist())).count((6, 5)) == 2  # the outline passes the pinch twice
    ring = box(1, 6, 1, 6, 7, 7) & ~box(2, 5, 2, 5, 7, 7)
    (poly,) = mask_polygons(ring)
    assert sorted(map(tuple, poly.tolist())) == [(1, 1), (1, 6), (6, 1), (6, 6)]  # the hole is filled
    assert mask_polygons(np.zeros((3, 3), bool)) == []


def test_tolerance_simplifies_within_bounds():
    m = np.zeros((80, 90), np.uint8)
    cv2.circle(m, (45, 40), 30, 1, -1)
    exact, simple = mask_polygons(m.astype(bool)), mask_polygons(m.astype(bool), tolerance=1.0)
    assert len(simple[0]) < len(exact[0]) / 3
    r = raster(simple, 80, 90)
    assert (r & (m > 0)).sum() / (r | (m > 0)).sum() > 0.98
    speck = np.zeros((5, 5), bool)
    speck[2, 2] = True
    assert len(mask_polygons(speck, tolerance=5.0)[0]) == 4  # never collapses below 3 vertices


def test_flat_and_polygons_rle():
    assert flat(np.array([[1.004, -0.0], [2.5, 3.0]], np.float32)) == [1.0, 0.0, 2.5, 3.0]
    assert flat([1.239, 2]) == [1.24, 2.0]
    rle = polygons_rle([], 4, 5)
    assert isinstance(rle["counts"], bytes) and coco_mask.area(rle) == 0 and list(rle["size"]) == [4, 5]
    two = polygons_rle([[0, 0, 2, 0, 2, 2, 0, 2], np.array([[3, 3], [5, 3], [5, 4], [3, 4]])], 5, 6)
    assert coco_mask.area(two) == 4 + 2  # a union, flat lists and arrays alike
    assert coco_mask.area(polygons_rle([[0, 0, 3, 3]], 5, 6)) == 0  # 2 vertices: nothing, not a box


# ----------------------------------------------------------------------------- the document


def test_well_formed_utf8_with_cvat_meta(tmp_path):
    cats = [Category(1, "café <&> \"dog\"", True, (1, 2, 3)), Category(2, "person"), Category(5, "unused")]
    result = make_result({4: (1, 0.5, [box(1, 4, 1, 4)] * T)}, cats=cats)
    out = write_xml(tmp_path, result)
    data = out.read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<annotations>')
    data.decode("utf-8")  # valid UTF-8
    root = ET.fromstring(data)
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert task.findtext("size") == str(T) and task.findtext("mode") == "interpolation"
    assert (task.findtext("start_frame"), task.findtext("stop_frame")) == ("0", str(T - 1))
    assert (task.findtext("original_size/width"), task.findtext("original_size/height")) == (str(W), str(H))
    assert task.findtext("source") == "walk.mp4" and task.findtext("name") == "walk"
    labels = task.findall("labels/label")
    assert [lb.findtext("name") for lb in labels] == [c.name for c in cats]  # all of them, used or not
    assert labels[0].findtext("color") == "#010203"
    for lb in labels:
        (attr,) = lb.findall("attributes/attribute")
        assert attr.findtext("name") == "score" and attr.findtext("input_type") == "number"
        assert attr.findtext("mutable") == "True"
        # label-form.tsx: three numbers min;max;step, min < max, 0 < step <= max - min
        lo, hi, step = map(float, attr.findtext("values").split("\n"))
        assert lo < hi and 0 < step <= hi - lo and lo <= float(attr.findtext("default_value")) <= hi
    (track,) = root.findall("track")
    assert track.get("label") == cats[0].name and track.get("source") == "auto" and track.get("id") == "4"


def test_keyframes_and_outside(tmp_path):
    """A gap in the middle, a track that ends before the last frame, one visible on the last frame
    (no outside past the end), one that never has pixels (no track)."""
    n = 6
    gap = [box(1, 4, 1, 4) if t in (0, 1, 4) else EMPTY for t in range(n)]
    ends = [box(5, 9, 2, 6) if t <= 2 else EMPTY for t in range(n)]
    last = [box(2, 8, 9, 15) if t >= 3 else EMPTY for t in range(n)]
    result = make_result({1: (1, 0.9, gap), 2: (2, 0.8, ends), 3: (1, 0.7, last), 4: (2, 0.1, [EMPTY] * n)}, n=n)
    tracks = tracks_of(write_xml(tmp_path, result))
    assert sorted(tracks) == [1, 2, 3]
    summary = {tid: [(f, o) for f, o, k, _ in tr["shapes"]] for tid, tr in tracks.items()}
    assert summary[1] == [(0, False), (1, False), (2, True), (4, False), (5, True)]
    assert summary[2] == [(0, False), (1, False), (2, False), (3, True)]
    assert summary[3] == [(3, False), (4, False), (5, False)]  # visible on the last frame: no outside
    for tid, tr in tracks.items():
        assert all(k for _, _, k, _ in tr["shapes"])  # keyframe="1" on every shape
        for f, o, k, el in tr["shapes"]:
            assert el.get("occluded") == "0" and el.get("z_order") == "0"
            assert el.find("attribute").get("name") == "score"
            assert float(el.find("attribute").text) == pytest.approx(result.segments[tid - 1].score, abs=1e-6)
            if not o:
                assert np.array_equal(raster([points(el)]), masks.decode(result.mask(result.segments[tid - 1], f)))
    # what CVAT shows frame by frame is exactly where the masks have pixels
    shown = cvat_visibility(cvat_load(tmp_path / "out.xml"), n)
    for seg in result.segments[:3]:
        expected = [t for t in range(n) if masks.area(result.mask(seg, t))]
        assert shown[seg.track_id] == expected


def test_frames_not_processed_have_no_shape_and_are_never_outside(tmp_path):
    n = 9
    m = [box(1, 4, 1, 4) if t not in (4,) else EMPTY for t in range(n)]
    early = [box(5, 8, 5, 8) if t <= 2 else EMPTY for t in range(n)]
    result = make_result({1: (1, 0.9, m), 2: (2, 0.5, early)}, processed=[0, 2, 4, 6])  # stride 2, --end 7
    tracks = tracks_of(write_xml(tmp_path, result))
    s1 = [(f, o) for f, o, _, _ in tracks[1]["shapes"]]
    s2 = [(f, o) for f, o, _, _ in tracks[2]["shapes"]]
    assert s1 == [(0, False), (2, False), (4, True), (6, False), (7, True)]  # ends after the last processed frame
    assert s2 == [(0, False), (2, False), (4, True)]  # outside on the first processed frame it is absent
    shown = cvat_visibility(cvat_load(tmp_path / "out.xml"), n)
    assert shown[1] == [0, 1, 2, 3, 6] and shown[2] == [0, 1, 2, 3]  # CVAT fills frames not processed


def test_box_shapes(tmp_path):
    two = box(1, 3, 1, 3) | box(6, 10, 8, 16)
    result = make_result({1: (1, 0.9, [two] + [box(2, 5, 3, 7)] * (T - 1))})
    out = write_xml(tmp_path, result, shape="box")
    tracks = tracks_of(out)
    assert list(tracks) == [1] and tracks[1]["group"] == 0  # no part tracks: the box covers them
    for f, o, _, el in tracks[1]["shapes"]:
        assert el.tag == "box"
        x, y, w, h = masks.bbox(result.mask(result.segments[0], f))
        assert [float(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")] == [x, y, x + w, y + h]
    assert [float(tracks[1]["shapes"][0][3].get(k)) for k in ("xtl", "ytl", "xbr", "ybr")] == [1, 1, 16, 10]
    assert cvat_load(out)[0]["shapes"][0]["type"] == "box"


def test_parts_become_grouped_one_frame_tracks(tmp_path):
    """The track holds the largest part; each other part is a one-frame track of the same label and
    group; per frame the group's polygons rasterise back to the whole mask (holes filled)."""
    n = 4
    ring = box(0, 7, 0, 7) & ~box(2, 4, 2, 4)
    parts = [ring | box(8, 10, 10, 12) | box(0, 1, 15, 16), ring, EMPTY, ring | box(9, 11, 12, 17)]
    single = [box(5, 8, 9, 13)] * n
    result = make_result({7: (2, 0.9, parts), 3: (1, 0.8, single)}, n=n)
    out = write_xml(tmp_path, result)
    tracks = tracks_of(out)
    assert tracks[3]["group"] == 0  # one part: no group
    obj = tracks[7]
    assert obj["group"] == 7
    part_ids = sorted(t for t in tracks if t not in (3, 7))
    assert part_ids == [8, 9, 10]  # above every object's id
    for pid in part_ids:
        tr = tracks[pid]
        assert tr["group"] == 7 and tr["label"] == obj["label"] == "dog"
        assert tr["shapes"][0][1:3] == (False, True) and len(tr["shapes"]) <= 2
        frame = tr["shapes"][0][0]
        if frame + 1 < n:
            assert [(f, o) for f, o, _, _ in tr["shapes"]] == [(frame, False), (frame + 1, True)]
        else:
            assert len(tr["shapes"]) == 1  # a part on the last frame: no outside past the end
    for t in range(n):
        group_polys = [points(el) for tid, tr in tracks.items() if tr["group"] == 7
                       for f, o, _, el in tr["shapes"] if f == t and not o]
        whole = raster(group_polys) if group_polys else EMPTY
        assert np.array_equal(whole, filled(parts[t])), t
    main_frame0 = next(el for f, o, _, el in obj["shapes"] if f == 0)
    assert np.array_equal(raster([points(main_frame0)]), filled(ring))  # the largest part
    cvat_load(out)  # CVAT's rules accept it


def test_polygon_iou_against_masks_is_exact_without_holes(tmp_path):
    """The documented bound: on masks without holes the polygons of a frame (object track + parts)
    rasterise to the mask exactly (IoU 1); with holes, IoU = pixels / filled pixels."""
    rng = np.random.default_rng(0)
    n, h, w = 3, 24, 31
    ms = {tid: (1, 0.5, [blobs(rng, h, w, density=0.55) for _ in range(n)]) for tid in (1, 2)}
    result = make_result(ms, n=n, h=h, w=w)
    tracks = tracks_of(write_xml(tmp_path, result))
    for tid, (_, _, frames) in ms.items():
        for t in range(n):
            polys = [points(el) for k, tr in tracks.items() if k == tid or (tr["group"] and tr["group"] == tid)
                     for f, o, _, el in tr["shapes"] if f == t and not o]
            r = raster(polys, h, w)
            m = frames[t]
            iou = (r & m).sum() / (r | m).sum()
            assert np.array_equal(r, filled(m))
            assert iou == pytest.approx(m.sum() / filled(m).sum())


# ----------------------------------------------------------------------------- real readers


def test_datumaro_reads_back_our_tracks(tmp_path):
    """datumaro's own cvat reader (CVAT imports through datumaro): labels, frames, polygon points,
    our track ids as ``track_id``, outside/keyframe, the score as a number and the part groups."""
    dm = pytest.importorskip("datumaro", reason="datumaro is the real CVAT-format reader; see the report")
    from datumaro.components.annotation import AnnotationType

    n = 4
    two = box(1, 5, 1, 6) | box(7, 10, 10, 16)
    result = make_result({5: (1, 0.91, [two, box(1, 5, 1, 6), EMPTY, EMPTY]),
                          2: (2, 0.42, [box(6, 10, 2, 8)] * n)}, n=n)
    folder = tmp_path / "ds"
    write_xml(folder, result, name="annotations.xml")
    ds = dm.Dataset.import_from(str(folder), "cvat")
    names = [lb.name for lb in ds.categories()[AnnotationType.label]]
    assert names == [c.name for c in CATS]
    got = {}
    for item in ds:
        frame = item.attributes["frame"]
        assert item.id == f"frame_{frame:06d}"
        for ann in item.annotations:
            assert ann.type == AnnotationType.polygon
            a = ann.attributes
            got[(a["track_id"], frame)] = (names[ann.label], a["outside"], a["keyframe"], a["score"], ann.group,
                                            np.array(ann.points).reshape(-1, 2))
    expected_keys = {(5, 0), (5, 1), (5, 2), (6, 0), (6, 1), (2, 0), (2, 1), (2, 2), (2, 3)}
    assert set(got) == expected_keys
    for (tid, frame), (label, outside, keyframe, score, group, pts) in got.items():
        owner = 5 if tid in (5, 6) else 2
        seg = next(s for s in result.segments if s.track_id == owner)
        assert label == result.category(seg.category_id).name and keyframe is True
        assert score == pytest.approx(seg.score, abs=1e-6)
        assert group == (5 if owner == 5 else 0)
        assert outside == ((tid, frame) in {(5, 2), (6, 1)})
    assert np.array_equal(raster([got[(5, 0)][5], got[(6, 0)][5]]), two)  # the group's union is the mask
    assert np.array_equal(raster([got[(2, 3)][5]]), box(6, 10, 2, 8))


# CVAT's import, replayed (no CVAT server here). formats/cvat.py ``load_anno``: a track's shapes with
# keyframe="0" are dropped; ``keyframe`` must be present; points are "x,y;x,y". bindings.py
# ``_import_track``: the label must be one of the task's (``_get_label_id`` raises "Label ... is not
# registered"), every frame goes through ``rel_frame_id`` ("Unknown frame N" outside 0..size-1), and a
# shape keeps only the attributes its label declares as mutable. load_anno reads ``track.shapes[0]``
# (a track with no kept shape fails). annotation.py ``get_interpolated_shapes`` asserts each keyframe is
# later than the previous one.


def cvat_load(path: Path, size: int | None = None, labels: dict[str, set[str]] | None = None) -> list[dict]:
    root = ET.parse(path).getroot()
    task = root.find("meta/task")
    size = int(task.findtext("size")) if size is None else size
    if labels is None:  # the task is made with the labels the file declares
        labels = {lb.findtext("name"): {a.findtext("name") for a in lb.findall("attributes/attribute")
                                        if a.findtext("mutable") == "True"}
                  for lb in task.findall("labels/label")}
    tracks = []
    for tr in root.findall("track"):
        label = tr.attrib["label"]
        if label not in labels:
            raise ValueError(f"Label {label!r} is not registered for this task")
        shapes = []
        for el in tr:
            keyframe = el.attrib["keyframe"] == "1"
            if not keyframe:
                continue
            frame = int(el.attrib["frame"])
            if not 0 <= frame < size:
                raise ValueError(f"Unknown frame {frame}")
            if el.tag == "box":
                pts = [float(el.attrib[k]) for k in ("xtl", "ytl", "xbr", "ybr")]
            else:
                pts = [float(v) for pair in el.attrib["points"].split(";") for v in pair.split(",")]
            attrs = {a.attrib["name"]: a.text or "" for a in el.findall("attribute")
                     if a.attrib["name"] in labels[label]}
            if shapes:
                assert frame > shapes[-1]["frame"], f"{frame} > {shapes[-1]['frame']}"
            shapes.append({"frame": frame, "outside": el.attrib.get("outside", "0") == "1", "points": pts,
                           "type": el.tag, "attributes": attrs})
        _ = shapes[0]  # load_anno's own access: a track without a kept shape fails here
        tracks.append({"id": int(tr.attrib["id"]), "label": label, "group": int(tr.attrib.get("group_id", 0)),
                       "shapes": shapes})
    return tracks


def cvat_visibility(tracks: list[dict], size: int) -> dict[int, list[int]]:
    """Frames where each track shows: the latest keyframe at or before the frame is not outside
    (interpolated between keyframes, propagated to the end after a last visible keyframe)."""
    shown = {}
    for tr in tracks:
        frames = []
        for f in range(size):
            before = [s for s in tr["shapes"] if s["frame"] <= f]
            if before and not before[-1]["outside"]:
                frames.append(f)
        shown[tr["id"]] = frames
    return shown


def test_cvat_import_rules_accept_ours_and_reject_what_cvat_rejects(tmp_path):
    out = write_xml(tmp_path, instance_result(stride=2))
    tracks = cvat_load(out)
    assert [t["id"] for t in tracks] == [1, 2]
    assert all(s["attributes"].keys() == {"score"} for t in tracks for s in t["shapes"])  # declared: kept
    text = out.read_text(encoding="utf-8")
    # a shape on a frame outside the task stops the import
    bad = tmp_path / "bad.xml"
    bad.write_text(text.replace('frame="4"', f'frame="{T}"', 1), encoding="utf-8")
    with pytest.raises(ValueError, match=f"Unknown frame {T}"):
        cvat_load(bad)
    # a label the task lacks stops it too
    with pytest.raises(ValueError, match="not registered"):
        cvat_load(out, labels={"person": {"score"}})
    # keyframe="0" shapes are dropped as interpolated; an undeclared attribute is dropped
    bad.write_text(text.replace('keyframe="1"', 'keyframe="0"', 1), encoding="utf-8")
    assert len(cvat_load(bad)[0]["shapes"]) == len(tracks[0]["shapes"]) - 1
    assert cvat_load(out, labels={"person": set(), "dog": set(), "sky": set()})[0]["shapes"][0]["attributes"] == {}
    # a track left with no keyframe fails as in load_anno
    one = text.split("<track ")[0] + '<track id="1" label="dog"><polygon frame="0" keyframe="0" outside="0" ' \
        'points="0,0;1,0;1,1"/></track></annotations>'
    bad.write_text(one, encoding="utf-8")
    with pytest.raises(IndexError):
        cvat_load(bad)


# ----------------------------------------------------------------------------- destination and errors


def test_destination_rules(tmp_path):
    out = write_xml(tmp_path, instance_result())
    before = out.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        CvatSink(out)
    with pytest.raises(RuntimeError):  # an interrupted write leaves the old file untouched, no temporary
        with CvatSink(out, overwrite=True) as sink:
            sink.add(instance_result(stride=2))
            raise RuntimeError("interrupted")
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.xml"]
    write_xml(tmp_path, instance_result(stride=2), overwrite=True)
    assert out.read_bytes() != before
    with pytest.raises(RuntimeError):
        with CvatSink(tmp_path / "new.xml") as sink:
            sink.add(instance_result())
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out.xml"]
    with CvatSink(tmp_path / "sub" / "empty.xml"):
        pass  # nothing added: still well-formed; missing parents created
    assert ET.parse(tmp_path / "sub" / "empty.xml").getroot().findtext("version") == "1.1"


def test_a_full_disk_is_one_output_error(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if "w" in str(mode) and Path(file).parent == tmp_path:
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    out = tmp_path / "out.xml"
    sink = CvatSink(out)
    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(OutputError) as e:
        with sink:
            sink.add(instance_result())
    monkeypatch.undo()
    assert str(e.value).startswith(f"Cannot write {out}: no space left") and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_one_video_per_file_semantic_refused_and_options_checked(tmp_path):
    with pytest.raises(OutputError, match="one video"):
        with CvatSink(tmp_path / "a.xml") as sink:
            sink.add(instance_result())
            sink.add(instance_result(video_id=2))
    info = VideoInfo(path="/x.mp4", width=W, height=H, num_frames=1)
    semantic = VideoResult.from_masks(info, "semantic", CATS, [(Segment(7, 7, 1.0, isthing=False),
                                                                 [masks.encode(np.ones((H, W), bool))[0]])])
    with pytest.raises(OutputError, match="semantic"):
        write_xml(tmp_path, semantic, name="b.xml")
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="polygon, box"):
        CvatSink(tmp_path / "c.xml", shape="mask")
    with pytest.raises(InputError, match="tolerance"):
        CvatSink(tmp_path / "c.xml", tolerance=-1)
    unknown = make_result({1: (99, 0.5, [box(1, 3, 1, 3)] * T)})
    with pytest.raises(OutputError, match="category 99"):
        write_xml(tmp_path, unknown, name="d.xml")
    assert not list(tmp_path.iterdir())
