//! rf-score: residual flow scores with input pre-processing (SPEC section 6), one `[N, C]` file
//! per (OOD set, layer, magnitude) under `{outf}/{net}_{dataset}/resflow/`.
mod cli;

use anyhow::Result;
use clap::Parser;
use resflow::detect::{DetectorKind, MAGNITUDES};
use resflow::pipeline::score;
use resflow::progress::Bars;

#[derive(Parser)]
#[command(version, about = "Residual flow scores with input pre-processing")]
struct Cli {
    #[command(flatten)]
    args: cli::ScoringArgs,
}

fn main() -> Result<()> {
    cli::report_file_size_limit();
    let cli = Cli::parse();
    let options = cli.args.options(DetectorKind::Resflow);
    let summary = score::run(&options, &mut Bars::default())?;
    println!(
        "residual flow scores of layer(s) {:?} x {} magnitudes in {}",
        summary.layers,
        MAGNITUDES.len(),
        summary.dir.display()
    );
    Ok(())
}
