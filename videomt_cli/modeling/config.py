"""Model configuration and named presets. No torch here: the CLI and the registry read it cheaply."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from videomt_cli.errors import InputError


FAMILIES = ("dinov2", "dinov3")
FAMILY_LAYER_NORM_EPS = {"dinov2": 1e-6, "dinov3": 1e-5}


@dataclass(frozen=True)
class VideoMTConfig:
    """Shape of a VidEoMT network (DESIGN 2).

    The names follow the paper: C = ``hidden_size``, L = ``num_layers``, k = ``num_query_blocks``
    (the last k blocks carry the ``num_queries`` object queries), K = ``num_classes`` (the class
    head has K + 1 outputs, the last one "no object").

    ``family`` picks the backbone (DESIGN 2.1 and 2.5): ``"dinov2"`` has a learned absolute
    position embedding stored for an ``image_size`` square grid and biases on q, k and v;
    ``"dinov3"`` has none (2-D rotary embeddings on the patch tokens, ``rope_theta``) and no key
    bias. For DINOv3 ``image_size`` stores no weights: it is the square training size, which
    ``videomt verify`` uses as its default. The defaults are the DINOv2 models, so every config
    written before DINOv3 existed reads back unchanged.
    """

    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 6
    num_query_blocks: int = 3
    num_queries: int = 200
    num_classes: int = 40
    image_size: int = 640  # dinov2: the stored position-embedding grid is image_size // patch_size square
    patch_size: int = 16
    num_register_tokens: int = 4
    mlp_ratio: int = 4
    num_upscale_blocks: int = 2
    # The backbone's LayerNorms (norm1, norm2, the final norm). None: the family's own value,
    # 1e-6 for DINOv2 (timm) and 1e-5 for DINOv3 (transformers' DINOv3ViTConfig).
    layer_norm_eps: float | None = None
    # The LayerNorm2d of the upscale blocks: timm's 1e-6 in both families (official scale_block.py).
    upscale_norm_eps: float = 1e-6
    # Hugging Face checkpoints carry a learned token for masked patches; official ones do not.
    use_mask_token: bool = False
    family: str = "dinov2"
    rope_theta: float = 100.0  # dinov3 only: the rotary embedding's base period
    # Propagate the query tokens after the final LayerNorm instead of the raw ones (official
    # NORM_QUERIES; True in the VIPSeg and VSPW DINOv3 configs, False everywhere else).
    norm_queries: bool = False

    def __post_init__(self) -> None:
        if self.layer_norm_eps is None:  # frozen: resolve the family default once, here
            object.__setattr__(self, "layer_norm_eps", FAMILY_LAYER_NORM_EPS.get(self.family, 1e-6))
        head_dim = self.hidden_size // max(self.num_heads, 1)
        checks = [
            (self.family in FAMILIES, f"family {self.family!r} must be one of {', '.join(FAMILIES)}"),
            (self.family != "dinov3" or head_dim % 4 == 0,
             f"a DINOv3 head width (hidden_size / num_heads = {head_dim}) must be a multiple of 4 for its 2-D "
             f"rotary embedding"),
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
    # The released DINOv3 models (DESIGN 2.5): ViT-L, 640 for YouTube-VIS (VIPSeg and VSPW: 1280,
    # 124 classes, norm_queries=True; the registry sets those).
    "large-dinov3": VideoMTConfig(hidden_size=1024, num_layers=24, num_heads=16, num_query_blocks=4,
                                  family="dinov3"),
    "tiny-dinov3": VideoMTConfig(hidden_size=128, num_layers=4, num_heads=2, num_query_blocks=2,
                                 num_queries=8, num_classes=5, image_size=64, family="dinov3"),
}


def preset(name: str, **overrides) -> VideoMTConfig:
    """A named preset, optionally with some fields changed: ``preset("small", num_classes=25)``."""
    key = name.lower()
    aliases = {"s": "small", "b": "base", "l": "large"}
    key = aliases.get(key, key)
    if key not in PRESETS:
        raise InputError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[key].replace(**overrides)
