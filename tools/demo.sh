#!/usr/bin/env bash
# The no-download demo (afclip demo): a random tiny CLIP, a synthetic dataset, a head trained on
# some categories, held-out categories evaluated before and after training, heatmaps, report.
# Usage: bash tools/demo.sh [OUT_DIR]   (default: demo/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo}
cargo build --release --quiet
bin=target/release/afclip
rm -rf "$out"
"$bin" demo --out "$out"
echo "report: $out/report.md, heatmaps: $out/heatmaps/, head: $out/head.safetensors"
