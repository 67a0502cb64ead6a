//! Order-preserving integer keys for scores, and an LSD radix sort on them.
//!
//! `key32(a) < key32(b)` exactly when `a < b` for finite f32 (`-0.0` and `0.0` get the same
//! key, as they compare equal, so ties are grouped exactly as NumPy groups them); likewise
//! `key64` for f64. Sorting keys instead of floats lets the metrics sort 4-byte values with a
//! radix sort, pack a key with a payload into one u64, and group ties by integer equality.

/// Monotone u32 key of a finite f32 (`-0.0` maps like `0.0`).
#[inline]
pub fn key32(v: f32) -> u32 {
    let b = (v + 0.0).to_bits();
    b ^ (((b as i32) >> 31) as u32 | 0x8000_0000)
}

/// Monotone u64 key of a finite f64 (`-0.0` maps like `0.0`).
#[inline]
pub fn key64(v: f64) -> u64 {
    let b = (v + 0.0).to_bits();
    b ^ (((b as i64) >> 63) as u64 | 0x8000_0000_0000_0000)
}

const DIGIT_BITS: u32 = 11;
const DIGIT_MASK: u32 = (1 << DIGIT_BITS) - 1;
const RADIX: usize = 1 << DIGIT_BITS;
const PASSES: usize = 32u32.div_ceil(DIGIT_BITS) as usize;

#[inline]
fn digit(x: u32, pass: usize) -> usize {
    ((x >> (pass as u32 * DIGIT_BITS)) & DIGIT_MASK) as usize
}

/// Sorts `items` ascending with an LSD radix sort on 11-bit digits; `scratch` is resized to
/// `items.len()` and used as the ping-pong buffer. Digits on which all items agree are skipped.
pub fn radix_sort(items: &mut Vec<u32>, scratch: &mut Vec<u32>) {
    let n = items.len();
    if n < 2 {
        return;
    }
    let mut hist = [[0u32; RADIX]; PASSES];
    for &x in items.iter() {
        for (p, h) in hist.iter_mut().enumerate() {
            h[digit(x, p)] += 1;
        }
    }
    scratch.clear();
    scratch.resize(n, 0);
    for (p, h) in hist.iter_mut().enumerate() {
        if h[digit(items[0], p)] as usize == n {
            continue;
        }
        let mut sum = 0u32;
        for c in h.iter_mut() {
            let count = *c;
            *c = sum;
            sum += count;
        }
        for &x in items.iter() {
            let d = digit(x, p);
            scratch[h[d] as usize] = x;
            h[d] += 1;
        }
        std::mem::swap(items, scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 11
    }

    #[test]
    fn keys_preserve_order_and_equality() {
        let vals = [
            f32::NEG_INFINITY,
            -3.0e38,
            -1.0,
            -1e-40,
            -0.0,
            0.0,
            1e-45,
            1e-40,
            0.5,
            1.0,
            3.4e38,
            f32::INFINITY,
        ];
        for a in vals {
            for b in vals {
                assert_eq!(a < b, key32(a) < key32(b), "{a} {b}");
                assert_eq!(a == b, key32(a) == key32(b), "{a} {b}");
                let (a64, b64) = (a as f64, b as f64);
                assert_eq!(a64 < b64, key64(a64) < key64(b64), "{a} {b}");
                assert_eq!(a64 == b64, key64(a64) == key64(b64), "{a} {b}");
            }
        }
    }

    #[test]
    fn radix_sort_matches_std_sort() {
        let mut s = 7u64;
        for n in [0usize, 1, 2, 3, 100, 5000] {
            let mut a: Vec<u32> = (0..n).map(|_| (lcg(&mut s) % 1000) as u32 * 4099).collect();
            let mut expect = a.clone();
            expect.sort_unstable();
            radix_sort(&mut a, &mut Vec::new());
            assert_eq!(a, expect);
            let mut b: Vec<u32> = (0..n).map(|_| lcg(&mut s) as u32).collect();
            let mut expect = b.clone();
            expect.sort_unstable();
            radix_sort(&mut b, &mut Vec::new());
            assert_eq!(b, expect);
        }
    }
}
