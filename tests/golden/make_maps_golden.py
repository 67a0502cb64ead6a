#!/usr/bin/env python3
"""Writes the fixtures of the anomaly-map test in tests/cpu_ops.rs into tests/golden/maps/.

Each case is one safetensors file holding float32 tensors:
  patch [B, g, g]  random patch probabilities in [0, 1) (seeded numpy),
  sigma [1]        the Gaussian sigma,
  maps  [B, S, S]  what the official pipeline gives: torch F.interpolate(patch[:, None], (S, S),
                   mode="bilinear", align_corners=False), then scipy.ndimage.gaussian_filter(
                   map, sigma) per image on the float32 numpy array (scipy defaults: truncate 4,
                   mode "reflect").
The cases cover the real 37x37 grid, a side smaller than the filter radius (repeated
reflection), a non-integer scale, a downsample, a 1-pixel side and sigma 0 (no filter).
Run from anywhere: python3 tests/golden/make_maps_golden.py
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from scipy.ndimage import gaussian_filter

OUT = Path(__file__).resolve().parent / "maps"

# name, batch, grid, side, sigma
CASES = [
    ("grid37_side111_sigma4", 1, 37, 111, 4.0),
    ("grid3_side10_sigma4", 2, 3, 10, 4.0),
    ("grid5_side7_sigma1.5", 1, 5, 7, 1.5),
    ("grid6_side4_sigma2", 1, 6, 4, 2.0),
    ("grid2_side1_sigma4", 1, 2, 1, 4.0),
    ("grid4_side9_sigma0", 1, 4, 9, 0.0),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, batch, grid, side, sigma) in enumerate(CASES):
        rng = np.random.default_rng(1000 + i)
        patch = rng.random((batch, grid, grid), dtype=np.float32)
        up = F.interpolate(
            torch.from_numpy(patch)[:, None], size=(side, side), mode="bilinear", align_corners=False
        )[:, 0].numpy()
        maps = np.stack([gaussian_filter(m, sigma=sigma) for m in up]).astype(np.float32)
        assert maps.dtype == np.float32 and maps.shape == (batch, side, side)
        save_file(
            {"patch": patch, "sigma": np.array([sigma], dtype=np.float32), "maps": maps},
            str(OUT / f"{name}.safetensors"),
        )
        print(name, maps.shape)


if __name__ == "__main__":
    main()
