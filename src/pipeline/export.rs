//! `rf-detect export`: a bundle's classifier and one fitted detector as one model file for
//! PyTorch, C++ libtorch and model servers (README, "Exporting the detector"). The bundle is
//! checked here (its format, the classifier's SHA-256, the detector kind); the models are written
//! by `scripts/export_detector.py`, embedded in this binary, with the set-up's Python
//! (`RESFLOW_PYTHON`, else `python3`), which needs torch and safetensors.
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::Device;

use crate::bundle::{BundleManifest, OodDetector};
use crate::detect::DetectorKind;
use crate::error::{Error, Result};
use crate::models::NetType;

/// The detectors that can be exported (their scoring is transcribed in
/// `scripts/detector_modules.py`).
pub const EXPORTABLE: [DetectorKind; 5] = [
    DetectorKind::Resflow,
    DetectorKind::Mahalanobis,
    DetectorKind::Msp,
    DetectorKind::Energy,
    DetectorKind::MaxLogit,
];

/// The scripts written next to each other for the exporter's Python run.
const SCRIPTS: [(&str, &str); 3] = [
    (
        "export_detector.py",
        include_str!("../../scripts/export_detector.py"),
    ),
    (
        "detector_modules.py",
        include_str!("../../scripts/detector_modules.py"),
    ),
    (
        "reference_models.py",
        include_str!("../../scripts/reference_models.py"),
    ),
];

/// Which model files to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `detector.pt` (torch.jit.script), with Triton's `config.pbtxt`.
    TorchScript,
    /// `detector.pt2` (torch.export).
    Pt2,
    /// Both.
    Both,
}

impl ExportFormat {
    fn name(self) -> &'static str {
        match self {
            ExportFormat::TorchScript => "torchscript",
            ExportFormat::Pt2 => "pt2",
            ExportFormat::Both => "both",
        }
    }
}

/// The options of [`export`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The bundle folder (`rf-detect fit`).
    pub bundle: PathBuf,
    /// Its detector to export; `None`: the bundle's default.
    pub detector: Option<DetectorKind>,
    /// The classifier, where it is no longer where the bundle says.
    pub classifier: Option<PathBuf>,
    /// Which files.
    pub format: ExportFormat,
    /// Also compile an AOTInductor package of the `.pt2` (`detector.aoti.pt2`).
    pub aoti: bool,
    /// Compile the `.pt2` (and AOTInductor package) for CUDA instead of the CPU.
    pub cuda: bool,
    /// Class names in logit order (default: the TorchScript sidecar's, else the indices).
    pub class_names: Option<Vec<String>>,
    /// The output folder (replaced atomically).
    pub out: PathBuf,
}

/// The Python that runs the exporter: `RESFLOW_PYTHON`, else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("RESFLOW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Checks the bundle and its detector, then writes the export folder `options.out`; returns the
/// exporter's one-line JSON summary (files and seconds).
pub fn export(options: &ExportOptions) -> Result<String> {
    let manifest = BundleManifest::read(&options.bundle)?;
    let chosen = manifest
        .detector(options.detector, &options.bundle)?
        .clone();
    if !EXPORTABLE.contains(&chosen.kind) {
        let names: Vec<&str> = EXPORTABLE.iter().map(|k| k.name()).collect();
        return Err(Error::bad_option(
            "--detector",
            format!(
                "the {} detector cannot be exported: its scoring has no PyTorch transcription \
                 here; exportable: {} (pass one with --detector)",
                chosen.kind.name(),
                names.join(", ")
            ),
        ));
    }
    // The whole bundle as rf-detect score would use it: the classifier's SHA-256, the detector
    // file and its kind.
    OodDetector::load(
        &options.bundle,
        Some(chosen.kind),
        options.classifier.as_deref(),
        Device::Cpu,
    )?;
    let classifier = options
        .classifier
        .clone()
        .unwrap_or_else(|| manifest.classifier.path.clone());
    check_classifier(&classifier, manifest.classifier.net_type)?;
    if manifest.classifier.net_type == NetType::TorchScript
        && options.format != ExportFormat::TorchScript
    {
        return Err(Error::bad_option(
            "--format",
            format!(
                "the classifier {} is a TorchScript model: tracing it for torch.export fixes its \
                 batch size (the TorchScript interpreter does not keep it symbolic), so only \
                 --format torchscript is exported for it; a .pt2 needs the classifier as PyTorch \
                 code (resflow's ResNet or DenseNet)",
                classifier.display()
            ),
        ));
    }
    check_python()?;
    let mut summary = String::new();
    crate::io::write_folder_atomically(&options.out, |dir| {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let scripts = dir.join("scripts.partial");
        std::fs::create_dir_all(&scripts).map_err(|e| Error::io(&scripts, e))?;
        for (name, text) in SCRIPTS {
            crate::io::write_text(&scripts.join(name), text)?;
        }
        let result = run_exporter(options, chosen.kind, &classifier, &scripts, dir);
        let _ = std::fs::remove_dir_all(&scripts);
        summary = result?;
        Ok(())
    })?;
    Ok(summary)
}

/// Refuses a classifier the exporter cannot rebuild in PyTorch: a ResNet or DenseNet needs its
/// JSON sidecar (width, classes); a TorchScript model is loaded as it is.
fn check_classifier(path: &Path, net: NetType) -> Result<()> {
    let sidecar = path.with_extension("json");
    if !sidecar.is_file() {
        return Err(Error::missing(
            &sidecar,
            format!(
                "the {} classifier {} cannot be exported without its JSON sidecar (width, \
                 classes, normalisation), written next to it by rf-classifier or \
                 scripts/convert_weights.py; put it back",
                net.name(),
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses a Python without torch or safetensors, saying how to point at another one.
fn check_python() -> Result<()> {
    let py = python();
    let out = Command::new(&py)
        .args(["-c", "import torch, safetensors"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::bad_option(
            "RESFLOW_PYTHON",
            format!(
                "{} cannot import torch and safetensors, which the exporter needs ({}); install \
                 them (`pip install torch safetensors`) or set RESFLOW_PYTHON to a Python that has \
                 them",
                py.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        )),
        Err(e) => Err(Error::bad_option(
            "RESFLOW_PYTHON",
            format!(
                "cannot run {} ({e}); the exporter needs Python with torch and safetensors: set \
                 RESFLOW_PYTHON to one",
                py.display()
            ),
        )),
    }
}

/// Runs `export_detector.py` into `dir`; its last stdout line is the summary.
fn run_exporter(
    options: &ExportOptions,
    kind: DetectorKind,
    classifier: &Path,
    scripts: &Path,
    dir: &Path,
) -> Result<String> {
    let mut cmd = Command::new(python());
    cmd.arg(scripts.join("export_detector.py"))
        .arg("--bundle")
        .arg(&options.bundle)
        .args(["--detector", kind.name()])
        .arg("--classifier")
        .arg(classifier)
        .args(["--format", options.format.name()])
        .args(["--device", if options.cuda { "cuda" } else { "cpu" }]);
    if options.aoti {
        cmd.arg("--aoti");
    }
    if let Some(names) = &options.class_names {
        cmd.arg("--class-names")
            .arg(serde_json::to_string(names).unwrap_or_default());
    }
    let out = cmd.arg(dir).output().map_err(|e| Error::io(python(), e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let reason: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('W'))
            .collect();
        let tail = reason[reason.len().saturating_sub(6)..].join("\n");
        return Err(Error::format(
            &options.bundle,
            format!(
                "the exporter failed; nothing was written to {}:\n{tail}",
                options.out.display()
            ),
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().unwrap_or_default().to_string())
}
