"""The training dataset: formats (frame folders, video files), augmentation, EXIF orientation,
frame sampling and the errors a user can run into."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from toy_dataset import box, make_dataset, rle, tiny_train_config
from videomt_cli.errors import DatasetError, InputError, VideoMTError
from videomt_cli.inference.preprocess import PIXEL_MEAN, PIXEL_STD
from videomt_cli.io import ytvis
from videomt_cli.io.images import load_image
from videomt_cli.training import synth
from videomt_cli.training.data import ClipDataset


@pytest.fixture
def dataset_json(tmp_path):
    return make_dataset(tmp_path / "data")


def _pixels(frames: torch.Tensor) -> np.ndarray:
    """Normalised (3, H, W) -> (H, W, 3) float 0..255, as the frame was loaded."""
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    return (frames * std + mean).permute(1, 2, 0).numpy()


def test_dataset_reads_formats_and_augments_consistently(dataset_json, tmp_path):
    cfg = tiny_train_config(dataset_json, tmp_path / "out", clip_frames=4, short_side=(64, 64), hflip=False)
    ds = ClipDataset(cfg)
    assert ds.labels == ["apple", "boat"] and ds.category_ids == [3, 7]  # head order: ids ascending
    # Video 1 at 64x64 with no resize, crop or flip: the masks are the annotations, pixels normalised.
    k = next(k for k in range(10) if ds.video_for(k).id == 1)
    frames, target, vid = ds[k]
    assert vid == 1 and frames.shape == (4, 3, 64, 64) and frames.dtype == torch.float32
    assert target.labels.tolist() == [0, 1]  # apple (id 3) -> 0, boat (id 7) -> 1
    assert target.masks.shape == (2, 4, 64, 64) and target.masks.dtype == torch.bool
    assert torch.equal(target.masks[0, 1], torch.from_numpy(box(8, 10, 20, 16)))
    assert not target.masks[1, :2].any() and torch.equal(target.masks[1, 3], torch.from_numpy(box(36, 30, 16, 22)))
    grey = (128 + 3.5 - 123.675) / 58.395  # red channel of the background, mean noise 3.5
    assert abs(float(frames[0, 0, 60:, 60:].mean()) - grey) < 0.05
    # The same sample number gives the same sample; geometry is shared by frames and masks.
    cfg2 = tiny_train_config(dataset_json, tmp_path / "out", clip_frames=2, short_side=(40, 90), color_jitter=0.1)
    ds2 = ClipDataset(cfg2)
    for k in range(6):
        a, ta, _ = ds2[k]
        b, tb, _ = ds2[k]
        assert torch.equal(a, b) and torch.equal(ta.masks, tb.masks)
        assert a.shape == (2, 3, 64, 64) and ta.masks.shape[-2:] == (64, 64)
        # Object pixels are where the masks say (red or blue boxes far from the grey background).
        for n in range(len(ta.labels)):
            inside = a[:, 0][ta.masks[n]]
            channel = 0 if ta.labels[n] == 0 else 2
            if inside.numel() > 20:
                assert a[:, channel][ta.masks[n]].mean() > 0.9


def test_dataset_sees_exif_oriented_jpegs_upright_like_inference(tmp_path):
    """A phone JPEG stored sideways (32 rows x 64 columns) with EXIF orientation 6 (rotate 90
    degrees clockwise) is 64 x 32 upright: training must see the pixels ``load_image`` gives."""
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[..., 0] = np.linspace(0, 250, 64, dtype=np.uint8)[None, :]  # a gradient along the stored width
    stored[..., 1] = np.linspace(0, 250, 32, dtype=np.uint8)[:, None]
    stored[:8, :8] = (255, 255, 255)  # a marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "v").mkdir()
    path = tmp_path / "v" / "00000.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    with Image.open(path) as raw:
        assert np.asarray(raw.convert("RGB")).shape == (32, 64, 3)  # PIL alone ignores the tag
    upright = load_image(path)
    assert upright.shape == (64, 32, 3) and upright[:8, -8:].min() > 200  # the marker is now top-right
    m = box(4, 4, 20, 10, size=(64, 32))
    data = {"videos": [{"id": 1, "file_names": ["v/00000.jpg"], "height": 64, "width": 32, "length": 1}],
            "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [rle(m)]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    cfg = tiny_train_config(tmp_path / "train.json", tmp_path / "out", clip_frames=1, crop_size=(64, 32),
                            short_side=(32, 32), hflip=False)
    frames, target, _ = ClipDataset(cfg)[0]  # no resize, crop or flip at this size
    assert frames.shape == (1, 3, 64, 32) and torch.equal(target.masks[0, 0], torch.from_numpy(m))
    np.testing.assert_allclose(_pixels(frames[0]), upright.astype(np.float32), atol=1e-3)


def test_dataset_reads_a_video_file(tmp_path):
    from media import make_video

    make_video(tmp_path / "clip.mp4", frames=6, size=(64, 48))
    m = np.zeros((48, 64), bool)
    m[10:30, 20:40] = True
    data = {"videos": [{"id": 5, "file_name": "clip.mp4", "height": 48, "width": 64, "length": 6}],
            "annotations": [{"id": 1, "video_id": 5, "category_id": 1, "segmentations": [rle(m)] * 6}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    ds = ClipDataset(tiny_train_config(tmp_path / "train.json", tmp_path / "out", short_side=(48, 48), hflip=False))
    frames, target, vid = ds[0]
    assert vid == 5 and frames.shape == (3, 3, 64, 64) and target.masks.shape == (1, 3, 64, 64)
    assert target.masks[0, 0, 10:30, 20:40].all() and target.masks[0, 0].sum() == 400
    assert (frames[:, :, 48:] == 0).all()  # bottom padding is 0 after normalisation


def test_a_synth_mp4_dataset_reads_the_same_in_training_and_segment(tmp_path):
    """``synth --mp4`` without frames names each video's ``video_file`` (and lists file_names that
    are not there): training and ``segment --dataset`` both read the mp4 through the one reader."""
    path = synth.generate(tmp_path / "d", videos=1, seed=0, frames=4, size=(64, 96), write_frames=False,
                          write_mp4=True)
    (item,) = ytvis.videos(path)
    assert item.source == tmp_path / "d" / "videos" / f"{json.loads(path.read_text())['videos'][0]['name']}.mp4"
    ds = ClipDataset(tiny_train_config(path, tmp_path / "out", clip_frames=2, crop_size=(64, 96),
                                       short_side=(64, 64), hflip=False))
    assert ds.videos[0].media.file == item.source and ds.videos[0].length == 4
    frames, target, _ = ds[0]
    assert frames.shape == (2, 3, 64, 96) and target.masks.shape[1:] == (2, 64, 96)


def test_frame_sampling(dataset_json, tmp_path):
    ds = ClipDataset(tiny_train_config(dataset_json, tmp_path, clip_frames=3, frame_stride=2))
    rng = np.random.default_rng(0)
    assert ds.frame_indices(10, rng) in ([0, 2, 4], [1, 3, 5], [2, 4, 6], [3, 5, 7], [4, 6, 8], [5, 7, 9])
    assert ds.frame_indices(3, rng) == [0, 2, 2]  # too short: the last frame repeats
    ds = ClipDataset(tiny_train_config(dataset_json, tmp_path, clip_frames=5, sampling="range"))
    for _ in range(20):
        idx = ds.frame_indices(30, rng)
        assert idx == sorted(idx) and len(idx) == 5 and max(idx) - min(idx) <= 4


def test_dataset_errors(tmp_path):
    root = tmp_path / "d"
    path = make_dataset(root)
    data = json.loads(path.read_text())

    def write(d):
        path.write_text(json.dumps(d))
        return tiny_train_config(path, tmp_path / "out")

    (root / "v2" / "00002.png").unlink()
    with pytest.raises(DatasetError, match=r"frame 2 of video 2 is missing: .*v2/00002\.png; pass .*--image-root"):
        ClipDataset(write(data))
    data["videos"] = data["videos"][:1]
    data["annotations"] = [a for a in data["annotations"] if a["video_id"] == 1]
    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["category_id"] = 99
    with pytest.raises(DatasetError, match="annotations of categories it does not list: ids 99"):
        ClipDataset(write(bad))
    with pytest.raises(DatasetError, match="empty dataset"):
        ClipDataset(write({**data, "annotations": []}))
    with pytest.raises(DatasetError, match="empty dataset"):
        ClipDataset(write({**data, "videos": [], "annotations": []}))
    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["segmentations"] = bad["annotations"][0]["segmentations"][:2]
    with pytest.raises(DatasetError, match="annotation 1 of video 1 has 2 per-frame masks, but the video has 4"):
        ClipDataset(write(bad))
    bad = json.loads(json.dumps(data))
    bad["videos"][0]["height"] = 48
    with pytest.raises(DatasetError, match="of video 1 is 64x64, but the video is annotated as 64x48"):
        ClipDataset(write(bad))[0]
    with pytest.raises(DatasetError, match="does not exist"):
        ClipDataset(tiny_train_config(tmp_path / "nope.json", tmp_path / "out"))
    assert issubclass(DatasetError, VideoMTError)
    with pytest.raises(InputError, match="crop_size"):
        tiny_train_config(path, tmp_path, crop_size=(60, 64))
