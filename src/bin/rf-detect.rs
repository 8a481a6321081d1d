//! rf-detect: use the fitted detector. `fit` writes a run's detector bundle
//! (`docs/artefacts.md#the-detector-bundle`); `score` says of new images whether they are out of
//! distribution for the classifier, one CSV or JSON Lines row per image.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use resflow::cli::{self, detector_parser, validation_parser, CommonArgs};
use resflow::detect::DetectorKind;
use resflow::device::select_device;
use resflow::fit::Validation;
use resflow::pipeline::bundle::{fit, FitOptions};
use resflow::pipeline::detect::{score, OutputFormat, ScoreOptions};
use resflow::pipeline::export::{export, ExportFormat, ExportOptions};
use resflow::progress::Bars;

#[derive(Parser)]
#[command(
    version,
    about = "Use the fitted detector: write a run's bundle, score new images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the detector bundle of a finished run (after rf-regress).
    Fit(FitArgs),
    /// Score image files, folders or a list of paths on stdin (`-`) with a bundle's detector.
    Score(ScoreArgs),
    /// Export the classifier and a bundle's detector as one TorchScript (.pt) and/or
    /// torch.export (.pt2) model, with its metadata and a Triton config.pbtxt.
    Export(ExportArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelFormat {
    Torchscript,
    Pt2,
    Both,
}

#[derive(Args)]
struct ExportArgs {
    /// The bundle folder written by rf-detect fit.
    #[arg(long)]
    bundle: PathBuf,
    /// The bundle's detector to export (default: the bundle's default). Exportable: resflow,
    /// mahalanobis, msp, energy, maxlogit.
    #[arg(long, value_parser = detector_parser())]
    detector: Option<DetectorKind>,
    /// The classifier, if it moved since the bundle was written (its SHA-256 must match).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Which model files: detector.pt (TorchScript), detector.pt2 (torch.export) or both.
    #[arg(long, value_enum, default_value = "both")]
    format: ModelFormat,
    /// Also compile the .pt2 into an AOTInductor package (detector.aoti.pt2; needs a C++
    /// compiler, and takes a minute or more).
    #[arg(long)]
    aoti: bool,
    /// Compile the .pt2 and AOTInductor package for CUDA (needs a GPU here); default: the CPU.
    /// The TorchScript model runs on either (`.to("cuda")` after loading).
    #[arg(long, value_enum, default_value = "cpu")]
    device: ExportDevice,
    /// Class names in logit order, comma-separated (default: the TorchScript sidecar's, else the
    /// class indices).
    #[arg(long = "class-names", value_delimiter = ',')]
    class_names: Option<Vec<String>>,
    /// The output folder (replaced as a whole).
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportDevice {
    Cpu,
    Cuda,
}

#[derive(Args)]
struct FitArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Classifier checkpoint (default: the one rf-prepare used).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// The results to bundle: tuned on FGSM samples (no OOD data) or on one OOD set.
    #[arg(long, value_parser = validation_parser(), ignore_case = true, default_value = "fgsm")]
    validation: Validation,
    /// With --validation ood: the OOD set the detectors were tuned on.
    #[arg(long = "ood-set", alias = "ood_set")]
    ood_set: Option<String>,
    /// Share of in-distribution images the threshold lets pass.
    #[arg(long, default_value_t = 0.95)]
    tpr: f64,
    /// Detectors to bundle (comma-separated); default: every one with results.
    #[arg(long, value_delimiter = ',', value_parser = detector_parser())]
    detectors: Vec<DetectorKind>,
    /// The bundle folder (default: {outf}/{net}_{dataset}/bundle).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

#[derive(Args)]
struct ScoreArgs {
    /// The bundle folder written by rf-detect fit.
    #[arg(long)]
    bundle: PathBuf,
    /// The bundle's detector to use (default: the bundle's default, the residual flow if it has one).
    #[arg(long, value_parser = detector_parser())]
    detector: Option<DetectorKind>,
    /// The classifier, if it moved since the bundle was written (its SHA-256 must match).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Row format.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Write the rows to this file instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Images per batch.
    #[arg(long = "batch-size", alias = "batch_size", default_value_t = 100)]
    batch_size: usize,
    /// CUDA device index; the CPU is used (and said so) when CUDA or that device is missing.
    #[arg(long)]
    gpu: Option<usize>,
    /// Image files, folders of images, or - to read paths from stdin (one per line).
    #[arg(required = true)]
    inputs: Vec<String>,
}

fn main() -> Result<()> {
    cli::fail_writes_past_file_size_limit();
    match Cli::parse().command {
        Command::Fit(a) => {
            let options = FitOptions {
                common: a.common.common(),
                classifier: a.classifier,
                validation: a.validation,
                ood_set: a.ood_set,
                tpr: a.tpr,
                detectors: a.detectors,
                out: a.out,
            };
            let (dir, manifest) = fit(&options, &mut Bars::default())?;
            for d in &manifest.detectors {
                println!(
                    "{:<14} eps {:<7} threshold {:>12.6} (TPR {:.0}% on {}), record TNR at TPR 95% {:.2}%",
                    d.kind.label(),
                    resflow::detect::eps_name(d.eps),
                    d.threshold,
                    100.0 * d.tpr,
                    d.record_ood,
                    100.0 * d.record_metrics[0]
                );
            }
            println!(
                "bundle of {} detector(s), {} validation, default {}, written to {}",
                manifest.detectors.len(),
                manifest.validation.name(),
                manifest.default_detector.name(),
                dir.display()
            );
        }
        Command::Export(a) => {
            let options = ExportOptions {
                bundle: a.bundle,
                detector: a.detector,
                classifier: a.classifier,
                format: match a.format {
                    ModelFormat::Torchscript => ExportFormat::TorchScript,
                    ModelFormat::Pt2 => ExportFormat::Pt2,
                    ModelFormat::Both => ExportFormat::Both,
                },
                aoti: a.aoti,
                cuda: a.device == ExportDevice::Cuda,
                class_names: a.class_names,
                out: a.out,
            };
            let summary = export(&options)?;
            println!("{summary}");
            eprintln!("exported to {}", options.out.display());
        }
        Command::Score(a) => {
            let choice = select_device(a.gpu);
            if let Some(notice) = &choice.notice {
                eprintln!("note: {notice}");
            }
            let options = ScoreOptions {
                bundle: a.bundle,
                detector: a.detector,
                classifier: a.classifier,
                inputs: a.inputs,
                format: match a.format {
                    Format::Csv => OutputFormat::Csv,
                    Format::Jsonl => OutputFormat::JsonLines,
                },
                batch_size: a.batch_size,
                device: choice.device,
            };
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let summary = match &a.output {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
                    score(&options, &mut input, &mut file, &mut Bars::default())?
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut out = stdout.lock();
                    score(&options, &mut input, &mut out, &mut Bars::default())?
                }
            };
            eprintln!(
                "{} image(s) scored, {} called OOD, {} unreadable",
                summary.scored, summary.ood, summary.failed
            );
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} input(s) could not be read (rows with an error above)",
                    summary.failed
                );
            }
        }
    }
    Ok(())
}
