//! `afclip merge`: the shard outputs of one `afclip score --shard I/N` run combined into the
//! output of a single run (see `crate::archive::merge`).

use crate::archive::merge::merge;
use anyhow::Result;
use clap::Args as ClapArgs;
use std::path::PathBuf;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The output folders of all N shards (any order).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Folder for the merged output.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let info = merge(&args.shards, &args.out)?;
    eprintln!(
        "merged {} shards: {} rows ({} failed) into {}",
        args.shards.len(),
        info.rows,
        info.failed,
        args.out.join(info.format.file_name()).display()
    );
    Ok(())
}
