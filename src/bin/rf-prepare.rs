//! rf-prepare: per-layer features of the train, test and OOD sets, class means, whitening and
//! tied precision (`docs/method.md#class-statistics-and-whitening`), under
//! `{outf}/{net}_{dataset}/features/`.
use resflow::cli;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use resflow::pipeline::prepare;
use resflow::progress::Bars;

#[derive(Parser)]
#[command(
    version,
    about = "Extract classifier features and fit per-layer statistics"
)]
struct Cli {
    #[command(flatten)]
    common: cli::CommonArgs,
    #[command(flatten)]
    validation: cli::ValidationArgs,
    /// Classifier: a checkpoint (.safetensors) or a TorchScript model (.pt) with its .json sidecar
    /// (default: pre_trained/{net}_{dataset}.safetensors, .pt for torchscript).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// OOD sets to extract, comma-separated: registry names, NAME=PATH or PATH for any folder of
    /// images, each optionally prefixed with its group near: or far: (default: the data set's
    /// usual OOD sets; required for an image-folder data set).
    #[arg(long, value_delimiter = ',')]
    ood: Option<Vec<String>>,
    /// Use only the first N train images (quick runs).
    #[arg(long = "max-train", alias = "max_train")]
    max_train: Option<usize>,
    /// Use only the first N test images.
    #[arg(long = "max-test", alias = "max_test")]
    max_test: Option<usize>,
    /// Use only the first N images of each OOD set (default: all; the generated photos, uniform
    /// and gaussian: as many as the test split, at most 5,000)
    #[arg(long = "max-ood", alias = "max_ood")]
    max_ood: Option<usize>,
}

fn main() -> Result<()> {
    cli::fail_writes_past_file_size_limit();
    let cli = Cli::parse();
    let options = prepare::Options {
        common: cli.common.common(),
        classifier: cli.classifier,
        ood_sets: cli.ood,
        validation: cli.validation.validation_src,
        max_train: cli.max_train,
        max_test: cli.max_test,
        max_ood: cli.max_ood,
    };
    let prepare::Summary {
        dir,
        manifest,
        warnings,
    } = prepare::run(&options, &mut Bars::default())?;
    println!(
        "train accuracy {:.2}%, test accuracy {:.2}%",
        100.0 * manifest.train_accuracy,
        100.0 * manifest.test_accuracy
    );
    for (l, (c, k)) in manifest
        .layer_channels
        .iter()
        .zip(&manifest.layer_ranks)
        .enumerate()
    {
        println!("layer {l}: {c} channels, whitening rank k = {k}");
    }
    for (name, rows) in manifest.sets.iter().filter(|(n, _)| n.starts_with("fgsm_")) {
        println!("{name}: {rows} FGSM samples");
    }
    println!("features written to {}", dir.path.display());
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
