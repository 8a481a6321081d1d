//! rf-score: residual flow scores with input pre-processing (SPEC section 6), one `[N, C]` file
//! per (OOD set, layer, magnitude) under `{outf}/{net}_{dataset}/resflow/`.
use anyhow::Result;
use clap::Parser;
use resflow::artefacts::MAGNITUDES;
use resflow::cli::ScoringArgs;
use resflow::progress::Bars;
use resflow::stage::ScoringStage;

#[derive(Parser)]
#[command(version, about = "Residual flow scores with input pre-processing")]
struct Cli {
    #[command(flatten)]
    args: ScoringArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let stage = ScoringStage::open(&cli.args)?;
    let layers = resflow::resflow_scores::run(&stage, &MAGNITUDES, &mut Bars::default())?;
    let run = &stage.run;
    println!(
        "residual flow scores of layer(s) {layers:?} x {} magnitudes in {}",
        MAGNITUDES.len(),
        run.join("resflow").display()
    );
    Ok(())
}
