//! Bicubic resampling that reproduces Pillow's `Image.resize(size, Image.BICUBIC)` byte for byte
//! on 8-bit images.
//!
//! Pillow (`libImaging/Resample.c`, `ImagingResample` with the full-image box) resamples each
//! axis separately with the cubic convolution kernel (a = -0.5). When shrinking, the kernel is
//! stretched by the scale factor (antialiasing). Per output sample the weights are computed in
//! `f64`, normalised to sum 1, then rounded to fixed point with 22 fractional bits; the sum of
//! `u8 * weight` plus one half is shifted down and clipped to `0..=255`. The horizontal pass runs
//! first, only on the source rows the vertical pass reads, into an 8-bit intermediate; a pass
//! whose size is unchanged is skipped. Because the arithmetic is integer, the order of the
//! accumulation does not matter, which leaves room for SIMD; on x86-64 with AVX2 the kernels
//! below are used, everywhere else plain loops with the same results.
//!
//! Pass order follows Pillow 13 (the Pillow the golden references are produced with): the
//! vertical pass runs first when `in_h - out_h > 0` and `in_h - out_h > 2 * (in_w - out_w)`
//! (the height shrinks much more than the width, e.g. tall images), else the horizontal pass
//! runs first. Pillow up to 12.x always ran the horizontal pass first; the two orders differ by
//! a few levels in some pixels of such images only. Square inputs resized to a square and
//! landscape inputs shrunk to a square (MVTec AD, VisA) take the same path in every version.

use std::ops::Range;

use super::decode::Pixels;

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Rounding offset added before shifting down.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes an 8-bit image (any channel count, interleaved) to `out_w x out_h` exactly as
/// Pillow's bicubic `resize` does. A zero output size gives an empty image.
///
/// # Panics
/// If `src.data.len() != src.width * src.height * src.channels` (a malformed [`Pixels`]).
pub fn resize_bicubic(src: &Pixels, out_w: usize, out_h: usize) -> Pixels {
    let c = src.channels;
    assert_eq!(
        src.data.len(),
        src.width * src.height * c,
        "Pixels buffer length does not match {}x{}x{}",
        src.width,
        src.height,
        c
    );
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    if out_w == 0 || out_h == 0 || (!need_h && !need_v) {
        let data = if out_w == 0 || out_h == 0 {
            Vec::new()
        } else {
            src.data.clone()
        };
        return Pixels {
            width: out_w,
            height: out_h,
            channels: c,
            data,
        };
    }

    let vtaps = Taps::new(src.height, out_h);
    let shrink_y = src.height as i64 - out_h as i64;
    let shrink_x = src.width as i64 - out_w as i64;
    let vertical_first = need_h && need_v && shrink_y > 0 && shrink_y > 2 * shrink_x;
    let data = if vertical_first {
        let htaps = Taps::new(src.width, out_w);
        let mut tmp = vec![0u8; out_h * src.width * c];
        vertical(&src.data, src.width * c, 0, &vtaps, &mut tmp);
        let mut out = vec![0u8; out_h * out_w * c];
        horizontal(&tmp, src.width, c, 0..out_h, &htaps, &mut out);
        out
    } else if need_h {
        let htaps = Taps::new(src.width, out_w);
        let rows = vtaps.span();
        let first = rows.start;
        let mut tmp = vec![0u8; rows.len() * out_w * c];
        horizontal(&src.data, src.width, c, rows, &htaps, &mut tmp);
        if need_v {
            let mut out = vec![0u8; out_h * out_w * c];
            vertical(&tmp, out_w * c, first, &vtaps, &mut out);
            out
        } else {
            tmp
        }
    } else {
        let mut out = vec![0u8; out_h * out_w * c];
        vertical(&src.data, out_w * c, 0, &vtaps, &mut out);
        out
    };
    Pixels {
        width: out_w,
        height: out_h,
        channels: c,
        data,
    }
}

/// Pillow's `bicubic_filter` (a = -0.5), evaluated exactly as in C.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of one axis: for output sample `i`, the input samples
/// `start[i] .. start[i] + count[i]` with weights `coeffs[i * ksize ..][.. count[i]]`.
struct Taps {
    ksize: usize,
    start: Vec<usize>,
    count: Vec<usize>,
    coeffs: Vec<i32>,
}

impl Taps {
    /// Pillow's `precompute_coeffs` (box = whole axis) followed by `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize) -> Self {
        // Pillow passes the box as C floats.
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut count = Vec::with_capacity(out_size);
        let mut coeffs = vec![0i32; out_size * ksize];
        let mut w = vec![0f64; ksize];
        for (xx, kk) in coeffs.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) conversion truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0;
            for (x, wx) in w[..n].iter_mut().enumerate() {
                *wx = bicubic(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
                ww += *wx;
            }
            for (k, &wx) in kk.iter_mut().zip(&w[..n]) {
                let wx = if ww != 0.0 { wx / ww } else { wx };
                let scaled = wx * f64::from(1u32 << PRECISION_BITS);
                *k = if wx < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            start.push(xmin as usize);
            count.push(n);
        }
        Taps {
            ksize,
            start,
            count,
            coeffs,
        }
    }

    fn len(&self) -> usize {
        self.start.len()
    }

    /// First input sample and the weights of output sample `i`.
    fn get(&self, i: usize) -> (usize, &[i32]) {
        let k = &self.coeffs[i * self.ksize..][..self.count[i]];
        (self.start[i], k)
    }

    /// The input samples read by any output sample (Pillow's `ybox_first .. ybox_last`).
    fn span(&self) -> Range<usize> {
        let last = self.len() - 1;
        self.start[0]..self.start[last] + self.count[last]
    }
}

fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over source rows `rows` (each `src_w * c` bytes) into `out`, one output row
/// of `taps.len() * c` bytes per source row.
fn horizontal(src: &[u8], src_w: usize, c: usize, rows: Range<usize>, taps: &Taps, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if (c == 1 || c == 3) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available on this CPU (checked just above).
        unsafe { avx2::horizontal(src, src_w * c, c, rows, taps, out) };
        return;
    }
    horizontal_scalar(src, src_w * c, c, rows, taps, out);
}

fn horizontal_scalar(
    src: &[u8],
    row_bytes: usize,
    c: usize,
    rows: Range<usize>,
    taps: &Taps,
    out: &mut [u8],
) {
    let out_row_bytes = taps.len() * c;
    for (r, out_row) in rows.zip(out.chunks_exact_mut(out_row_bytes)) {
        let line = &src[r * row_bytes..][..row_bytes];
        for (xx, out_px) in out_row.chunks_exact_mut(c).enumerate() {
            let (start, ks) = taps.get(xx);
            let window = &line[start * c..][..ks.len() * c];
            for (ch, o) in out_px.iter_mut().enumerate() {
                let ss = ks
                    .iter()
                    .zip(window.chunks_exact(c))
                    .fold(HALF, |ss, (&k, px)| ss + i32::from(px[ch]) * k);
                *o = clip8(ss);
            }
        }
    }
}

/// Vertical pass: `src` holds rows of `row_bytes` bytes starting at source row `first`.
fn vertical(src: &[u8], row_bytes: usize, first: usize, taps: &Taps, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available on this CPU (checked just above).
        unsafe { avx2::vertical(src, row_bytes, first, taps, out) };
        return;
    }
    vertical_body(src, row_bytes, first, taps, out);
}

/// Width of the column blocks of the vertical pass; the accumulators stay in registers.
const VBLOCK: usize = 32;

#[inline(always)]
fn vertical_body(src: &[u8], row_bytes: usize, first: usize, taps: &Taps, out: &mut [u8]) {
    let full = row_bytes / VBLOCK * VBLOCK;
    for (yy, out_row) in out.chunks_exact_mut(row_bytes).enumerate() {
        let (start, ks) = taps.get(yy);
        let window = &src[(start - first) * row_bytes..][..ks.len() * row_bytes];
        for x0 in (0..full).step_by(VBLOCK) {
            let mut acc = [HALF; VBLOCK];
            for (&k, line) in ks.iter().zip(window.chunks_exact(row_bytes)) {
                let seg: &[u8; VBLOCK] = line[x0..x0 + VBLOCK]
                    .try_into()
                    .expect("block of VBLOCK bytes");
                for (a, &p) in acc.iter_mut().zip(seg) {
                    *a += i32::from(p) * k;
                }
            }
            for (o, &a) in out_row[x0..x0 + VBLOCK].iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        for x in full..row_bytes {
            let ss = ks
                .iter()
                .zip(window.chunks_exact(row_bytes))
                .fold(HALF, |ss, (&k, line)| ss + i32::from(line[x]) * k);
            out_row[x] = clip8(ss);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Taps, HALF, PRECISION_BITS};

    /// Source rows filtered together by the horizontal kernels (they share weight loads).
    const ROWS: usize = 4;

    /// The portable vertical pass compiled with AVX2 enabled (it auto-vectorises).
    #[target_feature(enable = "avx2")]
    pub(super) fn vertical(
        src: &[u8],
        row_bytes: usize,
        first: usize,
        taps: &Taps,
        out: &mut [u8],
    ) {
        super::vertical_body(src, row_bytes, first, taps, out)
    }

    /// Weights laid out for the kernels: `stride` vectors per output sample, of which the
    /// first `steps[i]` are used, plus the number of bytes a kernel reads from a row start.
    struct Table {
        vectors: Vec<__m256i>,
        stride: usize,
        steps: Vec<usize>,
        max_read: usize,
    }

    /// Horizontal pass over source rows `rows`; `c` is 1 or 3.
    #[target_feature(enable = "avx2")]
    pub(super) fn horizontal(
        src: &[u8],
        row_bytes: usize,
        c: usize,
        rows: Range<usize>,
        taps: &Taps,
        out: &mut [u8],
    ) {
        let table = if c == 3 {
            rgb_table(taps)
        } else {
            grey_table(taps)
        };
        let out_row_bytes = taps.len() * c;
        let mut scratch = Vec::new();
        let mut out_rows = out.chunks_exact_mut(out_row_bytes);
        let mut r = rows.start;
        while r < rows.end {
            let n = ROWS.min(rows.end - r);
            // Loads may run past a row's end into the next row (those bytes get weight 0 or
            // are shuffled away); only past the buffer's end is a padded copy needed.
            let fits = (r + n - 1) * row_bytes + table.max_read <= src.len();
            if n == ROWS && fits {
                let lines: [&[u8]; ROWS] = std::array::from_fn(|i| &src[(r + i) * row_bytes..]);
                let outs: [&mut [u8]; ROWS] = std::array::from_fn(|_| {
                    out_rows.next().expect("one output row per source row")
                });
                if c == 3 {
                    rgb_rows(lines, outs, taps, &table);
                } else {
                    grey_rows(lines, outs, taps, &table);
                }
                r += ROWS;
            } else {
                let off = r * row_bytes;
                let line: &[u8] = if off + table.max_read <= src.len() {
                    &src[off..]
                } else {
                    scratch.clear();
                    scratch.extend_from_slice(&src[off..off + row_bytes]);
                    scratch.resize(table.max_read.max(row_bytes), 0);
                    &scratch
                };
                let out_row = out_rows.next().expect("one output row per source row");
                if c == 3 {
                    rgb_rows([line], [out_row], taps, &table);
                } else {
                    grey_rows([line], [out_row], taps, &table);
                }
                r += 1;
            }
        }
    }

    /// RGB: two taps per vector, `[k_t; 4] ++ [k_t+1; 4]`, against `[r, g, b, 0]` of the pixels
    /// `t` and `t + 1` (each step loads 8 bytes at pixel `start + 2 * step`).
    #[target_feature(enable = "avx2")]
    fn rgb_table(taps: &Taps) -> Table {
        let stride = taps.ksize.div_ceil(2);
        let mut vectors = Vec::with_capacity(taps.len() * stride);
        let mut steps = Vec::with_capacity(taps.len());
        let mut max_read = 0;
        for xx in 0..taps.len() {
            let (start, ks) = taps.get(xx);
            for p in 0..stride {
                let k0 = ks.get(2 * p).copied().unwrap_or(0);
                let k1 = ks.get(2 * p + 1).copied().unwrap_or(0);
                vectors.push(_mm256_setr_epi32(k0, k0, k0, k0, k1, k1, k1, k1));
            }
            let n = ks.len().div_ceil(2);
            if n > 0 {
                max_read = max_read.max((start + 2 * n) * 3 + 2);
            }
            steps.push(n);
        }
        Table {
            vectors,
            stride,
            steps,
            max_read,
        }
    }

    /// Grey: eight consecutive taps per vector (each step loads 8 bytes at `start + 8 * step`).
    #[target_feature(enable = "avx2")]
    fn grey_table(taps: &Taps) -> Table {
        let stride = taps.ksize.div_ceil(8);
        let mut vectors = Vec::with_capacity(taps.len() * stride);
        let mut steps = Vec::with_capacity(taps.len());
        let mut max_read = 0;
        for xx in 0..taps.len() {
            let (start, ks) = taps.get(xx);
            for p in 0..stride {
                let k: [i32; 8] = std::array::from_fn(|i| ks.get(8 * p + i).copied().unwrap_or(0));
                vectors.push(_mm256_setr_epi32(
                    k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7],
                ));
            }
            let n = ks.len().div_ceil(8);
            if n > 0 {
                max_read = max_read.max(start + 8 * n);
            }
            steps.push(n);
        }
        Table {
            vectors,
            stride,
            steps,
            max_read,
        }
    }

    /// `(sum + HALF) >> PRECISION_BITS`, clipped to `0..=255`, for the four lanes of `sum`;
    /// returns them as the bytes of an `i32`.
    #[target_feature(enable = "avx2")]
    fn clip4(sum: __m128i) -> [u8; 4] {
        let shifted =
            _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm_add_epi32(sum, _mm_set1_epi32(HALF)));
        let words = _mm_packs_epi32(shifted, shifted);
        _mm_cvtsi128_si32(_mm_packus_epi16(words, words)).to_le_bytes()
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn rgb_rows<const R: usize>(
        lines: [&[u8]; R],
        mut outs: [&mut [u8]; R],
        taps: &Taps,
        table: &Table,
    ) {
        for line in &lines {
            assert!(
                line.len() >= table.max_read,
                "row shorter than the kernel reads"
            );
        }
        let spread = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        for xx in 0..taps.len() {
            let start = taps.start[xx];
            let ks = &table.vectors[xx * table.stride..][..table.steps[xx]];
            let mut acc = [_mm256_setzero_si256(); R];
            for (p, k) in ks.iter().enumerate() {
                let off = (start + 2 * p) * 3;
                for (a, line) in acc.iter_mut().zip(&lines) {
                    // SAFETY: off + 8 <= max_read <= line.len() (asserted above).
                    let bytes = unsafe { _mm_loadl_epi64(line.as_ptr().add(off).cast()) };
                    let px = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(bytes, spread));
                    *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(px, *k));
                }
            }
            for (a, out) in acc.iter().zip(outs.iter_mut()) {
                let sum = _mm_add_epi32(
                    _mm256_castsi256_si128(*a),
                    _mm256_extracti128_si256::<1>(*a),
                );
                out[xx * 3..xx * 3 + 3].copy_from_slice(&clip4(sum)[..3]);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn grey_rows<const R: usize>(
        lines: [&[u8]; R],
        mut outs: [&mut [u8]; R],
        taps: &Taps,
        table: &Table,
    ) {
        for line in &lines {
            assert!(
                line.len() >= table.max_read,
                "row shorter than the kernel reads"
            );
        }
        for xx in 0..taps.len() {
            let start = taps.start[xx];
            let ks = &table.vectors[xx * table.stride..][..table.steps[xx]];
            let mut acc = [_mm256_setzero_si256(); R];
            for (p, k) in ks.iter().enumerate() {
                for (a, line) in acc.iter_mut().zip(&lines) {
                    // SAFETY: start + 8p + 8 <= max_read <= line.len() (asserted above).
                    let bytes = unsafe { _mm_loadl_epi64(line.as_ptr().add(start + 8 * p).cast()) };
                    *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(bytes), *k));
                }
            }
            for (a, out) in acc.iter().zip(outs.iter_mut()) {
                let s = _mm_add_epi32(
                    _mm256_castsi256_si128(*a),
                    _mm256_extracti128_si256::<1>(*a),
                );
                let s = _mm_hadd_epi32(s, s);
                out[xx] = clip4(_mm_hadd_epi32(s, s))[0];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: usize, h: usize, c: usize, seed: u64) -> Pixels {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let data = (0..w * h * c)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        Pixels {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }

    /// Straightforward two-pass resize with the scalar kernels, to check the fast paths, in
    /// Pillow 13's pass order.
    fn reference(src: &Pixels, out_w: usize, out_h: usize) -> Vec<u8> {
        let c = src.channels;
        let htaps = Taps::new(src.width, out_w);
        let vtaps = Taps::new(src.height, out_h);
        let (dy, dx) = (
            src.height as i64 - out_h as i64,
            src.width as i64 - out_w as i64,
        );
        if dy > 0 && dy > 2 * dx && out_w != src.width {
            let mut tmp = vec![0u8; out_h * src.width * c];
            vertical_body(&src.data, src.width * c, 0, &vtaps, &mut tmp);
            let mut out = vec![0u8; out_h * out_w * c];
            horizontal_scalar(&tmp, src.width * c, c, 0..out_h, &htaps, &mut out);
            return out;
        }
        let mut tmp = vec![0u8; src.height * out_w * c];
        horizontal_scalar(&src.data, src.width * c, c, 0..src.height, &htaps, &mut tmp);
        let mut out = vec![0u8; out_h * out_w * c];
        vertical_body(&tmp, out_w * c, 0, &vtaps, &mut out);
        out
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(1024, 518), (100, 37), (37, 111), (5, 3), (3, 8), (1, 4)] {
            let taps = Taps::new(i, o);
            for xx in 0..o {
                let (start, ks) = taps.get(xx);
                assert!(start + ks.len() <= i);
                let sum: i64 = ks.iter().map(|&k| i64::from(k)).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= ks.len() as i64,
                    "{i}->{o}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = Pixels {
            width: 13,
            height: 9,
            channels: 3,
            data: vec![77; 13 * 9 * 3],
        };
        for (w, h) in [(5, 4), (30, 20), (13, 20), (5, 9)] {
            let out = resize_bicubic(&src, w, h);
            assert_eq!((out.width, out.height, out.channels), (w, h, 3));
            assert!(out.data.iter().all(|&v| v == 77), "{w}x{h}");
        }
    }

    #[test]
    fn fast_paths_match_scalar_reference() {
        for (c, (w, h), (ow, oh)) in [
            (3, (64, 48), (23, 31)),
            (3, (17, 29), (40, 11)),
            (3, (100, 100), (37, 37)),
            (1, (64, 48), (23, 70)),
            (1, (9, 7), (33, 2)),
        ] {
            let src = noise(w, h, c, (w * h + c) as u64);
            let fast = resize_bicubic(&src, ow, oh);
            assert_eq!(
                fast.data,
                reference(&src, ow, oh),
                "{c} {w}x{h} -> {ow}x{oh}"
            );
        }
    }

    #[test]
    fn single_axis_and_identity() {
        let src = noise(20, 10, 3, 5);
        assert_eq!(resize_bicubic(&src, 20, 10), src);
        let wide = resize_bicubic(&src, 31, 10);
        assert_eq!(wide.data, reference(&src, 31, 10));
        let tall = resize_bicubic(&src, 20, 4);
        assert_eq!(tall.data, reference(&src, 20, 4));
        assert!(resize_bicubic(&src, 0, 4).data.is_empty());
    }
}
