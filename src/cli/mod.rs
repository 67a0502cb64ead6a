//! Command-line interface: one file per verb, each with an `Args` (clap) and a `run`.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "afclip", version, about = "AF-CLIP visual anomaly detection engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
