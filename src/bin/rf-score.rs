//! rf-score: residual flow scores with input pre-processing (SPEC section 6), one `[N, C]` file
//! per (OOD set, layer, magnitude) under `{outf}/{net}_{dataset}/resflow/`.
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
#[command(version, about = "Residual flow scores with input pre-processing")]
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
    let layers = resflow::resflow_scores::run(
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
        "residual flow scores of layer(s) {layers:?} x {} magnitudes in {}",
        MAGNITUDES.len(),
        run.join("resflow").display()
    );
    Ok(())
}
