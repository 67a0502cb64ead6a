//! Every backward op of the CPU backend against f64 central differences of an f64 reference
//! forward, on seeded random inputs: the scalar `L = Σ w ∘ f(x)` with random `w`, the op's
//! gradient given `dy = w`, relative L2 error ≤ 1e-3. Also `matmul` against an f64 product.

use afclip::backend::cpu::CpuBackend;
use afclip::backend::Backend;
use afclip::rng::Rng;

const H: f64 = 1e-6;
const TOL: f64 = 1e-3;

fn be() -> CpuBackend {
    CpuBackend::new(Some(2)).unwrap()
}

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| std * rng.normal()).collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// `∂/∂x_i Σ w ∘ f(x)` by central differences in f64.
fn numeric_grad(x: &[f64], w: &[f64], f: &dyn Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + H;
            let up: f64 = f(&x).iter().zip(w).map(|(a, b)| a * b).sum();
            x[i] = keep - H;
            let down: f64 = f(&x).iter().zip(w).map(|(a, b)| a * b).sum();
            x[i] = keep;
            (up - down) / (2.0 * H)
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    let rel = num / den.max(1e-30);
    eprintln!("{what}: relative L2 error {rel:.2e}");
    assert!(den > 0.0, "{what}: zero reference gradient tests nothing");
    assert!(rel <= TOL, "{what}: relative L2 error {rel:.2e} > {TOL:e}");
}

fn layer_norm_ref(x: &[f64], gamma: &[f64], beta: &[f64], dim: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for r in x.chunks(dim) {
        let mean = r.iter().sum::<f64>() / dim as f64;
        let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        y.extend(
            r.iter()
                .zip(gamma)
                .zip(beta)
                .map(|((v, g), b)| (v - mean) * rstd * g + b),
        );
    }
    y
}

#[test]
fn layer_norm_backward_matches_finite_differences() {
    let b = be();
    let mut rng = Rng::new(1);
    let (rows, dim) = (70, 37);
    let x = randn(&mut rng, rows * dim, 1.5);
    let gamma: Vec<f32> = (0..dim).map(|_| 1.0 + 0.3 * rng.normal()).collect();
    let beta = randn(&mut rng, dim, 0.2);
    let w = randn(&mut rng, rows * dim, 1.0);
    let init = randn(&mut rng, rows * dim, 1.0);
    let mut dx = init.clone();
    let (mut dg, mut db) = (vec![0.5f32; dim], vec![-0.25f32; dim]);
    b.layer_norm_backward(
        Some(&mut dx),
        Some((&mut dg, &mut db)),
        &w,
        &x,
        &gamma,
        rows,
        dim,
        1e-5,
    )
    .unwrap();
    let (xd, gd, bd, wd) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&w));
    let got_dx: Vec<f32> = dx.iter().zip(&init).map(|(a, b)| a - b).collect();
    let want = numeric_grad(&xd, &wd, &|x| layer_norm_ref(x, &gd, &bd, dim));
    assert_close("layer_norm dx", &got_dx, &want);
    let want = numeric_grad(&gd, &wd, &|g| layer_norm_ref(&xd, g, &bd, dim));
    let got: Vec<f32> = dg.iter().map(|v| v - 0.5).collect();
    assert_close("layer_norm dgamma", &got, &want);
    let want = numeric_grad(&bd, &wd, &|bb| layer_norm_ref(&xd, &gd, bb, dim));
    let got: Vec<f32> = db.iter().map(|v| v + 0.25).collect();
    assert_close("layer_norm dbeta", &got, &want);
}

fn attention_ref(
    qkv: &[f64],
    batch: usize,
    t: usize,
    heads: usize,
    hd: usize,
    causal: bool,
) -> Vec<f64> {
    let w = heads * hd;
    let mut out = vec![0.0; batch * t * w];
    let s = 1.0 / (hd as f64).sqrt();
    for b in 0..batch {
        for h in 0..heads {
            let at = |tok: usize, part: usize, c: usize| {
                qkv[((b * t + tok) * 3 + part) * w + h * hd + c]
            };
            for i in 0..t {
                let visible = if causal { i + 1 } else { t };
                let scores: Vec<f64> = (0..visible)
                    .map(|j| (0..hd).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>() * s)
                    .collect();
                let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|v| (v - mx).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..hd {
                    out[(b * t + i) * w + h * hd + c] =
                        (0..visible).map(|j| e[j] / sum * at(j, 2, c)).sum();
                }
            }
        }
    }
    out
}

#[test]
fn attention_backward_matches_finite_differences() {
    let b = be();
    for (causal, seed) in [(false, 2u64), (true, 3)] {
        let mut rng = Rng::new(seed);
        let (batch, t, heads, hd) = (2, 9, 2, 8);
        let qkv = randn(&mut rng, batch * t * 3 * heads * hd, 0.8);
        let w = randn(&mut rng, batch * t * heads * hd, 1.0);
        let mut dqkv = vec![7.0f32; qkv.len()];
        b.attention_backward(&mut dqkv, &w, &qkv, batch, t, heads, hd, causal)
            .unwrap();
        let want = numeric_grad(&f64s(&qkv), &f64s(&w), &|x| {
            attention_ref(x, batch, t, heads, hd, causal)
        });
        assert_close(&format!("attention dqkv (causal {causal})"), &dqkv, &want);
        // The f64 reference forward agrees with the backend's forward.
        let mut out = vec![0f32; w.len()];
        b.attention(&mut out, &qkv, batch, t, heads, hd, causal)
            .unwrap();
        let refd = attention_ref(&f64s(&qkv), batch, t, heads, hd, causal);
        assert!(out
            .iter()
            .zip(&refd)
            .all(|(a, r)| (f64::from(*a) - r).abs() < 1e-5));
    }
}

#[test]
fn attention_backward_at_adaptor_width_and_many_tokens() {
    // 8 heads of 64 over 130 tokens (several of the forward's query blocks): check one
    // direction, the directional derivative of a random perturbation.
    let b = be();
    let mut rng = Rng::new(4);
    let (batch, t, heads, hd) = (1, 130, 8, 64);
    let qkv = randn(&mut rng, batch * t * 3 * heads * hd, 0.5);
    let w = randn(&mut rng, batch * t * heads * hd, 1.0);
    let dir = randn(&mut rng, qkv.len(), 1.0);
    let mut dqkv = vec![0f32; qkv.len()];
    b.attention_backward(&mut dqkv, &w, &qkv, batch, t, heads, hd, false)
        .unwrap();
    let got: f64 = dqkv.iter().zip(&dir).map(|(a, d)| f64::from(a * d)).sum();
    let (x, wd) = (f64s(&qkv), f64s(&w));
    let eval = |eps: f64| -> f64 {
        let xs: Vec<f64> = x
            .iter()
            .zip(&dir)
            .map(|(v, d)| v + eps * f64::from(*d))
            .collect();
        attention_ref(&xs, batch, t, heads, hd, false)
            .iter()
            .zip(&wd)
            .map(|(a, b)| a * b)
            .sum()
    };
    let want = (eval(H) - eval(-H)) / (2.0 * H);
    let rel = (got - want).abs() / want.abs();
    assert!(
        rel <= TOL,
        "directional derivative {got} vs {want} (rel {rel:.2e})"
    );
}

#[test]
fn quick_gelu_and_bias_grad_match_finite_differences() {
    let b = be();
    let mut rng = Rng::new(5);
    let n = 333;
    let x = randn(&mut rng, n, 2.5);
    let w = randn(&mut rng, n, 1.0);
    let mut dx = vec![0f32; n];
    b.quick_gelu_backward(&mut dx, &w, &x, n).unwrap();
    let gelu =
        |x: &[f64]| -> Vec<f64> { x.iter().map(|v| v / (1.0 + (-1.702 * v).exp())).collect() };
    let want = numeric_grad(&f64s(&x), &f64s(&w), &gelu);
    assert_close("quick_gelu dx", &dx, &want);
    let mut y = vec![0f32; n];
    b.quick_gelu(&mut y, &x, n).unwrap();
    let yr = gelu(&f64s(&x));
    assert!(y
        .iter()
        .zip(&yr)
        .all(|(a, r)| (f64::from(*a) - r).abs() < 1e-5));

    let (rows, dim) = (150, 11);
    let dy = randn(&mut rng, rows * dim, 1.0);
    let mut db = vec![1.0f32; dim];
    b.bias_grad(&mut db, &dy, rows, dim).unwrap();
    let got: Vec<f32> = db.iter().map(|v| v - 1.0).collect();
    // y = x + bias broadcast over rows; L = Σ dy ∘ y.
    let want = numeric_grad(&vec![0.0; dim], &f64s(&dy), &|bias| {
        (0..rows * dim).map(|i| bias[i % dim]).collect()
    });
    assert_close("bias_grad", &got, &want);
}

fn state_logits_ref(z: &[f64], text: &[f64], dim: usize, scale: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for r in z.chunks(dim) {
        let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        for s in 0..2 {
            let d: f64 = r
                .iter()
                .zip(&text[s * dim..(s + 1) * dim])
                .map(|(a, b)| a * b)
                .sum();
            out.push(d / n * scale);
        }
    }
    out
}

#[test]
fn score_backwards_match_finite_differences() {
    let b = be();
    let mut rng = Rng::new(6);
    let (rows, dim, scale) = (300, 24, 1.0 / 0.07);
    let z = randn(&mut rng, rows * dim, 1.0);
    let text = randn(&mut rng, 2 * dim, 0.3);
    let w = randn(&mut rng, rows * 2, 1.0);
    let mut dz = vec![0.5f32; z.len()];
    let mut dtext = vec![0f32; text.len()];
    b.state_logits_backward(&mut dz, &mut dtext, &w, &z, &text, rows, dim, scale as f32)
        .unwrap();
    let (zd, td, wd) = (f64s(&z), f64s(&text), f64s(&w));
    let want = numeric_grad(&zd, &wd, &|z| state_logits_ref(z, &td, dim, scale));
    let got: Vec<f32> = dz.iter().map(|v| v - 0.5).collect();
    assert_close("state_logits dz", &got, &want);
    let want = numeric_grad(&td, &wd, &|t| state_logits_ref(&zd, t, dim, scale));
    assert_close("state_logits dtext", &dtext, &want);

    let logits = randn(&mut rng, rows * 2, 3.0);
    let dp = randn(&mut rng, rows, 1.0);
    let mut dl = vec![0f32; rows * 2];
    b.abnormal_probability_backward(&mut dl, &dp, &logits, rows)
        .unwrap();
    let want = numeric_grad(&f64s(&logits), &f64s(&dp), &|l| {
        l.chunks(2)
            .map(|p| 1.0 / (1.0 + (p[0] - p[1]).exp()))
            .collect()
    });
    assert_close("abnormal_probability dlogits", &dl, &want);
}

#[test]
fn matmul_matches_f64_products_for_every_transpose() {
    let b = be();
    let mut rng = Rng::new(7);
    let (m, k, n) = (300, 45, 61);
    for (ta, tb, acc) in [
        (false, false, false),
        (true, false, true),
        (false, true, false),
        (true, true, true),
    ] {
        let a = randn(&mut rng, m * k, 1.0);
        let bm = randn(&mut rng, k * n, 1.0);
        let c0 = randn(&mut rng, m * n, 1.0);
        let mut c = c0.clone();
        b.matmul(&mut c, &a, &bm, (m, k, n), ta, tb, acc).unwrap();
        for i in 0..m {
            for j in 0..n {
                let mut want = if acc { f64::from(c0[i * n + j]) } else { 0.0 };
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { bm[j * k + p] } else { bm[p * n + j] };
                    want += f64::from(av) * f64::from(bv);
                }
                let got = f64::from(c[i * n + j]);
                assert!(
                    (got - want).abs() < 1e-4,
                    "({ta},{tb},{acc}) [{i},{j}]: {got} vs {want}"
                );
            }
        }
    }
    let mut c = vec![0f32; 6];
    let err = b
        .matmul(
            &mut c,
            &vec![0.0; 5],
            &vec![0.0; 6],
            (2, 3, 3),
            false,
            false,
            false,
        )
        .unwrap_err();
    assert!(err.to_string().contains("`a`"), "{err}");
}
