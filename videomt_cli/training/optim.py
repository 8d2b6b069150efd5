"""The optimiser side of a training step: AdamW groups with layer-wise lr decay, EoMT's two-stage
warmup + polynomial decay (a ``LambdaLR`` with one lambda per group), and the step itself.

Official facts followed (tue-mps/videomt ``configs/ytvis19/...``,
``videomt/modeling/two_stage_warmup_poly_schedule.py``), each a ``TrainConfig`` default:

- AdamW, lr 1e-4, weight decay 0.05 on every parameter (no exclusions).
- Layer-wise lr decay 0.6 in every released DINOv2 VidEoMT config (the code default and EoMT's is
  0.8): block i of L gets lr * llrd^(L-1-i), the query blocks included; the patch embedding,
  position embedding and CLS/register tokens get block 0's rate; the final norm and everything
  VidEoMT adds (queries, query updater, heads, upscaler) the full lr.
- Two-stage warmup [500, 1000]: the added parameters warm up linearly over the first 500 steps
  while the ViT (final norm included) stays at 0, then the ViT warms up over the next 1000; each
  group then decays as (1 - progress)^0.9 over its remaining steps.
- Gradient clipping: the configs ask for full-model L2-norm clipping at 0.01 (EoMT's value too).
  Note: ``train_net_video.py`` overrides ``build_optimizer`` without detectron2's clipping wrapper,
  so the released models were probably trained without it; set ``grad_clip=0`` for that.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from videomt_cli.modeling.model import VideoMT

_EMBEDDING_PARAMS = {"patch_embed", "cls_token", "reg_token", "pos_embed", "mask_token"}


def param_groups(model: VideoMT, lr: float, llrd: float, weight_decay: float) -> list[dict]:
    """AdamW groups with layer-wise lr decay; ``stage`` says which warmup a group follows.

    ViT ("backbone" stage): block i gets lr * llrd^(L-1-i), the embeddings block 0's rate, the final
    norm the full lr. Everything VidEoMT adds ("head" stage): the full lr.
    """
    L = model.config.num_layers
    groups: dict[tuple[str, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        top = name.split(".")[0]
        if top == "blocks":
            stage, rate = "backbone", lr * llrd ** (L - 1 - int(name.split(".")[1]))
        elif top in _EMBEDDING_PARAMS:
            stage, rate = "backbone", lr * llrd ** (L - 1)
        elif top == "norm":
            stage, rate = "backbone", lr
        else:
            stage, rate = "head", lr
        groups.setdefault((stage, rate), []).append(param)
    return [{"params": ps, "lr": rate, "stage": stage, "weight_decay": weight_decay}
            for (stage, rate), ps in groups.items()]


def warmup_poly_factor(step: int, stage: str, warmup: tuple[int, int], total: int, power: float) -> float:
    """The two-stage warmup + polynomial decay multiplier of a group's base lr at ``step`` (0-based)."""
    first, second = warmup
    if stage == "head":
        if first > 0 and step < first:
            return step / first
        done, span = step - first, total - first
    else:
        if step < first:
            return 0.0
        if step < first + second:
            return (step - first) / second
        done, span = step - first - second, total - first - second
    return max(0.0, 1.0 - max(0, done) / max(1, span)) ** power


def warmup_poly_schedule(optimizer: torch.optim.Optimizer, warmup: tuple[int, int], total_steps: int,
                         power: float, done: int = 0) -> LambdaLR:
    """EoMT's schedule over ``param_groups``: the "head" groups warm up first, then the "backbone"
    groups; both decay. ``done`` steps already taken (a resumed run): the schedule is a pure
    function of the step, so it is rebuilt, never loaded, and a changed ``total_steps`` re-plans
    the decay. The optimiser's groups then hold the lr of step ``done``."""
    lambdas = [partial(warmup_poly_factor, stage=g["stage"], warmup=tuple(warmup), total=total_steps, power=power)
               for g in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas, last_epoch=done - 1)


def optimizer_step(loss: Tensor, params, optimizer, scheduler, scaler, grad_clip: float) -> None:
    """Backward, optional full-model gradient clipping, optimiser and schedule step (the grad scaler
    unscales first, so clipping sees true gradients under fp16)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
