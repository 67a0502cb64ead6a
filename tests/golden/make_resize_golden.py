#!/usr/bin/env python3
"""Writes the fixtures of tests/resize_golden.rs into tests/golden/resize/.

Inputs are synthetic (sharp-edged patterns with noise, and a smooth "natural-looking" scene with
noise); the expected outputs are what Pillow produces:
  - resize: Image.resize((w, h), Image.BICUBIC) on 8-bit RGB and L images, with the pass order
    of Pillow <= 12 (see pillow_resize);
  - decode/: Image.open(p).convert("RGB") and .convert("L") of several PNG/BMP/TIFF/JPEG layouts;
  - load_image: the whole preprocessing (resize + CLIP normalisation in float32 numpy), stored
    as raw little-endian float32;
  - load_mask: grey conversion, VisA "non-zero -> 255", resize, as an 8-bit PNG (value * 255).
cases.json lists everything. Run from anywhere: python3 tests/golden/make_resize_golden.py
"""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "resize"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def edges(w, h, channels, rng):
    """Checkerboard, stripes, a disc and a diagonal, all hard-edged, plus light noise."""
    y, x = np.mgrid[0:h, 0:w]
    checker = ((x // 5 + y // 4) % 2) * 200 + 20
    stripes = np.where((x % 7) < 2, 255, 0)
    disc = np.where((x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (min(w, h) * 0.3) ** 2, 240, 10)
    diag = np.where(x + 2 * y > w, 180, 40)
    planes = [checker, stripes, disc, diag]
    noise = rng.normal(0, 12, (h, w, channels))
    if channels == 1:
        base = np.where(x < w // 2, checker, np.maximum(disc, stripes))[..., None]
    else:
        base = np.stack(planes[:3], -1)
        base[: h // 3] = np.stack([diag, checker, stripes], -1)[: h // 3]
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def natural(w, h, channels, rng):
    """Smooth gradients and soft blobs with sensor-like noise (a crop of a synthetic photo)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 90 + 80 * np.sin(x / w * 3.1 + 0.5) + 30 * (y / h)
    img[..., 1] = 110 + 60 * np.cos(y / h * 4.0) * np.sin(x / w * 2.0)
    img[..., 2] = 70 + 100 * (x * y) / (w * h)
    for cx, cy, r, col in [(0.3, 0.7, 0.2, (60, -40, 30)), (0.75, 0.25, 0.15, (-50, 70, -20))]:
        blob = np.exp(-((x - cx * w) ** 2 + (y - cy * h) ** 2) / (2 * (r * w) ** 2))
        img += blob[..., None] * np.array(col)
    img += rng.normal(0, 6, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels == 1:
        return np.array(Image.fromarray(img).convert("L"))[..., None]
    return img


def to_image(arr):
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def png16(path, arr, color_type):
    """Writes a 16-bit PNG (Pillow cannot write 16-bit RGB/RGBA/LA)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[r].astype(">u2").tobytes() for r in range(h))

    def chunk(tag, data):
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    data = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def pillow_resize(src, w, h):
    """Pillow's bicubic resize (one call), and whether Pillow 13 ran the vertical pass first.

    Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
    pixels as the width (`in_h - out_h > 2 * (in_w - out_w)`), horizontal first otherwise
    (Pillow <= 12: always horizontal first). Each order is checked against two single-axis
    resizes (each one Pillow pass exactly), so the fixtures pin the order as well as the taps.
    """
    dy, dx = src.height - h, src.width - w
    vertical_first = dy > 0 and dy > 2 * dx
    if vertical_first:
        two_pass = src.resize((src.width, h), Image.BICUBIC).resize((w, h), Image.BICUBIC)
    else:
        two_pass = src.resize((w, src.height), Image.BICUBIC).resize((w, h), Image.BICUBIC)
    one_call = src.resize((w, h), Image.BICUBIC)
    assert np.array_equal(np.asarray(one_call), np.asarray(two_pass)), (src.size, w, h)
    return one_call, vertical_first


def save_f32(name, arr):
    (OUT / name).write_bytes(np.ascontiguousarray(arr, dtype="<f4").tobytes())


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    rng = np.random.default_rng(20240611)
    cases = {"resize": [], "decode": [], "load_image": [], "load_mask": []}

    # --- resize ---------------------------------------------------------------------------
    inputs = {
        "edges_rgb": (edges(64, 48, 3, rng),
                      [(24, 18), (49, 37), (96, 72), (192, 144), (20, 100), (60, 20)]),
        "natural_rgb": (natural(100, 80, 3, rng), [(37, 30), (77, 62), (51, 40), (150, 120)]),
        "edges_l": (edges(50, 70, 1, rng), [(19, 26), (38, 54), (75, 105), (150, 210), (80, 30)]),
        "natural_l": (natural(120, 120, 1, rng), [(44, 44), (92, 92), (61, 61), (180, 180), (110, 40)]),
        # The production ratio 1024 -> 518 on each axis, kept small by a thin strip.
        "strip_rgb": (natural(1024, 6, 3, rng), [(518, 4)]),
        "column_l": (edges(5, 1024, 1, rng), [(9, 518)]),
    }
    for name, (arr, sizes) in inputs.items():
        src = to_image(arr)
        src.save(OUT / f"{name}.png")
        for w, h in sizes:
            out = f"{name}_{w}x{h}.png"
            expected, vertical_first = pillow_resize(src, w, h)
            expected.save(OUT / out)
            cases["resize"].append({"input": f"{name}.png", "mode": src.mode, "width": w,
                                    "height": h, "expected": out,
                                    "pillow13_vertical_first": vertical_first})

    # --- decode ---------------------------------------------------------------------------
    w, h = 24, 16
    base = natural(w, h, 3, rng)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    decode_inputs = {}
    decode_inputs["grey8.png"] = Image.fromarray(base).convert("L")
    decode_inputs["rgba8.png"] = Image.fromarray(np.dstack([base, alpha]), "RGBA")
    decode_inputs["la8.png"] = Image.fromarray(np.dstack([base[..., 0], alpha]), "LA")
    decode_inputs["palette.png"] = Image.fromarray(base).quantize(37)
    pal_t = Image.fromarray(base).quantize(16)
    pal_t.info["transparency"] = 3
    decode_inputs["palette_trns.png"] = pal_t
    decode_inputs["bilevel.png"] = Image.fromarray(base[..., 1] > 110)
    decode_inputs["rgb.bmp"] = Image.fromarray(base)
    decode_inputs["palette.bmp"] = Image.fromarray(base).quantize(50)
    decode_inputs["rgb.tif"] = Image.fromarray(base)
    decode_inputs["grey.tif"] = Image.fromarray(base).convert("L")
    for fname, im in decode_inputs.items():
        kwargs = {"transparency": 3} if fname == "palette_trns.png" else {}
        im.save(OUT / fname, **kwargs)
    grey16 = rng.integers(0, 600, (h, w)).astype(np.uint16)
    Image.fromarray(grey16).save(OUT / "grey16.png")
    png16(OUT / "rgb16.png", rng.integers(0, 65536, (h, w, 3)), 2)
    png16(OUT / "rgba16.png", rng.integers(0, 65536, (h, w, 4)), 6)
    png16(OUT / "la16.png", rng.integers(0, 65536, (h, w, 2)), 4)
    Image.fromarray(base).save(OUT / "photo.jpg", quality=90)
    Image.fromarray(base).convert("L").save(OUT / "photo_grey.jpg", quality=90)
    for fname in list(decode_inputs) + ["grey16.png", "rgb16.png", "rgba16.png", "la16.png",
                                        "photo.jpg", "photo_grey.jpg"]:
        stem = fname.replace(".", "_")
        im = Image.open(OUT / fname)
        im.convert("RGB").save(OUT / f"{stem}.rgb.png")
        im.convert("L").save(OUT / f"{stem}.l.png")
        cases["decode"].append({"input": fname, "pillow_mode": im.mode,
                                "rgb": f"{stem}.rgb.png", "grey": f"{stem}.l.png",
                                "exact": not fname.endswith(".jpg")})

    # --- whole preprocessing ------------------------------------------------------------------
    side = 45
    resized = np.asarray(
        pillow_resize(Image.open(OUT / "natural_rgb.png").convert("RGB"), side, side)[0])
    tensor = ((resized.astype(np.float32) / np.float32(255) - MEAN) / STD).transpose(2, 0, 1)
    save_f32("natural_rgb_45.chw.f32", tensor)
    cases["load_image"].append({"input": "natural_rgb.png", "side": side,
                                "expected": "natural_rgb_45.chw.f32"})

    mask = np.zeros((70, 90), dtype=np.uint8)
    mask[10:30, 15:50] = 1
    mask[40:62, 55:80] = 2
    mask[5:8, 70:88] = 3
    pmask = Image.fromarray(mask, "P")
    pmask.putpalette([0, 0, 0, 255, 255, 255, 0, 0, 255, 10, 10, 10] + [0] * 756)
    pmask.save(OUT / "mask_visa.png")
    for side, binarise in [(37, True), (37, False), (128, True)]:
        grey = np.array(Image.open(OUT / "mask_visa.png").convert("L"))
        if binarise:
            grey = np.where(grey > 0, 255, 0).astype(np.uint8)
        out = np.asarray(pillow_resize(Image.fromarray(grey), side, side)[0])
        name = f"mask_visa_{side}_{'bin' if binarise else 'raw'}.png"
        Image.fromarray(out).save(OUT / name)
        cases["load_mask"].append({"input": "mask_visa.png", "side": side,
                                   "binarise_nonzero": binarise, "expected": name})

    (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
