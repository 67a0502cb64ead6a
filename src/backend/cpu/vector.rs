//! Vectorised element-wise kernels shared by the CPU ops.
//!
//! Each kernel is written once as plain, branch-free Rust over slices and compiled three
//! times by [`multiversion!`]: with AVX-512, with AVX2 + FMA, and for the baseline target; the
//! best copy the running CPU supports is picked at run time (the std feature probe is cached).
//! LLVM auto-vectorises the loops in each copy to the widest registers it was given.
//!
//! `exp`: `e^x = 2^n · e^r`, `n = round(x·log2 e)`, `r = x − n·ln 2` (Cody–Waite split), `e^r`
//! by the Cephes `expf` polynomial; relative error ≤ 2e-7 on `[-87, 88]`, inputs clamped to
//! that range (so `exp(-∞)` ≈ 1e-38 instead of 0, far below any f32 sum it joins), NaN in →
//! NaN out.

/// Defines `pub(crate) fn $name` that runs `$body` compiled for the best instruction set the
/// CPU offers. Helpers the body calls must be `#[inline(always)]` to inherit the features.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi2")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma,bmi2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: the CPU supports every feature `avx512` was compiled with.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("bmi2")
                {
                    // SAFETY: the CPU supports every feature `avx2` was compiled with.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use multiversion;

/// Lanes of the explicit accumulators in reductions: one AVX-512 register of f32.
pub(crate) const LANES: usize = 16;

/// The instruction set [`multiversion!`] kernels run with on this CPU.
pub(crate) fn isa_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("bmi2")
        {
            return "avx2";
        }
    }
    "baseline"
}

/// `e^x` for one element, branch-free so that loops over it vectorise (see the module docs).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to the nearest integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // Comparisons (not f32::max/min) so that NaN passes through.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // bits(t) = 0x4B40_0000 + n; the biased exponent n + 127 shifted into place is 2^n.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    er * scale
}

/// `v·sigmoid(1.702·v)`.
#[inline(always)]
pub(crate) fn quick_gelu(v: f32) -> f32 {
    v / (1.0 + exp(-1.702 * v))
}

/// Largest element (−∞ for an empty slice).
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(chunks.remainder()) {
        m = if v > m { v } else { m };
    }
    m
}

/// Sum with [`LANES`] interleaved accumulators (a pairwise-like error growth).
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ (x_i − c)²`.
#[inline(always)]
pub(crate) fn sum_sq_dev(x: &[f32], c: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += (v - c) * (v - c);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| (v - c) * (v - c)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ a_i b_i`.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((a, &u), &v) in acc.iter_mut().zip(x).zip(y) {
            *a += u * v;
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

multiversion! {
    /// `x[i] = e^(x[i] − shift)`; returns `Σ x[i]` afterwards.
    fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let mut chunks = x.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *v = exp(*v - shift);
                *a += *v;
            }
        }
        let mut tail = 0f32;
        for v in chunks.into_remainder() {
            *v = exp(*v - shift);
            tail += *v;
        }
        acc.iter().sum::<f32>() + tail
    }
}

multiversion! {
    /// The largest element of `x` (−∞ when empty).
    fn max_of(x: &[f32]) -> f32 {
        max(x)
    }
}

multiversion! {
    /// `y[i] *= s`.
    fn scale(y: &mut [f32], s: f32) {
        for v in y {
            *v *= s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.001_7;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
    }

    #[test]
    fn exp_handles_extremes() {
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn dispatched_kernels_match_scalar_math() {
        let mut x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let m = max_of(&x);
        assert_eq!(m, x.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        let want: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let got = exp_shifted_sum(&mut x, m);
        assert!(((got as f64) - want).abs() < 1e-6 * want);
        scale(&mut x, 2.0);
        assert!(x.iter().all(|&v| v > 0.0 && v <= 2.0));
        assert!(!isa_name().is_empty());
    }

    #[test]
    fn reductions_cover_the_tail() {
        let x: Vec<f32> = (1..=35).map(|i| i as f32).collect();
        assert_eq!(sum(&x), 630.0);
        assert_eq!(dot(&x, &x), (1..=35).map(|i| (i * i) as f32).sum::<f32>());
        assert_eq!(sum_sq_dev(&[1.0, 3.0], 2.0), 2.0);
        assert_eq!(max(&x), 35.0);
    }
}
