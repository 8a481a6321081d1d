//! Command-line flags shared by the stage binaries, defined once (clap) and mapped onto the
//! library's options ([`crate::pipeline::Common`]); [`scoring`] is the whole of the three
//! scoring binaries.
//!
//! Flags are kebab-case; the original scripts' snake_case spellings (`--net_type`, `--batch_size`)
//! are accepted as aliases so that old commands keep working with the binary name swapped.
pub mod scoring;

use std::path::PathBuf;
use std::str::FromStr;

use crate::detect::{DetectorKind, BASELINES_STAGE};
use crate::device::select_device;
use crate::fit::Validation;
use crate::models::NetType;
use crate::pipeline::Common;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;

/// A parser of the library enum `T` from `values` (listed in `--help`, any case).
fn enum_parser<T>(
    values: impl IntoIterator<Item = PossibleValue>,
) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(values).try_map(|s| s.parse::<T>())
}

/// `resnet`, `densenet` or `torchscript`.
pub fn net_type_parser() -> impl TypedValueParser<Value = NetType> {
    enum_parser(NetType::ALL.map(|n| PossibleValue::new(n.name())))
}

/// `ood` (alias `io`) or `fgsm`.
pub fn validation_parser() -> impl TypedValueParser<Value = Validation> {
    enum_parser([
        PossibleValue::new("ood").alias("io"),
        PossibleValue::new("fgsm"),
    ])
}

/// One of the detectors' names.
pub fn detector_parser() -> impl TypedValueParser<Value = DetectorKind> {
    enum_parser(
        DetectorKind::ALL
            .iter()
            .map(|d| PossibleValue::new(d.name())),
    )
}

/// Makes a write beyond the file-size limit (`ulimit -f`) fail with an error that names the
/// file (EFBIG; the temporary file is then removed), instead of the default SIGXFSZ that kills
/// the process mid-write without a word. Call first in `main`.
pub fn fail_writes_past_file_size_limit() {
    // SAFETY: sets one signal's disposition to "ignore"; no handler runs, and nothing else in
    // the process depends on SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// One of the post-hoc baselines' names (the kinds that [`BASELINES_STAGE`] scores).
pub fn baseline_parser() -> impl TypedValueParser<Value = DetectorKind> {
    enum_parser(
        DetectorKind::scored_by(BASELINES_STAGE)
            .into_iter()
            .map(|d| PossibleValue::new(d.name())),
    )
}

/// Flags common to the pipeline stages.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// In-distribution dataset: a registry name (see `rf-data list`), or an image folder in
    /// torchvision's ImageFolder layout (train/<class>/*, test/<class>/*) as folder:PATH or NAME=PATH.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Classifier architecture: the paper's resnet or densenet, or torchscript for your own model
    /// (--classifier model.pt with its model.json sidecar).
    #[arg(long = "net-type", alias = "net_type", value_parser = net_type_parser(), default_value = "resnet")]
    pub net_type: NetType,
    /// CUDA device index; the CPU is used (and said so) when CUDA or that device is missing.
    #[arg(long)]
    pub gpu: Option<usize>,
    /// Folder holding the datasets.
    #[arg(long, default_value = "data")]
    pub dataroot: PathBuf,
    /// Folder for the pipeline's outputs.
    #[arg(long, default_value = "output")]
    pub outf: PathBuf,
    /// Random seed (shuffling, initialisation, noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Batch size; each stage has its own default.
    #[arg(long = "batch-size", alias = "batch_size", value_parser = clap::value_parser!(u64).range(1..).map(|v| v as usize))]
    pub batch_size: Option<usize>,
    /// Compute threads of libtorch (default: its choice, one per core). Jobs that share a machine
    /// should split its cores between them: oversubscribed cores are much slower than fewer threads.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
}

// The same three flags for the binaries without the other common flags (rf-regress, rf-data);
// CommonArgs keeps them as plain fields.

/// `--net-type` (alias `--net_type`).
#[derive(Debug, Clone, Copy, Args)]
pub struct NetArgs {
    /// Classifier architecture.
    #[arg(long = "net-type", alias = "net_type", value_parser = net_type_parser(), default_value = "resnet")]
    pub net_type: NetType,
}

/// `--dataroot`.
#[derive(Debug, Clone, Args)]
pub struct DatarootArgs {
    /// Folder holding the datasets.
    #[arg(long, default_value = "data")]
    pub dataroot: PathBuf,
}

/// `--outf`.
#[derive(Debug, Clone, Args)]
pub struct OutfArgs {
    /// Folder for the pipeline's outputs.
    #[arg(long, default_value = "output")]
    pub outf: PathBuf,
}

impl CommonArgs {
    /// The library's stage settings; picks the device, printing the notice when the CPU
    /// replaces a missing GPU.
    pub fn common(&self) -> Common {
        let choice = select_device(self.gpu);
        if let Some(notice) = &choice.notice {
            eprintln!("note: {notice}");
        }
        if let Some(n) = self.threads {
            tch::set_num_threads(n);
            eprintln!("note: {n} compute thread(s) (--threads)");
        }
        Common {
            dataset: self.dataset.clone(),
            net_type: self.net_type,
            dataroot: self.dataroot.clone(),
            outf: self.outf.clone(),
            device: choice.device,
            seed: self.seed,
            batch_size: self.batch_size,
        }
    }

    /// The batch size given, or `default`.
    pub fn batch_size_or(&self, default: usize) -> usize {
        self.batch_size.unwrap_or(default)
    }
}

/// `--validation-src` (alias `--validation_src`, case-insensitive): `ood` (alias `io`, the
/// default) or `fgsm`, which makes the stages also process the FGSM sets written by rf-fgsm.
#[derive(Debug, Clone, Copy, Args)]
pub struct ValidationArgs {
    /// Validation data: the OOD sets themselves (`ood`, alias `io`) or FGSM samples (`fgsm`).
    #[arg(
        long = "validation-src",
        alias = "validation_src",
        value_parser = validation_parser(),
        ignore_case = true,
        default_value = "ood"
    )]
    pub validation_src: Validation,
}

impl ValidationArgs {
    /// True for `fgsm`.
    pub fn fgsm(&self) -> bool {
        self.validation_src == Validation::Fgsm
    }
}
