"""io.coco_video: COCO with track ids (ours, CVAT's and datumaro's layouts) read back as a YouTube-VIS
dataset, frames from the video, a frame folder or the image files themselves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from iohelp import one_line  # noqa: E402
from media import make_image_folder, make_video  # noqa: E402

from videomt_cli.errors import DatasetError  # noqa: E402
from videomt_cli.io import masks as mask_ops  # noqa: E402
from videomt_cli.io import ytvis  # noqa: E402
from videomt_cli.io.coco_video import read_coco_tracks  # noqa: E402
from videomt_cli.io.probe import probe  # noqa: E402
from videomt_cli.records import Category, Segment, VideoResult  # noqa: E402
from videomt_cli.sinks.coco import CocoSink  # noqa: E402

W, H, T = 64, 48, 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("coco") / "clip.mp4", frames=T, size=(W, H))


def rect(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def masks_of(ann) -> list:
    return [None if s is None else coco_mask.decode({"size": s["size"], "counts": s["counts"].encode()}).astype(bool)
            for s in ann["segmentations"]]


def rle_json(m: np.ndarray) -> dict:
    r = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def cvat_coco(frames=(0, 1, 2), names="frame_{:06d}.PNG", **extra) -> dict:
    """COCO as CVAT exports a video task (datumaro's coco_instances): one image per task frame named
    frame_NNNNNN, ids from 1, the track in attributes with keyframe; polygons."""
    images = [{"id": i + 1, "width": W, "height": H, "file_name": names.format(f), "license": 0, "flickr_url": "",
               "coco_url": "", "date_captured": 0} for i, f in enumerate(frames)]
    anns = []
    for i, _ in enumerate(frames):
        x = 4 + 6 * i
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 2, "iscrowd": 0, "area": 100.0,
                     "bbox": [x, 10, 10, 10], "segmentation": [[x, 10, x + 10, 10, x + 10, 20, x, 20]],
                     "attributes": {"occluded": False, "rotation": 0.0, "track_id": 0, "keyframe": i == 0}})
    doc = {"licenses": [], "info": {}, "categories": [{"id": 1, "name": "car", "supercategory": ""},
                                                      {"id": 2, "name": "person", "supercategory": ""}],
           "images": images, "annotations": anns}
    doc.update(extra)
    return doc


def test_our_coco_reads_back_as_the_result(clip, tmp_path):
    """What ``segment --format coco`` writes (videos[].name, frame_index, attributes.track_id) comes
    back as the same tracks: the video found by its name, one mask per frame."""
    info = probe(clip)
    person = [rect(2 + t, 4, 20 + t, 30) for t in range(T)]
    dog = [rect(30, 10, 50, 40) if 2 <= t < 6 else np.zeros((H, W), bool) for t in range(T)]
    pairs = [(Segment(4, 1, 0.9), [mask_ops.encode(m)[0] for m in person]),
             (Segment(9, 2, 0.7), [mask_ops.encode(m)[0] for m in dog])]
    result = VideoResult.from_masks(info, "instance", [Category(1, "person"), Category(2, "dog")], pairs,
                                    processed=range(T), num_frames=T)
    path = tmp_path / "out.coco.json"
    with CocoSink(path) as sink:
        sink.add(result)
    doc = read_coco_tracks(path)
    assert doc["videos"] == [{"id": 1, "height": H, "width": W, "length": T, "video_file": str(clip),
                              "name": str(clip)}]
    assert doc["categories"] == [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]
    a, b = doc["annotations"]
    assert (a["track_id"], a["category_id"], b["track_id"], b["category_id"]) == (4, 1, 9, 2)
    assert all(np.array_equal(x, m) for x, m in zip(masks_of(a), person))
    assert [x is not None for x in masks_of(b)] == [False, False, True, True, True, True, False, False]
    assert np.array_equal(masks_of(b)[3], dog[3]) and doc["notes"] == []
    data = ytvis.read(path)  # the dispatcher: COCO, not YouTube-VIS
    assert data.videos[0].video_file == str(clip) and len(data.annotations) == 2


def test_cvat_coco_export_with_the_video(clip, tmp_path):
    """CVAT names a video task's frames frame_NNNNNN (the video's frame number): a task of every
    2nd frame from 2 is a dataset video of those frames (video_frames)."""
    path = tmp_path / "instances_default.json"
    path.write_text(json.dumps(cvat_coco(frames=(2, 4, 6))))
    doc = read_coco_tracks(path, video=clip)
    (video,) = doc["videos"]
    assert video["video_frames"] == [2, 4, 6] and video["length"] == 3 and video["video_file"] == str(clip)
    (ann,) = doc["annotations"]
    assert ann["track_id"] == 0 and ann["category_id"] == 2
    assert [np.array_equal(m, rect(4 + 6 * i, 10, 14 + 6 * i, 20)) for i, m in enumerate(masks_of(ann))] == [True] * 3
    moved = cvat_coco(frames=(2, 4, 6))  # a frame_index wins over the number in the name
    for im, f in zip(moved["images"], (5, 6, 7)):
        im["frame_index"] = f
    path.write_text(json.dumps(moved))
    assert read_coco_tracks(path, video=clip)["videos"][0]["video_frames"] == [5, 6, 7]
    path.write_text(json.dumps(cvat_coco(frames=(2, 4, 6))))
    folder = make_image_folder(tmp_path / "frames", n=T, size=(W, H), prefix="")  # 1.png .. 8.png
    doc = read_coco_tracks(path, video=folder)  # file names do not match: the numbers in them do
    assert doc["videos"][0]["file_names"] == [str(folder / f"{f + 1}.png") for f in (2, 4, 6)]


def test_datumaro_layout_images_are_the_frames(tmp_path):
    """datumaro's and CVAT's COCO zips: annotations/instances_default.json beside images/: with no
    video named, the image files are the frames (file_names, in frame order)."""
    root = tmp_path / "export"
    make_image_folder(root / "images", n=3, size=(W, H), prefix="frame_00000")  # frame_000001.png ...
    (root / "annotations").mkdir()
    doc = cvat_coco(frames=(3, 1, 2), names="frame_{:06d}.png")
    path = root / "annotations" / "instances_default.json"
    path.write_text(json.dumps(doc))
    out = read_coco_tracks(path)
    assert out["videos"][0]["file_names"] == [str(root / "images" / f"frame_00000{i}.png") for i in (1, 2, 3)]
    m = masks_of(out["annotations"][0])  # image 2 (frame 1) holds the box at x 10
    assert np.array_equal(m[0], rect(10, 10, 20, 20)) and np.array_equal(m[2], rect(4, 10, 14, 20))


def test_video_ids_on_the_images_only(tmp_path):
    """Images carrying video_id without a 'videos' list (TAO-style): one dataset video each."""
    for v in ("a", "b"):
        make_image_folder(tmp_path / v, n=2, size=(W, H))
    images = [{"id": 1 + k + 2 * i, "file_name": f"{v}/frame_{k + 1}.png", "video_id": i + 1, "frame_index": k}
              for i, v in enumerate("ab") for k in range(2)]
    anns = [{"id": im["id"], "image_id": im["id"], "category_id": 1, "bbox": [0, 0, 4, 4],
             "attributes": {"track_id": 1}} for im in images]
    path = tmp_path / "tao.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    out = read_coco_tracks(path)
    assert [v["file_names"] for v in out["videos"]] == [[str(tmp_path / v / f"frame_{k}.png") for k in (1, 2)]
                                                        for v in "ab"]
    assert [a["video_id"] for a in out["annotations"]] == [1, 2]  # one track id, but two videos: two tracks


def test_masks_tracks_and_categories(clip, tmp_path):
    """Uncompressed RLE, a bbox alone (a box mask, noted), two parts of one track on one frame
    (joined), an annotation without track_id (its own frame only, noted), crowd, and the ids of a
    label table by name."""
    images = [{"id": 10 + f, "file_name": f"v/{f:05d}.jpg", "width": W, "height": H} for f in range(3)]
    plain = coco_mask.encode(np.asfortranarray(rect(0, 0, 4, 4).astype(np.uint8)))
    runs = [int(v) for v in coco_mask.decode(plain).flatten(order="F")]  # uncompressed counts below
    counts, value, n = [], 0, 0
    for v in runs + [-1]:
        if v != value:
            counts.append(n)
            value, n = v, 1
        else:
            n += 1
    anns = [
        {"id": 1, "image_id": 10, "category_id": 5, "segmentation": {"size": [H, W], "counts": counts},
         "attributes": {"track_id": 7}},
        {"id": 2, "image_id": 11, "category_id": 5, "segmentation": [], "bbox": [10, 10, 5, 5], "track_id": 7},
        {"id": 3, "image_id": 11, "category_id": 5, "segmentation": rle_json(rect(30, 30, 34, 34)),
         "attributes": {"track_id": 7}},
        {"id": 4, "image_id": 12, "category_id": 6, "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]], "iscrowd": 1},
        {"id": 5, "image_id": 10, "category_id": 6, "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]]},
    ]
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 5, "name": "Person"}, {"id": 6, "name": "crowd"}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    out = read_coco_tracks(path, video=clip, categories=[(1, "person"), (3, "crowd"), (8, "bike")])
    track, lone, other = out["annotations"]  # two annotations without track_id: two objects
    assert (track["category_id"], track["iscrowd"], lone["category_id"], lone["iscrowd"]) == (1, 0, 3, 1)
    assert other["iscrowd"] == 0 and [x is not None for x in masks_of(other)] == [True, False, False]
    m = masks_of(track)
    assert np.array_equal(m[0], rect(0, 0, 4, 4)) and np.array_equal(m[1], rect(10, 10, 15, 15) | rect(30, 30, 34, 34))
    assert m[2] is None and [x is not None for x in masks_of(lone)] == [False, False, True]
    assert "1 annotation(s) have only a bbox" in " ".join(out["notes"])
    assert "2 annotation(s) have no track_id" in " ".join(out["notes"])
    assert out["categories"] == [{"id": 1, "name": "person"}, {"id": 3, "name": "crowd"}, {"id": 8, "name": "bike"}]
    assert out["videos"][0]["length"] == 3 and "video_frames" not in out["videos"][0]  # frames 0, 1, 2


@pytest.mark.parametrize("change, message", [
    (lambda d: d["images"][0].update(file_name="IMG_1234.jpg"),
     "image 1 ('IMG_1234.jpg') matches no frame: other images have frame numbers but it has none"),
    (lambda d: [im.update(file_name=f"shot{i}a.jpg") for i, im in enumerate(d["images"])],
     "image 1 ('shot0a.jpg') matches no frame of"),
    (lambda d: d["images"][2].update(file_name="frame_000120.PNG"), "image 3 ('frame_000120.PNG') is frame 120 but"),
    (lambda d: d["images"][1].update(file_name="frame_000000.PNG"), "images 1 and 2 are both frame 0"),
    (lambda d: d["annotations"][0].update(image_id=99), "annotation 1 is on image 99, which the file's 'images'"),
    (lambda d: d["annotations"][1].update(category_id=1), "track 0 has annotations of categories 'person' and 'car'"),
    (lambda d: d["annotations"][0].update(category_id=4),
     "annotation 1 has category 4, which the file's 'categories' do not list (ids 1, 2)"),
    (lambda d: d["images"][0].update(width=640), "image 1 is 640x48 but"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [4, 4], "counts": "00"}),
     "the mask is 4x4 (h x w) but the video is 48x64"),
])
def test_bad_coco_files_one_line_each(clip, tmp_path, change, message):
    doc = cvat_coco()
    change(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as e:
        read_coco_tracks(path, video=clip)
    assert message in one_line(e)


def test_where_the_video_is(clip, tmp_path):
    doc = cvat_coco()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as e:
        read_coco_tracks(path)
    assert "image 1 ('frame_000000.PNG') is no file beside it and the file names no video" in one_line(e)
    doc["videos"] = [{"id": 1, "name": "gone.mp4"}]
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as e:
        read_coco_tracks(path)
    assert "its video 'gone.mp4' is not there" in one_line(e)
    doc["videos"] = [{"id": 1, "name": clip.name}]  # a bare name: beside the JSON
    (tmp_path / clip.name).symlink_to(clip)
    path.write_text(json.dumps(doc))
    assert read_coco_tracks(path)["videos"][0]["video_file"] == str(tmp_path / clip.name)
    # Two videos (what CocoSink writes for several): each found by its name; video= cannot name both.
    second = cvat_coco()
    doc["videos"].append({"id": 2, "name": str(clip)})
    for im in doc["images"]:
        im["video_id"] = 1
    for im, a in zip(second["images"], second["annotations"]):
        im.update(id=im["id"] + 100, video_id=2)
        a.update(id=a["id"] + 100, image_id=a["image_id"] + 100, attributes={"track_id": 0})
    doc["images"] += second["images"]
    doc["annotations"] += second["annotations"]
    path.write_text(json.dumps(doc))
    out = read_coco_tracks(path)
    assert [v["id"] for v in out["videos"]] == [1, 2] and [a["video_id"] for a in out["annotations"]] == [1, 2]
    with pytest.raises(DatasetError) as e:
        read_coco_tracks(path, video=clip)
    assert "holds 2 videos: leave video= out" in one_line(e)
    yt = tmp_path / "yt.json"
    yt.write_text(json.dumps({"videos": [{"id": 1, "length": 1}], "annotations": [], "categories": []}))
    with pytest.raises(DatasetError) as e:
        read_coco_tracks(yt)
    assert "is not COCO: it needs the lists 'images' and 'annotations'" in one_line(e)


def test_dispatch_keeps_youtube_vis_files_youtube_vis(tmp_path):
    """ytvis.read: a YouTube-VIS dataset with COCO-like extra lists is still YouTube-VIS (per-track
    'segmentations', or videos listing their file_names); the old messages stay."""
    doc = {"videos": [{"id": 1, "file_names": ["a.jpg"], "height": 4, "width": 4}], "images": [],
           "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [None]}],
           "categories": [{"id": 1, "name": "x"}]}
    assert ytvis.is_coco(doc) is False and ytvis.read(doc).videos[0].length == 1
    assert ytvis.is_coco({"images": [], "annotations": []}) is True
    with pytest.raises(DatasetError, match="is not valid JSON"):
        (tmp_path / "x.json").write_text("{")
        ytvis.read(tmp_path / "x.json")
    with pytest.raises(DatasetError, match="is not a YouTube-VIS dataset"):
        ytvis.read({"videos": 3})


def test_eval_against_a_coco_ground_truth(clip, tmp_path):
    from videomt_cli.evaluate import evaluate

    path = tmp_path / "gt.json"
    path.write_text(json.dumps(cvat_coco(frames=range(T))))
    gt = read_coco_tracks(path, video=clip)["annotations"][0]
    good = [{"video_id": 1, "category_id": 2, "score": 0.8, "segmentations": gt["segmentations"]}]
    assert evaluate(good, path, video=clip)["AP"] == pytest.approx(100.0)
    assert evaluate(good, path, video=clip, categories=[(1, "car"), (2, "person")])["AP"] == pytest.approx(100.0)
