//! rf-mahalanobis: the Mahalanobis baseline's scores with input pre-processing (SPEC section 7),
//! one file per (OOD set, magnitude) under `{outf}/{net}_{dataset}/mahalanobis/`.
use anyhow::Result;
use clap::Parser;
use resflow::artefacts::MAGNITUDES;
use resflow::cli::ScoringArgs;
use resflow::progress::Bars;
use resflow::stage::ScoringStage;

#[derive(Parser)]
#[command(
    version,
    about = "Mahalanobis detector scores with input pre-processing"
)]
struct Cli {
    #[command(flatten)]
    args: ScoringArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let stage = ScoringStage::open(&cli.args)?;
    let written = resflow::mahalanobis::run(&stage, &MAGNITUDES, &mut Bars::default())?;
    let run = &stage.run;
    println!(
        "Mahalanobis scores for {} OOD set(s) ({}) x {} magnitudes in {}",
        written.len(),
        written.join(", "),
        MAGNITUDES.len(),
        run.join("mahalanobis").display()
    );
    Ok(())
}
