//! rf-fgsm: clean, noisy and FGSM adversarial versions of the in-distribution test split
//! (`docs/method.md#fgsm-samples`), kept where clean and noisy are classified right and adversarial
//! wrong, saved under
//! `{outf}/{net}_{dataset}/fgsm/` (layout in `resflow::store::fgsm`).
use resflow::cli;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use resflow::pipeline::fgsm;
use resflow::progress::Bars;

#[derive(Parser)]
#[command(
    version,
    about = "FGSM adversarial and noisy samples of the test split"
)]
struct Cli {
    #[command(flatten)]
    common: cli::CommonArgs,
    /// Classifier checkpoint (default: pre_trained/{net}_{dataset}.safetensors).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Use only the first N test images.
    #[arg(long = "max-test", alias = "max_test")]
    max_test: Option<usize>,
    /// Noise standard deviation (default: ResNet 0.25/4, DenseNet 0.21/4; /8 for cifar100).
    #[arg(long, allow_negative_numbers = true)]
    sigma: Option<f64>,
}

fn main() -> Result<()> {
    cli::fail_writes_past_file_size_limit();
    let cli = Cli::parse();
    let options = fgsm::Options {
        common: cli.common.common(),
        classifier: cli.classifier,
        max_test: cli.max_test,
        sigma: cli.sigma,
    };
    let fgsm::Summary {
        dir,
        summary,
        warnings,
    } = fgsm::run(&options, &mut Bars::default())?;
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
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
