"""Layer-wise lr decay groups and the two-stage warmup + poly schedule, fresh and resumed."""

from __future__ import annotations

import pytest
import torch

from videomt_cli.modeling.config import preset
from videomt_cli.modeling.model import VideoMT
from videomt_cli.training.optim import param_groups, warmup_poly_factor, warmup_poly_schedule


def test_param_groups():
    model = VideoMT(preset("tiny"))  # 4 layers
    groups = param_groups(model, lr=1.0, llrd=0.5, weight_decay=0.05)
    by_param = {id(p): g for g in groups for p in g["params"]}
    lr_of = lambda name: by_param[id(dict(model.named_parameters())[name])]["lr"]  # noqa: E731
    stage_of = lambda name: by_param[id(dict(model.named_parameters())[name])]["stage"]  # noqa: E731
    assert lr_of("blocks.3.attn.qkv.weight") == 1.0 and lr_of("blocks.0.mlp.fc1.bias") == 0.125
    assert lr_of("patch_embed.proj.weight") == 0.125 and lr_of("cls_token") == 0.125 and lr_of("norm.weight") == 1.0
    assert lr_of("class_head.weight") == 1.0 and stage_of("class_head.weight") == "head"
    assert stage_of("norm.weight") == "backbone" and stage_of("queries.weight") == "head"
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_two_stage_warmup_then_poly_decay():
    f = lambda s, stage, total=100: warmup_poly_factor(s, stage, (10, 20), total, 0.9)  # noqa: E731
    assert f(0, "head") == 0 and f(5, "head") == 0.5 and f(10, "head") == 1.0
    assert f(9, "backbone") == 0 and f(20, "backbone") == 0.5 and f(30, "backbone") == 1.0
    assert f(55, "head") == pytest.approx(0.5 ** 0.9) and f(65, "backbone") == pytest.approx(0.5 ** 0.9)
    assert f(100, "head") == 0 and f(100, "backbone") == 0

    def optimizer():
        return torch.optim.AdamW(param_groups(VideoMT(preset("tiny")), lr=1.0, llrd=0.5, weight_decay=0.05))

    opt = optimizer()
    sched = warmup_poly_schedule(opt, (10, 20), 100, 0.9)
    head = next(g for g in opt.param_groups if g["stage"] == "head")
    block0 = next(g for g in opt.param_groups if g["initial_lr"] == 0.125)
    assert head["lr"] == 0 and block0["lr"] == 0  # step 0: nothing has warmed up
    seen = []
    for _ in range(20):
        opt.step()
        sched.step()
        seen.append([g["lr"] for g in opt.param_groups])
    assert head["lr"] == pytest.approx(f(20, "head")) and block0["lr"] == pytest.approx(0.125 * f(20, "backbone"))
    assert seen[9][opt.param_groups.index(head)] == f(10, "head")  # step 10: the head at its peak

    # Resuming after 20 steps: rebuilt from the step, the very same lrs, bit for bit.
    resumed = optimizer()
    resumed.load_state_dict(opt.state_dict())
    sched2 = warmup_poly_schedule(resumed, (10, 20), 100, 0.9, done=20)
    assert [g["lr"] for g in resumed.param_groups] == seen[-1]
    resumed.step()
    sched2.step()
    opt.step()
    sched.step()
    assert [g["lr"] for g in resumed.param_groups] == [g["lr"] for g in opt.param_groups]
    # More steps than the interrupted run: the decay is re-planned over the new total.
    longer = optimizer()
    longer.load_state_dict(opt.state_dict())
    warmup_poly_schedule(longer, (10, 20), 200, 0.9, done=21)
    head2 = next(g for g in longer.param_groups if g["stage"] == "head")
    assert head2["lr"] == f(21, "head", total=200) != head["lr"]
