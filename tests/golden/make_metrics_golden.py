#!/usr/bin/env python3
"""Golden cases for afclip's metrics (SPEC §9), computed by the reference procedures.

Writes tests/golden/metrics/:
  <case>.npy        maps of a pixel case, float32, shape (N*H, W) (N maps of H x W stacked)
  <case>_masks.png  their masks, 8-bit grey, 0 = normal, 255 = anomalous, same layout
  expected.json     {"pixel": {case: {n, h, w, auroc, ap, max_f1, pro, aupro_exact}},
                     "image": {case: {scores, labels, auroc, ap, max_f1}}}
A metric the reference cannot compute (one class, constant maps, too few thresholds, ...)
is null.

Reference procedures:
  AUROC, AP, max-F1: scikit-learn roc_auc_score, average_precision_score and
    precision_recall_curve with max 2PR/(P+R+1e-16), on the flattened pixels.
  PRO: the AF-CLIP/AnomalyCLIP `compute_pro` loop, verbatim apart from pandas: thresholds
    np.arange(min, max, (max-min)/200) on the float32 maps, binary = amaps > th,
    skimage.measure.label (8-connectivity) + regionprops, statistics.mean over regions,
    FPR < 0.3 kept, FPR / max(FPR), sklearn.metrics.auc.
  aupro_exact: the MVTec AD evaluation code (compute_pro + trapezoid(x_max=0.3) / 0.3), in
    float64, regions from skimage.measure.label(connectivity=2).

Run from the repository root: python3 tests/golden/make_metrics_golden.py
"""

import json
import os
import statistics
from bisect import bisect

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage import measure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics")


def ranking(scores, labels):
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return None, None, None
    auroc = roc_auc_score(labels, scores)
    ap = average_precision_score(labels, scores)
    p, r, _ = precision_recall_curve(labels, scores)
    f1 = 2 * (p * r) / (p + r + 1e-16)
    return float(auroc), float(ap), float(np.max(f1))


def official_pro(masks, amaps, num_th=200):
    """AF-CLIP's compute_pro (util/utils.py) with the pandas frame replaced by lists."""
    binary_amaps = np.zeros_like(amaps, dtype=bool)
    min_th = amaps.min()
    max_th = amaps.max()
    delta = (max_th - min_th) / num_th
    rows = []
    for th in np.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th] = 0
        binary_amaps[amaps > th] = 1
        pros = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                axes0_ids = region.coords[:, 0]
                axes1_ids = region.coords[:, 1]
                tp_pixels = binary_amap[axes0_ids, axes1_ids].sum()
                pros.append(tp_pixels / region.area)
        inverse_masks = 1 - masks
        fp_pixels = np.logical_and(inverse_masks, binary_amaps).sum()
        fpr = fp_pixels / inverse_masks.sum()
        rows.append((statistics.mean(pros), fpr, th))
    pro = np.array([r[0] for r in rows], dtype=np.float64)
    fpr = np.array([r[1] for r in rows], dtype=np.float64)
    keep = fpr < 0.3
    fpr = fpr[keep]
    fpr = fpr / fpr.max()
    return auc(fpr, pro[keep])


def pro_or_none(masks, amaps):
    if amaps.min() == amaps.max():
        return None  # np.arange(x, x, 0) raises
    try:
        with np.errstate(all="ignore"):
            v = float(official_pro(masks, amaps))
    except (ValueError, statistics.StatisticsError):
        return None  # no regions, or fewer than 2 kept thresholds
    return None if np.isnan(v) else v


def mvtec_trapezoid(x, y, x_max):
    x = np.asarray(x)
    y = np.asarray(y)
    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x = x[mask]
    y = y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def aupro_exact(masks, amaps, limit=0.3):
    """MVTec AD compute_pro (float64) + trapezoid up to FPR `limit`, divided by `limit`."""
    fp_changes = np.zeros(amaps.shape, dtype=np.float64)
    pro_changes = np.zeros(amaps.shape, dtype=np.float64)
    n_ok = 0
    n_regions = 0
    for i, gt in enumerate(masks):
        labeled = measure.label(gt, connectivity=2)
        n = labeled.max()
        n_regions += n
        ok = labeled == 0
        n_ok += ok.sum()
        fp_changes[i][ok] = 1
        for k in range(n):
            region = labeled == (k + 1)
            pro_changes[i][region] = 1.0 / region.sum()
    if n_ok == 0 or n_regions == 0:
        return None
    flat = amaps.ravel().astype(np.float64)
    order = np.argsort(flat, kind="mergesort")[::-1]
    s = flat[order]
    fprs = np.cumsum(fp_changes.ravel()[order]) / n_ok
    pros = np.cumsum(pro_changes.ravel()[order]) / n_regions
    keep = np.append(np.diff(s) != 0, True)
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    fprs = np.concatenate(([0.0], fprs, [1.0]))
    pros = np.concatenate(([0.0], pros, [1.0]))
    return float(mvtec_trapezoid(fprs, pros, limit) / limit)


def ellipse(h, w, cy, cx, ry, rx):
    y, x = np.mgrid[0:h, 0:w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def blob_masks(rng, n, h, w, p_anomalous=0.6, max_blobs=3):
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        if rng.random() < p_anomalous:
            for _ in range(rng.integers(1, max_blobs + 1)):
                m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h / 4), rng.uniform(1, w / 4))
                masks[i][m] = 1
    return masks


def smooth_maps(rng, masks, sigma=2.0, signal=0.6):
    raw = rng.random(masks.shape).astype(np.float32) + signal * masks.astype(np.float32)
    return np.stack([gaussian_filter(m, sigma=sigma) for m in raw]).astype(np.float32)


def pixel_cases(rng):
    cases = {}
    # Smooth maps with blob defects, as the real pipeline produces (gaussian-filtered).
    m = blob_masks(rng, 8, 48, 48)
    cases["smooth_blobs"] = (smooth_maps(rng, m, sigma=4.0), m)
    # Independent random scores: nearly every value distinct.
    m = blob_masks(rng, 6, 40, 40)
    cases["random_continuous"] = ((rng.random(m.shape) + 0.3 * m).astype(np.float32), m)
    # Heavy ties: 6 score levels, signed values.
    m = blob_masks(rng, 6, 32, 32)
    cases["random_ties"] = ((rng.integers(0, 6, m.shape) - 2.0 + 1.5 * m) / 4.0).astype(np.float32), m
    # Integer scores 0..400: many pixels sit exactly on an np.arange threshold.
    m = blob_masks(rng, 5, 32, 32)
    cases["on_thresholds"] = (np.clip(rng.integers(0, 401, m.shape) + 60 * m, 0, 400).astype(np.float32), m)
    # Constant maps: ranking at chance, PRO undefined.
    m = blob_masks(rng, 4, 24, 24, p_anomalous=1.0)
    cases["constant_maps"] = (np.full(m.shape, 0.25, dtype=np.float32), m)
    # Tiny regions: isolated single pixels and 2-pixel diagonals.
    m = (rng.random((5, 32, 32)) < 0.03).astype(np.uint8)
    cases["tiny_regions"] = ((rng.random(m.shape) + 0.5 * m).astype(np.float32), m)
    # Regions touching the borders and corners, and regions joined only diagonally.
    m = np.zeros((4, 30, 36), dtype=np.uint8)
    m[0, 0:5, 0:4] = 1
    m[0, 25:30, 30:36] = 1
    m[1, 10:20, 0] = 1
    m[1, 0, 10:30] = 1
    m[2, 29, :] = 1
    m[2, :, 35] = 1
    for k in range(8):
        m[3, 5 + k, 5 + k] = 1  # one diagonal region of 8 pixels
        m[3, 5 + k, 20 - k] = 1  # crossing anti-diagonal: joins it
    m[3, 28:30, 0:2] = 1
    cases["border_regions"] = (smooth_maps(rng, m, sigma=1.5, signal=0.4), m)
    # Normal images mixed in, plus one image that is entirely anomalous.
    m = blob_masks(rng, 6, 28, 28, p_anomalous=0.5)
    m[2] = 1
    cases["mixed_full_mask"] = (smooth_maps(rng, m, sigma=1.0), m)
    # All masks empty: every pixel metric undefined.
    m = np.zeros((3, 20, 20), dtype=np.uint8)
    cases["empty_masks"] = (rng.random(m.shape).astype(np.float32), m)
    # Anomalous pixels score lowest, normal pixels high: FPR >= 0.3 at almost every threshold.
    m = blob_masks(rng, 4, 24, 24, p_anomalous=1.0)
    cases["few_kept_thresholds"] = ((1.0 - m + 0.01 * rng.random(m.shape)).astype(np.float32), m)
    # A min/max pair for which np.arange gives 201 thresholds instead of 200.
    m = blob_masks(rng, 4, 24, 24, p_anomalous=1.0)
    t = smooth_maps(rng, m, sigma=1.0).astype(np.float64)
    t = (t - t.min()) / (t.max() - t.min())
    while True:
        lo = np.float32(rng.uniform(-2, 2))
        hi = np.float32(lo + np.float32(rng.uniform(0.1, 5)))
        if len(np.arange(lo, hi, (hi - lo) / 200)) == 201:
            break
    maps = np.clip((lo + t * (float(hi) - float(lo))).astype(np.float32), lo, hi)
    maps.flat[np.argmin(t)] = lo
    maps.flat[np.argmax(t)] = hi
    cases["arange_201"] = (maps, m)
    # A range of a few float32 ulps: every np.arange threshold equals the minimum.
    m = blob_masks(rng, 3, 20, 20, p_anomalous=1.0)
    ulps = np.clip(rng.integers(0, 12, m.shape) + 4 * m, 0, 15).astype(np.float32)
    cases["narrow_range"] = (np.float32(1000.0) + ulps * np.float32(2.0**-14), m)
    # Perfect separation.
    m = blob_masks(rng, 4, 24, 24, p_anomalous=1.0)
    cases["perfect"] = ((0.2 * rng.random(m.shape) + m).astype(np.float32), m)
    return cases


def image_cases(rng):
    cases = {}
    labels = rng.random(60) < 0.4
    cases["random"] = (np.round(rng.random(60) + 0.3 * labels, 6), labels)
    labels = rng.random(80) < 0.5
    cases["ties"] = (np.round(rng.integers(0, 5, 80) * 0.25 + 0.25 * labels, 2), labels)
    labels = np.array([True] * 10 + [False] * 10)
    cases["perfect"] = (np.round(np.linspace(1.0, 0.0, 20), 6), labels)
    cases["all_equal"] = (np.full(20, 0.5), labels)
    cases["one_class"] = (np.round(rng.random(10), 6), np.ones(10, dtype=bool))
    return cases


def main():
    rng = np.random.default_rng(20240604)
    os.makedirs(OUT, exist_ok=True)
    expected = {"pixel": {}, "image": {}}
    for name, (maps, masks) in pixel_cases(rng).items():
        maps = np.ascontiguousarray(maps, dtype=np.float32)
        masks = (masks > 0).astype(np.uint8)
        n, h, w = maps.shape
        np.save(os.path.join(OUT, f"{name}.npy"), maps.reshape(n * h, w))
        Image.fromarray(masks.reshape(n * h, w) * 255, mode="L").save(os.path.join(OUT, f"{name}_masks.png"))
        auroc, ap, f1 = ranking(maps.ravel(), masks.ravel())
        expected["pixel"][name] = {
            "n": n, "h": h, "w": w,
            "auroc": auroc, "ap": ap, "max_f1": f1,
            "pro": pro_or_none(masks, maps),
            "aupro_exact": aupro_exact(masks, maps),
        }
        print(name, expected["pixel"][name])
    for name, (scores, labels) in image_cases(rng).items():
        auroc, ap, f1 = ranking(scores, labels)
        expected["image"][name] = {
            "scores": [float(s) for s in scores], "labels": [bool(x) for x in labels],
            "auroc": auroc, "ap": ap, "max_f1": f1,
        }
        print(name, auroc, ap, f1)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
