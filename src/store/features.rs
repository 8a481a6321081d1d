//! The feature folder, `{outf}/{net}_{dataset}/features/` ([`crate::store::RunDir::features`]),
//! written by `rf-prepare` and read by every later stage:
//! - `manifest.json` ([`FeatureManifest`]): network, data set, classifier, layer sizes, k per layer,
//!   sets and their sizes, and the [`Provenance`] of the folder (the classifier's SHA-256, the
//!   options, every file's digest). Written last, so a folder with a manifest is complete; every
//!   read checks the file against the digest the manifest records.
//! - `{set}_labels.npy` (int64 `[N]`) and `{set}_layer{l}.npy` (float32 `[N, C_l]`, mean-pooled
//!   activations) for `set` = `train` (rows grouped by class: all class-0 rows in stored order,
//!   then class 1, ...), `test`, `ood_{name}` for each OOD set, and with `--validation-src fgsm`
//!   the FGSM sets `fgsm_clean`, `fgsm_noisy`, `fgsm_adv` (see [`crate::detect::fgsm`]).
//! - `stats_layer{l}.safetensors` ([`LayerStats`]): `means` `[C, C_l]`, `A` `[C_l, k]`, `A_inv`
//!   `[k, C_l]`, `log_abs_det_A_inv` `[1]`, `precision` `[C_l, C_l]` (pseudo-inverse of the tied
//!   covariance), all float64.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::provenance::{read_manifest, Provenance};
use crate::data::OodGroup;
use crate::detect::gaussian::{check_finite, LayerStats, Whitening};
use crate::error::{Error, Result};
use crate::io;
use crate::models::{Features, NetType};

/// The stage that writes feature folders.
pub const PREPARE_STAGE: &str = "rf-prepare";

impl LayerStats {
    /// Writes the statistics as a safetensors file (names in the module documentation).
    pub fn save(&self, path: &Path) -> Result<()> {
        let log_det = Tensor::from_slice(&[self.whitening.log_abs_det_a_inv]);
        let named = [
            ("means", &self.means),
            ("A", &self.whitening.a),
            ("A_inv", &self.whitening.a_inv),
            ("log_abs_det_A_inv", &log_det),
            ("precision", &self.precision),
        ];
        let named: Vec<(&str, Tensor)> = named
            .iter()
            .map(|(n, t)| (*n, t.to_kind(Kind::Double).contiguous()))
            .collect();
        io::write_atomically(path, |tmp| {
            Tensor::write_safetensors(&named, tmp).map_err(|e| Error::format(tmp, e.to_string()))
        })
    }

    /// Reads statistics written by [`LayerStats::save`], checking every tensor's shape.
    pub fn load(path: &Path) -> Result<LayerStats> {
        let tensors: HashMap<String, Tensor> = io::read_safetensors(path, "rerun rf-prepare")?
            .into_iter()
            .collect();
        let get = |name: &str| {
            tensors.get(name).map(|t| t.shallow_clone()).ok_or_else(|| {
                Error::format(path, format!("tensor `{name}` missing; rerun rf-prepare"))
            })
        };
        let (means, a, a_inv, log_det, precision) = (
            get("means")?,
            get("A")?,
            get("A_inv")?,
            get("log_abs_det_A_inv")?,
            get("precision")?,
        );
        let d = means.size().get(1).copied().unwrap_or(0);
        let k = a.size().get(1).copied().unwrap_or(0);
        if a.size() != [d, k]
            || a_inv.size() != [k, d]
            || precision.size() != [d, d]
            || log_det.numel() != 1
        {
            return Err(Error::format(
                path,
                format!(
                    "inconsistent shapes: means {:?}, A {:?}, A_inv {:?}, precision {:?}",
                    means.size(),
                    a.size(),
                    a_inv.size(),
                    precision.size()
                ),
            ));
        }
        for (name, t) in [
            ("means", &means),
            ("A", &a),
            ("A_inv", &a_inv),
            ("log_abs_det_A_inv", &log_det),
            ("precision", &precision),
        ] {
            check_finite(t, &format!("tensor `{name}`"))
                .map_err(|e| Error::format(path, format!("{e}; rerun rf-prepare")))?;
        }
        Ok(LayerStats {
            means,
            whitening: Whitening {
                a,
                a_inv,
                log_abs_det_a_inv: log_det.double_value(&[0]),
                k: k as usize,
            },
            precision,
        })
    }
}

/// What a feature folder holds (`manifest.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureManifest {
    /// The classifier's architecture.
    pub net_type: NetType,
    /// The in-distribution data set, as a spec that finds it again ([`crate::data::DataSource::spec`]): the
    /// registry name, or `NAME=PATH` for an image folder.
    pub dataset: String,
    /// The spec of each OOD set, by name (absent in manifests of older versions, whose OOD sets
    /// are registry sets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ood_sources: BTreeMap<String, String>,
    /// The group (near or far) of each OOD set that has one, by name: given as `near:`/`far:`
    /// to rf-prepare, else the registry's default ([`crate::data::group`]). Sets without one
    /// (image folders given without a prefix, every set in manifests of older versions) are
    /// ungrouped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ood_groups: BTreeMap<String, OodGroup>,
    /// The classifier checkpoint the features come from.
    pub classifier: PathBuf,
    /// Number of classes.
    pub num_classes: usize,
    /// Channels of each layer.
    pub layer_channels: Vec<i64>,
    /// Whitening rank k of each layer.
    pub layer_ranks: Vec<usize>,
    /// Classifier accuracy on the train split.
    pub train_accuracy: f64,
    /// Classifier accuracy on the test split.
    pub test_accuracy: f64,
    /// Row count of every stored set (`train`, `test`, `ood_{name}`, `fgsm_{clean,noisy,adv}`).
    pub sets: BTreeMap<String, usize>,
    /// What the features were made from (the classifier's SHA-256: the later stages refuse
    /// other weights of the same shape; the options) and every file's digest.
    pub provenance: Provenance,
}

impl FeatureManifest {
    /// The in-distribution set's name.
    pub fn dataset_name(&self) -> String {
        crate::data::source::name_of(&self.dataset)
    }

    /// The spec of OOD set `name` ([`FeatureManifest::ood_sources`], else the name itself).
    pub fn ood_spec(&self, name: &str) -> String {
        self.ood_sources
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// The names of the OOD sets, in stored order.
    pub fn ood_names(&self) -> Vec<String> {
        self.sets
            .keys()
            .filter_map(|k| k.strip_prefix("ood_"))
            .map(str::to_string)
            .collect()
    }
}

/// A feature folder on disk.
#[derive(Debug, Clone)]
pub struct FeatureDir {
    /// The folder.
    pub path: PathBuf,
}

impl FeatureDir {
    /// The feature folder at `path` (usually [`crate::store::RunDir::features`]).
    pub fn new(path: impl Into<PathBuf>) -> FeatureDir {
        FeatureDir { path: path.into() }
    }

    /// Path of the manifest.
    pub fn manifest_path(&self) -> PathBuf {
        self.path.join("manifest.json")
    }

    /// Path of a set's labels.
    pub fn labels_path(&self, set: &str) -> PathBuf {
        self.path.join(format!("{set}_labels.npy"))
    }

    /// Path of a set's features of layer `layer`.
    pub fn layer_path(&self, set: &str, layer: usize) -> PathBuf {
        self.path.join(format!("{set}_layer{layer}.npy"))
    }

    /// Path of a layer's statistics.
    pub fn stats_path(&self, layer: usize) -> PathBuf {
        self.path.join(format!("stats_layer{layer}.safetensors"))
    }

    /// Writes a set's labels and per-layer features; returns the files written.
    pub fn write_set(&self, set: &str, features: &Features) -> Result<Vec<PathBuf>> {
        let mut written = vec![self.labels_path(set)];
        io::write_npy_i64(&written[0], &features.labels)?;
        for (l, layer) in features.layers.iter().enumerate() {
            let path = self.layer_path(set, l);
            io::write_npy_f32(&path, layer)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Reads the manifest; a missing or unreadable one names `rf-prepare`.
    pub fn manifest(&self) -> Result<FeatureManifest> {
        read_manifest(&self.manifest_path(), PREPARE_STAGE)
    }

    /// Checks the file at `path` in this folder against the digest `manifest` records.
    pub fn verify(&self, manifest: &FeatureManifest, path: &Path) -> Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        manifest.provenance.verify_files(
            &self.path,
            Some(&[name.as_str()]),
            &self.manifest_path(),
            PREPARE_STAGE,
        )
    }

    /// The statistics of `layer`, checked against the manifest's digest.
    pub fn read_stats(&self, manifest: &FeatureManifest, layer: usize) -> Result<LayerStats> {
        let path = self.stats_path(layer);
        self.verify(manifest, &path)?;
        LayerStats::load(&path)
    }

    /// Reads a set's features of one layer, checking them against the manifest (row count,
    /// channels, finiteness).
    pub fn read_layer(
        &self,
        manifest: &FeatureManifest,
        set: &str,
        layer: usize,
    ) -> Result<Tensor> {
        let path = self.layer_path(set, layer);
        let rows = self.rows(manifest, set)?;
        let channels = *manifest.layer_channels.get(layer).ok_or_else(|| {
            Error::format(
                self.manifest_path(),
                format!(
                    "no layer {layer} (the network has {})",
                    manifest.layer_channels.len()
                ),
            )
        })?;
        self.verify(manifest, &path)?;
        let features = io::read_npy_f32(&path)?;
        if features.size() != [rows as i64, channels] {
            return Err(Error::provenance(
                &path,
                format!("expected features [{rows}, {channels}] as the manifest says, found {:?}; rerun rf-prepare", features.size()),
            ));
        }
        check_finite(&features, &path.display().to_string())?;
        Ok(features)
    }

    /// The row count `manifest` records for `set`; an error naming the manifest and the
    /// `rf-prepare` run that makes the set when it has none.
    fn rows(&self, manifest: &FeatureManifest, set: &str) -> Result<usize> {
        manifest.sets.get(set).copied().ok_or_else(|| {
            let rerun = match set.strip_prefix("ood_") {
                Some(ood) => format!("rerun rf-prepare with `{ood}` among its --ood sets"),
                None if set.starts_with("fgsm_") => {
                    "rerun rf-prepare --validation-src fgsm".to_string()
                }
                None => "rerun rf-prepare".to_string(),
            };
            Error::missing(
                self.manifest_path(),
                format!(
                    "lists no set `{set}` in `sets` (it has {}); {rerun}",
                    manifest
                        .sets
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// Reads a set's labels, checking the row count against the manifest.
    pub fn read_labels(&self, manifest: &FeatureManifest, set: &str) -> Result<Tensor> {
        let path = self.labels_path(set);
        self.verify(manifest, &path)?;
        let rows = self.rows(manifest, set)? as i64;
        let labels = io::read_npy_i64(&path)?;
        if labels.size() != [rows] {
            return Err(Error::provenance(
                &path,
                format!("expected {rows} labels, found shape {:?}", labels.size()),
            ));
        }
        Ok(labels)
    }
}
