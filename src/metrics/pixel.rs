//! Pixel-level metrics of one category: AUROC, AP, max-F1, PRO and `aupro_exact`, exactly,
//! without sorting a copy of the pixels.
//!
//! Input: `n` maps (row-major f32, `h_i x w_i`) with masks of the same shape (non-zero =
//! anomalous). Every metric is a function of the pixels' tie groups in descending score order
//! (see `ranking`, `aupro`) and, for PRO, of per-threshold histograms (see `pro`).
//!
//! Passes, each parallel over images (split into one contiguous range per thread):
//! 1. survey: check shapes and finiteness, min/max, class counts, and a histogram of the
//!    anomalous pixels over the top 16 bits of their order key (`keys::key32`).
//! 2. per key window (usually one; several only when the anomalous pixels would not fit the
//!    memory budget): (a) label the masks' 8-connected regions, bin every pixel for the
//!    200-threshold PRO (first window only) and collect the anomalous pixels' keys with their
//!    region area — as `key << 32 | area` pairs in one exactly sized buffer, or, for a
//!    2^16-key bucket too dense for pairs, per-key counters; the pairs are radix-sorted and
//!    compacted in place into the distinct anomalous keys `d[j]` with counts and region
//!    weights `Σ 1/area`; (b) per image, radix-sort the normal pixels' keys and merge them
//!    into `d` (galloping search), counting normal pixels equal to `d[j]` and strictly
//!    between `d[j-1]` and `d[j]` (atomic counters); (c) sweep the window's groups in
//!    descending order into the ranking and AUPRO accumulators.
//!
//! Memory beyond the inputs: per window about 15% of the maps' bytes at most (24 bytes per
//! collected anomalous pixel, ~3 MiB per dense bucket), plus two 4-byte keys per pixel of one
//! image per thread. Integer counts are exact; the f64 region-weight sums are deterministic
//! for a given thread count (their order, hence the last bits, follows the image ranges).

use super::aupro::AuproSweep;
use super::keys::{key32, radix_sort};
use super::pro::{ProHistogram, ProThresholds};
use super::ranking::RankSweep;
use super::regions::Regions;
use super::report::PixelMetrics;
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// One anomaly map with its ground-truth mask (both row-major `height x width`).
#[derive(Clone, Copy, Debug)]
pub struct PixelImage<'a> {
    pub scores: &'a [f32],
    pub mask: &'a [u8],
    pub height: usize,
    pub width: usize,
}

const BUCKET_BITS: u32 = 16;
const BUCKETS: usize = 1 << BUCKET_BITS;
const LOW_MASK: u32 = (1 << BUCKET_BITS) - 1;
/// Bytes per collected anomalous pixel: pair + sort scratch, then distinct arrays + counters.
const BYTES_PER_PAIR: usize = 24;
const MIN_WINDOW_BYTES: usize = 16 << 20;

/// Pixel metrics of one category; `what` names it in warnings (one class only, undefined
/// PRO). Errors on a shape mismatch or a non-finite score.
pub fn pixel_metrics(
    images: &[PixelImage<'_>],
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<PixelMetrics> {
    let total: usize = images.iter().map(|im| im.height * im.width).sum();
    let threads = rayon::current_num_threads().max(1);
    let limits = Limits {
        window_bytes: MIN_WINDOW_BYTES.max(total.saturating_mul(4) * 3 / 20),
        dense_bytes: BUCKETS * (12 * threads + BYTES_PER_PAIR),
    };
    pixel_metrics_within(images, what, warnings, limits)
}

/// Memory limits of the collect pass: bytes per window, and the cost of one dense bucket
/// (buckets whose pairs would cost more are counted densely).
#[derive(Clone, Copy, Debug)]
struct Limits {
    window_bytes: usize,
    dense_bytes: usize,
}

fn pixel_metrics_within(
    images: &[PixelImage<'_>],
    what: &str,
    warnings: &mut Vec<String>,
    limits: Limits,
) -> Result<PixelMetrics> {
    let total: u64 = images.iter().map(|im| (im.height * im.width) as u64).sum();
    if total >= u32::MAX as u64 {
        bail!(
            "{what}: {total} pixels; at most {} are supported",
            u32::MAX - 1
        );
    }
    let threads = rayon::current_num_threads().max(1);
    let ranges = partition(images, threads);
    let surveys = ranges
        .par_iter()
        .map(|r| survey(images, r.clone()))
        .collect::<Result<Vec<_>>>()?;
    let mut survey = Survey::new();
    for s in &surveys {
        survey.absorb(s);
    }
    if survey.n_pos == 0 || survey.n_neg == 0 {
        warnings.push(format!(
            "{what}: pixel metrics undefined: {} anomalous and {} normal pixels \
             (both classes are needed)",
            survey.n_pos, survey.n_neg
        ));
        return Ok(PixelMetrics::default());
    }
    let thresholds = ProThresholds::new(survey.min, survey.max);
    let windows = plan(&survey.pos_hist, limits);

    let buffers = KeyBuffers::new(threads);
    let mut states: Vec<RangeState> = ranges.iter().map(|_| RangeState::default()).collect();
    let mut store = WindowStore::new(windows.iter().map(|w| w.capacity(&survey.pos_hist)).max());
    let mut rank = RankSweep::new(survey.n_pos, survey.n_neg);
    let mut aupro: Option<AuproSweep> = None;
    let mut n_regions = 0u64;
    let mut pro_hist: Option<ProHistogram> = None;
    for (w, window) in windows.iter().enumerate() {
        let pro_grid = if w == 0 { thresholds.as_ref() } else { None };
        // Each image range fills its own slice of the pair buffer.
        let counts: Vec<usize> = surveys
            .iter()
            .map(|s| window.pair_count(&s.pos_hist))
            .collect();
        let mut slices = Vec::with_capacity(counts.len());
        let mut rest = &mut store.pairs[..counts.iter().sum()];
        for &c in &counts {
            let (head, tail) = rest.split_at_mut(c);
            slices.push(head);
            rest = tail;
        }
        let parts = ranges
            .par_iter()
            .zip(slices)
            .zip(states.par_iter_mut())
            .map(|((r, out), state)| {
                collect_anomalous(images, r.clone(), window, pro_grid, out, state)
            })
            .collect::<Vec<_>>();
        if w == 0 {
            n_regions = parts.iter().map(|p| p.n_regions).sum::<u64>();
            pro_hist = pro_grid.map(|g| {
                let mut h = ProHistogram::new(g);
                for ph in parts.iter().filter_map(|p| p.pro.as_ref()) {
                    h.merge(ph);
                }
                h
            });
        }
        let d = store.distinct(counts.iter().sum(), &mut states, window);
        count_normal(images, window, &store, d, &buffers);
        let aupro = aupro.get_or_insert_with(|| AuproSweep::new(survey.n_neg, n_regions));
        let mut push = |pos: u64, neg: u64, weight: f64| {
            rank.push(pos, neg);
            aupro.push(neg, weight);
        };
        let below = |j: usize| store.slots[j][BELOW].load(Ordering::Relaxed) as u64;
        push(0, below(d), 0.0);
        for j in (0..d).rev() {
            let eq = store.slots[j][EQ].load(Ordering::Relaxed) as u64;
            let count = store.pairs[j] as u32 as u64;
            push(count, eq, store.weight[j]);
            push(0, below(j), 0.0);
        }
    }

    let mut undefined = |name: &str, why: String| {
        warnings.push(format!("{what}: {name} undefined: {why}"));
    };
    let ranking = rank.finish();
    let aupro_exact = aupro.and_then(AuproSweep::finish);
    if aupro_exact.is_none() {
        undefined("aupro_exact", "no ground-truth regions".into());
    }
    let pro = match &pro_hist {
        Some(h) => h.pro(n_regions, survey.n_neg),
        None => Err(format!(
            "every score equals {} (np.arange gives no thresholds)",
            survey.min
        )),
    };
    let pro = pro.map_err(|why| undefined("PRO", why)).ok();
    Ok(PixelMetrics {
        auroc: ranking.map(|r| r.auroc),
        ap: ranking.map(|r| r.ap),
        max_f1: ranking.map(|r| r.max_f1),
        pro,
        aupro_exact,
    })
}

/// Splits the images into `parts` contiguous ranges of about equal pixel count.
fn partition(images: &[PixelImage<'_>], parts: usize) -> Vec<Range<usize>> {
    let total: usize = images.iter().map(|im| im.height * im.width).sum();
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut acc) = (0, 0usize);
    for (i, im) in images.iter().enumerate() {
        acc += im.height * im.width;
        if acc * parts >= total * (out.len() + 1) && out.len() + 1 < parts {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    out.push(start..images.len());
    out
}

/// Pass 1 result for a range of images.
struct Survey {
    min: f32,
    max: f32,
    n_pos: u64,
    n_neg: u64,
    /// Anomalous pixels per top-16-bit key bucket.
    pos_hist: Vec<u64>,
}

impl Survey {
    fn new() -> Self {
        Survey {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            n_pos: 0,
            n_neg: 0,
            pos_hist: vec![0; BUCKETS],
        }
    }

    fn absorb(&mut self, other: &Survey) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.n_pos += other.n_pos;
        self.n_neg += other.n_neg;
        for (a, b) in self.pos_hist.iter_mut().zip(&other.pos_hist) {
            *a += b;
        }
    }
}

fn survey(images: &[PixelImage<'_>], range: Range<usize>) -> Result<Survey> {
    let mut s = Survey::new();
    for i in range {
        let im = &images[i];
        let n = im.height * im.width;
        if im.scores.len() != n || im.mask.len() != n {
            bail!(
                "image {i}: {}x{} map with {} scores and {} mask pixels",
                im.height,
                im.width,
                im.scores.len(),
                im.mask.len()
            );
        }
        let (mut mn, mut mx) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut n_pos = 0u64;
        let mut finite = true;
        for (&v, &m) in im.scores.iter().zip(im.mask) {
            finite &= v.is_finite();
            mn = mn.min(v);
            mx = mx.max(v);
            if m != 0 {
                n_pos += 1;
                s.pos_hist[(key32(v) >> BUCKET_BITS) as usize] += 1;
            }
        }
        if !finite {
            let at = im.scores.iter().position(|v| !v.is_finite()).unwrap_or(0);
            bail!(
                "image {i}: score {} at row {}, column {} is not finite",
                im.scores[at],
                at / im.width.max(1),
                at % im.width.max(1)
            );
        }
        s.min = s.min.min(mn);
        s.max = s.max.max(mx);
        s.n_pos += n_pos;
        s.n_neg += n as u64 - n_pos;
    }
    Ok(s)
}

/// A range of keys `lo..=hi` handled in one collect/count pass; `heavy` lists (ascending) the
/// buckets counted densely per key instead of collected as pairs.
struct Window {
    lo: u32,
    hi: u32,
    heavy: Vec<usize>,
}

impl Window {
    /// Entries the window store needs: its pairs, plus every key of its dense buckets.
    fn capacity(&self, pos_hist: &[u64]) -> usize {
        self.pair_count(pos_hist) + self.heavy.len() * BUCKETS
    }

    /// Anomalous pixels of this window that are collected as pairs (not densely counted).
    fn pair_count(&self, pos_hist: &[u64]) -> usize {
        let (first, last) = (
            (self.lo >> BUCKET_BITS) as usize,
            (self.hi >> BUCKET_BITS) as usize,
        );
        let all: u64 = pos_hist[first..=last].iter().sum();
        let dense: u64 = self.heavy.iter().map(|&b| pos_hist[b]).sum();
        (all - dense) as usize
    }
}

/// Plans the windows so that the window store (allocated once, for the largest window) and
/// the dense-bucket counters (kept for the most dense buckets in a window) fit the budget
/// together; when they do not, plans again with the budget less those counters.
fn plan(pos_hist: &[u64], limits: Limits) -> Vec<Window> {
    let counters_per_bucket = limits.dense_bytes.saturating_sub(BUCKETS * BYTES_PER_PAIR);
    let need = |windows: &[Window]| {
        let store = windows.iter().map(|w| w.capacity(pos_hist)).max();
        let dense = windows.iter().map(|w| w.heavy.len()).max();
        (
            store.unwrap_or(0) * BYTES_PER_PAIR,
            dense.unwrap_or(0) * counters_per_bucket,
        )
    };
    let windows = plan_windows(pos_hist, limits);
    let (store, counters) = need(&windows);
    if store + counters <= limits.window_bytes {
        return windows;
    }
    let reduced = Limits {
        window_bytes: limits.window_bytes.saturating_sub(counters),
        ..limits
    };
    plan_windows(pos_hist, reduced)
}

/// Cuts the key space into windows, from the top, each within `limits.window_bytes` of
/// collected anomalous pixels (a single bucket may exceed it). A bucket is dense when its
/// pairs would cost more than per-key counters.
fn plan_windows(pos_hist: &[u64], limits: Limits) -> Vec<Window> {
    let (budget, dense_cost) = (limits.window_bytes, limits.dense_bytes);
    let mut windows = Vec::new();
    let (mut hi, mut cost, mut heavy) = (u32::MAX, 0usize, Vec::new());
    for b in (0..BUCKETS).rev() {
        let c = pos_hist[b] as usize;
        if c == 0 {
            continue;
        }
        let is_heavy = c * BYTES_PER_PAIR > dense_cost;
        let bc = if is_heavy {
            dense_cost
        } else {
            c * BYTES_PER_PAIR
        };
        if cost > 0 && cost + bc > budget {
            let lo = ((b + 1) as u32) << BUCKET_BITS;
            heavy.reverse();
            windows.push(Window {
                lo,
                hi,
                heavy: std::mem::take(&mut heavy),
            });
            hi = lo - 1;
            cost = 0;
        }
        cost += bc;
        if is_heavy {
            heavy.push(b);
        }
    }
    heavy.reverse();
    windows.push(Window { lo: 0, hi, heavy });
    windows
}

/// Per-key counts of one dense bucket.
struct DenseBucket {
    count: Vec<u32>,
    weight: Vec<f64>,
}

/// Buffers of one image range kept across windows: labelling runs, dense buckets.
#[derive(Default)]
struct RangeState {
    regions: Regions,
    dense: Vec<DenseBucket>,
}

impl RangeState {
    /// Exactly `n` zeroed dense buckets (kept ones reused, surplus ones freed so that a window
    /// without dense buckets has its whole budget for pairs).
    fn reset_dense(&mut self, n: usize) {
        self.dense.truncate(n);
        for d in self.dense.iter_mut() {
            d.count.fill(0);
            d.weight.fill(0.0);
        }
        while self.dense.len() < n {
            self.dense.push(DenseBucket {
                count: vec![0; BUCKETS],
                weight: vec![0.0; BUCKETS],
            });
        }
    }
}

/// Pass 2a result for a range of images, besides the pairs written to its slice and the
/// dense counts left in its `RangeState`.
struct Collected {
    pro: Option<ProHistogram>,
    n_regions: u64,
}

fn collect_anomalous(
    images: &[PixelImage<'_>],
    range: Range<usize>,
    window: &Window,
    pro_grid: Option<&ProThresholds>,
    pairs: &mut [u64],
    state: &mut RangeState,
) -> Collected {
    let mut dense_slot = vec![];
    if !window.heavy.is_empty() {
        dense_slot = vec![u32::MAX; BUCKETS];
        for (s, &b) in window.heavy.iter().enumerate() {
            dense_slot[b] = s as u32;
        }
    }
    let mut n_pairs = 0;
    let mut out = Collected {
        pro: pro_grid.map(ProHistogram::new),
        n_regions: 0,
    };
    state.reset_dense(window.heavy.len());
    let RangeState { regions, dense } = state;
    for im in &images[range] {
        regions.label(im.mask, im.height, im.width);
        out.n_regions += regions.count as u64;
        let mut pos = 0;
        for run in &regions.runs {
            let start = run.row as usize * im.width + run.start as usize;
            let end = run.row as usize * im.width + run.end as usize;
            if let (Some(h), Some(g)) = (out.pro.as_mut(), pro_grid) {
                for &v in &im.scores[pos..start] {
                    h.neg[g.bin(v)] += 1;
                }
            }
            pos = end;
            let weight = 1.0 / run.area as f64;
            for &v in &im.scores[start..end] {
                if let (Some(h), Some(g)) = (out.pro.as_mut(), pro_grid) {
                    h.region_weight[g.bin(v)] += weight;
                }
                let k = key32(v);
                if k < window.lo || k > window.hi {
                    continue;
                }
                match dense_slot.get((k >> BUCKET_BITS) as usize) {
                    Some(&s) if s != u32::MAX => {
                        let d = &mut dense[s as usize];
                        d.count[(k & LOW_MASK) as usize] += 1;
                        d.weight[(k & LOW_MASK) as usize] += weight;
                    }
                    _ => {
                        pairs[n_pairs] = (k as u64) << 32 | run.area as u64;
                        n_pairs += 1;
                    }
                }
            }
        }
        if let (Some(h), Some(g)) = (out.pro.as_mut(), pro_grid) {
            for &v in &im.scores[pos..] {
                h.neg[g.bin(v)] += 1;
            }
        }
    }
    debug_assert_eq!(n_pairs, pairs.len());
    out
}

/// Slot fields: normal pixels equal to a distinct anomalous key / strictly below it.
const EQ: usize = 0;
const BELOW: usize = 1;

/// Per-window storage, allocated once per call at the largest window's size (24 bytes per
/// entry) so that the windows reuse it instead of allocating and freeing buffers of
/// varying sizes. After `distinct`, entry `j < d` holds the `j`-th distinct anomalous key of
/// the window, ascending: `pairs[j] = key << 32 | count`, `weight[j] = Σ 1/area`; `count_normal`
/// then fills `slots[j][EQ]` (normal pixels with that key) and `slots[j][BELOW]` (strictly
/// between keys `j-1` and `j`; `slots[d][BELOW]`: above the last).
struct WindowStore {
    pairs: Vec<u64>,
    weight: Vec<f64>,
    /// `[eq, below]` per entry, side by side so one cache line serves both.
    slots: Vec<[AtomicU32; 2]>,
}

impl WindowStore {
    fn new(capacity: Option<usize>) -> Self {
        let n = capacity.unwrap_or(0);
        WindowStore {
            pairs: vec![0; n],
            weight: vec![0.0; n],
            slots: (0..=n).map(|_| Default::default()).collect(),
        }
    }

    /// Sorts the `n` collected pairs, compacts runs of one key into one entry, merges in the
    /// window's dense buckets (summed over the image ranges), zeroes the counters; returns
    /// the number of distinct keys `d`.
    fn distinct(&mut self, n: usize, states: &mut [RangeState], window: &Window) -> usize {
        let pairs = &mut self.pairs;
        pairs[..n].par_sort_unstable();
        let (mut i, mut out) = (0, 0);
        while i < n {
            let key = pairs[i] >> 32;
            let (mut c, mut w) = (0u64, 0f64);
            while i < n && pairs[i] >> 32 == key {
                w += 1.0 / (pairs[i] as u32) as f64;
                c += 1;
                i += 1;
            }
            pairs[out] = key << 32 | c;
            self.weight[out] = w;
            out += 1;
        }
        let mut d = out;
        if let Some((first, rest)) = states
            .split_first_mut()
            .filter(|_| !window.heavy.is_empty())
        {
            let dense = &mut first.dense[..window.heavy.len()];
            for p in rest.iter() {
                for (a, b) in dense.iter_mut().zip(&p.dense) {
                    for (x, y) in a.count.iter_mut().zip(&b.count) {
                        *x += y;
                    }
                    for (x, y) in a.weight.iter_mut().zip(&b.weight) {
                        *x += y;
                    }
                }
            }
            let n_dense: usize = dense
                .iter()
                .map(|b| b.count.iter().filter(|&&c| c > 0).count())
                .sum();
            // Move the sparse entries to the end of the merged range, then merge forward:
            // the write position never passes the read position.
            d = out + n_dense;
            pairs.copy_within(0..out, n_dense);
            self.weight.copy_within(0..out, n_dense);
            let (mut r, mut wr) = (n_dense, 0);
            for (&b, bucket) in window.heavy.iter().zip(dense.iter()) {
                let base = (b as u64) << BUCKET_BITS;
                while r < d && pairs[r] >> 32 < base {
                    pairs[wr] = pairs[r];
                    self.weight[wr] = self.weight[r];
                    (r, wr) = (r + 1, wr + 1);
                }
                for low in 0..BUCKETS {
                    if bucket.count[low] > 0 {
                        pairs[wr] = (base | low as u64) << 32 | bucket.count[low] as u64;
                        self.weight[wr] = bucket.weight[low];
                        wr += 1;
                    }
                }
            }
            // Every dense entry is written: the remaining sparse ones are already in place.
            debug_assert_eq!(wr, r);
        }
        for a in self.slots[..=d].iter_mut().flatten() {
            *a.get_mut() = 0;
        }
        d
    }
}

/// Per-thread key and sort-scratch buffers of `count_normal`, reused for every image and
/// window (one allocation each instead of one per image).
struct KeyBuffers(Vec<Mutex<(Vec<u32>, Vec<u32>)>>);

impl KeyBuffers {
    fn new(threads: usize) -> Self {
        KeyBuffers((0..threads).map(|_| Mutex::default()).collect())
    }
}

/// Counts the window's normal pixels into `store.slots` against the `n_keys`
/// distinct anomalous keys: per image, radix-sort the keys, then walk them and the distinct
/// keys together (galloping search).
fn count_normal(
    images: &[PixelImage<'_>],
    window: &Window,
    store: &WindowStore,
    n_keys: usize,
    buffers: &KeyBuffers,
) {
    let d = &store.pairs[..n_keys];
    let key = |j: usize| (d[j] >> 32) as u32;
    let (lo, hi) = (window.lo, window.hi);
    images.par_iter().for_each(|im| {
        let slot = rayon::current_thread_index().unwrap_or(0) % buffers.0.len();
        let mut guard = buffers.0[slot].lock().unwrap_or_else(|e| e.into_inner());
        let (buf, scratch) = &mut *guard;
        buf.clear();
        buf.reserve(im.scores.len());
        for (&v, &m) in im.scores.iter().zip(im.mask) {
            let k = key32(v);
            if m == 0 && k >= lo && k <= hi {
                buf.push(k);
            }
        }
        radix_sort(buf, scratch);
        let mut j = 0usize;
        for run in buf.chunk_by(|a, b| a == b) {
            let k = run[0];
            if j < d.len() && key(j) < k {
                // Gallop: key(j) < k; find the first index with key >= k.
                let mut step = 1;
                while j + step < d.len() && key(j + step) < k {
                    j += step;
                    step *= 2;
                }
                let end = (j + step).min(d.len());
                j = j + 1 + d[j + 1..end].partition_point(|&x| ((x >> 32) as u32) < k);
            }
            let c = run.len() as u32;
            if j < d.len() && key(j) == k {
                store.slots[j][EQ].fetch_add(c, Ordering::Relaxed);
            } else {
                store.slots[j][BELOW].fetch_add(c, Ordering::Relaxed);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::keys::key64;
    use crate::metrics::ranking::rank_scores;

    struct Case {
        maps: Vec<Vec<f32>>,
        masks: Vec<Vec<u8>>,
        shapes: Vec<(usize, usize)>,
    }

    impl Case {
        fn images(&self) -> Vec<PixelImage<'_>> {
            (0..self.maps.len())
                .map(|i| PixelImage {
                    scores: &self.maps[i],
                    mask: &self.masks[i],
                    height: self.shapes[i].0,
                    width: self.shapes[i].1,
                })
                .collect()
        }
    }

    fn random_case(seed: u64, levels: u64) -> Case {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        };
        let n = 1 + next() as usize % 5;
        let mut case = Case {
            maps: vec![],
            masks: vec![],
            shapes: vec![],
        };
        for _ in 0..n {
            let (h, w) = (3 + next() as usize % 20, 3 + next() as usize % 20);
            let (cy, cx, r) = (
                next() as usize % h,
                next() as usize % w,
                next() as usize % 6,
            );
            let mut map = Vec::with_capacity(h * w);
            let mut mask = Vec::with_capacity(h * w);
            for y in 0..h {
                for x in 0..w {
                    let inside =
                        y.abs_diff(cy).pow(2) + x.abs_diff(cx).pow(2) <= r * r || next() % 40 == 0;
                    let v =
                        (next() % levels) as f32 / levels as f32 + if inside { 0.3 } else { 0.0 };
                    map.push(if next() % 9 == 0 { -v } else { v });
                    mask.push(u8::from(inside) * 255);
                }
            }
            case.maps.push(map);
            case.masks.push(mask);
            case.shapes.push((h, w));
        }
        case
    }

    /// Sort-based reference: every pixel with its region weight, grouped by score.
    fn naive(case: &Case) -> PixelMetrics {
        let mut all = Vec::new();
        let mut labels = Vec::new();
        let mut weighted = Vec::new();
        let mut n_regions = 0u64;
        let mut regions = Regions::default();
        for (i, map) in case.maps.iter().enumerate() {
            let (h, w) = case.shapes[i];
            regions.label(&case.masks[i], h, w);
            n_regions += regions.count as u64;
            let mut area = vec![0u32; h * w];
            for r in &regions.runs {
                for x in r.start..r.end {
                    area[r.row as usize * w + x as usize] = r.area;
                }
            }
            for (p, &v) in map.iter().enumerate() {
                all.push(v as f64);
                labels.push(case.masks[i][p] != 0);
                let wgt = if area[p] > 0 {
                    1.0 / area[p] as f64
                } else {
                    0.0
                };
                weighted.push((v, area[p] > 0, wgt));
            }
        }
        let rank = rank_scores(&all, &labels).unwrap();
        let n_neg = labels.iter().filter(|&&l| !l).count() as u64;
        // Exact AUPRO by sorting.
        let mut sorted = weighted.clone();
        sorted.sort_by_key(|p| std::cmp::Reverse(key64(p.0 as f64)));
        let mut sweep = AuproSweep::new(n_neg, n_regions);
        for g in sorted.chunk_by(|a, b| a.0 == b.0) {
            let neg = g.iter().filter(|p| !p.1).count() as u64;
            sweep.push(neg, g.iter().map(|p| p.2).sum());
        }
        let aupro = sweep.finish();
        // 200-threshold PRO by thresholding.
        let mn = weighted.iter().map(|p| p.0).fold(f32::INFINITY, f32::min);
        let mx = weighted
            .iter()
            .map(|p| p.0)
            .fold(f32::NEG_INFINITY, f32::max);
        let pro = ProThresholds::new(mn, mx).and_then(|g| {
            let mut pts = Vec::new();
            for &t in g.values() {
                let fp = weighted.iter().filter(|p| !p.1 && p.0 as f64 > t).count();
                let tpw: f64 = weighted
                    .iter()
                    .filter(|p| p.1 && p.0 as f64 > t)
                    .map(|p| p.2)
                    .sum();
                let fpr = fp as f64 / n_neg as f64;
                if fpr < 0.3 {
                    pts.push((fpr, tpw / n_regions as f64));
                }
            }
            let max = pts.iter().map(|p| p.0).fold(0.0, f64::max);
            (pts.len() >= 2 && max > 0.0 && n_regions > 0).then(|| {
                pts.windows(2)
                    .map(|w| (w[0].0 - w[1].0) / max * (w[0].1 + w[1].1) / 2.0)
                    .sum()
            })
        });
        PixelMetrics {
            auroc: rank.map(|r| r.auroc),
            ap: rank.map(|r| r.ap),
            max_f1: rank.map(|r| r.max_f1),
            pro,
            aupro_exact: aupro,
        }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn equals_sort_based_reference_under_any_window_plan() {
        let plans = [
            Limits {
                window_bytes: 1 << 30,
                dense_bytes: 1 << 30,
            },
            Limits {
                window_bytes: 10 * BYTES_PER_PAIR,
                dense_bytes: 1 << 30,
            },
            Limits {
                window_bytes: 30 * BYTES_PER_PAIR,
                dense_bytes: 3 * BYTES_PER_PAIR,
            },
            Limits {
                window_bytes: 1,
                dense_bytes: 1,
            },
        ];
        for seed in 0..60u64 {
            let case = random_case(seed, [3, 17, 1000, 1 << 20][seed as usize % 4]);
            let want = naive(&case);
            for limits in plans {
                let mut warnings = Vec::new();
                let m = pixel_metrics_within(&case.images(), "t", &mut warnings, limits).unwrap();
                let ctx = format!("seed {seed} {limits:?}: {m:?}");
                assert!(close(m.auroc, want.auroc), "{ctx} {want:?}");
                assert!(close(m.ap, want.ap), "{ctx} {want:?}");
                assert!(close(m.max_f1, want.max_f1), "{ctx} {want:?}");
                assert!(close(m.pro, want.pro), "{ctx} {want:?}");
                assert!(close(m.aupro_exact, want.aupro_exact), "{ctx} {want:?}");
                let expected = if m.auroc.is_none() {
                    1
                } else {
                    [m.pro, m.aupro_exact]
                        .iter()
                        .filter(|v| v.is_none())
                        .count()
                };
                assert_eq!(warnings.len(), expected, "{ctx} {warnings:?}");
            }
        }
    }

    #[test]
    fn one_class_and_bad_input() {
        let map = [0.1f32, 0.2, 0.3, 0.4];
        let mut w = Vec::new();
        let im = PixelImage {
            scores: &map,
            mask: &[0, 0, 0, 0],
            height: 2,
            width: 2,
        };
        let m = pixel_metrics(&[im], "cat", &mut w).unwrap();
        assert_eq!(m, PixelMetrics::default());
        assert_eq!(w.len(), 1);
        let bad = [0.1f32, f32::NAN, 0.3, 0.4];
        let im = PixelImage {
            scores: &bad,
            mask: &[0, 1, 0, 0],
            height: 2,
            width: 2,
        };
        assert!(pixel_metrics(&[im], "cat", &mut w).is_err());
        let im = PixelImage {
            scores: &map,
            mask: &[0, 1, 0],
            height: 2,
            width: 2,
        };
        assert!(pixel_metrics(&[im], "cat", &mut w).is_err());
        // Constant maps: ranking defined (0.5), PRO undefined with a warning.
        let flat = [0.5f32; 4];
        let mut w = Vec::new();
        let im = PixelImage {
            scores: &flat,
            mask: &[0, 1, 0, 0],
            height: 2,
            width: 2,
        };
        let m = pixel_metrics(&[im], "cat", &mut w).unwrap();
        assert_eq!(m.auroc, Some(0.5));
        assert!(m.pro.is_none());
        assert!(w.iter().any(|x| x.contains("PRO")));
    }
}
