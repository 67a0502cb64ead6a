//! Synthetic anomaly-detection data: textured images with painted defects and their exact
//! masks, written in the MVTec, VisA or generic-folder layout (see [`SynthLayout`]).
//!
//! Each category gets a texture family (stripes, value noise, grid/checker, smooth blotches, in
//! turn) and its own colours and scales; each image varies phase, offset and grain. Defects are
//! blobs (irregular discs), scratches (thin polylines) and spots (clusters of small discs), each
//! in three sizes, painted opaquely: the mask is exactly the set of painted pixels.
//!
//! Deterministic: every file depends only on the seed, the category, the image's role and
//! index, and the size, through a SplitMix64 stream of its own, so the same options give
//! byte-identical files whatever the number of threads that write them.

use std::f32::consts::{PI, TAU};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::{GrayImage, Luma, Rgb, RgbImage};
use rayon::prelude::*;

/// Where the files go; `out` is the dataset root in each case.
///
/// - `Mvtec`: `<cat>/train/good/NNN.png`, `<cat>/test/good/NNN.png`,
///   `<cat>/test/<defect>/NNN.png`, `<cat>/ground_truth/<defect>/NNN_mask.png` (0/255).
/// - `Visa`: `split_csv/1cls.csv`, `<cat>/Data/Images/Normal/NNNN.JPG` (training and test
///   normals), `<cat>/Data/Images/Anomaly/NNN.JPG`, `<cat>/Data/Masks/Anomaly/NNN.png`; as in
///   VisA, the masks hold the label value 1 (not 255) and images are JPEG (quality 95).
/// - `Folder`: `<cat>/train/NNN.png`, `<cat>/good/NNN.png`, `<cat>/<defect>/NNN.png`,
///   `<cat>/ground_truth/<defect>/NNN_mask.png` (0/255).
///
/// Defect folders are `blob`, `scratch` and `spot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthLayout {
    Mvtec,
    Visa,
    Folder,
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub layout: SynthLayout,
    /// Number of categories.
    pub categories: usize,
    /// Test images per category (at least 2): `images - images/2` normal, `images/2`
    /// anomalous; plus `images/2` normal training images.
    pub images: usize,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Write into a non-empty `out` (files are replaced, nothing is deleted).
    pub overwrite: bool,
}

/// What [`synthesize`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Category names, sorted.
    pub categories: Vec<String>,
    /// Totals over all categories.
    pub train: usize,
    pub test_normal: usize,
    pub test_anomalous: usize,
}

/// Parses `WxH` (e.g. `256x256`), both at least 8.
pub fn parse_size(text: &str) -> Result<(u32, u32)> {
    let parse = || -> Option<(u32, u32)> {
        let (w, h) = text.trim().split_once(['x', 'X'])?;
        Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
    };
    match parse() {
        Some((w, h)) if w >= 8 && h >= 8 => Ok((w, h)),
        Some(_) => bail!("size '{text}' is too small: both sides must be at least 8"),
        None => bail!("size '{text}' is not WIDTHxHEIGHT (e.g. 256x256)"),
    }
}

/// Writes the synthetic set described by `opts`.
pub fn synthesize(opts: &SynthOptions) -> Result<SynthSummary> {
    synthesize_scaled(opts, 1.0)
}

/// [`synthesize`] with every defect's size (extent, and a scratch's width) multiplied by
/// `defect_scale` (> 0); 1 gives exactly [`synthesize`]'s files. The demo uses larger defects,
/// which a tiny random model can learn to see.
pub fn synthesize_scaled(opts: &SynthOptions, defect_scale: f32) -> Result<SynthSummary> {
    if !(defect_scale > 0.0 && defect_scale.is_finite()) {
        bail!("the defect scale must be a positive number, not {defect_scale}");
    }
    if opts.categories == 0 {
        bail!("--categories must be at least 1");
    }
    if opts.images < 2 {
        bail!("--images must be at least 2 (a normal and an anomalous test image per category)");
    }
    if opts.width < 8 || opts.height < 8 {
        bail!(
            "image size {}x{} is too small: both sides must be at least 8",
            opts.width,
            opts.height
        );
    }
    if opts.width as u64 * opts.height as u64 > 100_000_000 {
        bail!(
            "image size {}x{} is over 100 megapixels",
            opts.width,
            opts.height
        );
    }
    check_out(&opts.out, opts.overwrite)?;

    let plan = Plan::new(opts, defect_scale);
    for dir in plan.dirs() {
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    plan.jobs.par_iter().try_for_each(|job| plan.write(job))?;
    if opts.layout == SynthLayout::Visa {
        plan.write_visa_csv()?;
    }
    Ok(plan.summary())
}

fn check_out(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("output {} exists and is not a folder", out.display());
    }
    if out.is_dir() && !overwrite {
        let mut entries =
            fs::read_dir(out).with_context(|| format!("cannot list folder {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "output folder {} is not empty: choose another, or pass --overwrite",
                out.display()
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Random numbers

/// SplitMix64: small, fast, and enough for textures.
struct Rng(u64);

impl Rng {
    /// A stream for the given key path (seed, category, role, index, ...).
    fn keyed(parts: &[u64]) -> Rng {
        let mut state = 0x853C_49E6_748F_EA9B_u64;
        for &part in parts {
            state = mix64(state ^ part.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        Rng(state)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Per-pixel grain in [-0.5, 0.5), a hash of the position and the image key.
fn grain(x: u32, y: u32, key: u64) -> f32 {
    let h = mix64(key ^ (((y as u64) << 32) | x as u64));
    (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

// ---------------------------------------------------------------------------------------------
// Textures

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Stripes,
    Noise,
    Grid,
    Blotches,
}

const FAMILIES: [Family; 4] = [
    Family::Stripes,
    Family::Noise,
    Family::Grid,
    Family::Blotches,
];

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Stripes => "stripes",
            Family::Noise => "noise",
            Family::Grid => "grid",
            Family::Blotches => "blotches",
        }
    }
}

/// A category's look.
struct Style {
    family: Family,
    base: [f32; 3],
    accent: [f32; 3],
    /// Texture scale as a fraction of the shorter side.
    scale: f32,
    angle: f32,
    grain: f32,
}

impl Style {
    fn new(seed: u64, category: usize) -> Style {
        let mut rng = Rng::keyed(&[seed, category as u64, 0xC0]);
        let family = FAMILIES[category % FAMILIES.len()];
        let hue = rng.unit();
        let base = hsv(hue, rng.range(0.3, 0.8), rng.range(0.35, 0.7));
        let accent = hsv(
            (hue + rng.range(0.05, 0.25)) % 1.0,
            rng.range(0.2, 0.7),
            rng.range(0.6, 0.95),
        );
        Style {
            family,
            base,
            accent,
            scale: rng.range(0.05, 0.14),
            angle: rng.range(0.0, PI),
            grain: rng.range(6.0, 18.0),
        }
    }
}

/// HSV in [0,1] to RGB in [0,255].
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let sector = (h * 6.0).floor();
    let f = h * 6.0 - sector;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match sector as i32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r * 255.0, g * 255.0, b * 255.0]
}

/// Smooth random field in [0,1]: random values on a lattice, bicubic-smoothed bilinear blend.
struct ValueNoise {
    cols: usize,
    cell: f32,
    values: Vec<f32>,
}

impl ValueNoise {
    fn new(rng: &mut Rng, width: u32, height: u32, cell: f32) -> ValueNoise {
        let cell = cell.max(1.0);
        let cols = (width as f32 / cell) as usize + 2;
        let rows = (height as f32 / cell) as usize + 2;
        let values = (0..cols * rows).map(|_| rng.unit()).collect();
        ValueNoise { cols, cell, values }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (gx, gy) = (x / self.cell, y / self.cell);
        let (ix, iy) = (gx as usize, gy as usize);
        let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
        let (fx, fy) = (smooth(gx - ix as f32), smooth(gy - iy as f32));
        let v = |cx: usize, cy: usize| self.values[cy * self.cols + cx];
        let top = v(ix, iy) + (v(ix + 1, iy) - v(ix, iy)) * fx;
        let bottom = v(ix, iy + 1) + (v(ix + 1, iy + 1) - v(ix, iy + 1)) * fx;
        top + (bottom - top) * fy
    }
}

fn render_texture(style: &Style, width: u32, height: u32, key: u64) -> RgbImage {
    let mut rng = Rng::keyed(&[key, 0x7E]);
    let side = width.min(height) as f32;
    let period = (style.scale * side).max(2.0);
    let angle = style.angle + rng.range(-0.15, 0.15);
    let (cos, sin) = (angle.cos(), angle.sin());
    let phase = rng.range(0.0, TAU);
    let (ox, oy) = (rng.range(0.0, period), rng.range(0.0, period));
    let shade = rng.range(0.92, 1.08);
    // A slow field that every family gets, so normal images are not all alike.
    let drift = ValueNoise::new(&mut rng, width, height, side * 0.35);
    let fine = ValueNoise::new(&mut rng, width, height, period * 0.5);
    let coarse = ValueNoise::new(&mut rng, width, height, period * 1.5);
    let blobs: Vec<(f32, f32, f32, f32)> = (0..6)
        .map(|_| {
            (
                rng.range(0.0, width as f32),
                rng.range(0.0, height as f32),
                rng.range(0.6, 2.0) * period,
                rng.range(0.5, 1.0),
            )
        })
        .collect();
    let line = (period * 0.18).max(1.0);

    let mut img = RgbImage::new(width, height);
    for (x, y, pixel) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let t = match style.family {
            Family::Stripes => {
                let u = fx * cos + fy * sin;
                0.5 + 0.5 * (TAU * u / period + phase).sin()
            }
            Family::Noise => 0.65 * fine.at(fx, fy) + 0.35 * coarse.at(fx, fy),
            Family::Grid => {
                let (gx, gy) = ((fx + ox) % period, (fy + oy) % period);
                if gx < line || gy < line {
                    1.0
                } else {
                    let checker = ((fx + ox) / period) as i64 + ((fy + oy) / period) as i64;
                    0.15 + 0.2 * (checker & 1) as f32
                }
            }
            Family::Blotches => {
                let sum: f32 = blobs
                    .iter()
                    .map(|&(bx, by, r, a)| {
                        let d2 = (fx - bx).powi(2) + (fy - by).powi(2);
                        a * (-d2 / (2.0 * r * r)).exp()
                    })
                    .sum();
                sum.min(1.0)
            }
        };
        let light = shade * (0.85 + 0.3 * drift.at(fx, fy));
        let g = style.grain * grain(x, y, key);
        let channel = |c: usize| {
            let v = (style.base[c] * (1.0 - t) + style.accent[c] * t) * light + g;
            v.clamp(0.0, 255.0).round() as u8
        };
        *pixel = Rgb([channel(0), channel(1), channel(2)]);
    }
    img
}

// ---------------------------------------------------------------------------------------------
// Defects

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    Blob,
    Scratch,
    Spot,
}

const DEFECTS: [Defect; 3] = [Defect::Blob, Defect::Scratch, Defect::Spot];

impl Defect {
    fn name(self) -> &'static str {
        match self {
            Defect::Blob => "blob",
            Defect::Scratch => "scratch",
            Defect::Spot => "spot",
        }
    }
}

/// Paints one defect (a random size of three) onto `img`, marking every painted pixel in
/// `mask` with 255. At least one pixel is painted: each shape covers the pixel its centre or
/// start point lies in.
/// `scale` multiplies the size.
fn paint_defect(
    img: &mut RgbImage,
    mask: &mut GrayImage,
    style: &Style,
    kind: Defect,
    key: u64,
    scale: f32,
) {
    let mut rng = Rng::keyed(&[key, 0xDE]);
    let (w, h) = img.dimensions();
    let side = w.min(h) as f32;
    let size = [0.05, 0.1, 0.18][rng.below(3) as usize] * side * scale;
    // A colour far from the category's: the complement of its mid tone, jittered.
    let mid: Vec<f32> = (0..3)
        .map(|c| 0.5 * (style.base[c] + style.accent[c]))
        .collect();
    let colour: Vec<f32> = mid
        .iter()
        .map(|m| (255.0 - m + rng.range(-40.0, 40.0)).clamp(0.0, 255.0))
        .collect();
    let grain_key = rng.next_u64();
    let mut paint = |x: u32, y: u32| {
        let g = 10.0 * grain(x, y, grain_key);
        let c = |i: usize| (colour[i] + g).clamp(0.0, 255.0).round() as u8;
        img.put_pixel(x, y, Rgb([c(0), c(1), c(2)]));
        mask.put_pixel(x, y, Luma([255]));
    };
    // Pixel-centred start points guarantee a covered pixel.
    let centre = |rng: &mut Rng| (rng.below(w) as f32 + 0.5, rng.below(h) as f32 + 0.5);
    match kind {
        Defect::Blob => {
            let (cx, cy) = centre(&mut rng);
            let r0 = (size * 0.5).max(1.0);
            let harmonics: Vec<(f32, f32, f32)> = (2..5)
                .map(|k| (k as f32, rng.range(0.0, 0.15), rng.range(0.0, TAU)))
                .collect();
            fill_region(w, h, cx, cy, r0 * 1.5, |dx, dy| {
                let theta = dy.atan2(dx);
                let wobble: f32 = harmonics
                    .iter()
                    .map(|&(k, a, p)| a * (k * theta + p).sin())
                    .sum();
                (dx * dx + dy * dy).sqrt() <= r0 * (1.0 + wobble)
            })
            .for_each(|(x, y)| paint(x, y));
        }
        Defect::Scratch => {
            let half = (size * 0.04).max(0.5);
            let (mut px, mut py) = centre(&mut rng);
            let mut heading = rng.range(0.0, TAU);
            let segments = 2 + rng.below(3);
            let step = size * 1.5 / segments as f32;
            for _ in 0..segments {
                heading += rng.range(-0.5, 0.5);
                let (qx, qy) = (px + step * heading.cos(), py + step * heading.sin());
                let (mx, my) = (0.5 * (px + qx), 0.5 * (py + qy));
                fill_region(w, h, mx, my, 0.5 * step + half + 1.0, move |dx, dy| {
                    segment_distance(mx + dx, my + dy, px, py, qx, qy) <= half
                })
                .for_each(|(x, y)| paint(x, y));
                (px, py) = (qx, qy);
            }
        }
        Defect::Spot => {
            let (cx, cy) = centre(&mut rng);
            let count = 2 + rng.below(5);
            for i in 0..count {
                let (sx, sy) = if i == 0 {
                    (cx, cy)
                } else {
                    let angle = rng.range(0.0, TAU);
                    let dist = rng.range(0.3, 1.0) * size;
                    (cx + dist * angle.cos(), cy + dist * angle.sin())
                };
                let r = (rng.range(0.1, 0.25) * size).max(1.0);
                fill_region(w, h, sx, sy, r, move |dx, dy| dx * dx + dy * dy <= r * r)
                    .for_each(|(x, y)| paint(x, y));
            }
        }
    }
}

/// Pixels within `radius` (a square) of (cx, cy), clipped to the image, for which
/// `inside(dx, dy)` holds, with (dx, dy) the pixel centre's offset from (cx, cy).
fn fill_region(
    w: u32,
    h: u32,
    cx: f32,
    cy: f32,
    radius: f32,
    inside: impl Fn(f32, f32) -> bool,
) -> impl Iterator<Item = (u32, u32)> {
    let clip = |v: f32, n: u32| v.clamp(0.0, n as f32) as u32;
    let (x0, x1) = (clip(cx - radius - 1.0, w), clip(cx + radius + 1.0, w));
    let (y0, y1) = (clip(cy - radius - 1.0, h), clip(cy + radius + 1.0, h));
    (y0..y1)
        .flat_map(move |y| (x0..x1).map(move |x| (x, y)))
        .filter(move |&(x, y)| inside(x as f32 + 0.5 - cx, y as f32 + 0.5 - cy))
}

fn segment_distance(x: f32, y: f32, ax: f32, ay: f32, bx: f32, by: f32) -> f32 {
    let (vx, vy) = (bx - ax, by - ay);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        (((x - ax) * vx + (y - ay) * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((x - ax - t * vx).powi(2) + (y - ay - t * vy).powi(2)).sqrt()
}

/// One image (and its mask when `defect` is set) as the generator makes it.
fn render(
    style: &Style,
    width: u32,
    height: u32,
    key: u64,
    defect: Option<Defect>,
    defect_scale: f32,
) -> (RgbImage, Option<GrayImage>) {
    let mut img = render_texture(style, width, height, key);
    let mask = defect.map(|kind| {
        let mut mask = GrayImage::new(width, height);
        paint_defect(&mut img, &mut mask, style, kind, key, defect_scale);
        mask
    });
    (img, mask)
}

// ---------------------------------------------------------------------------------------------
// Layout and writing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Train,
    TestNormal,
    TestAnomalous(Defect),
}

struct Job {
    category: usize,
    role: Role,
    /// Index among the category's images of this role (train, test normal) or defect.
    index: usize,
    image: PathBuf,
    mask: Option<PathBuf>,
}

struct Plan<'a> {
    opts: &'a SynthOptions,
    names: Vec<String>,
    styles: Vec<Style>,
    jobs: Vec<Job>,
    defect_scale: f32,
}

fn numbered(index: usize, total: usize, min_digits: usize) -> String {
    let digits = total.saturating_sub(1).to_string().len().max(min_digits);
    format!("{index:0digits$}")
}

impl<'a> Plan<'a> {
    fn new(opts: &'a SynthOptions, defect_scale: f32) -> Plan<'a> {
        let cat_digits = numbered(0, opts.categories, 2).len();
        let names: Vec<String> = (0..opts.categories)
            .map(|c| {
                let family = FAMILIES[c % FAMILIES.len()].name();
                format!("{family}_{c:0cat_digits$}")
            })
            .collect();
        let styles = (0..opts.categories)
            .map(|c| Style::new(opts.seed, c))
            .collect();
        let n_train = opts.images / 2;
        let n_anomalous = opts.images / 2;
        let n_normal = opts.images - n_anomalous;
        let mut jobs = Vec::new();
        for (c, name) in names.iter().enumerate() {
            let cat = opts.out.join(name);
            let defects: Vec<Defect> = (0..n_anomalous)
                .map(|j| DEFECTS[(j + c) % DEFECTS.len()])
                .collect();
            let per_defect = |kind: Defect| defects.iter().filter(|d| **d == kind).count();
            match opts.layout {
                SynthLayout::Mvtec | SynthLayout::Folder => {
                    let (train_dir, good_dir) = if opts.layout == SynthLayout::Mvtec {
                        (cat.join("train/good"), cat.join("test/good"))
                    } else {
                        (cat.join("train"), cat.join("good"))
                    };
                    for i in 0..n_train {
                        let file = format!("{}.png", numbered(i, n_train, 3));
                        jobs.push(Job::new(c, Role::Train, i, train_dir.join(file), None));
                    }
                    for i in 0..n_normal {
                        let file = format!("{}.png", numbered(i, n_normal, 3));
                        jobs.push(Job::new(c, Role::TestNormal, i, good_dir.join(file), None));
                    }
                    let mut counters = [0usize; 3];
                    for &kind in &defects {
                        let j = counters[kind as usize];
                        counters[kind as usize] += 1;
                        let stem = numbered(j, per_defect(kind), 3);
                        let defect_dir = if opts.layout == SynthLayout::Mvtec {
                            cat.join("test").join(kind.name())
                        } else {
                            cat.join(kind.name())
                        };
                        let image = defect_dir.join(format!("{stem}.png"));
                        let mask = cat
                            .join("ground_truth")
                            .join(kind.name())
                            .join(format!("{stem}_mask.png"));
                        jobs.push(Job::new(c, Role::TestAnomalous(kind), j, image, Some(mask)));
                    }
                }
                SynthLayout::Visa => {
                    let normal_dir = cat.join("Data/Images/Normal");
                    let total_normal = n_train + n_normal;
                    for i in 0..total_normal {
                        let file = format!("{}.JPG", numbered(i, total_normal, 4));
                        let (role, index) = if i < n_train {
                            (Role::Train, i)
                        } else {
                            (Role::TestNormal, i - n_train)
                        };
                        jobs.push(Job::new(c, role, index, normal_dir.join(file), None));
                    }
                    for (j, &kind) in defects.iter().enumerate() {
                        let stem = numbered(j, n_anomalous, 3);
                        let image = cat.join(format!("Data/Images/Anomaly/{stem}.JPG"));
                        let mask = cat.join(format!("Data/Masks/Anomaly/{stem}.png"));
                        jobs.push(Job::new(c, Role::TestAnomalous(kind), j, image, Some(mask)));
                    }
                }
            }
        }
        Plan {
            opts,
            names,
            styles,
            jobs,
            defect_scale,
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .jobs
            .iter()
            .flat_map(|job| {
                std::iter::once(&job.image)
                    .chain(job.mask.as_ref())
                    .filter_map(|p| p.parent().map(Path::to_path_buf))
            })
            .collect();
        if self.opts.layout == SynthLayout::Visa {
            dirs.push(self.opts.out.join("split_csv"));
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn write(&self, job: &Job) -> Result<()> {
        let (role_key, defect) = match job.role {
            Role::Train => (1, None),
            Role::TestNormal => (2, None),
            Role::TestAnomalous(kind) => (3 + kind as u64, Some(kind)),
        };
        let key = Rng::keyed(&[
            self.opts.seed,
            job.category as u64,
            role_key,
            job.index as u64,
        ])
        .next_u64();
        let (img, mask) = render(
            &self.styles[job.category],
            self.opts.width,
            self.opts.height,
            key,
            defect,
            self.defect_scale,
        );
        let visa = self.opts.layout == SynthLayout::Visa;
        if visa {
            write_jpeg(&img, &job.image)?;
        } else {
            save_png(&job.image, |p| img.save(p))?;
        }
        if let (Some(mut mask), Some(path)) = (mask, job.mask.as_ref()) {
            if visa {
                // VisA masks hold the defect label, not 255.
                mask.pixels_mut().for_each(|p| p.0[0] = p.0[0].min(1));
            }
            save_png(path, |p| mask.save(p))?;
        }
        Ok(())
    }

    fn write_visa_csv(&self) -> Result<()> {
        let path = self.opts.out.join("split_csv/1cls.csv");
        let relative = |p: &Path| -> String {
            p.strip_prefix(&self.opts.out)
                .unwrap_or(p)
                .to_string_lossy()
                .replace('\\', "/")
        };
        let mut text = String::from("object,split,label,image,mask\n");
        for job in &self.jobs {
            let (split, label) = match job.role {
                Role::Train => ("train", "normal"),
                Role::TestNormal => ("test", "normal"),
                Role::TestAnomalous(_) => ("test", "anomaly"),
            };
            let mask = job.mask.as_deref().map(relative).unwrap_or_default();
            text.push_str(&format!(
                "{},{split},{label},{},{mask}\n",
                self.names[job.category],
                relative(&job.image)
            ));
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    fn summary(&self) -> SynthSummary {
        let count = |f: fn(&Role) -> bool| self.jobs.iter().filter(|j| f(&j.role)).count();
        let mut categories = self.names.clone();
        categories.sort();
        SynthSummary {
            categories,
            train: count(|r| *r == Role::Train),
            test_normal: count(|r| *r == Role::TestNormal),
            test_anomalous: count(|r| matches!(r, Role::TestAnomalous(_))),
        }
    }
}

impl Job {
    fn new(
        category: usize,
        role: Role,
        index: usize,
        image: PathBuf,
        mask: Option<PathBuf>,
    ) -> Job {
        Job {
            category,
            role,
            index,
            image,
            mask,
        }
    }
}

fn save_png(path: &Path, save: impl FnOnce(&Path) -> image::ImageResult<()>) -> Result<()> {
    save(path).with_context(|| format!("cannot write {}", path.display()))
}

fn write_jpeg(img: &RgbImage, path: &Path) -> Result<()> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(img)
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defect_changes_only_masked_pixels() {
        for (c, kind) in DEFECTS.iter().enumerate() {
            for key in 0..8u64 {
                let style = Style::new(42, c + key as usize);
                let (plain, none) = render(&style, 40, 24, key, None, 1.0);
                assert!(none.is_none());
                let (painted, mask) = render(&style, 40, 24, key, Some(*kind), 1.0);
                let mask = mask.unwrap();
                let mut masked = 0;
                let mut changed_outside = 0;
                for (x, y, m) in mask.enumerate_pixels() {
                    assert!(m.0[0] == 0 || m.0[0] == 255);
                    if m.0[0] == 255 {
                        masked += 1;
                    } else if plain.get_pixel(x, y) != painted.get_pixel(x, y) {
                        changed_outside += 1;
                    }
                }
                assert!(masked > 0, "{kind:?} key {key}: empty mask");
                assert!(
                    masked < 40 * 24,
                    "{kind:?} key {key}: mask covers everything"
                );
                assert_eq!(changed_outside, 0, "{kind:?} key {key}");
            }
        }
    }

    #[test]
    fn defect_scale_grows_masks() {
        let area = |scale: f32| -> usize {
            DEFECTS
                .iter()
                .enumerate()
                .flat_map(|(c, kind)| (0..8u64).map(move |key| (c, kind, key)))
                .map(|(c, kind, key)| {
                    let style = Style::new(3, c);
                    let mask = render(&style, 64, 64, key, Some(*kind), scale).1.unwrap();
                    mask.pixels().filter(|p| p.0[0] == 255).count()
                })
                .sum()
        };
        let (one, three) = (area(1.0), area(3.0));
        assert!(three > 4 * one, "scale 1: {one} px, scale 3: {three} px");
    }

    #[test]
    fn families_differ() {
        let a = render(&Style::new(1, 0), 32, 32, 9, None, 1.0).0;
        let b = render(&Style::new(1, 1), 32, 32, 9, None, 1.0).0;
        assert_ne!(a, b);
        assert_eq!(Style::new(1, 0).family, Family::Stripes);
        assert_eq!(Style::new(1, 5).family, Family::Noise);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64x48").unwrap(), (64, 48));
        assert_eq!(parse_size("1024X1024").unwrap(), (1024, 1024));
        assert!(parse_size("64").is_err());
        assert!(parse_size("4x4").is_err());
        assert!(parse_size("ax4").is_err());
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::keyed(&[7]);
        let mut buckets = [0u32; 4];
        for _ in 0..4000 {
            buckets[rng.below(4) as usize] += 1;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(
            buckets.iter().all(|&b| (850..1150).contains(&b)),
            "{buckets:?}"
        );
    }
}
