//! Classifier checkpoints: a `.safetensors` file of the PyTorch-named weights and BatchNorm
//! buffers, plus a JSON sidecar (same path, extension `.json`) describing the network.
//!
//! Loading is strict: a missing, unexpected or wrongly shaped tensor is an error that lists every
//! offending name, and nothing is copied unless everything matches.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::{nn::VarStore, Device, Tensor};

use super::{Classifier, NetConfig, TorchScriptClassifier};
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::models::NetType;

/// The JSON sidecar of a classifier checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// Network architecture.
    pub architecture: NetType,
    /// ResNet base width or DenseNet growth rate.
    pub width: i64,
    /// Number of classes.
    pub num_classes: i64,
    /// The input normalisation the network was trained with.
    pub normalization: Normalization,
    /// Name of the training set (empty: not recorded, for TorchScript sidecars without one).
    pub dataset: String,
    /// Test-split accuracy in [0, 1], when measured.
    pub test_accuracy: Option<f64>,
    /// Version of resflow (or "converted" tool) that wrote the checkpoint.
    pub library_version: String,
    /// True when every BatchNorm's running mean and variance are the exact moments of its inputs
    /// over the train set, recomputed after training (`rf-classifier train`:
    /// [`crate::models::train::recalibrate_batch_norm`]); false (or absent) for checkpoints of
    /// earlier versions, converted or exported ones, whose running statistics are whatever their
    /// training left.
    #[serde(default)]
    pub batch_norm_recalibrated: bool,
}

impl CheckpointMeta {
    /// A sidecar for `config` trained on `dataset` with `normalization`, stamped with this library's version.
    pub fn new(
        config: NetConfig,
        normalization: Normalization,
        dataset: impl Into<String>,
    ) -> Self {
        CheckpointMeta {
            architecture: config.net_type,
            width: config.width,
            num_classes: config.num_classes,
            normalization,
            dataset: dataset.into(),
            test_accuracy: None,
            library_version: env!("CARGO_PKG_VERSION").to_string(),
            batch_norm_recalibrated: false,
        }
    }

    /// The network this sidecar describes.
    pub fn net_config(&self) -> NetConfig {
        NetConfig {
            net_type: self.architecture,
            width: self.width,
            num_classes: self.num_classes,
        }
    }

    /// Reads a sidecar; a missing, truncated or corrupt one is an error that says to write the
    /// checkpoint again ([`REWRITE_CHECKPOINT`]).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::missing(
                    path,
                    format!(
                        "the checkpoint's JSON sidecar is not here (a weights file copied without \
                         it?); {REWRITE_CHECKPOINT}"
                    ),
                )
            } else {
                Error::io(path, e)
            }
        })?;
        let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| {
            Error::format(
                path,
                format!(
                    "not a classifier checkpoint sidecar ({e}): truncated, corrupt or of another \
                     version; {REWRITE_CHECKPOINT}"
                ),
            )
        })?;
        meta.net_config()
            .validate()
            .map_err(|e| Error::format(path, format!("{e}; {REWRITE_CHECKPOINT}")))?;
        Ok(meta)
    }

    /// Writes the sidecar (via a temporary file and a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("sidecar serialises");
        crate::io::write_atomically(path, |tmp| {
            std::fs::write(tmp, format!("{text}\n")).map_err(|e| Error::io(tmp, e))
        })
    }
}

/// A classifier loaded from a checkpoint: its variables, the network over them, and the sidecar.
#[derive(Debug)]
pub struct LoadedClassifier {
    /// The variables (weights and BatchNorm buffers).
    pub vs: VarStore,
    /// The network.
    pub net: Box<dyn Classifier>,
    /// The sidecar.
    pub meta: CheckpointMeta,
}

/// What to do about a checkpoint (weights or sidecar) that cannot be read.
pub const REWRITE_CHECKPOINT: &str = "write it again with the command that made it (rf-classifier \
     train, scripts/convert_weights.py, a copy of the original)";

/// The sidecar path of a weights file or TorchScript model: the same path with extension `.json`.
pub fn sidecar_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Saves the variables of `vs` to `weights` (safetensors) and `meta` to its sidecar.
pub fn save_checkpoint(weights: &Path, vs: &VarStore, meta: &CheckpointMeta) -> Result<()> {
    if let Some(dir) = weights.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_tensors(weights, &vs.variables())?;
    meta.write(&sidecar_path(weights))
}

/// Loads a classifier onto `device`: a checkpoint (`.safetensors` weights and sidecar, loaded
/// strictly) or, for any other extension, a TorchScript model and its sidecar
/// ([`TorchScriptClassifier::load`]).
pub fn load_checkpoint(weights: &Path, device: Device) -> Result<LoadedClassifier> {
    // The weights first: a missing checkpoint is named as such, not by its sidecar.
    if !weights.is_file() {
        return Err(Error::missing(
            weights,
            "no classifier checkpoint here; train one with `rf-classifier train`, export your own \
             model with scripts/export_torchscript.py, or pass --classifier PATH",
        ));
    }
    if weights.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return load_torchscript(weights, device);
    }
    let meta = CheckpointMeta::read(&sidecar_path(weights))?;
    let mut vs = VarStore::new(device);
    let net = meta.net_config().build(&vs.root())?;
    load_weights_strict(&mut vs, weights)?;
    Ok(LoadedClassifier { vs, net, meta })
}

/// A TorchScript model as a [`LoadedClassifier`]: no variables of ours, the sidecar's facts as
/// [`CheckpointMeta`] (architecture [`NetType::TorchScript`], width 0).
fn load_torchscript(model: &Path, device: Device) -> Result<LoadedClassifier> {
    let net = TorchScriptClassifier::load(model, &sidecar_path(model), device)?;
    let ts = net.meta();
    let meta = CheckpointMeta {
        architecture: NetType::TorchScript,
        width: 0,
        num_classes: ts.class_names.len() as i64,
        normalization: ts.normalization(),
        dataset: ts.dataset.clone().unwrap_or_default(),
        test_accuracy: None,
        library_version: format!("torchscript: {}", ts.name),
        batch_norm_recalibrated: false,
    };
    Ok(LoadedClassifier {
        vs: VarStore::new(device),
        net: Box::new(net),
        meta,
    })
}

/// The SHA-256 of a file's bytes, as lowercase hex (identifies a classifier's weights).
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes named tensors to a safetensors file (sorted by name, via a temporary file and a rename).
pub fn write_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let sorted: BTreeMap<&String, Tensor> = tensors
        .iter()
        .map(|(name, t)| (name, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let list: Vec<(&String, &Tensor)> = sorted.iter().map(|(n, t)| (*n, t)).collect();
    crate::io::write_atomically(path, |tmp| {
        Tensor::write_safetensors(&list, tmp).map_err(|e| Error::format(tmp, e.to_string()))
    })
}

/// Reads all tensors of a safetensors file (a missing or unreadable file is an error that says
/// to write it again).
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let list = crate::io::read_safetensors(path, REWRITE_CHECKPOINT)?;
    Ok(list.into_iter().collect())
}

/// Loads the safetensors file `weights` into `vs`; every variable must be present with its shape
/// and nothing else may be there (PyTorch's `*.num_batches_tracked` counters of existing BatchNorms
/// are accepted and ignored).
pub fn load_weights_strict(vs: &mut VarStore, weights: &Path) -> Result<()> {
    let tensors = read_tensors(weights)?;
    assign_strict(&vs.variables(), &tensors, weights)
}

/// Copies `source` into `targets` after checking that both hold the same names and shapes;
/// `path` names the source in the error.
pub fn assign_strict(
    targets: &HashMap<String, Tensor>,
    source: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let mut missing: Vec<&str> = targets
        .keys()
        .filter(|n| !source.contains_key(*n))
        .map(|s| s.as_str())
        .collect();
    let mut unexpected: Vec<&str> = source
        .keys()
        .filter(|n| !targets.contains_key(*n) && !is_ignored_counter(n, targets))
        .map(|s| s.as_str())
        .collect();
    let mut wrong: Vec<String> = targets
        .iter()
        .filter_map(|(n, t)| {
            let s = source.get(n)?;
            (s.size() != t.size() || !s.is_floating_point()).then(|| {
                format!(
                    "{n} (expected {:?}, found {:?} {:?})",
                    t.size(),
                    s.kind(),
                    s.size()
                )
            })
        })
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && wrong.is_empty()) {
        missing.sort_unstable();
        unexpected.sort_unstable();
        wrong.sort_unstable();
        // A few names of each kind say what is wrong; a whole other architecture would list
        // hundreds.
        const SHOWN: usize = 5;
        let listed = |names: &[String]| {
            let mut s = names[..names.len().min(SHOWN)].join(", ");
            if names.len() > SHOWN {
                s.push_str(&format!(" and {} more", names.len() - SHOWN));
            }
            s
        };
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut parts = Vec::new();
        for (what, names) in [
            ("missing tensors", owned(&missing)),
            ("unexpected tensors", owned(&unexpected)),
            ("wrongly shaped tensors", wrong),
        ] {
            if !names.is_empty() {
                parts.push(format!("{} {what}: {}", names.len(), listed(&names)));
            }
        }
        return Err(Error::format(
            path,
            format!(
                "weights do not match the network of the sidecar (another architecture or \
                 width?); {}",
                parts.join("; ")
            ),
        ));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, target) in targets {
            let mut target = target.shallow_clone();
            let value = source[name]
                .to_device(target.device())
                .to_kind(target.kind());
            target
                .f_copy_(&value)
                .map_err(|e| Error::format(path, format!("{name}: {e}")))?;
        }
        Ok(())
    })
}

/// True for `X.num_batches_tracked` when `X.running_mean` is a target (a PyTorch BatchNorm counter).
fn is_ignored_counter(name: &str, targets: &HashMap<String, Tensor>) -> bool {
    name.strip_suffix(".num_batches_tracked")
        .is_some_and(|bn| targets.contains_key(&format!("{bn}.running_mean")))
}
