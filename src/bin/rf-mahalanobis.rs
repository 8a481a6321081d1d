//! rf-mahalanobis: the Mahalanobis baseline's scores with input pre-processing (SPEC section 7),
//! one file per (OOD set, magnitude) under `{outf}/{net}_{dataset}/mahalanobis/`.
mod cli;

use anyhow::Result;
use clap::Parser;
use resflow::detect::{DetectorKind, MAGNITUDES};
use resflow::pipeline::score;
use resflow::progress::Bars;

#[derive(Parser)]
#[command(
    version,
    about = "Mahalanobis detector scores with input pre-processing"
)]
struct Cli {
    #[command(flatten)]
    args: cli::ScoringArgs,
}

fn main() -> Result<()> {
    cli::report_file_size_limit();
    let cli = Cli::parse();
    let options = cli.args.options(DetectorKind::Mahalanobis);
    let summary = score::run(&options, &mut Bars::default())?;
    println!(
        "Mahalanobis scores for {} OOD set(s) ({}) x {} magnitudes in {}",
        summary.sets.len(),
        summary.sets.join(", "),
        MAGNITUDES.len(),
        summary.dir.display()
    );
    Ok(())
}
