"""YouTube-VIS dataset files: where a dataset's frames live, and its videos as inputs. No torch.

A dataset JSON lists per video the ``file_names`` of its frames, relative to an image root that
the file does not name: the JSON's folder (``videomt synth`` datasets), ``JPEGImages`` beside it,
or ``<json stem>/JPEGImages`` (the official layout: ``train.json`` + ``train/JPEGImages``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from videomt_cli.errors import DatasetError


def load(path: str | Path) -> dict:
    """A YouTube-VIS dataset JSON as a dict; a clear error when it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"Dataset annotation file {path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise DatasetError(f"{path} is not a YouTube-VIS annotation file: it needs a 'videos' list.")
    return data


def image_root(json_path: str | Path, given: str | Path | None, videos: list[dict]) -> Path:
    """The folder the ``file_names`` are relative to: ``given``, else the first candidate that holds
    the first video's first frame (see the module docstring), else the JSON's folder."""
    if given is not None:
        return Path(given).expanduser()
    json_path = Path(json_path)
    here = json_path.parent
    candidates = [here, here / "JPEGImages", here / json_path.stem / "JPEGImages"]
    first = next((v for v in videos if v.get("file_names") or v.get("file_name")), None)
    if first is not None:
        rel = first["file_names"][0] if first.get("file_names") else first["file_name"]
        for root in candidates:
            if (root / rel).exists():
                return root
    return here


@dataclass
class DatasetVideo:
    """One video of a dataset, ready for ``Predictor.run``: a frame folder or a video file."""

    id: int
    source: Path
    length: int


def videos(json_path: str | Path, root: str | Path | None = None) -> list[DatasetVideo]:
    """Every video of a dataset as an input. A frame folder must hold exactly the listed frames
    (in natural order), so results line up with the dataset's frames one to one."""
    from videomt_cli import video  # lazily: PyAV

    data = load(json_path)
    base = image_root(json_path, root, data["videos"])
    out = []
    for v in data["videos"]:
        vid = v.get("id")
        names = v.get("file_names")
        if names:
            files = [base / n for n in names]
            missing = next((f for f in files if not f.exists()), None)
            if missing is not None:
                raise DatasetError(f"Frame {missing} of video {vid} is missing (image root {base}); "
                                   f"pass --image-root.")
            folder = files[0].parent
            listed = [p.name for p in sorted(folder.iterdir(), key=lambda p: video.natural_key(p.name))
                      if p.suffix.lower() in video.IMAGE_EXTENSIONS and not p.name.startswith(".")]
            if listed != [f.name for f in files] or any(f.parent != folder for f in files):
                raise DatasetError(f"Video {vid}: the folder {folder} holds other frames than its "
                                   f"file_names list; videomt segment --dataset needs one folder per "
                                   f"video holding exactly its frames.")
            out.append(DatasetVideo(id=vid, source=folder, length=len(files)))
        elif v.get("file_name") or v.get("video_file"):
            path = base / (v.get("file_name") or v.get("video_file"))
            if not path.exists():
                raise DatasetError(f"The video file of video {vid} is missing: {path}.")
            out.append(DatasetVideo(id=vid, source=path, length=int(v.get("length") or 0)))
        else:
            raise DatasetError(f"Video {vid} has neither 'file_names' (frames) nor 'file_name' (a video file).")
    if not out:
        raise DatasetError(f"{json_path} lists no videos.")
    return out
