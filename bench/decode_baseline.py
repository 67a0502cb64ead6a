"""The Python baseline of bench/decode.rs: Pillow decode + torchvision
Resize((S, S), bicubic) + ToTensor + Normalize(CLIP mean/std), on the same PNG files.

Usage: python3 bench/decode_baseline.py DIR [--side 518] [--workers N]
Prints one line: `images N workers W seconds T images_per_s R`. With --workers 1 it runs in
this process with torch limited to one thread (the per-core figure); with W > 1 a
multiprocessing pool of W single-threaded processes.
"""
import argparse
import os
import sys
import time
from multiprocessing import Pool

import torch
import torchvision.transforms as T
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
_TRANSFORM = None


def init(side):
    global _TRANSFORM
    torch.set_num_threads(1)
    _TRANSFORM = T.Compose([
        T.Resize((side, side), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


def load(path):
    x = _TRANSFORM(Image.open(path).convert("RGB"))
    return float(x[0, 0, 0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--side", type=int, default=518)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    files = sorted(os.path.join(args.dir, f) for f in os.listdir(args.dir) if f.endswith(".png"))
    if not files:
        sys.exit(f"no .png files in {args.dir}")
    if args.workers == 1:
        init(args.side)
        load(files[0])
        start = time.perf_counter()
        for f in files:
            load(f)
        secs = time.perf_counter() - start
    else:
        with Pool(args.workers, initializer=init, initargs=(args.side,)) as pool:
            pool.map(load, files[: args.workers])
            start = time.perf_counter()
            pool.map(load, files, chunksize=1)
            secs = time.perf_counter() - start
    print(f"images {len(files)} workers {args.workers} seconds {secs:.4f} "
          f"images_per_s {len(files) / secs:.3f}")


if __name__ == "__main__":
    main()
