"""VidEoMT in plain PyTorch: a DINOv2 or DINOv3 ViT whose last k blocks carry object queries.

Reading order (DESIGN 2):

1. ``embed``       frames -> tokens ``[CLS, registers, patches]``; DINOv2 adds its position
                   embeddings, resampled to the frame's patch grid. DINOv3 adds none: its
                   position is ``rotary(grid)``, 2-D rotary tables that every block applies to
                   the q and k of the patch tokens (DESIGN 2.5).
2. ``encode``      the first L - k blocks, every frame of a chunk in one batch.
3. ``decode_step`` one frame through the last k blocks with the queries prepended; the queries
                   come from the previous frame's output through ``query_updater`` (propagation).
4. ``predict``     final LayerNorm'd tokens -> class logits and mask logits (stride 4).

The only state that crosses frames is the query tokens leaving the last block (raw, or after the
final LayerNorm with ``config.norm_queries``), one tensor of shape (B, Q, C).
``outputs, state = model(frames, state)`` therefore gives the same numbers whether a video is fed
in one call or in chunks of any size.

This module imports only torch and the config, on purpose: it is the file to read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomt_cli.modeling.config import VideoMTConfig
from videomt_cli.errors import InputError


@dataclass
class VideoMTOutput:
    """Per-frame predictions of one call, batch-major.

    class_logits: (B, T, Q, K + 1), the last class is "no object".
    mask_logits:  (B, T, Q, H/4, W/4) for frames of size (H, W).
    """

    class_logits: Tensor
    mask_logits: Tensor


# --------------------------------------------------------------------------- building blocks


@dataclass
class Rotary:
    """DINOv3's 2-D rotary position embedding for one patch grid (DESIGN 2.5).

    cos, sin: (N, d) for the N = h * w patches (row-major) and the head width d. Patch (i, j) has
    its centre at y = 2 (i + 0.5) / h - 1, x = 2 (j + 0.5) / w - 1, so every grid spans [-1, 1]
    on both axes and any input size works without resampling anything. The angles of a head are
    2 pi * [y * f, x * f] over the d / 4 frequencies f = theta^(-4 m / d), m = 0 .. d/4 - 1,
    repeated twice (one copy per half of the head, for ``rotate_half``).
    """

    cos: Tensor
    sin: Tensor
    # Per number of prefix tokens: the first halves of cos / sin with rows (1, 0) for the prefix.
    _padded: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def for_grid(cls, grid: tuple[int, int], head_dim: int, theta: float, device=None) -> "Rotary":
        h, w = grid
        # transformers' DINOv3ViTRopePositionEmbedding computes the same numbers in this order,
        # in float32; the tables are cast to the activations' dtype when applied.
        inv_freq = 1 / theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32, device=device)  # (d/4,)
        ys = torch.arange(0.5, h, dtype=torch.float32, device=device) / h
        xs = torch.arange(0.5, w, dtype=torch.float32, device=device) / w
        centres = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)  # (N, 2) as (y, x)
        centres = 2.0 * centres - 1.0
        angles = 2 * math.pi * centres[:, :, None] * inv_freq[None, None, :]  # (N, 2, d/4)
        angles = angles.flatten(1, 2).tile(2)  # (N, d): [y freqs, x freqs] twice
        return cls(torch.cos(angles), torch.sin(angles))

    @property
    def num_patches(self) -> int:
        return self.cos.shape[0]

    def rotate(self, x: Tensor) -> Tensor:
        """x: (B, heads, tokens, d) -> the same shape, contiguous. The last N tokens (the patches)
        are rotated; the tokens before them (queries, CLS, registers) come out unchanged, bit for bit.

        With halves x1, x2 of each head and c, s the tables' first halves (the second halves are the
        same numbers): [x1 c - x2 s, x2 c + x1 s], which is x cos + rotate_half(x) sin. The prefix
        tokens use c = 1, s = 0, so the token axis is never split and re-joined, and the one
        ``cat`` leaves the result contiguous, the layout the attention kernel runs fastest on.
        """
        prefix = x.shape[-2] - self.num_patches
        if prefix < 0:
            raise InputError(f"{x.shape[-2]} tokens cannot hold the {self.num_patches} patches of these rotary tables.")
        key = (prefix, x.dtype)
        if key not in self._padded:
            half = self.cos.shape[1] // 2
            ones = torch.ones(prefix, half, dtype=self.cos.dtype, device=self.cos.device)
            c = torch.cat((ones, self.cos[:, :half])).to(x.dtype)
            s = torch.cat((torch.zeros_like(ones), self.sin[:, :half])).to(x.dtype)
            self._padded[key] = (c, s)
        c, s = self._padded[key]  # (tokens, d/2), broadcast over batch and heads
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with one fused q, k, v projection (rows q, k, v as in timm).

    DINOv2 (``key_bias=True``): ``qkv`` has a bias for all three. DINOv3 has no key bias, so
    ``qkv`` has none and the q and v biases are the parameters ``q_bias`` and ``v_bias`` (the key
    part of the fused bias is zero). ``rotary`` (DINOv3) rotates the patch tokens' q and k.
    """

    def __init__(self, dim: int, num_heads: int, key_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=key_bias)
        if key_bias:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        else:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rotary: Rotary | None = None) -> Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        B, N, C = x.shape
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(B, N, 3, self.num_heads, C // self.num_heads)
        if rotary is None:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, C/heads)
        else:  # q and k rotated in one go, as (B, 2 * heads, N, C/heads): q's heads, then k's
            qk = rotary.rotate(qkv[:, :, :2].flatten(2, 3).transpose(1, 2))
            q, k = qk.split(self.num_heads, dim=1)
            v = qkv[:, :, 2].transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block with LayerScale: x += ls1 * attn(norm1(x)); x += ls2 * mlp(norm2(x)).

    The same block for both families; DINOv3's differs only in its attention (no key bias, and
    the ``rotary`` tables for the patch tokens) and its LayerNorm eps (in the config).
    """

    def __init__(self, cfg: VideoMTConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(dim, cfg.num_heads, key_bias=cfg.family == "dinov2")
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, dim * cfg.mlp_ratio)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor, rotary: Rotary | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rotary))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VideoMTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3, H, W) -> (N, H/p * W/p, C), patches row-major."""
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (N, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Upscale(nn.Module):
    """x2 upsampling: ConvTranspose 2x2/2 -> GELU -> depthwise 3x3 (no bias) -> LayerNorm2d."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.norm = LayerNorm2d(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv2(F.gelu(self.conv1(x))))


def resample_pos_embed(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Resize a square grid of position embeddings to ``grid`` = (h, w).

    pos_embed: (1, G*G, C) -> (1, h*w, C). Bicubic with antialiasing, computed in float32 and
    cast back (timm ``resample_abs_pos_embed`` semantics); returned as is when the grid matches.
    """
    _, n, dim = pos_embed.shape
    side = int(round(n**0.5))
    if (side, side) == tuple(grid):
        return pos_embed
    square = pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    resized = F.interpolate(square, size=grid, mode="bicubic", antialias=True, align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos_embed.dtype)


# --------------------------------------------------------------------------- the network


class VideoMT(nn.Module):
    """The whole VidEoMT network; parameters are named close to the official (DINOv2) checkpoint
    keys, for both families (``checkpoint`` maps DINOv3's names)."""

    def __init__(self, config: VideoMTConfig):
        super().__init__()
        self.config = cfg = config
        dim = cfg.hidden_size
        # Backbone (DINOv2 or DINOv3 with registers, patch 16).
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        if cfg.family == "dinov2":
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid_size**2, dim))
        else:  # DINOv3: positions are rotary, computed from each input's grid (``rotary``)
            self.register_parameter("pos_embed", None)
        if cfg.use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        else:
            self.mask_token = None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        # EoMT query stage, heads and the VidEoMT propagation.
        self.queries = nn.Embedding(cfg.num_queries, dim)
        self.query_updater = nn.Linear(dim, dim)
        self.class_head = nn.Linear(dim, cfg.num_classes + 1)
        self.mask_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        self.upscale = nn.Sequential(*(Upscale(dim, cfg.upscale_norm_eps) for _ in range(cfg.num_upscale_blocks)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init for training from scratch and for tests (checkpoints overwrite it)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.queries.weight, std=1.0)

    # ------------------------------------------------------------------- stages

    def embed(self, pixels: Tensor, patch_mask: Tensor | None = None) -> Tensor:
        """Stage 1. pixels (N, 3, H, W), patch_mask (N, H/p * W/p) bool or None
        -> tokens (N, 1 + R + H/p * W/p, C) in the order [CLS, registers, patches].

        DINOv2 adds its position embeddings to the patches (CLS and registers get none); DINOv3
        adds nothing here (see ``rotary``)."""
        p = self.config.patch_size
        grid = (pixels.shape[-2] // p, pixels.shape[-1] // p)
        x = self.patch_embed(pixels.to(self.patch_embed.proj.weight.dtype))
        if patch_mask is not None:
            x = torch.where(patch_mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        if self.pos_embed is not None:
            x = x + resample_pos_embed(self.pos_embed, grid)
        n = x.shape[0]
        return torch.cat([self.cls_token.expand(n, -1, -1), self.reg_token.expand(n, -1, -1), x], dim=1)

    def rotary(self, grid: tuple[int, int]) -> Rotary | None:
        """The rotary tables of a (h, w) patch grid for DINOv3, None for DINOv2 (whose position is
        in ``embed``). Pass the result to ``encode`` and ``decode_step`` for frames of that grid."""
        cfg = self.config
        if cfg.family != "dinov3":
            return None
        return Rotary.for_grid(grid, cfg.hidden_size // cfg.num_heads, cfg.rope_theta, self.cls_token.device)

    def _check_rotary(self, rotary: Rotary | None, tokens: Tensor) -> None:
        if self.config.family == "dinov3":
            if rotary is None:
                raise InputError("A DINOv3 VidEoMT needs the rotary tables of the frames' patch grid: pass "
                                 "model.rotary((H // patch, W // patch)) to encode / decode_step.")
            patches = tokens.shape[1] - self.config.num_prefix_tokens
            if rotary.num_patches != patches:
                raise InputError(f"The rotary tables cover {rotary.num_patches} patches but the tokens hold "
                                 f"{patches}; build them with model.rotary(grid) for these frames' grid.")

    def encode(self, tokens: Tensor, rotary: Rotary | None = None) -> Tensor:
        """Stage 2. The first L - k blocks, frames independent: (N, P, C) -> (N, P, C).
        ``rotary``: ``self.rotary(grid)`` (DINOv3 only)."""
        self._check_rotary(rotary, tokens)
        for block in self.blocks[: self.config.query_start]:
            tokens = block(tokens, rotary)
        return tokens

    def initial_queries(self, batch_size: int) -> Tensor:
        """The query tokens of a video's first frame: exactly the learned queries, (B, Q, C)."""
        return self.queries.weight.unsqueeze(0).expand(batch_size, -1, -1)

    def decode_step(self, tokens: Tensor, state: Tensor | None,
                    rotary: Rotary | None = None) -> tuple[Tensor, Tensor]:
        """Stage 3. One frame through the last k blocks.

        tokens: (B, P, C) of this frame after ``encode``; state: (B, Q, C) query tokens of the
        previous frame as they left the last block (after the final LayerNorm if
        ``config.norm_queries``), or None for a video's first frame; ``rotary`` as for ``encode``.
        Returns (normed (B, Q + P, C) after the final LayerNorm, new state (B, Q, C)).
        """
        self._check_rotary(rotary, tokens)
        if state is None:
            queries = self.initial_queries(tokens.shape[0])
        else:
            # A state kept in another dtype (fp32 saved from an fp32 run, then a bf16 model) still works.
            queries = self.query_updater(state.to(self.queries.weight.dtype)) + self.queries.weight
        x = torch.cat([queries.to(tokens.dtype), tokens], dim=1)
        for block in self.blocks[self.config.query_start :]:
            x = block(x, rotary)  # the queries come first: rotary leaves them (and CLS, registers) alone
        normed = self.norm(x)
        out = normed if self.config.norm_queries else x
        # clone: a view would keep the whole (B, Q + P, C) token tensor alive between calls.
        return normed, out[:, : self.config.num_queries].clone()

    def predict(self, normed: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Stage 4. normed (M, Q + P, C) -> class logits (M, Q, K + 1), mask logits (M, Q, 4h, 4w)."""
        cfg = self.config
        queries = normed[:, : cfg.num_queries]
        patches = normed[:, cfg.num_queries + cfg.num_prefix_tokens :]
        pixel_features = self.upscale(patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid))
        mask_embed = self.mask_head(queries)
        mask_logits = torch.einsum("mqc,mchw->mqhw", mask_embed, pixel_features)
        return self.class_head(queries), mask_logits

    # ------------------------------------------------------------------- forward

    def forward(
        self, frames: Tensor, state: Tensor | None = None, patch_mask: Tensor | None = None
    ) -> tuple[VideoMTOutput, Tensor]:
        """Run a chunk of frames of B videos, continuing from ``state``.

        frames: (B, T, 3, H, W) normalised pixels, H and W multiples of the patch size (one frame
            of each video is T = 1; :meth:`step` takes (B, 3, H, W)).
        state: (B, Q, C) from the previous call on the same videos, or None at a video's start.
        patch_mask: optional bool mask of patches to replace by the mask token (True = masked), as
            (B, T, N), (B * T, N) video-major or (B, T, H/p, W/p) (N = H/p * W/p patches per
            frame, row-major). Only models with a mask token (Hugging Face checkpoints) take one.
        Returns (VideoMTOutput with (B, T, ...) tensors, new state (B, Q, C)).
        """
        video = self._check_frames(frames)
        B, T, _, H, W = video.shape
        p = self.config.patch_size
        grid = (H // p, W // p)
        self._check_state(state, B)
        mask = None if patch_mask is None else self._flatten_patch_mask(patch_mask, B, T, grid)

        rotary = self.rotary(grid)  # DINOv3: one set of tables for the whole chunk; DINOv2: None
        tokens = self.encode(self.embed(video.flatten(0, 1), mask), rotary)  # (B*T, P, C), video-major
        tokens = tokens.unflatten(0, (B, T))
        normed = []
        for t in range(T):
            out, state = self.decode_step(tokens[:, t], state, rotary)
            normed.append(out)
        # The heads do not feed back into the recurrence, so they run once for the whole chunk.
        class_logits, mask_logits = self.predict(torch.stack(normed, 1).flatten(0, 1), grid)
        output = VideoMTOutput(class_logits.unflatten(0, (B, T)), mask_logits.unflatten(0, (B, T)))
        return output, state

    def step(self, frame: Tensor, state: Tensor | None = None,
             patch_mask: Tensor | None = None) -> tuple[VideoMTOutput, Tensor]:
        """One frame of each of B videos: frame (B, 3, H, W), patch_mask (B, N) or (B, H/p, W/p).
        Returns (VideoMTOutput with class logits (B, Q, K + 1) and mask logits (B, Q, H/4, W/4),
        new state (B, Q, C)); the same numbers as ``forward`` with T = 1."""
        if not isinstance(frame, Tensor) or frame.ndim != 4:
            got = tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__
            raise InputError(f"step takes one frame per video, (B, 3, H, W); got {got}. Use the model itself "
                             f"for (B, T, 3, H, W) chunks.")
        if patch_mask is not None and isinstance(patch_mask, Tensor):
            B, p = frame.shape[0], self.config.patch_size
            h, w = frame.shape[-2] // p, frame.shape[-1] // p
            layouts = {(B, h * w): "(B, N)", (B, h, w): "(B, H/p, W/p)"}
            if tuple(patch_mask.shape) not in layouts:
                expected = " or ".join(f"{name} = {s}" for s, name in layouts.items())
                raise InputError(f"patch_mask has shape {tuple(patch_mask.shape)}, expected {expected} for one "
                                 f"frame of B={B} videos with a {h}x{w} patch grid.")
            patch_mask = patch_mask.unsqueeze(1)
        output, state = self(frame.unsqueeze(1), state, patch_mask)
        return VideoMTOutput(output.class_logits[:, 0], output.mask_logits[:, 0]), state

    # ------------------------------------------------------------------- input checks

    def _check_frames(self, frames: Tensor) -> Tensor:
        if not isinstance(frames, Tensor):
            raise InputError(f"frames must be a torch.Tensor, got {type(frames).__name__}.")
        if frames.ndim == 4:
            # (T, 3, H, W) would otherwise run as T independent first frames without a word.
            raise InputError(
                f"frames must be (B, T, 3, H, W) (videos, frames, RGB, height, width); got 4-D "
                f"{tuple(frames.shape)}. Add the video axis (frames[None] for one video's clip), or call "
                f"model.step(frames, state) for one frame of each of B videos."
            )
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise InputError(f"frames must be (B, T, 3, H, W) with 3 RGB channels; got shape {tuple(frames.shape)}.")
        if not frames.is_floating_point():
            # uint8 frames would run, silently, on unnormalised pixels and give garbage.
            raise InputError(
                f"frames must be normalised floating-point pixels, got {frames.dtype}; use "
                f"videomt_cli.inference.preprocess to resize, normalise and pad them."
            )
        p = self.config.patch_size
        H, W = frames.shape[-2:]
        if H % p or W % p or H == 0 or W == 0:
            raise InputError(
                f"Frame size {H}x{W} is not a positive multiple of the patch size {p}; pad the frames "
                f"(videomt_cli.inference.preprocess pads to a multiple of 32)."
            )
        if frames.shape[0] == 0 or frames.shape[1] == 0:
            raise InputError(f"frames has an empty batch or time axis: shape {tuple(frames.shape)}.")
        return frames

    def _check_state(self, state: Tensor | None, batch_size: int) -> None:
        if state is None:
            return
        expected = (batch_size, self.config.num_queries, self.config.hidden_size)
        if not isinstance(state, Tensor):
            raise InputError(
                f"state must be a torch.Tensor of shape {expected} or None, got {type(state).__name__}."
            )
        if tuple(state.shape) != expected:
            raise InputError(
                f"state has shape {tuple(state.shape)}, expected {expected} (B, Q, C); pass the state "
                f"returned by the previous call on the same videos, or None at a video's start."
            )

    def _flatten_patch_mask(self, mask: Tensor, B: int, T: int, grid: tuple[int, int]) -> Tensor:
        """Any accepted mask layout -> (B * T, N) bool, or an InputError naming both shapes."""
        if self.mask_token is None:
            raise InputError(
                "This model has no mask token (official checkpoints carry none), so it cannot take a "
                "patch mask; use a Hugging Face-format checkpoint with embeddings.mask_token."
            )
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise InputError(f"patch_mask must be a bool tensor, got {got}.")
        h, w = grid
        n = h * w
        shape = tuple(mask.shape)
        layouts = {(B, T, n): "(B, T, N)", (B * T, n): "(B*T, N)", (B, T, h, w): "(B, T, H/p, W/p)"}
        if shape not in layouts:
            expected = " or ".join(f"{name} = {s}" for s, name in layouts.items())
            raise InputError(
                f"patch_mask has shape {shape}, expected {expected} for frames with B={B}, T={T} and "
                f"a {h}x{w} patch grid (N = {n})."
            )
        return mask.reshape(B * T, n).to(self.cls_token.device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
