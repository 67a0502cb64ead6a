#!/usr/bin/env python3
"""Golden fixture for one AF-CLIP training step (SPEC section 8), written from SPEC with torch
autograd providing the gradients. Reuses the tiny CLIP and head of zero_shot/ and the reference
forward functions of make_golden.py.

    python3 tests/golden/make_train_golden.py     (after make_golden.py; writes under train/)

Data (train/data/mvtec/widget, MVTec layout): 4 test images, 2 with a painted defect and its
mask (soft-edged, so the bicubic resize yields grey levels), 2 normal; the texture is
blocks of random colour and the defect flat grey, so that the alignment loss is not clamped. One batch of all 4 in
dataset order (sorted paths: crack/000, crack/001, good/000, good/001), S = 98 (grid 7),
layers 1,2,3,4, windows 1,3,5. Loss = FL(p0, y) + FL(P, M) + L1(P, M) + Lpal (lambda = 1);
Adam lr 1e-4, betas (0.5, 0.999), eps 1e-8, one step.

Outputs (train/expected.safetensors): `losses` [5] = total, image focal, patch focal, patch L1,
alignment; `grad.<name>` and `updated.<name>` for every head tensor; `masks` [4, 49] (the
downsampled, binarised ground truth).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as G  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = os.path.join(HERE, "train")
S, LAYERS, GAMMA = 98, (1, 2, 3, 4), 4
LR, BETAS, EPS = 1e-4, (0.5, 0.999), 1e-8


def make_data(root):
    rng = np.random.RandomState(77)
    cat = os.path.join(root, "mvtec", "widget")
    files = []
    for folder, k, defect in (("crack", 0, True), ("crack", 1, True), ("good", 0, False),
                              ("good", 1, False)):
        wdt, hgt = 120, 100
        yy, xx = np.mgrid[0:hgt, 0:wdt].astype(np.float64)
        # Blocks of random colour (patch-sized): normal patches differ from each other.
        blocks = rng.uniform(0, 1, size=(hgt // 10 + 1, wdt // 10 + 1, 3))
        img = blocks[(yy // 10).astype(int), (xx // 10).astype(int)]
        img = img + 0.03 * rng.randn(hgt, wdt, 3)
        d = os.path.join(cat, "test", folder)
        os.makedirs(d, exist_ok=True)
        name = f"{k:03d}.png"
        if defect:
            cx, cy = rng.uniform(0.3, 0.7) * wdt, rng.uniform(0.3, 0.7) * hgt
            ax, ay = rng.uniform(0.15, 0.3) * wdt, rng.uniform(0.15, 0.3) * hgt
            rr = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
            blob = np.clip(2.0 - 1.5 * rr, 0, 1)
            img = img * (1 - blob[..., None]) + 0.5 * blob[..., None]
            md = os.path.join(cat, "ground_truth", folder)
            os.makedirs(md, exist_ok=True)
            Image.fromarray(np.round(blob * 255).astype(np.uint8), "L").save(
                os.path.join(md, f"{k:03d}_mask.png"))
        img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
        Image.fromarray(img, "RGB").save(os.path.join(d, name))
        files.append((os.path.join(d, name),
                      os.path.join(cat, "ground_truth", folder, f"{k:03d}_mask.png")
                      if defect else None))
    return sorted(files)


def load_mask(path):
    if path is None:
        return torch.zeros(S, S)
    m = Image.open(path).convert("L").resize((S, S), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(m, dtype=np.uint8).copy()).to(torch.float32) / 255.0


def downsample(masks, g):
    m = F.interpolate(masks[:, None], size=(g, g), mode="bilinear", align_corners=False)[:, 0]
    m[m < 0.5] = 0
    m[m > 0.5] = 1
    return m.reshape(masks.shape[0], g * g)


def focal_loss(p, t):
    ce = F.binary_cross_entropy(p, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    return (ce * ((1 - p_t) ** GAMMA)).mean()


def patch_alignment(zs, M):
    if not (M == 0).any():
        return torch.zeros(())
    lab = torch.where(M == 0, torch.full_like(M, -1.0), M)
    mask = lab[:, :, None] * lab[:, None, :]
    total = 0
    for z in zs:
        zn = z[:, 1:] / z[:, 1:].norm(dim=-1, keepdim=True)
        sim = zn @ zn.transpose(1, 2)
        neg = sim[mask == -1].mean() if (mask == -1).any() else torch.zeros(())
        pos = sim[mask == 1].mean()
        total = total + torch.clamp(neg - pos, min=0)
    return total / len(zs)


def main():
    zs_dir = os.path.join(HERE, "zero_shot")
    w = load_file(os.path.join(zs_dir, "openai", "model.safetensors"))
    head = load_file(os.path.join(zs_dir, "head.safetensors"))
    names = sorted(head)
    params = {k: head[k].clone().requires_grad_(True) for k in names}

    files = make_data(os.path.join(OUT, "data"))
    pixels = G.load_pixels([f for f, _ in files], S)
    g = S // G.PATCH
    M = downsample(torch.stack([load_mask(m) for _, m in files]), g)
    y = torch.tensor([1.0 if m is not None else 0.0 for _, m in files])

    feats, _ = G.vision_features(w, pixels, LAYERS)
    tf = G.text_features(w, params)
    logits, zs = 0, []
    for f in feats:
        for r in G.SCALES:
            c = G.aggregate(f, r)
            z = G.layer_norm(G.adaptor(c, params), w["visual.ln_post.weight"],
                             w["visual.ln_post.bias"]) @ w["visual.proj"]
            zs.append(z)
            zn = z / z.norm(dim=-1, keepdim=True)
            logits = logits + (zn @ tf.t()) / G.TEMPERATURE
    probs = logits.softmax(-1)[..., 1]
    fl_img = focal_loss(probs[:, 0], y)
    P = probs[:, 1:]
    fl_patch = focal_loss(P, M)
    l1 = F.l1_loss(P, M)
    pal = patch_alignment(zs, M)
    loss = fl_img + (fl_patch + l1) + pal
    loss.backward()

    opt = torch.optim.Adam([params[k] for k in names], lr=LR, betas=BETAS, eps=EPS)
    opt.step()

    out = {"losses": torch.stack([loss, fl_img, fl_patch, l1, pal]).detach().to(torch.float32),
           "masks": M.contiguous()}
    for k in names:
        out["grad." + k] = params[k].grad.detach().contiguous()
        out["updated." + k] = params[k].detach().contiguous()
    save_file(out, os.path.join(OUT, "expected.safetensors"),
              metadata={"golden": f"S={S};layers=1,2,3,4;batch=4;lr={LR}"})
    print("losses (total, image FL, patch FL, L1, alignment):",
          [round(v, 6) for v in out["losses"].tolist()])
    print("mask values:", sorted(set(M.flatten().tolist())))
    print("probs range:", float(probs.detach().min()), float(probs.detach().max()))


if __name__ == "__main__":
    main()
