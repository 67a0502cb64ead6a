#!/usr/bin/env bash
# End-to-end archive scoring (issue 8): `afclip score` over an archive of N 1024² PNGs (default
# 10,000, ~2 MB each: 200 distinct synthetic textures copied to N real files in 100 folders),
# with the random tiny CLIP at 224 px (decode and I/O dominate), then M of them (default 100)
# with a random full-size ViT-L/14@336 at 518 px. Prints images/s and peak RSS.
# Usage: bash bench/archive.sh [WORK_DIR] [N] [M]     (needs ~22 GB free for N = 10,000)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/afclip-bench-archive}
n=${2:-10000}
m=${3:-100}
cargo build --release --quiet
bin=$PWD/target/release/afclip
mkdir -p "$work"
if [ ! -f "$work/archive.done.$n" ]; then
    rm -rf "$work/src" "$work/archive"
    "$bin" synth --out "$work/src" --layout mvtec --categories 1 --images 200 --size 1024x1024 --seed 7
    mapfile -t pngs < <(find "$work/src" -path '*/test/*' -name '*.png' | sort)
    for ((i = 0; i < n; i++)); do
        d="$work/archive/$(printf '%03d' $((i / 100)))"
        [ -d "$d" ] || mkdir -p "$d"
        cp "${pngs[$((i % ${#pngs[@]}))]}" "$d/$(printf '%05d' "$i").png"
    done
    sync
    touch "$work/archive.done.$n"
fi
du -sh "$work/archive"
[ -d "$work/tiny" ] || "$bin" init-model --preset tiny --out "$work/tiny"
run() {
    local label=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$work/rss" "$bin" score "$@" || [ $? -eq 3 ]
    t1=$(date +%s.%N)
    python3 -c "import sys; n, t, rss = int(sys.argv[1]), float(sys.argv[2]) - float(sys.argv[3]), int(sys.argv[4]); print(f'| {sys.argv[5]} | {n} | {t:.1f} s | {n / t:.2f} | {t / n:.2f} | {rss / 1024:.0f} MiB |')" \
        "$count" "$t1" "$t0" "$(cat "$work/rss")" "$label" >> "$work/table"
}
: > "$work/table"
count=$n
rm -rf "$work/out-tiny"
run "tiny CLIP @224, f32, batch 8" --model "$work/tiny" --init-seed 0 --image-size 224 \
    --batch-size 8 --out "$work/out-tiny" "$work/archive"
[ -d "$work/vit-l" ] || "$bin" init-model --preset vit-l-14-336 --out "$work/vit-l"
mkdir -p "$work/subset"
find "$work/archive" -name '*.png' | sort | sed -n "1,${m}p" | while read -r f; do
    ln -f "$f" "$work/subset/$(basename "$f")"
done
count=$m
for p in f32 bf16; do
    rm -rf "$work/out-l-$p"
    run "ViT-L/14@336 @518, $p, batch 4" --model "$work/vit-l" --init-seed 0 --precision "$p" \
        --batch-size 4 --out "$work/out-l-$p" "$work/subset"
done
echo
echo "| workload | images | wall | images/s | s/image | peak RSS |"
echo "|---|---|---|---|---|---|"
cat "$work/table"
