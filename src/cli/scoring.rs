//! The three scoring binaries (`rf-mahalanobis`, `rf-score`, `rf-baselines`) as one function of
//! the detector kinds they score ([`main`]): shared flags, the scoring stage
//! ([`crate::pipeline::score`]), one line per detector scored.
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser};

use super::{baseline_parser, CommonArgs, ValidationArgs};
use crate::detect::entropy::GenParams;
use crate::detect::knn::KnnParams;
use crate::detect::nnguide::NnguideParams;
use crate::detect::shaping::{AshParams, AshVariant, ReactParams, ScaleParams};
use crate::detect::vim::VimParams;
use crate::detect::{DetectorKind, DetectorParams, BASELINES_STAGE};
use crate::error::Result;
use crate::pipeline::score::{self, Summary};
use crate::progress::Bars;

/// Flags of every scoring binary.
#[derive(Debug, Clone, Args)]
pub struct ScoringArgs {
    /// The shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// In-distribution validation source.
    #[command(flatten)]
    pub validation: ValidationArgs,
    /// Classifier checkpoint (default: the one rf-prepare used, from the feature manifest).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
}

impl ScoringArgs {
    /// The scoring stage's options for `detectors`.
    pub fn options(&self, detectors: Vec<DetectorParams>) -> score::Options {
        score::Options {
            common: self.common.common(),
            detectors,
            validation: self.validation.validation_src,
            classifier: self.classifier.clone(),
        }
    }
}

/// The post-hoc detectors' choice and parameters (`rf-baselines`).
#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Baselines to score (comma-separated); default: all of them.
    #[arg(long, value_delimiter = ',', value_parser = baseline_parser())]
    pub detectors: Vec<DetectorKind>,
    /// KNN: number of neighbours k (default: 50, the paper's, or every train row where there are
    /// fewer).
    #[arg(long = "knn-k", alias = "knn_k")]
    pub knn_k: Option<usize>,
    /// ViM: dimension of the principal subspace (default: the paper's rule for the feature size).
    #[arg(long = "vim-dim", alias = "vim_dim")]
    pub vim_dim: Option<usize>,
    /// ReAct: percentile of the training activations at which they are clipped.
    #[arg(long = "react-percentile", alias = "react_percentile", default_value_t = ReactParams::default().percentile)]
    pub react_percentile: f64,
    /// ASH: percentage of each row's activations pruned.
    #[arg(long = "ash-percentile", alias = "ash_percentile", default_value_t = AshParams::default().percentile)]
    pub ash_percentile: f64,
    /// ASH: how the kept activations are shaped: s (scaled), b (binarised) or p (pruned only).
    #[arg(long = "ash-variant", alias = "ash_variant", default_value = "s")]
    pub ash_variant: AshVariant,
    /// SCALE: percentage of each row's activations left out of the kept sum.
    #[arg(long = "scale-percentile", alias = "scale_percentile", default_value_t = ScaleParams::default().percentile)]
    pub scale_percentile: f64,
    /// GEN: the exponent gamma.
    #[arg(long = "gen-gamma", alias = "gen_gamma", default_value_t = GenParams::default().gamma)]
    pub gen_gamma: f64,
    /// GEN: number M of largest class probabilities (default: 100, or every class where there
    /// are fewer).
    #[arg(long = "gen-m", alias = "gen_m")]
    pub gen_m: Option<usize>,
    /// NNGuide: fraction of the training rows in the bank of guides.
    #[arg(long = "nnguide-alpha", alias = "nnguide_alpha", default_value_t = NnguideParams::default().alpha)]
    pub nnguide_alpha: f64,
    /// NNGuide: number K of most similar guides (default: 100, or the whole bank where it is
    /// smaller).
    #[arg(long = "nnguide-k", alias = "nnguide_k")]
    pub nnguide_k: Option<usize>,
}

impl BaselineArgs {
    /// The parameters of each chosen baseline (every baseline when none is named).
    pub fn params(&self) -> Vec<DetectorParams> {
        let kinds = if self.detectors.is_empty() {
            DetectorKind::scored_by(BASELINES_STAGE)
        } else {
            self.detectors.clone()
        };
        kinds
            .into_iter()
            .map(|kind| match DetectorParams::default_for(kind) {
                DetectorParams::Knn(_) => DetectorParams::Knn(KnnParams { k: self.knn_k }),
                DetectorParams::Vim(_) => DetectorParams::Vim(VimParams { dim: self.vim_dim }),
                DetectorParams::React(_) => DetectorParams::React(ReactParams {
                    percentile: self.react_percentile,
                }),
                DetectorParams::Ash(_) => DetectorParams::Ash(AshParams {
                    percentile: self.ash_percentile,
                    variant: self.ash_variant,
                }),
                DetectorParams::Scale(_) => DetectorParams::Scale(ScaleParams {
                    percentile: self.scale_percentile,
                }),
                DetectorParams::Gen(_) => DetectorParams::Gen(GenParams {
                    gamma: self.gen_gamma,
                    top: self.gen_m,
                }),
                DetectorParams::Nnguide(_) => DetectorParams::Nnguide(NnguideParams {
                    alpha: self.nnguide_alpha,
                    k: self.nnguide_k,
                }),
                defaults @ (DetectorParams::Msp
                | DetectorParams::Odin(_)
                | DetectorParams::Energy
                | DetectorParams::MaxLogit
                | DetectorParams::Rmds
                | DetectorParams::Fdbd
                | DetectorParams::Mahalanobis(_)
                | DetectorParams::Resflow(_)) => defaults,
            })
            .collect()
    }
}

/// `rf-mahalanobis` and `rf-score`: one detector, its default parameters.
#[derive(Parser)]
struct OneDetectorCli {
    #[command(flatten)]
    args: ScoringArgs,
}

/// `rf-baselines`: the chosen baselines and their parameters.
#[derive(Parser)]
struct BaselinesCli {
    #[command(flatten)]
    args: ScoringArgs,
    #[command(flatten)]
    baselines: BaselineArgs,
}

/// The whole of the scoring binary `stage` (the [`crate::detect::KindInfo::stage`] of the kinds
/// it scores): parses the flags, runs the scoring stage, prints one line per detector.
pub fn main(stage: &'static str, about: &'static str) -> Result<()> {
    let summary = if stage == BASELINES_STAGE {
        let cli: BaselinesCli = parse(BaselinesCli::command(), stage, about);
        score::run(
            &cli.args.options(cli.baselines.params()),
            &mut Bars::default(),
        )?
    } else {
        let cli: OneDetectorCli = parse(OneDetectorCli::command(), stage, about);
        let params = DetectorKind::scored_by(stage)
            .into_iter()
            .map(DetectorParams::default_for)
            .collect();
        score::run(&cli.args.options(params), &mut Bars::default())?
    };
    print_summary(&summary);
    Ok(())
}

/// Parses the process's arguments with `command`, named `stage` and described by `about`.
fn parse<T: FromArgMatches>(command: clap::Command, stage: &'static str, about: &'static str) -> T {
    let matches = command
        .name(stage)
        .bin_name(stage)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// One line per detector: what was scored and where it went.
fn print_summary(summary: &Summary) {
    for scored in &summary.detectors {
        println!(
            "{} scores for {} set(s) ({}), layer(s) {:?} x {} magnitude(s), in {}",
            scored.kind.label(),
            summary.sets.len(),
            summary.sets.join(", "),
            scored.layers,
            scored.magnitudes.len(),
            scored.dir.display()
        );
    }
}
