"""Model configuration and named presets. No torch here: the CLI and the registry read it cheaply."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from videomt_cli.errors import InputError


@dataclass(frozen=True)
class VideoMTConfig:
    """Shape of a VidEoMT network (DESIGN 2).

    The names follow the paper: C = ``hidden_size``, L = ``num_layers``, k = ``num_query_blocks``
    (the last k blocks carry the ``num_queries`` object queries), K = ``num_classes`` (the class
    head has K + 1 outputs, the last one "no object").
    """

    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 6
    num_query_blocks: int = 3
    num_queries: int = 200
    num_classes: int = 40
    image_size: int = 640  # the stored position-embedding grid is image_size // patch_size square
    patch_size: int = 16
    num_register_tokens: int = 4
    mlp_ratio: int = 4
    num_upscale_blocks: int = 2
    layer_norm_eps: float = 1e-6
    # Hugging Face checkpoints carry a learned token for masked patches; official ones do not.
    use_mask_token: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.hidden_size > 0 and self.hidden_size % self.num_heads == 0,
             f"hidden_size {self.hidden_size} must be a positive multiple of num_heads {self.num_heads}"),
            (0 < self.num_query_blocks <= self.num_layers,
             f"num_query_blocks {self.num_query_blocks} must be in 1..num_layers ({self.num_layers})"),
            (self.num_queries > 0, "num_queries must be positive"),
            (self.num_classes > 0, "num_classes must be positive"),
            (self.image_size % self.patch_size == 0,
             f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"Invalid model config: {message}.")

    @property
    def grid_size(self) -> int:
        """Side of the stored (square) position-embedding grid."""
        return self.image_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus registers, the tokens between the queries and the patches."""
        return 1 + self.num_register_tokens

    @property
    def query_start(self) -> int:
        """Index of the first block that sees the queries (L - k)."""
        return self.num_layers - self.num_query_blocks

    def replace(self, **changes) -> "VideoMTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VideoMTConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"Unknown model config keys {unknown}; expected some of {sorted(names)}.")
        return cls(**data)


PRESETS: dict[str, VideoMTConfig] = {
    # The released DINOv2 models (DESIGN 2.1); K = 40 is YouTube-VIS 2019.
    "small": VideoMTConfig(hidden_size=384, num_layers=12, num_heads=6, num_query_blocks=3),
    "base": VideoMTConfig(hidden_size=768, num_layers=12, num_heads=12, num_query_blocks=3),
    "large": VideoMTConfig(hidden_size=1024, num_layers=24, num_heads=16, num_query_blocks=4),
    # A small network that trains from scratch on the CPU in under an hour (the bundled model).
    # 8-pixel patches (one upscale block keeps the masks at stride 4): at the ~128-pixel inputs it
    # runs on, a 16-pixel patch is as large as a small object and hides its shape.
    "mini": VideoMTConfig(hidden_size=128, num_layers=6, num_heads=2, num_query_blocks=2,
                          num_queries=12, num_classes=3, image_size=128, patch_size=8, num_upscale_blocks=1),
    # Tiny seeded networks for tests and examples: same code paths, milliseconds per frame. Head
    # width 64 as in every DINOv2, so official-format files (which store no head count) round-trip.
    "tiny": VideoMTConfig(hidden_size=128, num_layers=4, num_heads=2, num_query_blocks=2,
                          num_queries=8, num_classes=5, image_size=64),
}


def preset(name: str, **overrides) -> VideoMTConfig:
    """A named preset, optionally with some fields changed: ``preset("small", num_classes=25)``."""
    key = name.lower()
    aliases = {"s": "small", "b": "base", "l": "large"}
    key = aliases.get(key, key)
    if key not in PRESETS:
        raise InputError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[key].replace(**overrides)
