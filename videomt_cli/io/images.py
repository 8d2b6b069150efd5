"""The one image loader (inference, training and datasets alike) and image-folder naming. No torch.

EXIF orientation is applied to the pixels everywhere: a phone JPEG stored sideways with an
orientation tag is read upright, so training and inference see the same picture.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from videomt_cli.errors import VideoError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``frame2`` < ``frame10``."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def image_names(folder: str | os.PathLike) -> list[str]:
    """The frame images of a folder (jpg, jpeg, png, bmp, webp; hidden files left out), in natural order."""
    p = Path(folder)
    return sorted(
        (f.name for f in p.iterdir()
         if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()),
        key=natural_key,
    )


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, EXIF orientation applied. ``VideoError`` if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise VideoError(f"cannot read image {path} ({e}): replace or remove that file.") from None
