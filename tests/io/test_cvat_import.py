"""io.cvat: CVAT for video 1.1 XML read back as a YouTube-VIS dataset, frames from the video itself.

The XML here is written by hand in CVAT's layout (``cvat/apps/dataset_manager/formats/cvat.py``,
``dump_as_cvat_interpolation``). Where a value depends on CVAT's rules it is computed by hand from
them, each test naming the CVAT source it replays (``annotation.py`` ``TrackManager``,
``bindings.py`` frame numbers, ``formats/transformations.py`` masks and ellipses)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from iohelp import close_to, one_line  # noqa: E402
from media import frame_image, make_image_folder, make_video  # noqa: E402

from videomt_cli.errors import DatasetError  # noqa: E402
from videomt_cli.io import ytvis  # noqa: E402
from videomt_cli.io.cvat import angle_step, box_polygon, interpolate_polygon, read_cvat  # noqa: E402

W, H, T = 64, 48, 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("cvat") / "clip.mp4", frames=T, size=(W, H))


def xml(body: str, *, labels=("car", "person"), size: int | None = T, start=0, stop=None, step=None,
        source="clip.mp4", original=(W, H), kind="task") -> str:
    """A CVAT for video 1.1 file: <meta> as CVAT's TaskData/JobData writes it, then ``body``."""
    stop = (start + (size - 1) * (step or 1)) if stop is None and size is not None else stop
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in (("id", 7), ("name", "walk"), ("size", size), ("mode", "interpolation"),
                                                     ("start_frame", start), ("stop_frame", stop),
                                                     ("frame_filter", f"step={step}" if step else "")) if v is not None)
    label_xml = "".join(f"<label><name>{n}</name><color>#ff0000</color><type>any</type><attributes/></label>"
                        for n in labels)
    extra = ""
    if original:
        extra += f"<original_size><width>{original[0]}</width><height>{original[1]}</height></original_size>"
    if source:
        extra += f"<source>{source}</source>"
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n  <meta>\n    '
            f"<{kind}>{fields}<labels>{label_xml}</labels>{extra}</{kind}>\n    <dumped>2026-01-01</dumped>\n  "
            f"</meta>\n{body}\n</annotations>\n")


def box(frame, x0, y0, x1, y1, key=1, outside=0, extra=""):
    return (f'    <box frame="{frame}" keyframe="{key}" outside="{outside}" occluded="0" xtl="{x0}" ytl="{y0}" '
            f'xbr="{x1}" ybr="{y1}" z_order="0"{extra}></box>')


def track(tid, label, *shapes, group=None):
    g = f' group_id="{group}"' if group else ""
    return f'  <track id="{tid}" label="{label}" source="manual"{g}>\n' + "\n".join(shapes) + "\n  </track>"


def write(folder: Path, text: str, name="annotations.xml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def beside(clip: Path, tmp_path: Path, text: str) -> Path:
    """The XML beside a copy (a link) of the clip, as CVAT's export names it in <source>."""
    link = tmp_path / "clip.mp4"
    if not link.exists():
        link.symlink_to(clip)
    return write(tmp_path, text)


def masks_of(ann) -> list:
    return [None if s is None else coco_mask.decode({"size": s["size"], "counts": s["counts"].encode()}).astype(bool)
            for s in ann["segmentations"]]


def rect(x0, y0, x1, y1) -> np.ndarray:
    """The pixels a pixel-corner box covers (pycocotools fills a pixel whose centre is inside)."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def fill(points) -> np.ndarray:
    rle = coco_mask.frPyObjects([list(np.asarray(points, float).reshape(-1))], H, W)
    return coco_mask.decode(coco_mask.merge(rle)).astype(bool)


# ----------------------------------------------------------------------------- tracks


def test_box_track_interpolates_holds_and_outside_ends_it(clip, tmp_path):
    """annotation.py get_interpolated_shapes: boxes linearly between keyframes; an outside keyframe
    hides the object until the next keyframe; the last keyframe repeats to the task's end; nothing
    before the first keyframe; keyframe="0" shapes (CVAT's exported interpolation) are recomputed."""
    body = track(0, "person",
                 box(2, 10, 10, 20, 20),
                 box(3, 0, 0, 63, 47, key=0),  # a stale exported frame: dropped, as CVAT's importer does
                 box(6, 30, 10, 40, 20),
                 box(8, 30, 10, 40, 20, outside=1),
                 box(10, 4, 6, 14, 16))
    doc = read_cvat(beside(clip, tmp_path, xml(body)))
    assert doc["videos"] == [{"id": 1, "name": "walk", "height": H, "width": W, "length": T,
                              "video_file": str(tmp_path / "clip.mp4")}]
    assert doc["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]
    (ann,) = doc["annotations"]
    assert ann["category_id"] == 2 and ann["cvat_tracks"] == ["0"]
    m = masks_of(ann)
    assert m[0] is None and m[1] is None and m[8] is None and m[9] is None
    # offset (f - 2) / 4 of the way from x 10 to 30: 15, 20, 25 on frames 3, 4, 5
    for f, x in ((2, 10), (3, 15), (4, 20), (5, 25), (6, 30), (7, 30)):
        assert np.array_equal(m[f], rect(x, 10, x + 10, 20)), f
    assert np.array_equal(m[10], rect(4, 6, 14, 16)) and np.array_equal(m[11], m[10])
    assert ann["areas"][3] == 100 and ann["bboxes"][3] == [15.0, 10.0, 10.0, 10.0]
    assert any("boxes" in n for n in doc["notes"])


def test_polygon_point_matching_by_hand():
    """annotation.py interpolate_position: arc-length matching of the closed outlines, blending, then
    thinning runs closer than length / 2n. Values worked out by hand from that rule."""
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    # A fifth vertex mid-edge: closed fractions a (0 .25 .5 .75 1), b (0 .125 .25 .5 .75 1); b's
    # vertex 1 (.125) is unpaired, equally near a's 0 and 1: the first wins, so a0 -> b0, b1.
    pentagon = np.array([[0, 0], [5, 0], [10, 0], [10, 10], [0, 10]], float) + [20, 8]
    got = interpolate_polygon(square, pentagon, 0.5)
    # a0's two blends (10, 4), (12.5, 4) are 2.5 apart >= 5 / (2 * 2): both kept
    np.testing.assert_allclose(got, [[10, 4], [12.5, 4], [20, 4], [20, 14], [10, 14]])
    got = interpolate_polygon(square, pentagon - [20, 8], 0.2)
    # now 1.0 apart < 1.25: merged into their midpoint (0.5, 0)
    np.testing.assert_allclose(got, [[0.5, 0], [10, 0], [10, 10], [0, 10]])
    # Extra vertices on a's side: fractions (0 .05 .1 .25 .5 .75 1) -> a0, a1, a2 all pair with b0;
    # their blends a_i (1 - t) are thinned along a (length 4, n 3: limit 2/3).
    dense = np.array([[0, 0], [2, 0], [4, 0], [10, 0], [10, 10], [0, 10]], float)
    np.testing.assert_allclose(interpolate_polygon(dense, square, 0.5), [[0, 0], [1, 0], [2, 0], [10, 0], [10, 10],
                                                                         [0, 10]])
    np.testing.assert_allclose(interpolate_polygon(dense, square, 0.8), [[0, 0], [0.8, 0], [10, 0], [10, 10],
                                                                         [0, 10]])
    np.testing.assert_allclose(interpolate_polygon(dense, square, 0.9), [[0.2, 0], [10, 0], [10, 10], [0, 10]])
    # Ties both ways (exact binary fractions): a 3x1 box with fractions (0 .125 .375 .5 .75 .875 1).
    # a1 (.25) is as near b1 as b2 and takes b1; b2 then joins a1, b5 joins a3, both first-nearest.
    strip = np.array([[0, 0], [1, 0], [3, 0], [3, 1], [1, 1], [0, 1]], float)
    np.testing.assert_allclose(interpolate_polygon(square, strip, 0.5),
                               [[0, 0], [5.5, 0], [6.5, 0], [6.5, 5.5], [0.5, 5.5], [0, 5.5]])
    # Same vertex count and spacing: plain vertex-by-vertex blending.
    np.testing.assert_allclose(interpolate_polygon(square, square + [6, 2], 0.25), square + [1.5, 0.5])


def test_polygon_track_in_a_file(clip, tmp_path):
    def poly(frame, pts, key=1):
        text = ";".join(f"{x:.2f},{y:.2f}" for x, y in pts)
        return f'    <polygon frame="{frame}" keyframe="{key}" outside="0" occluded="0" points="{text}" z_order="0"/>'

    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    pentagon = [(20, 8), (25, 8), (30, 8), (30, 18), (20, 18)]
    doc = read_cvat(beside(clip, tmp_path, xml(track(4, "car", poly(0, square), poly(2, pentagon)))))
    m = masks_of(doc["annotations"][0])
    assert np.array_equal(m[0], fill(square)) and np.array_equal(m[1], rect(10, 4, 20, 14))
    assert all(np.array_equal(m[f], fill(pentagon)) for f in range(2, T))


def test_rotation_rules():
    """find_angle_diff: the short way round, and CVAT's arithmetic turns an exact half turn into
    +1 degree; RotatedBoxesToPolygons: corners turned about the centre."""
    assert angle_step(350, 10) == -20 and angle_step(10, 350) == 20 and angle_step(90, 0) == 90
    assert angle_step(180, 0) == 1 and angle_step(0, 180) == 1
    corners = np.array(box_polygon((0, 0, 10, 4), 90)).reshape(-1, 2)
    np.testing.assert_allclose(corners, [[7, -3], [7, 7], [3, 7], [3, -3]], atol=1e-9)


def test_rotated_box_track(clip, tmp_path):
    body = track(1, "car", box(0, 20, 20, 40, 24, extra=' rotation="0"'), box(2, 20, 20, 40, 24, extra=' rotation="90"'))
    m = masks_of(read_cvat(beside(clip, tmp_path, xml(body)))["annotations"][0])
    assert np.array_equal(m[0], rect(20, 20, 40, 24))
    assert np.array_equal(m[2], rect(28, 12, 32, 32))  # 20x4 turned upright about (30, 22)
    assert np.array_equal(m[1], fill(box_polygon((20, 20, 40, 24), 45)))  # half-way: 45 degrees


def test_mask_shapes_decode_as_cvat_and_hold(clip, tmp_path):
    """A CVAT mask: run lengths over its box (left, top, width, height), row by row, starting with
    0s. Replayed as CVAT converts it (transformations.py MaskConverter.cvat_rle_to_dm_rle: the runs
    as a COCO RLE of size [w, h], decoded and transposed). Masks are not interpolated: a keyframe
    holds until the next one."""
    runs = [3, 2, 5, 2]  # 4x3 box: row 0 ...1, row 1 1..., row 2 ..11
    body = track(2, "car",
                 f'    <mask frame="0" keyframe="1" outside="0" occluded="0" rle="{", ".join(map(str, runs))}" left="10" '
                 f'top="5" width="4" height="3" z_order="0"/>',
                 '    <mask frame="3" keyframe="1" outside="0" occluded="0" rle="0, 6" left="0" top="0" width="3" '
                 'height="2" z_order="0"/>',
                 '    <mask frame="5" keyframe="1" outside="1" occluded="0" rle="0, 6" left="0" top="0" width="3" '
                 'height="2" z_order="0"/>')
    m = masks_of(read_cvat(beside(clip, tmp_path, xml(body)))["annotations"][0])
    expect = np.zeros((H, W), bool)
    expect[5:8, 10:14] = [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1]]
    cvat = coco_mask.decode(coco_mask.frPyObjects([{"counts": runs, "size": [4, 3]}], 3, 4)[0]).transpose()
    assert np.array_equal(cvat, expect[5:8, 10:14])
    assert np.array_equal(m[0], expect) and np.array_equal(m[1], expect) and np.array_equal(m[2], expect)
    assert m[3].sum() == 6 and m[3][:2, :3].all() and m[4].sum() == 6
    assert all(x is None for x in m[5:])


def test_ellipse_as_cvat_fills_it(clip, tmp_path):
    """transformations.py EllipsesToMasks: cv2.ellipse at the rounded centre and semi-axes, the
    box's rotation as its angle; the importer keeps cx + rx and cy - ry to 2 decimals."""
    body = track(3, "car", '    <ellipse frame="0" keyframe="1" outside="0" occluded="0" cx="30.4" cy="20.6" rx="12.3" '
                           'ry="6.5" rotation="30" z_order="0"/>')
    m = masks_of(read_cvat(beside(clip, tmp_path, xml(body)))["annotations"][0])
    expect = np.zeros((H, W), np.uint8)
    cv2.ellipse(expect, (30, 21), (round(42.7 - 30.4), round(20.6 - 14.1)), 30, 0, 360, 255, thickness=-1)
    assert np.array_equal(m[0], expect > 0) and all(np.array_equal(x, m[0]) for x in m)


def test_frame_filter_step_and_start_frame(clip, tmp_path):
    """bindings.py abs_frame_id: task frame k is video frame start_frame + k * step; the XML's frame
    numbers are the video's. The dataset video is the task's frames only, read from the mp4."""
    body = track(0, "car", box(2, 0, 0, 10, 10), box(10, 20, 0, 30, 10))
    path = beside(clip, tmp_path, xml(body, size=3, start=2, step=4))
    doc = read_cvat(path)
    (video,) = doc["videos"]
    assert video["video_frames"] == [2, 6, 10] and video["length"] == 3
    m = masks_of(doc["annotations"][0])
    assert np.array_equal(m[1], rect(10, 0, 20, 10))  # video frame 6: half-way in task frames
    # Training reads those frames of the file (io.ytvis Media.frame_indices -> training.data.read_clip).
    from videomt_cli.training.data import TrainVideo, read_clip

    data = ytvis.read(path)
    media = data.media(data.videos[0], data.image_root())
    assert media.frame_indices == (2, 6, 10)
    images = read_clip(TrainVideo(1, 3, H, W, media, ()), [0, 1, 2, 1])
    for got, i in zip(images, [2, 6, 10, 6]):
        assert close_to(got, frame_image(i, W, H))
    assert not close_to(images[1], frame_image(1, W, H))
    with pytest.raises(DatasetError, match="runs whole videos"):
        ytvis.videos(path)
    with pytest.raises(DatasetError) as e:
        read_cvat(beside(clip, tmp_path, xml(track(0, "car", box(4, 0, 0, 5, 5)), size=3, start=2, step=4)))
    assert "shape on frame 4, which is not a frame of the task (video frames 2..10, step 4)" in one_line(e)


def test_groups_are_one_object(clip, tmp_path):
    """Tracks and image shapes with one group_id and one label are one object, joined per frame; the
    same group with another label is another object."""
    body = "\n".join([
        track(0, "car", box(0, 0, 0, 10, 10), box(4, 0, 0, 10, 10, outside=1), group=5),
        track(1, "car", box(2, 20, 20, 30, 30), group=5),
        track(2, "person", box(0, 40, 0, 50, 10), group=5),
        ('  <image id="3" name="frame_000003" width="64" height="48">\n'
         '    <box label="car" occluded="0" xtl="50" ytl="30" xbr="60" ybr="40" z_order="0" group_id="5"/>\n'
         '  </image>')])
    doc = read_cvat(beside(clip, tmp_path, xml(body)))
    car, person = doc["annotations"]
    assert car["category_id"] == 1 and person["category_id"] == 2 and car["cvat_tracks"][:2] == ["0", "1"]
    m = masks_of(car)
    assert np.array_equal(m[0], rect(0, 0, 10, 10)) and np.array_equal(m[2], rect(0, 0, 10, 10) | rect(20, 20, 30, 30))
    assert np.array_equal(m[3], rect(0, 0, 10, 10) | rect(20, 20, 30, 30) | rect(50, 30, 60, 40))
    assert np.array_equal(m[4], rect(20, 20, 30, 30))  # the first part left on frame 4


def test_lone_shapes_as_cvat_exports_them(clip, tmp_path):
    """formats/cvat.py dump_as_cvat_interpolation writes a shape outside any track as a track of two
    keyframes, the shape and an outside one on the next frame; CVAT for images files carry shapes
    in <image> elements. Both are objects of their own frame; tags and polylines have no pixels."""
    image = ('  <image id="7" name="frame_000007" width="64" height="48">\n'
             '    <polygon label="person" occluded="0" points="0,0;10,0;10,10" z_order="0"/>\n'
             '    <points label="person" occluded="0" points="3,3" z_order="0"/>\n'
             '    <tag label="car" source="manual"/>\n  </image>')
    body = "\n".join([
        track(0, "car", box(5, 0, 0, 8, 8), box(6, 0, 0, 8, 8, outside=1)),
        '  <track id="1" label="car"><polyline frame="0" keyframe="1" outside="0" points="0,0;5,5"/></track>',
        image])
    doc = read_cvat(beside(clip, tmp_path, xml(body)))
    lone, image_shape = doc["annotations"]
    assert [i for i, x in enumerate(masks_of(lone)) if x is not None] == [5]
    assert [i for i, x in enumerate(masks_of(image_shape)) if x is not None] == [7]
    notes = " ".join(doc["notes"])
    assert "left out 2 track(s) or shape(s) without an area (1 points, 1 polyline)" in notes
    assert "1 <tag>(s)" in notes
    images_only = read_cvat(beside(clip, tmp_path, xml(image)))
    assert any("CVAT for images" in n for n in images_only["notes"])


def test_a_track_without_keyframes_keeps_its_shapes(clip, tmp_path):
    """datumaro writes keyframe="0" when its annotations carry no keyframe attribute; CVAT's
    SetKeyframeForEveryTrackShape makes every such shape a keyframe (so does the reader)."""
    body = track(0, "car", box(1, 0, 0, 10, 10, key=0), box(2, 5, 0, 15, 10, key=0),
                 box(3, 5, 0, 15, 10, key=0, outside=1))
    doc = read_cvat(beside(clip, tmp_path, xml(body)))
    m = masks_of(doc["annotations"][0])
    assert m[0] is None and np.array_equal(m[1], rect(0, 0, 10, 10)) and np.array_equal(m[2], rect(5, 0, 15, 10))
    assert all(x is None for x in m[3:]) and any("no keyframe" in n for n in doc["notes"])


def test_categories_from_a_label_table(clip, tmp_path):
    body = track(0, "Car", box(0, 0, 0, 4, 4)) + "\n" + track(1, "person", box(0, 0, 0, 4, 4))
    path = beside(clip, tmp_path, xml(body, labels=("Car", "person", "tree")))
    doc = read_cvat(path, categories=[(3, "car"), (1, "person"), (9, "dog")])
    assert [a["category_id"] for a in doc["annotations"]] == [3, 1]  # "Car" matches "car" ignoring case
    assert doc["categories"] == [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 9, "name": "dog"}]
    with pytest.raises(DatasetError) as e:
        read_cvat(beside(clip, tmp_path, xml(track(5, "tree", box(0, 0, 0, 4, 4)), labels=("tree",))),
                  categories=[(1, "person")])
    assert "track 5 has label 'tree', which the categories do not name (person)" in one_line(e)


def test_frame_folders(tmp_path):
    """video= a frame folder (frames by natural order), or CVAT's images/ export folder, whose
    frame_NNNNNN names are the video's frame numbers (it holds only the task's frames)."""
    folder = make_image_folder(tmp_path / "frames", n=6, size=(W, H))
    body = track(0, "car", box(1, 0, 0, 10, 10))
    doc = read_cvat(write(tmp_path, xml(body, size=6, source=None)), video=folder)
    assert doc["videos"][0]["file_names"] == [str(folder / f"frame_{i}.png") for i in range(1, 7)]
    export = tmp_path / "export"
    (export / "images").mkdir(parents=True)
    for k, f in enumerate((4, 6, 8)):
        cv2.imwrite(str(export / "images" / f"frame_{f:06d}.PNG"), frame_image(k, W, H))
    doc = read_cvat(write(export, xml(body.replace('frame="1"', 'frame="6"'), size=3, start=4, step=2, source="x.mp4")))
    assert doc["videos"][0]["file_names"] == [str(export / "images" / f"frame_{f:06d}.PNG") for f in (4, 6, 8)]
    assert [x is not None for x in masks_of(doc["annotations"][0])] == [False, True, True]
    data = ytvis.read(export / "annotations.xml")
    assert data.media(data.videos[0], data.image_root()).frames[0].name == "frame_000004.PNG"


def test_job_and_project_frames(clip, tmp_path):
    """A job's start/stop_frame are its part of the video. A project numbers each task's frames
    after the earlier tasks of its subset (bindings.py ProjectData._init_task_frame_offsets:
    + start_frame + step * size of each) and names a track's task in task_id."""
    job = xml(track(0, "car", box(6, 0, 0, 4, 4), box(8, 0, 0, 4, 4, outside=1)), size=4, start=5, kind="job",
              source=None)
    doc = read_cvat(write(tmp_path, job), video=clip)
    assert doc["videos"][0]["video_frames"] == [5, 6, 7, 8]
    assert [x is not None for x in masks_of(doc["annotations"][0])] == [False, True, True, False]
    (tmp_path / "other.mp4").symlink_to(clip)
    tasks = "".join(f"<task><id>{i}</id><name>t{i}</name><size>{n}</size><mode>interpolation</mode>"
                    f"<subset>Train</subset><start_frame>0</start_frame><stop_frame>{n - 1}</stop_frame>"
                    f"<frame_filter></frame_filter><source>{src}</source></task>" for i, n, src in
                    ((11, 10, "clip.mp4"), (12, 12, "other.mp4")))
    tasks += (tasks[tasks.index("<task><id>12"):].replace("<id>12<", "<id>13<").replace("t12<", "t13<")
              .replace("Train", "Validation"))
    project = xml("\n".join(['  <track id="0" label="car" task_id="11">' + box(3, 0, 0, 4, 4) + "</track>",
                             '  <track id="1" label="car" task_id="12">' + box(12, 0, 0, 4, 4) + "</track>",
                             '  <track id="2" label="car" task_id="13">' + box(5, 0, 0, 4, 4) + "</track>"]))
    project = project.replace(project[project.index("<task>"):project.index("</task>") + 7],
                              f"<project><id>1</id><name>p</name><labels><label><name>car</name></label></labels>"
                              f"<tasks>{tasks}</tasks></project>")
    (tmp_path / "clip.mp4").symlink_to(clip)
    doc = read_cvat(write(tmp_path, project, "project.xml"))
    assert [(v["id"], v["name"], v["length"]) for v in doc["videos"]] == [(1, "t11", 10), (2, "t12", 12),
                                                                         (3, "t13", 12)]
    first, second, third = doc["annotations"]
    assert (first["video_id"], second["video_id"], third["video_id"]) == (1, 2, 3)
    assert masks_of(first)[3] is not None and masks_of(first)[2] is None
    assert masks_of(second)[1] is None and masks_of(second)[2] is not None  # 12 - 10: frame 2 of task 12
    assert masks_of(third)[4] is None and masks_of(third)[5] is not None  # another subset: numbered from 0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text, message", [
    ('{"videos": []}', "is not CVAT XML: the XML parser stops at line 1 column 1 (not well-formed (invalid token))"),
    ("<svg><rect/></svg>", "is not CVAT XML: its root element is <svg>, not <annotations>"),
    ("<annotations><version>1.1</version></annotations>", "is not CVAT XML: <annotations> has no <meta>"),
    ("<annotations><meta><dumped>x</dumped></meta></annotations>", "its <meta> has no <task>, <job> or <project>"),
    ("<annotations><meta><task><labels/></task>", "the XML parser stops at line 1 column 42 (no element found)"),
])
def test_not_cvat_xml(tmp_path, text, message):
    with pytest.raises(DatasetError) as e:
        read_cvat(write(tmp_path, text))
    assert message in one_line(e) and "export the task from CVAT as 'CVAT for video 1.1'" in one_line(e)


def test_bad_files_one_line_each(clip, tmp_path):
    def fails(text, **kw):
        with pytest.raises(DatasetError) as e:
            read_cvat(beside(clip, tmp_path, text), **kw)
        return one_line(e)

    assert "line 8: track 3 has label 'dog', which <meta> does not declare (labels: car, person)" in \
        fails(xml(track(3, "dog", box(0, 0, 0, 4, 4))))
    assert "line 10: track 3 has a shape on frame 120 but" in fails(xml(track(3, "car", box(0, 0, 0, 4, 4),
                                                                              box(120, 0, 0, 4, 4)), size=None))
    assert f"clip.mp4 has {T} frames" in fails(xml(track(3, "car", box(120, 0, 0, 4, 4)), size=None))
    assert "the task's original_size is 640x480 but" in fails(xml("", original=(640, 480)))
    assert "track 1 mixes box and polygon shapes" in fails(xml(track(1, "car", box(0, 0, 0, 4, 4),
        '<polygon frame="2" keyframe="1" outside="0" points="0,0;4,0;4,4"/>')))
    assert "track 1 has two shapes on frame 2 (lines 9 and 10)" in fails(xml(track(1, "car", box(2, 0, 0, 4, 4),
                                                                                   box(2, 1, 1, 4, 4))))
    assert "a <box> needs the attribute 'ybr'" in fails(xml(track(1, "car", '<box frame="0" xtl="1" ytl="1" xbr="2"/>')))
    assert "the mask's rle covers 5 pixels but its box is 2x2 = 4" in fails(xml(track(1, "car",
        '<mask frame="0" keyframe="1" rle="1,4" left="0" top="0" width="2" height="2"/>')))
    assert "is not inside the 64x48 frame" in fails(xml(track(1, "car",
        '<mask frame="0" keyframe="1" rle="0,4" left="63" top="0" width="2" height="2"/>')))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(DatasetError) as e:
        read_cvat(write(elsewhere, xml(track(0, "car", box(0, 0, 0, 4, 4)))))
    assert "its video clip.mp4 is not beside it" in one_line(e) and "(video=)" in one_line(e)
    with pytest.raises(DatasetError) as e:
        read_cvat(write(elsewhere, xml("", source=None)))
    assert "does not name its video (no <source> in <meta>)" in one_line(e)


def test_a_task_longer_than_its_video_is_cut_with_a_note(clip, tmp_path):
    """Shapes must lie in the video; the task's declared end may not (CVAT counts the header's
    frames, the video's count is what decodes): it is cut there and a note says so."""
    doc = read_cvat(beside(clip, tmp_path, xml(track(0, "car", box(3, 0, 0, 4, 4)), size=20)))
    assert doc["videos"][0]["length"] == T and len(doc["annotations"][0]["segmentations"]) == T
    assert any("run to video frame 19" in n and "stops at frame 11" in n for n in doc["notes"])


# ----------------------------------------------------------------------------- through io.ytvis


def test_ytvis_read_train_and_eval_take_the_xml(clip, tmp_path):
    """ytvis.read dispatches on content (an .xml name, or text that starts with '<'); training reads
    the frames from the mp4; evaluate scores predictions against the XML as ground truth."""
    body = track(0, "person", box(0, 8, 8, 28, 28), box(11, 30, 8, 50, 28))
    path = beside(clip, tmp_path, xml(body))
    renamed = tmp_path / "annotations.txt"
    renamed.write_text(path.read_text())
    a, b = ytvis.read(path), ytvis.read(renamed)
    assert a.videos == b.videos and a.annotations == b.annotations and a.notes
    assert a.name == f"the dataset ({path})" and a.categories[1] == ytvis.Category(2, "person")
    plain = tmp_path / "yt.json"
    plain.write_text(json.dumps({"videos": [{"id": 1, "length": 1}]}))
    with pytest.raises(DatasetError, match=r"is a YouTube-VIS dataset: .* video= \(for CVAT XML and COCO files\)"):
        ytvis.read(plain, video=clip)

    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    from toy_dataset import tiny_train_config

    from videomt_cli.evaluate import evaluate
    from videomt_cli.training.data import ClipDataset

    ds = ClipDataset(tiny_train_config(path, tmp_path / "run", clip_frames=2, crop_size=(64, 64),
                                       short_side=(48, 48), hflip=False))
    frames, target, vid = ds[0]
    assert vid == 1 and frames.shape == (2, 3, 64, 64) and target.masks.shape == (1, 2, 64, 64)
    assert ds.labels == ["car", "person"] and target.labels.tolist() == [1]
    gt = read_cvat(path)["annotations"][0]
    predictions = [{"video_id": 1, "category_id": 2, "score": 0.9, "segmentations": gt["segmentations"]}]
    assert evaluate(predictions, path)["AP"] == pytest.approx(100.0)
    off = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": gt["segmentations"]}]
    assert evaluate(off, path, categories=[(1, "person"), (2, "car")])["AP"] == pytest.approx(100.0)

