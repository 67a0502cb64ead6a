//! Pixel metrics at full scale: 200 maps of 518x518 with masks, all five pixel metrics
//! (AUROC, AP, max-F1, PRO, aupro_exact) in one `pixel_metrics` call.
//!
//! Data: MVTec-like, generated here: a smooth background field plus per-pixel noise, in
//! [0, 1) like sigmoid outputs; 70% of the images carry 1-3 elliptic defects (raised scores,
//! masks = the ellipses), ~3% of all pixels anomalous (MVTec AD: ~2.7%); almost every score distinct.
//! Memory: the peak RSS counter is reset after the data is built (`/proc/self/clear_refs`),
//! so VmHWM is the data plus what the metrics add.
//!
//! Run: cargo bench --bench metrics   (release). Prints a table last.

use afclip::metrics::pixel::{pixel_metrics, PixelImage};
use std::time::Instant;

const N: usize = 200;
const S: usize = 518;
const REPEATS: usize = 3;
/// The reference Python (AF-CLIP's evaluation code) measured on this machine on 40 such maps,
/// as given in issue 4: PRO 38 s, AUROC + AP + max-F1 16.5 s.
const PY_PRO_40: f64 = 38.0;
const PY_RANK_40: f64 = 16.5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn generate() -> (Vec<f32>, Vec<u8>) {
    let mut maps = vec![0f32; N * S * S];
    let mut masks = vec![0u8; N * S * S];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..N {
        let map = &mut maps[i * S * S..(i + 1) * S * S];
        let mask = &mut masks[i * S * S..(i + 1) * S * S];
        let (fx, fy, ph) = (rng.unit() * 0.05, rng.unit() * 0.05, rng.unit() * 6.0);
        let mut defects = Vec::new();
        if rng.unit() < 0.7 {
            for _ in 0..1 + rng.next() % 3 {
                let (cy, cx) = (rng.unit() * S as f32, rng.unit() * S as f32);
                let (ry, rx) = (8.0 + rng.unit() * 60.0, 8.0 + rng.unit() * 60.0);
                defects.push((cy, cx, ry, rx, 0.3 + rng.unit() * 0.5));
            }
        }
        for y in 0..S {
            for x in 0..S {
                let base = 0.25 + 0.1 * ((x as f32 * fx + ph).sin() + (y as f32 * fy - ph).cos());
                let mut v = base + 0.08 * rng.unit();
                let mut inside = false;
                for &(cy, cx, ry, rx, amp) in &defects {
                    let d = ((y as f32 - cy) / ry).powi(2) + ((x as f32 - cx) / rx).powi(2);
                    inside |= d <= 1.0;
                    v += amp * (-d).exp();
                }
                // Written explicitly (also the zeros) so every mask page is resident.
                mask[y * S + x] = if inside { 255 } else { 0 };
                map[y * S + x] = v / (1.0 + v);
            }
        }
    }
    (maps, masks)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let t = Instant::now();
    let (maps, masks) = generate();
    let gen_s = t.elapsed().as_secs_f64();
    let images: Vec<PixelImage> = (0..N)
        .map(|i| PixelImage {
            scores: &maps[i * S * S..(i + 1) * S * S],
            mask: &masks[i * S * S..(i + 1) * S * S],
            height: S,
            width: S,
        })
        .collect();
    let anomalous = masks.iter().filter(|&&m| m != 0).count();
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = status_kib("VmRSS:");

    let mut times = Vec::new();
    let mut result = None;
    for _ in 0..REPEATS {
        let t = Instant::now();
        let mut warnings = Vec::new();
        let m = pixel_metrics(&images, "bench", &mut warnings).expect("metrics");
        times.push(t.elapsed().as_secs_f64());
        assert!(warnings.is_empty(), "{warnings:?}");
        result = Some(m);
    }
    let m = result.unwrap();
    let hwm = status_kib("VmHWM:");
    times.sort_by(f64::total_cmp);
    let best = times[0];
    let median = times[times.len() / 2];

    let mib = |b: f64| b / (1024.0 * 1024.0);
    let map_bytes = (maps.len() * 4) as f64;
    let mask_bytes = masks.len() as f64;
    println!(
        "data: {N} maps {S}x{S} f32 ({:.0} MiB) + u8 masks ({:.0} MiB), {:.2}% anomalous \
         pixels, generated in {gen_s:.1} s; threads {}",
        mib(map_bytes),
        mib(mask_bytes),
        100.0 * anomalous as f64 / maps.len() as f64,
        rayon::current_num_threads()
    );
    println!(
        "result: auroc {:.4} ap {:.4} max_f1 {:.4} pro {:.4} aupro_exact {:.4}",
        m.auroc.unwrap(),
        m.ap.unwrap(),
        m.max_f1.unwrap(),
        m.pro.unwrap(),
        m.aupro_exact.unwrap()
    );
    println!("runs (s): {times:.3?}");
    println!();
    let scale = N as f64 / 40.0;
    println!(
        "| workload ({N} maps {S}x{S}) | Python reference (issue 4, 40 maps; x{scale:.0} linear) | afclip | ratio |"
    );
    println!("|---|---:|---:|---:|");
    let py_all = (PY_PRO_40 + PY_RANK_40) * scale;
    println!(
        "| AUROC+AP+max-F1+PRO (+aupro_exact), best of {REPEATS} | {:.1} s (~{py_all:.0} s) | {best:.3} s (median {median:.3}) | {:.0}x |",
        PY_PRO_40 + PY_RANK_40,
        py_all / best
    );
    println!("| target | | <= 2 s | |");
    println!();
    println!("| memory | MiB | x maps |");
    println!("|---|---:|---:|");
    println!("| maps (f32) | {:.0} | 1.00 |", mib(map_bytes));
    println!(
        "| maps + masks | {:.0} | {:.2} |",
        mib(map_bytes + mask_bytes),
        (map_bytes + mask_bytes) / map_bytes
    );
    println!(
        "| RSS before metrics | {:.0} | {:.2} |",
        rss_before as f64 / 1024.0,
        rss_before as f64 * 1024.0 / map_bytes
    );
    println!(
        "| peak RSS (VmHWM{}) | {:.0} | {:.2} |",
        if reset {
            ", reset after generation"
        } else {
            ", whole process"
        },
        hwm as f64 / 1024.0,
        hwm as f64 * 1024.0 / map_bytes
    );
    println!("| target peak | {:.0} | 1.50 |", 1.5 * mib(map_bytes));
}
