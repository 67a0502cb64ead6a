//! Deltas between a baseline and a current metrics report; the regression gate.
//!
//! Every metric of every baseline category and of the mean is compared. A regression is a
//! metric that drops by more than the tolerance (a fraction: 0.005 = half a point), or that the
//! baseline has and the current report lacks (category, level or value missing / undefined).
//! Categories new in the current report are listed, never regressions.

use super::report::{metric_values, MetricId, MetricsReport, METRICS};

/// Name of the mean row.
pub const MEAN_ROW: &str = "mean";

/// One metric of one category (or the mean) in both reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    pub category: String,
    pub metric: MetricId,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
}

impl Delta {
    /// current − baseline, when both exist.
    pub fn delta(&self) -> Option<f64> {
        Some(self.current? - self.baseline?)
    }

    /// Dropped by more than `tolerance`, or lost.
    pub fn is_regression(&self, tolerance: f64) -> bool {
        match (self.baseline, self.current) {
            (Some(b), Some(c)) => b - c > tolerance + 1e-12,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The comparison of two reports.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub tolerance: f64,
    /// Per category in baseline order, then the mean; every metric in [`METRICS`] order.
    pub rows: Vec<Delta>,
    /// Categories only in the current report.
    pub new_categories: Vec<String>,
}

/// Compares `current` against `baseline`.
pub fn compare(baseline: &MetricsReport, current: &MetricsReport, tolerance: f64) -> Comparison {
    let mut rows = Vec::new();
    let mut push = |category: &str, b: [Option<f64>; 8], c: [Option<f64>; 8]| {
        for (j, metric) in METRICS.iter().enumerate() {
            rows.push(Delta {
                category: category.to_string(),
                metric: *metric,
                baseline: b[j],
                current: c[j],
            });
        }
    };
    for (name, b) in &baseline.categories {
        let bv = metric_values(b.image.as_ref(), b.pixel.as_ref());
        let cv = current
            .categories
            .get(name)
            .map(|c| metric_values(c.image.as_ref(), c.pixel.as_ref()))
            .unwrap_or([None; 8]);
        push(name, bv, cv);
    }
    let (bm, cm) = (baseline.mean(), current.mean());
    push(
        MEAN_ROW,
        metric_values(bm.image.as_ref(), bm.pixel.as_ref()),
        metric_values(cm.image.as_ref(), cm.pixel.as_ref()),
    );
    let new_categories = current
        .categories
        .keys()
        .filter(|k| !baseline.categories.contains_key(*k))
        .cloned()
        .collect();
    Comparison {
        tolerance,
        rows,
        new_categories,
    }
}

impl Comparison {
    /// The rows that fail the gate.
    pub fn regressions(&self) -> Vec<&Delta> {
        self.rows
            .iter()
            .filter(|d| d.is_regression(self.tolerance))
            .collect()
    }

    /// A markdown table of deltas in percentage points (`!` marks a regression), then the
    /// list of regressions.
    pub fn to_table(&self) -> String {
        let shown: Vec<usize> = (0..METRICS.len())
            .filter(|&j| {
                self.rows
                    .iter()
                    .skip(j)
                    .step_by(METRICS.len())
                    .any(|d| d.baseline.is_some() || d.current.is_some())
            })
            .collect();
        let mut out = format!(
            "Delta current − baseline, percentage points (! = drop > {:.2} points or lost)\n\n",
            self.tolerance * 100.0
        );
        let mut head = vec!["Category".to_string()];
        head.extend(shown.iter().map(|&j| METRICS[j].heading.to_string()));
        out += &format!("| {} |\n", head.join(" | "));
        let mut rule = vec!["---".to_string()];
        rule.extend(shown.iter().map(|_| "---:".to_string()));
        out += &format!("| {} |\n", rule.join(" | "));
        for row in self.rows.chunks(METRICS.len()) {
            let mut cells = vec![row[0].category.clone()];
            for &j in &shown {
                let d = &row[j];
                let mark = if d.is_regression(self.tolerance) {
                    " !"
                } else {
                    ""
                };
                cells.push(match (d.delta(), d.baseline) {
                    (Some(x), _) => format!("{:+.2}{mark}", x * 100.0),
                    (None, Some(_)) => format!("lost{mark}"),
                    (None, None) => "–".to_string(),
                });
            }
            out += &format!("| {} |\n", cells.join(" | "));
        }
        if !self.new_categories.is_empty() {
            out += &format!(
                "\nOnly in the current report: {}\n",
                self.new_categories.join(", ")
            );
        }
        let regressions = self.regressions();
        if regressions.is_empty() {
            out += "\nNo regressions.\n";
        } else {
            out += &format!("\n{} regression(s):\n", regressions.len());
            for d in regressions {
                let pct = |v: Option<f64>| match v {
                    Some(v) => format!("{:.2}", v * 100.0),
                    None => "missing".to_string(),
                };
                out += &format!(
                    "- {} {}: {} -> {}\n",
                    d.category,
                    d.metric.heading,
                    pct(d.baseline),
                    pct(d.current)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::report::{CategoryMetrics, ImageMetrics, PixelMetrics};
    use std::collections::BTreeMap;

    fn report(cats: &[(&str, f64, Option<f64>)]) -> MetricsReport {
        let mut categories = BTreeMap::new();
        for &(name, auroc, pro) in cats {
            categories.insert(
                name.to_string(),
                CategoryMetrics {
                    n_images: 5,
                    image: Some(ImageMetrics {
                        auroc: Some(auroc),
                        ap: Some(0.9),
                        max_f1: Some(0.8),
                    }),
                    pixel: Some(PixelMetrics {
                        pro,
                        ..Default::default()
                    }),
                },
            );
        }
        MetricsReport {
            categories,
            ..Default::default()
        }
    }

    #[test]
    fn gate_flags_drops_beyond_tolerance_and_losses() {
        let base = report(&[("a", 0.90, Some(0.7)), ("b", 0.80, None)]);
        // Within tolerance (exactly at it, and a gain): no regression.
        let same = report(&[("a", 0.895, Some(0.75)), ("b", 0.80, None)]);
        let c = compare(&base, &same, 0.005);
        assert!(c.regressions().is_empty(), "{}", c.to_table());
        // a drops 0.6 points, and its PRO is lost; b is new-only metric: fine.
        let worse = report(&[("a", 0.894, None), ("b", 0.80, None), ("c", 0.5, None)]);
        let c = compare(&base, &worse, 0.005);
        let r: Vec<(&str, &str)> = c
            .regressions()
            .iter()
            .map(|d| (d.category.as_str(), d.metric.heading))
            .collect();
        assert_eq!(
            r,
            vec![
                ("a", "I-AUROC"),
                ("a", "PRO"),
                ("mean", "I-AUROC"),
                ("mean", "PRO")
            ]
        );
        assert_eq!(c.new_categories, vec!["c".to_string()]);
        let t = c.to_table();
        assert!(t.contains("| a | -0.60 !"), "{t}");
        assert!(t.contains("lost !"), "{t}");
        // A category missing entirely loses every metric it had.
        let gone = report(&[("b", 0.80, None)]);
        let c = compare(&base, &gone, 0.005);
        assert!(c
            .regressions()
            .iter()
            .any(|d| d.category == "a" && d.metric.heading == "I-AP"));
    }
}
