"""Write a random VidEoMT checkpoint in the official .pth format, for trying convert and verify offline.

    python examples/make_checkpoint.py demo.pth --preset small
    videomt convert demo.pth -o demo_hf/
    videomt verify --ckpt demo_hf/

The weights are random (seeded): the model computes real VidEoMT math but segments nothing useful.
"""

from __future__ import annotations

import argparse

import torch

from videomt_cli.modeling import checkpoint
from videomt_cli.modeling import config
from videomt_cli.modeling.model import VideoMT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="where to write the .pth")
    parser.add_argument("--preset", default="tiny", choices=sorted(config.PRESETS), help="network size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = VideoMT(config.preset(args.preset))
    with torch.no_grad():  # move LayerScale/LayerNorm off identity so every stage is exercised
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    checkpoint.save_official(model, args.output)
    print(f"wrote {args.output} ({args.preset}, {sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
