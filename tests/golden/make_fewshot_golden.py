#!/usr/bin/env python3
"""Golden fixture for afclip's few-shot path (AF-CLIP+, SPEC.md section 7), written from the
SPEC with the reference functions of make_golden.py (imported) on its tiny model and head
(zero_shot/openai/model.safetensors, zero_shot/head.safetensors).

    python3 tests/golden/make_fewshot_golden.py

1-shot: one fixed normal reference image (fewshot/reference.png, a defect-free texture
written here), the three zero_shot/images as test images, S = 98, layers 1,2,3,4, alpha 0.1.
  bank per (layer, scale): aggregated RAW features c of the reference, patch tokens only,
      each row L2-normalised                                        [N, d]
  A_i = mean over the 12 sets of min_b (1 - <c_i/|c_i|, b>) / 2       [n, N]
  image score = max_i A_i + alpha * p[0];  patch map = A + alpha * p[1:]
  map = bilinear upsample g -> S (align_corners False), scipy gaussian_filter sigma 4 (float32)

Outputs (fewshot/): reference.png, expected.safetensors with reference_pixels, pixels,
bank_<layer>_<r> (12), distances, image_scores, patch_maps, maps.
Deterministic: float32, one thread; rerunning rewrites identical bytes.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy.ndimage import gaussian_filter

import make_golden as mg

HERE = os.path.dirname(os.path.abspath(__file__))
ZS = os.path.join(HERE, "zero_shot")
OUT = os.path.join(HERE, "fewshot")
S = 98
LAYERS = (1, 2, 3, 4)
ALPHA = 0.1


def make_reference(path):
    """A defect-free texture like the test images (same generator style, no painted blob)."""
    rng = np.random.RandomState(4321)
    hgt, wdt = 110, 140
    yy, xx = np.mgrid[0:hgt, 0:wdt].astype(np.float64)
    chans = []
    for _ in range(3):
        fx, fy = rng.uniform(0.05, 0.3, size=2)
        ph = rng.uniform(0, 2 * np.pi)
        tex = 0.5 + 0.25 * np.sin(fx * xx + ph) * np.cos(fy * yy - ph) + 0.12 * rng.randn(hgt, wdt)
        chans.append(tex)
    img = np.clip(np.round(np.stack(chans, -1) * 255), 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path, optimize=False)


def sets(w, pixels):
    """The 12 aggregated raw token sets c, [n, N+1, d] each, layer-major then scale."""
    feats, _ = mg.vision_features(w, pixels, LAYERS)
    return [mg.aggregate(f, r) for f in feats for r in mg.SCALES]


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    w = load_file(os.path.join(ZS, "openai", "model.safetensors"))
    h = load_file(os.path.join(ZS, "head.safetensors"))
    ref_path = os.path.join(OUT, "reference.png")
    make_reference(ref_path)
    names = sorted(os.listdir(os.path.join(ZS, "images")))
    paths = [os.path.join(ZS, "images", n) for n in names]

    ref_pixels = mg.load_pixels([ref_path], S)
    pixels = mg.load_pixels(paths, S)

    banks = []
    for c in sets(w, ref_pixels):
        b = c[:, 1:].reshape(-1, c.shape[-1])
        banks.append(b / b.norm(dim=-1, keepdim=True))

    n = pixels.shape[0]
    g = S // mg.PATCH
    dist = torch.zeros(n, g * g)
    for c, b in zip(sets(w, pixels), banks):
        q = c[:, 1:]
        q = q / q.norm(dim=-1, keepdim=True)
        sim = q @ b.t()                                          # [n, N, bank rows]
        dist += (1 - sim.max(-1).values) / 2
    dist /= len(banks)

    tf = mg.text_features(w, h)
    _, _, probs, _, _ = mg.zero_shot(w, h, pixels, LAYERS, tf)
    image_scores = dist.max(1).values + ALPHA * probs[:, 0]
    patch = dist + ALPHA * probs[:, 1:]
    up = F.interpolate(patch.reshape(n, 1, g, g), size=(S, S), mode="bilinear",
                       align_corners=False)[:, 0]
    maps = np.stack([gaussian_filter(m, sigma=mg.MAP_SIGMA) for m in up.numpy().astype(np.float32)])
    assert maps.dtype == np.float32

    out = {"reference_pixels": ref_pixels, "pixels": pixels, "distances": dist,
           "image_scores": image_scores, "patch_maps": patch, "maps": torch.from_numpy(maps)}
    k = 0
    for layer in LAYERS:
        for r in mg.SCALES:
            out[f"bank_{layer}_{r}"] = banks[k]
            k += 1
    out = {k: v.contiguous().to(torch.float32) for k, v in out.items()}
    for v in out.values():
        assert torch.isfinite(v).all()
    save_file(out, os.path.join(OUT, "expected.safetensors"),
              metadata={"golden": f"S={S};layers=1,2,3,4;alpha={ALPHA};reference=reference.png;"
                                  f"images={','.join(names)}"})
    print("image scores", [round(v, 5) for v in image_scores.tolist()])
    print("distances min/max/std", dist.min().item(), dist.max().item(), dist.std().item())
    assert dist.std().item() > 1e-3, "degenerate distances"


if __name__ == "__main__":
    main()
