#!/usr/bin/env bash
# The no-download demo: a random tiny CLIP, a synthetic image folder, zero-shot scores and maps.
# Usage: bash tools/demo.sh [OUT_DIR]   (default: demo/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo}
cargo build --release --quiet
bin=target/release/afclip
rm -rf "$out"
"$bin" init-model --preset tiny --seed 0 --out "$out/model"
"$bin" synth --out "$out/data" --layout mvtec --categories 1 --images 16 --size 320x240 --seed 1
"$bin" score --model "$out/model" --init-seed 0 --image-size 224 --batch-size 4 \
    --save-maps png --out "$out/scores" "$out"/data/*/test
echo "scores: $out/scores/scores.csv, maps: $out/scores/maps/"
head -n 5 "$out/scores/scores.csv"
