//! The metrics.json schema, its reader/writer, the mean over categories and the markdown table.
//!
//! ```text
//! {"dataset": str, "image_size": int|null, "shots": int|null,
//!  "categories": {CAT: {"n_images": int,
//!                       "image": {"auroc", "ap", "max_f1"},
//!                       "pixel": {"auroc", "ap", "max_f1", "pro", "aupro_exact"}}},
//!  "mean": {"image": {...}, "pixel": {...}}}
//! ```
//! Values are fractions in [0, 1], `null` where a metric is undefined; the `image` or `pixel`
//! object is absent for sets without image labels or without masks. The mean is the plain mean
//! over the categories where the metric is defined.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Image-level metrics of one category.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageMetrics {
    pub auroc: Option<f64>,
    pub ap: Option<f64>,
    pub max_f1: Option<f64>,
}

/// Pixel-level metrics of one category.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PixelMetrics {
    pub auroc: Option<f64>,
    pub ap: Option<f64>,
    pub max_f1: Option<f64>,
    pub pro: Option<f64>,
    pub aupro_exact: Option<f64>,
}

/// Metrics of one category.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CategoryMetrics {
    pub n_images: usize,
    pub image: Option<ImageMetrics>,
    pub pixel: Option<PixelMetrics>,
}

/// Plain means over categories.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeanMetrics {
    pub image: Option<ImageMetrics>,
    pub pixel: Option<PixelMetrics>,
}

/// Which level a metric belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Image,
    Pixel,
}

/// One metric's place in the schema: level, JSON name, table heading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricId {
    pub level: Level,
    pub name: &'static str,
    pub heading: &'static str,
}

/// Every metric, in table order.
pub const METRICS: [MetricId; 8] = [
    MetricId {
        level: Level::Image,
        name: "auroc",
        heading: "I-AUROC",
    },
    MetricId {
        level: Level::Image,
        name: "ap",
        heading: "I-AP",
    },
    MetricId {
        level: Level::Image,
        name: "max_f1",
        heading: "I-F1max",
    },
    MetricId {
        level: Level::Pixel,
        name: "auroc",
        heading: "P-AUROC",
    },
    MetricId {
        level: Level::Pixel,
        name: "ap",
        heading: "P-AP",
    },
    MetricId {
        level: Level::Pixel,
        name: "max_f1",
        heading: "P-F1max",
    },
    MetricId {
        level: Level::Pixel,
        name: "pro",
        heading: "PRO",
    },
    MetricId {
        level: Level::Pixel,
        name: "aupro_exact",
        heading: "AUPRO-exact",
    },
];

impl ImageMetrics {
    fn values(&self) -> [Option<f64>; 3] {
        [self.auroc, self.ap, self.max_f1]
    }
    fn from_values(v: &[Option<f64>]) -> Self {
        ImageMetrics {
            auroc: v[0],
            ap: v[1],
            max_f1: v[2],
        }
    }
}

impl PixelMetrics {
    fn values(&self) -> [Option<f64>; 5] {
        [self.auroc, self.ap, self.max_f1, self.pro, self.aupro_exact]
    }
    fn from_values(v: &[Option<f64>]) -> Self {
        PixelMetrics {
            auroc: v[0],
            ap: v[1],
            max_f1: v[2],
            pro: v[3],
            aupro_exact: v[4],
        }
    }
}

/// The values of [`METRICS`] for one category or the mean (`None`: absent or undefined).
pub fn metric_values(
    image: Option<&ImageMetrics>,
    pixel: Option<&PixelMetrics>,
) -> [Option<f64>; 8] {
    let mut out = [None; 8];
    if let Some(i) = image {
        out[..3].copy_from_slice(&i.values());
    }
    if let Some(p) = pixel {
        out[3..].copy_from_slice(&p.values());
    }
    out
}

/// A metrics.json document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsReport {
    pub dataset: String,
    pub image_size: Option<u64>,
    pub shots: Option<u64>,
    pub categories: BTreeMap<String, CategoryMetrics>,
}

fn mean_of(
    columns: impl Iterator<Item = Vec<Option<f64>>>,
    width: usize,
) -> Option<Vec<Option<f64>>> {
    let mut sums = vec![(0.0f64, 0usize); width];
    let mut any = false;
    for row in columns {
        any = true;
        for (s, v) in sums.iter_mut().zip(row) {
            if let Some(v) = v {
                s.0 += v;
                s.1 += 1;
            }
        }
    }
    any.then(|| {
        sums.iter()
            .map(|&(s, n)| (n > 0).then(|| s / n as f64))
            .collect()
    })
}

impl MetricsReport {
    /// Plain mean over the categories that have the level, of each metric where defined.
    pub fn mean(&self) -> MeanMetrics {
        let cats = self.categories.values();
        let image = mean_of(
            cats.clone()
                .filter_map(|c| c.image)
                .map(|m| m.values().to_vec()),
            3,
        );
        let pixel = mean_of(cats.filter_map(|c| c.pixel).map(|m| m.values().to_vec()), 5);
        MeanMetrics {
            image: image.map(|v| ImageMetrics::from_values(&v)),
            pixel: pixel.map(|v| PixelMetrics::from_values(&v)),
        }
    }

    /// Warnings for means taken over fewer categories than have the level.
    pub fn mean_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (j, id) in METRICS.iter().enumerate() {
            let mut missing = Vec::new();
            for (name, c) in &self.categories {
                let has_level = match id.level {
                    Level::Image => c.image.is_some(),
                    Level::Pixel => c.pixel.is_some(),
                };
                if has_level && metric_values(c.image.as_ref(), c.pixel.as_ref())[j].is_none() {
                    missing.push(name.as_str());
                }
            }
            if !missing.is_empty() {
                out.push(format!(
                    "mean {} leaves out {} (undefined there)",
                    id.heading,
                    missing.join(", ")
                ));
            }
        }
        out
    }

    /// The JSON document (categories sorted by name).
    pub fn to_json(&self) -> Value {
        let mut cats = Map::new();
        for (name, c) in &self.categories {
            let mut o = Map::new();
            o.insert("n_images".into(), json!(c.n_images));
            if let Some(i) = &c.image {
                o.insert("image".into(), image_json(i));
            }
            if let Some(p) = &c.pixel {
                o.insert("pixel".into(), pixel_json(p));
            }
            cats.insert(name.clone(), Value::Object(o));
        }
        let mean = self.mean();
        let mut m = Map::new();
        if let Some(i) = &mean.image {
            m.insert("image".into(), image_json(i));
        }
        if let Some(p) = &mean.pixel {
            m.insert("pixel".into(), pixel_json(p));
        }
        json!({
            "dataset": self.dataset,
            "image_size": self.image_size,
            "shots": self.shots,
            "categories": cats,
            "mean": m,
        })
    }

    /// Parses a metrics.json document (the `mean` object is recomputed, not read).
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v.as_object().context("the document is not a JSON object")?;
        let dataset = match obj.get("dataset") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => bail!("\"dataset\" is {other}, not a string"),
        };
        let image_size = opt_u64(obj.get("image_size")).context("\"image_size\"")?;
        let shots = opt_u64(obj.get("shots")).context("\"shots\"")?;
        let cats = obj
            .get("categories")
            .and_then(Value::as_object)
            .context("no \"categories\" object")?;
        let mut categories = BTreeMap::new();
        for (name, c) in cats {
            let c = c
                .as_object()
                .with_context(|| format!("category {name} is not an object"))?;
            let n_images = opt_u64(c.get("n_images"))
                .with_context(|| format!("category {name}: \"n_images\""))?
                .unwrap_or(0) as usize;
            let image = level_values(c.get("image"), &["auroc", "ap", "max_f1"])
                .with_context(|| format!("category {name}: \"image\""))?
                .map(|v| ImageMetrics::from_values(&v));
            let pixel = level_values(
                c.get("pixel"),
                &["auroc", "ap", "max_f1", "pro", "aupro_exact"],
            )
            .with_context(|| format!("category {name}: \"pixel\""))?
            .map(|v| PixelMetrics::from_values(&v));
            categories.insert(
                name.clone(),
                CategoryMetrics {
                    n_images,
                    image,
                    pixel,
                },
            );
        }
        Ok(MetricsReport {
            dataset,
            image_size,
            shots,
            categories,
        })
    }

    /// Writes the JSON document, pretty-printed.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads a metrics.json file.
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_json(&v)
            .with_context(|| format!("{} is not a metrics.json document", path.display()))
    }

    /// Markdown: the paper's layout — per category `(AUROC, AP)` at image level and
    /// `(AUROC, PRO)` at pixel level, in percent with one decimal — then every metric.
    pub fn to_markdown(&self) -> String {
        let mean = self.mean();
        let has_image = mean.image.is_some();
        let has_pixel = mean.pixel.is_some();
        let mut rows: Vec<(String, [Option<f64>; 8])> = self
            .categories
            .iter()
            .map(|(n, c)| (n.clone(), metric_values(c.image.as_ref(), c.pixel.as_ref())))
            .collect();
        rows.push((
            "**Mean**".into(),
            metric_values(mean.image.as_ref(), mean.pixel.as_ref()),
        ));

        let mut out = format!(
            "# {}\n\n",
            if self.dataset.is_empty() {
                "Metrics"
            } else {
                &self.dataset
            }
        );
        let mut setting = Vec::new();
        if let Some(s) = self.image_size {
            setting.push(format!("image size {s}"));
        }
        if let Some(k) = self.shots {
            setting.push(if k == 0 {
                "zero-shot".to_string()
            } else {
                format!("{k}-shot")
            });
        }
        if !setting.is_empty() {
            out += &format!("{}.\n\n", setting.join(", "));
        }
        let mut head = vec!["Category".to_string()];
        if has_image {
            head.push("image-level (AUROC, AP)".into());
        }
        if has_pixel {
            head.push("pixel-level (AUROC, PRO)".into());
        }
        out += &table_row(&head);
        out += &table_rule(head.len());
        for (name, v) in &rows {
            let mut cells = vec![name.clone()];
            if has_image {
                cells.push(format!("({}, {})", pct(v[0]), pct(v[1])));
            }
            if has_pixel {
                cells.push(format!("({}, {})", pct(v[3]), pct(v[6])));
            }
            out += &table_row(&cells);
        }

        let shown: Vec<usize> = (0..METRICS.len())
            .filter(|&j| match METRICS[j].level {
                Level::Image => has_image,
                Level::Pixel => has_pixel,
            })
            .collect();
        out += "\nAll metrics (%):\n\n";
        let mut head = vec!["Category".to_string()];
        head.extend(shown.iter().map(|&j| METRICS[j].heading.to_string()));
        out += &table_row(&head);
        out += &table_row(
            &std::iter::once("---".to_string())
                .chain(shown.iter().map(|_| "---:".to_string()))
                .collect::<Vec<_>>(),
        );
        for (name, v) in &rows {
            let mut cells = vec![name.clone()];
            cells.extend(shown.iter().map(|&j| pct(v[j])));
            out += &table_row(&cells);
        }
        out
    }
}

/// A fraction as percent with one decimal; `–` when undefined.
pub fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{:.1}", v * 100.0),
        None => "–".into(),
    }
}

fn table_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn table_rule(n: usize) -> String {
    let mut cells = vec!["---".to_string()];
    cells.extend((1..n).map(|_| ":---:".to_string()));
    table_row(&cells)
}

fn image_json(m: &ImageMetrics) -> Value {
    json!({"auroc": m.auroc, "ap": m.ap, "max_f1": m.max_f1})
}

fn pixel_json(m: &PixelMetrics) -> Value {
    json!({"auroc": m.auroc, "ap": m.ap, "max_f1": m.max_f1, "pro": m.pro,
           "aupro_exact": m.aupro_exact})
}

fn opt_u64(v: Option<&Value>) -> Result<Option<u64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .with_context(|| format!("{v} is not a non-negative integer")),
    }
}

fn level_values(v: Option<&Value>, names: &[&str]) -> Result<Option<Vec<Option<f64>>>> {
    let o = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(other) => bail!("{other} is not an object"),
    };
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        out.push(match o.get(*n) {
            None | Some(Value::Null) => None,
            Some(x) => Some(
                x.as_f64()
                    .with_context(|| format!("\"{n}\" is {x}, not a number"))?,
            ),
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetricsReport {
        let mut categories = BTreeMap::new();
        categories.insert(
            "bottle".to_string(),
            CategoryMetrics {
                n_images: 10,
                image: Some(ImageMetrics {
                    auroc: Some(0.9),
                    ap: Some(0.8),
                    max_f1: None,
                }),
                pixel: Some(PixelMetrics {
                    auroc: Some(0.95),
                    ap: Some(0.5),
                    max_f1: Some(0.55),
                    pro: Some(0.81234),
                    aupro_exact: Some(0.8),
                }),
            },
        );
        categories.insert(
            "cable".to_string(),
            CategoryMetrics {
                n_images: 4,
                image: Some(ImageMetrics {
                    auroc: Some(0.7),
                    ap: Some(0.6),
                    max_f1: Some(0.5),
                }),
                pixel: None,
            },
        );
        MetricsReport {
            dataset: "mvtec".into(),
            image_size: Some(518),
            shots: Some(0),
            categories,
        }
    }

    #[test]
    fn json_round_trip_schema_and_mean() {
        let r = sample();
        let v = r.to_json();
        assert_eq!(v["categories"]["bottle"]["image"]["max_f1"], Value::Null);
        assert!(v["categories"]["cable"].get("pixel").is_none());
        assert_eq!(
            v["mean"]["image"]["auroc"].as_f64().unwrap(),
            (0.9 + 0.7) / 2.0
        );
        assert_eq!(v["mean"]["image"]["max_f1"].as_f64().unwrap(), 0.5);
        assert_eq!(v["mean"]["pixel"]["pro"].as_f64().unwrap(), 0.81234);
        assert_eq!(MetricsReport::from_json(&v).unwrap(), r);
        assert_eq!(r.mean_warnings().len(), 1);
        assert!(MetricsReport::from_json(&json!({"categories": {"a": {"image": 3}}})).is_err());
    }

    #[test]
    fn markdown_percent_one_decimal() {
        let md = sample().to_markdown();
        assert!(
            md.contains("| bottle | (90.0, 80.0) | (95.0, 81.2) |"),
            "{md}"
        );
        assert!(md.contains("| cable | (70.0, 60.0) | (–, –) |"), "{md}");
        assert!(
            md.contains("| **Mean** | (80.0, 70.0) | (95.0, 81.2) |"),
            "{md}"
        );
    }
}
