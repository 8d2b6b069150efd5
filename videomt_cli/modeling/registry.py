"""Named models: short name -> hub repo, task, label table and inference settings. No torch.

The table lives in ``weights/registry.json`` (installed as ``videomt_cli.weights``) beside any
bundled weights, so adding a model is a data change. Three kinds of source: a bundled ``file``, a
Hugging Face ``hub`` repo (a VidEoMT folder, the DINOv2 models), or one ``hub_file`` inside a hub
repo (the official DINOv3 ``.pth`` files under ``dinov3_online/`` of ``tue-mps/VidEoMT``). An
entry's ``config`` holds what such a file cannot tell (``family``, ``norm_queries``, the training
``image_size``) and shapes to check it against; ``checkpoint.load_model`` applies it to the file,
downloaded or a local copy found by its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from videomt_cli.errors import VideoMTError
from videomt_cli.records import TASKS  # noqa: F401 - the one task list, re-exported


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    labels: str  # a dataset key of labels.json
    min_size: int
    max_num: int
    hub: str | None = None  # Hugging Face repo id
    official: str | None = None  # file name of the official .pth
    file: str | None = None  # bundled weights, relative to weights/
    description: str = ""
    hub_file: str | None = None  # a checkpoint file inside the hub repo (then hub is not a VidEoMT folder)
    config: dict = field(default_factory=dict)  # VideoMTConfig fields for checkpoint.apply_overrides

    @property
    def hub_ref(self) -> str | None:
        """What a user may type for this entry besides its name: the hub id, or repo/file."""
        if self.hub is None:
            return None
        return f"{self.hub}/{self.hub_file}" if self.hub_file else self.hub

    @property
    def bundled_path(self) -> Path | None:
        if self.file is None:
            return None
        return Path(str(resources.files("videomt_cli.weights").joinpath(self.file)))

    def source(self) -> str:
        """What ``checkpoint.load_model`` should open for this entry."""
        if self.bundled_path is not None:
            return str(self.bundled_path)
        assert self.hub is not None
        return self.hub_ref


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(resources.files("videomt_cli.weights").joinpath("registry.json").read_text())


def entries() -> list[ModelEntry]:
    return [ModelEntry(name=name, **fields) for name, fields in _table()["models"].items()]


def get(name: str) -> ModelEntry | None:
    """The entry called ``name``, or whose hub id (repo, or repo/file for a file in a repo) it is."""
    for entry in entries():
        if entry.name == name or entry.hub_ref == name:
            return entry
    return None


def by_official_name(filename: str) -> ModelEntry | None:
    """The entry of a released official file, by its file name (``yt_2019_dinov3_68.9.pth``)."""
    for entry in entries():
        if entry.official is not None and entry.official == filename:
            return entry
    return None


def default() -> ModelEntry:
    entry = get(_table()["default"])
    if entry is None:  # pragma: no cover - a broken registry.json
        raise VideoMTError("weights/registry.json names a default model that it does not list.")
    return entry


def match(source: str) -> ModelEntry | None:
    """The entry a user-given path or id refers to: by name, hub id, or official file name."""
    entry = get(source)
    if entry is not None:
        return entry
    name = Path(source).name
    for entry in entries():
        if entry.official == name or (entry.hub and not entry.hub_file and entry.hub.split("/")[-1] == name):
            return entry
    return None


def is_cached(entry: ModelEntry) -> bool:
    """True when the weights are on disk (bundled, or in the Hugging Face cache)."""
    if entry.bundled_path is not None:
        return entry.bundled_path.exists()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    found = try_to_load_from_cache(entry.hub, entry.hub_file or "model.safetensors")
    return isinstance(found, str)
