#!/usr/bin/env python3
"""Baseline for `cargo bench --bench forward`: the same zero-shot workload in PyTorch fp32.

Uses the independent PyTorch implementation of SPEC in tests/golden/make_golden.py (vision
tower, 3-scale aggregation, adaptor, scores, maps) on random ViT-L/14@336-sized weights at
518 px, with torch's own CPU GEMMs, and prints seconds per image for batch 1 and 4. The text
features are computed once outside the timing, as afclip does.

Run: python3 bench/torch_forward.py [--threads N] [--batches 1,4] [--size 518]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "golden"))
import make_golden as ref  # noqa: E402


def random_vision(d=1024, layers=24, patch=14, grid=24, embed=768, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = lambda *shape, std=0.02: torch.randn(*shape, generator=g) * std  # noqa: E731
    w = {
        "visual.class_embedding": n(d, std=0.5),
        "visual.positional_embedding": n(grid * grid + 1, d, std=0.5),
        "visual.conv1.weight": n(d, 3, patch, patch, std=(3 * patch * patch) ** -0.5),
        "visual.ln_pre.weight": 1 + n(d), "visual.ln_pre.bias": n(d),
        "visual.ln_post.weight": 1 + n(d), "visual.ln_post.bias": n(d),
        "visual.proj": n(d, embed, std=d ** -0.5),
    }
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        w.update({
            p + "ln_1.weight": 1 + n(d), p + "ln_1.bias": n(d),
            p + "attn.in_proj_weight": n(3 * d, d, std=d ** -0.5), p + "attn.in_proj_bias": n(3 * d),
            p + "attn.out_proj.weight": n(d, d, std=0.5 * d ** -0.5), p + "attn.out_proj.bias": n(d),
            p + "ln_2.weight": 1 + n(d), p + "ln_2.bias": n(d),
            p + "mlp.c_fc.weight": n(4 * d, d, std=d ** -0.5), p + "mlp.c_fc.bias": n(4 * d),
            p + "mlp.c_proj.weight": n(d, 4 * d, std=0.5 * (4 * d) ** -0.5), p + "mlp.c_proj.bias": n(d),
        })
    h = {
        "adaptor.attention.norm.weight": torch.ones(d), "adaptor.attention.norm.bias": torch.zeros(d),
        "adaptor.attention.attn.to_q.weight": n(512, d, std=d ** -0.5),
        "adaptor.attention.attn.to_k.weight": n(512, d, std=d ** -0.5),
        "adaptor.attention.attn.to_v.weight": n(512, d, std=d ** -0.5),
        "adaptor.attention.attn.to_out.0.weight": n(d, 512, std=512 ** -0.5),
        "adaptor.attention.attn.to_out.0.bias": n(d),
    }
    tf = torch.nn.functional.normalize(n(2, embed, std=1.0), dim=-1)
    return w, h, tf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--size", type=int, default=518)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h, tf = random_vision()
    layers = [6, 12, 18, 24]
    print(f"torch {torch.__version__}, {args.threads} threads, ViT-L/14@336 at {args.size} px")
    print("| workload | batch | s/image |")
    print("|---|---|---|")
    with torch.inference_mode():
        warm = torch.randn(1, 3, args.size, args.size)
        ref.zero_shot(w, h, warm, layers, tf)
        for b in [int(x) for x in args.batches.split(",")]:
            px = torch.randn(b, 3, args.size, args.size)
            t0 = time.perf_counter()
            ref.zero_shot(w, h, px, layers, tf)
            dt = time.perf_counter() - t0
            print(f"| PyTorch fp32 (SPEC reference) zero-shot @{args.size} | {b} | {dt / b:.2f} |")


if __name__ == "__main__":
    main()
