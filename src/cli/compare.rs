//! `afclip compare BASELINE.json CURRENT.json [--tolerance 0.005]`: the regression gate.
//!
//! Prints per-category and mean deltas; exits with code 1 when any metric of the baseline
//! dropped by more than the tolerance or is missing (errors exit with code 2).

use crate::metrics::compare::compare;
use crate::metrics::report::MetricsReport;
use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use std::io::Write;
use std::path::PathBuf;

/// Exit code when the gate fails.
pub const REGRESSION_EXIT_CODE: i32 = 1;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The reference metrics.json.
    pub baseline: PathBuf,
    /// The metrics.json to check.
    pub current: PathBuf,
    /// Largest allowed drop of any metric, as a fraction (0.005 = half a percentage point).
    #[arg(long, default_value_t = 0.005)]
    pub tolerance: f64,
}

pub fn run(args: Args) -> Result<()> {
    if !(args.tolerance >= 0.0 && args.tolerance.is_finite()) {
        bail!(
            "--tolerance must be a finite number >= 0, got {}",
            args.tolerance
        );
    }
    let baseline = MetricsReport::read_json(&args.baseline)?;
    let current = MetricsReport::read_json(&args.current)?;
    let cmp = compare(&baseline, &current, args.tolerance);
    let mut out = std::io::stdout().lock();
    write!(out, "{}", cmp.to_table())?;
    out.flush()?;
    if !cmp.regressions().is_empty() {
        std::process::exit(REGRESSION_EXIT_CODE);
    }
    Ok(())
}
