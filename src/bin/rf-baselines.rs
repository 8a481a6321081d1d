//! rf-baselines: the post-hoc baselines' scores (SPEC 12): MSP, ODIN, Energy, MaxLogit, KNN and
//! ViM on the classifier's penultimate features, one folder each under
//! `{outf}/{net}_{dataset}/`, for `rf-regress --detector NAME`.
mod cli;

use anyhow::Result;
use clap::Parser;
use resflow::detect::baselines::{BaselineParams, KNN_NEIGHBOURS};
use resflow::detect::DetectorKind;
use resflow::pipeline::baselines;
use resflow::progress::Bars;

#[derive(Parser)]
#[command(
    version,
    about = "Scores of the post-hoc baselines: MSP, ODIN, Energy, MaxLogit, KNN, ViM"
)]
struct Cli {
    #[command(flatten)]
    args: cli::ScoringArgs,
    /// Baselines to score (comma-separated); default: all six.
    #[arg(long, value_delimiter = ',', value_parser = cli::baseline_parser())]
    detectors: Vec<DetectorKind>,
    /// KNN: number of neighbours k.
    #[arg(long = "knn-k", alias = "knn_k", default_value_t = KNN_NEIGHBOURS)]
    knn_k: usize,
    /// ViM: dimension of the principal subspace (default: the paper's rule for the feature size).
    #[arg(long = "vim-dim", alias = "vim_dim")]
    vim_dim: Option<usize>,
}

fn main() -> Result<()> {
    cli::report_file_size_limit();
    let cli = Cli::parse();
    let scoring = cli.args.options(DetectorKind::Msp);
    let options = baselines::Options {
        common: scoring.common,
        detectors: if cli.detectors.is_empty() {
            DetectorKind::BASELINES.to_vec()
        } else {
            cli.detectors
        },
        validation: scoring.validation,
        classifier: scoring.classifier,
        params: BaselineParams {
            knn_neighbours: cli.knn_k,
            vim_dimension: cli.vim_dim,
        },
    };
    let summary = baselines::run(&options, &mut Bars::default())?;
    for (kind, dir) in &summary.written {
        println!(
            "{} scores for {} set(s) ({}) in {}",
            kind.label(),
            summary.sets.len(),
            summary.sets.join(", "),
            dir.display()
        );
    }
    Ok(())
}
