//! The multi-run few-shot report: every run in the single-run metrics.json schema, and the
//! mean and standard deviation over runs.
//!
//! ```text
//! {<the single-run schema of the mean over runs: dataset, image_size, shots, categories, mean>,
//!  "alpha": f, "seed": int,
//!  "runs": [{<single-run schema>, "run": int, "references": {CAT: [path, ...]}}, ...],
//!  "summary": {"mean": {"categories": {...}, "mean": {...}},
//!              "std":  {"categories": {...}, "mean": {...}}}}
//! ```
//! A category's value is the mean (std) over the runs where the metric is defined; the std is
//! the population std (numpy's default, ddof = 0). `summary.mean.mean` is the mean over runs of
//! each run's category mean, `summary.std.mean` their std. The top-level `categories`/`mean`
//! repeat `summary.mean`, so `afclip compare` reads a few-shot metrics.json as it is.

use crate::metrics::report::{
    metric_values, pct, CategoryMetrics, ImageMetrics, Level, MetricsReport, PixelMetrics, METRICS,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One run of the protocol.
pub struct RunReport {
    pub run: usize,
    /// Reference images per category, as reported (relative to the dataset root).
    pub references: BTreeMap<String, Vec<String>>,
    pub report: MetricsReport,
}

type Values = [Option<f64>; 8];

/// Mean and population std of the defined values.
fn mean_std(values: impl Iterator<Item = Option<f64>>) -> (Option<f64>, Option<f64>) {
    let v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return (None, None);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (Some(mean), Some(var.sqrt()))
}

fn per_metric(rows: &[Values]) -> (Values, Values) {
    let mut mean = [None; 8];
    let mut std = [None; 8];
    for j in 0..8 {
        (mean[j], std[j]) = mean_std(rows.iter().map(|r| r[j]));
    }
    (mean, std)
}

fn category(v: &Values, n_images: usize, image: bool, pixel: bool) -> CategoryMetrics {
    CategoryMetrics {
        n_images,
        image: image.then_some(ImageMetrics {
            auroc: v[0],
            ap: v[1],
            max_f1: v[2],
        }),
        pixel: pixel.then_some(PixelMetrics {
            auroc: v[3],
            ap: v[4],
            max_f1: v[5],
            pro: v[6],
            aupro_exact: v[7],
        }),
    }
}

/// `{"image": {...}, "pixel": {...}}` of `values`, with the levels present.
fn levels_json(v: &Values, image: bool, pixel: bool) -> Value {
    let mut out = Map::new();
    for (level, key, on) in [
        (Level::Image, "image", image),
        (Level::Pixel, "pixel", pixel),
    ] {
        if on {
            let o: Map<String, Value> = METRICS
                .iter()
                .zip(v)
                .filter(|(id, _)| id.level == level)
                .map(|(id, x)| (id.name.to_string(), json!(x)))
                .collect();
            out.insert(key.into(), Value::Object(o));
        }
    }
    Value::Object(out)
}

/// The summary over runs: the report of the per-category means, and the JSON document.
pub struct Summary {
    pub mean: MetricsReport,
    pub std: BTreeMap<String, Values>,
    pub std_of_mean: Values,
    pub mean_of_mean: Values,
    pub has_image: bool,
    pub has_pixel: bool,
}

pub fn summarise(runs: &[RunReport]) -> Summary {
    let first = &runs[0].report;
    let mut mean = MetricsReport {
        dataset: first.dataset.clone(),
        image_size: first.image_size,
        shots: first.shots,
        categories: BTreeMap::new(),
    };
    let mut std = BTreeMap::new();
    for (name, c0) in &first.categories {
        let rows: Vec<Values> = runs
            .iter()
            .filter_map(|r| r.report.categories.get(name))
            .map(|c| metric_values(c.image.as_ref(), c.pixel.as_ref()))
            .collect();
        let (m, s) = per_metric(&rows);
        let (image, pixel) = (c0.image.is_some(), c0.pixel.is_some());
        mean.categories
            .insert(name.clone(), category(&m, c0.n_images, image, pixel));
        std.insert(name.clone(), s);
    }
    let means: Vec<Values> = runs
        .iter()
        .map(|r| {
            let m = r.report.mean();
            metric_values(m.image.as_ref(), m.pixel.as_ref())
        })
        .collect();
    let (mean_of_mean, std_of_mean) = per_metric(&means);
    let overall = first.mean();
    Summary {
        mean,
        std,
        std_of_mean,
        mean_of_mean,
        has_image: overall.image.is_some(),
        has_pixel: overall.pixel.is_some(),
    }
}

impl Summary {
    /// The metrics.json document (see the module docs).
    pub fn to_json(&self, runs: &[RunReport], alpha: f32, seed: u64) -> Value {
        let (hi, hp) = (self.has_image, self.has_pixel);
        let mut doc = self.mean.to_json();
        let mean_json = doc.clone();
        let runs_json: Vec<Value> = runs
            .iter()
            .map(|r| {
                let mut v = r.report.to_json();
                v["run"] = json!(r.run);
                v["references"] = json!(r.references);
                v
            })
            .collect();
        let std_cats: Map<String, Value> = self
            .std
            .iter()
            .map(|(name, v)| {
                let c = &self.mean.categories[name];
                (
                    name.clone(),
                    levels_json(v, c.image.is_some(), c.pixel.is_some()),
                )
            })
            .collect();
        doc["mean"] = levels_json(&self.mean_of_mean, hi, hp);
        // the decimal the user wrote (0.1), not the f32's binary expansion
        doc["alpha"] = json!(alpha.to_string().parse::<f64>().unwrap_or(f64::from(alpha)));
        doc["seed"] = json!(seed);
        doc["runs"] = Value::Array(runs_json);
        doc["summary"] = json!({
            "mean": {"categories": mean_json["categories"],
                     "mean": levels_json(&self.mean_of_mean, hi, hp)},
            "std": {"categories": std_cats, "mean": levels_json(&self.std_of_mean, hi, hp)},
        });
        doc
    }

    /// metrics.md: the mean over runs in the paper's layout, then `mean ± std` of every metric.
    pub fn to_markdown(&self, runs: usize) -> String {
        let mut out = self.mean.to_markdown();
        let shown: Vec<usize> = (0..METRICS.len())
            .filter(|&j| match METRICS[j].level {
                Level::Image => self.has_image,
                Level::Pixel => self.has_pixel,
            })
            .collect();
        out += &format!("\nMean ± std over {runs} runs (%):\n\n| Category |");
        for &j in &shown {
            out += &format!(" {} |", METRICS[j].heading);
        }
        out += "\n| --- |";
        out += &" ---: |".repeat(shown.len());
        out += "\n";
        let mut row = |name: &str, m: &Values, s: &Values| {
            out += &format!("| {name} |");
            for &j in &shown {
                out += &format!(" {} ± {} |", pct(m[j]), pct(s[j]));
            }
            out += "\n";
        };
        for (name, c) in &self.mean.categories {
            row(
                name,
                &metric_values(c.image.as_ref(), c.pixel.as_ref()),
                &self.std[name],
            );
        }
        row("**Mean**", &self.mean_of_mean, &self.std_of_mean);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(run: usize, auroc: f64, pro: f64) -> RunReport {
        let mut categories = BTreeMap::new();
        for (name, shift) in [("a", 0.0), ("b", 0.1)] {
            categories.insert(
                name.to_string(),
                category(
                    &[
                        Some(auroc - shift),
                        Some(0.5),
                        None,
                        Some(0.9),
                        Some(0.4),
                        Some(0.3),
                        Some(pro),
                        Some(0.7),
                    ],
                    3,
                    true,
                    true,
                ),
            );
        }
        RunReport {
            run,
            references: BTreeMap::from([("a".to_string(), vec![format!("train/{run}.png")])]),
            report: MetricsReport {
                dataset: "mvtec".into(),
                image_size: Some(98),
                shots: Some(1),
                categories,
            },
        }
    }

    #[test]
    fn mean_and_population_std_over_runs() {
        let runs = [run(0, 0.8, 0.6), run(1, 0.9, 0.8)];
        let s = summarise(&runs);
        let doc = s.to_json(&runs, 0.1, 7);
        let close = |v: &Value, want: f64| {
            let got = v.as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        };
        close(&doc["categories"]["a"]["image"]["auroc"], 0.85);
        close(
            &doc["summary"]["std"]["categories"]["a"]["image"]["auroc"],
            0.05,
        );
        close(
            &doc["summary"]["std"]["categories"]["b"]["pixel"]["pro"],
            0.1,
        );
        close(&doc["summary"]["mean"]["mean"]["image"]["auroc"], 0.8);
        close(&doc["summary"]["std"]["mean"]["image"]["auroc"], 0.05);
        close(&doc["mean"]["image"]["auroc"], 0.8);
        assert_eq!(
            doc["summary"]["std"]["mean"]["image"]["max_f1"],
            Value::Null
        );
        assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
        assert_eq!(doc["runs"][1]["run"], 1);
        assert_eq!(doc["runs"][1]["references"]["a"][0], "train/1.png");
        close(&doc["runs"][1]["categories"]["b"]["image"]["auroc"], 0.8);
        assert_eq!(doc["seed"], 7);
        // the top level still reads as a single-run document
        let back = MetricsReport::from_json(&doc).unwrap();
        assert_eq!(back, s.mean);
        let md = s.to_markdown(2);
        assert!(md.contains("| a | 85.0 ± 5.0 |"), "{md}");
    }
}
