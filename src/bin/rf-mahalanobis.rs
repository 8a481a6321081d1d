//! rf-mahalanobis: the Mahalanobis baseline's scores with input pre-processing (SPEC section 7),
//! one file per (OOD set, magnitude) under `{outf}/{net}_{dataset}/mahalanobis/`.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use resflow::artefacts::{run_dir, MAGNITUDES};
use resflow::cli::{CommonArgs, ValidationArgs};
use resflow::features::FeatureDir;
use resflow::fgsm::{fgsm_dir, FgsmSets};
use resflow::models::load_checkpoint;
use resflow::progress::Bars;

#[derive(Parser)]
#[command(
    version,
    about = "Mahalanobis detector scores with input pre-processing"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    validation: ValidationArgs,
    /// Classifier checkpoint (default: the one rf-prepare used, from the feature manifest).
    #[arg(long)]
    classifier: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let common = &cli.common;
    let device = common.device().device;
    let features = FeatureDir::new(&common.outf, common.net_type, &common.dataset);
    let manifest = features.manifest()?;
    let classifier_path = cli
        .classifier
        .clone()
        .unwrap_or(manifest.classifier.clone());
    let classifier = load_checkpoint(&classifier_path, device).context("loading the classifier")?;
    let fgsm = if cli.validation.fgsm() {
        let dir = fgsm_dir(&common.outf, common.net_type, &common.dataset);
        Some(
            FgsmSets::load_for(&dir, &classifier)
                .context("loading the FGSM samples (run rf-fgsm first)")?,
        )
    } else {
        None
    };
    let run = run_dir(&common.outf, common.net_type.name(), &common.dataset);
    let written = resflow::mahalanobis::run(
        &classifier,
        &features,
        &common.dataroot,
        &run,
        &MAGNITUDES,
        common.batch_size_or(100),
        device,
        fgsm.as_ref(),
        &mut Bars::default(),
    )?;
    println!(
        "Mahalanobis scores for {} OOD set(s) ({}) x {} magnitudes in {}",
        written.len(),
        written.join(", "),
        MAGNITUDES.len(),
        run.join("mahalanobis").display()
    );
    Ok(())
}
