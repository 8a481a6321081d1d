//! rf-fgsm: clean, noisy and FGSM adversarial versions of the in-distribution test split (SPEC
//! section 9), kept where clean and noisy are classified right and adversarial wrong, saved under
//! `{outf}/{net}_{dataset}/fgsm/` (layout in `resflow::fgsm`).
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use resflow::cli::CommonArgs;
use resflow::data::{self, Split};
use resflow::fgsm::{fgsm_dir, generate, noise_sigma, FgsmOptions, DEFAULT_BATCH_SIZE};
use resflow::progress::Bars;

#[derive(Parser)]
#[command(
    version,
    about = "FGSM adversarial and noisy samples of the test split"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Classifier checkpoint (default: pre_trained/{net}_{dataset}.safetensors).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Use only the first N test images.
    #[arg(long = "max-test", alias = "max_test")]
    max_test: Option<usize>,
    /// Noise standard deviation (default: ResNet 0.25/4, DenseNet 0.21/4; /8 for cifar100).
    #[arg(long)]
    sigma: Option<f64>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let common = &cli.common;
    let device = common.device().device;
    let (classifier_path, classifier) =
        common.load_classifier(cli.classifier.as_deref(), device)?;
    let mut test = data::load(&common.dataset, &common.dataroot, Split::Test)?;
    if let Some(n) = cli.max_test {
        test = test.take(n);
    }
    let options = FgsmOptions {
        sigma: cli
            .sigma
            .unwrap_or_else(|| noise_sigma(classifier.meta.architecture, &common.dataset)),
        batch_size: common.batch_size_or(DEFAULT_BATCH_SIZE),
        seed: common.seed,
        device,
    };
    let dir = fgsm_dir(&common.outf, classifier.meta.architecture, &common.dataset);
    let summary = generate(
        &classifier,
        &classifier_path,
        &common.dataset,
        &test,
        &options,
        &dir,
        &mut Bars::default(),
    )?;
    let c = &summary.counts;
    println!(
        "clean accuracy {}/{} ({:.2}%)",
        c.clean_correct,
        c.total,
        100.0 * summary.clean_accuracy
    );
    println!(
        "adversarial accuracy {}/{} ({:.2}%)",
        c.adv_correct,
        c.total,
        100.0 * summary.adversarial_accuracy
    );
    println!(
        "noisy accuracy {}/{} ({:.2}%)",
        c.noisy_correct,
        c.total,
        100.0 * summary.noisy_accuracy
    );
    println!(
        "mean L-inf perturbation {:.4} (normalised-input units: (pixel/255 - mean)/std)",
        c.mean_linf
    );
    println!(
        "kept {} of {} samples; written to {}",
        c.kept,
        c.total,
        dir.display()
    );
    if c.kept == 0 {
        eprintln!("warning: no sample kept; the FGSM validation needs at least 20");
    }
    Ok(())
}
