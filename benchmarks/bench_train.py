"""Training speed of the ViT presets: windows/s for forward + backward + AdamW step, as ratios against vit_ti_16.

    python benchmarks/bench_train.py [--arch vit_mini_16 vit_ti_16] [--image-size 128 96] [--batch-size 32] [--steps 5]

Random images stand in for spectrograms (the step costs the same). The baseline, vit_ti_16 at the first
image size, is measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from acousticsense.model import build_model

BASELINE = "vit_ti_16"


def windows_per_s(arch: str, image_size: int, batch_size: int, steps: int, device: torch.device) -> float:
    """Median training throughput over ``steps`` optimiser steps, after one warm-up step."""
    torch.manual_seed(0)
    model = build_model(arch, 16, image_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 16, (batch_size,), device=device)
    times = []
    for step in range(steps + 1):
        t = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["vit_mini_16", "vit_ti_16"])
    parser.add_argument("--image-size", nargs="+", type=int, default=[128, 96])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    base = windows_per_s(BASELINE, args.image_size[0], args.batch_size, args.steps, device)
    print(f"training step on {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}")
    print(f"{'arch':<14}{'px':>5}{'windows/s':>12}{'x ' + BASELINE:>14}")
    for arch in args.arch:
        for size in args.image_size:
            rate = base if (arch, size) == (BASELINE, args.image_size[0]) else windows_per_s(arch, size, args.batch_size, args.steps, device)
            print(f"{arch:<14}{size:>5}{rate:>12.1f}{rate / base:>14.2f}")


if __name__ == "__main__":
    main()
