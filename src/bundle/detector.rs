//! A bundle loaded for use ([`OodDetector`]): the classifier (recognised by its SHA-256) and one
//! fitted detector, scoring batches of images with input pre-processing at the bundle's magnitude
//! exactly as `rf-score` does (one gradient per batch and layer).
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::{BundleDetector, BundleManifest};
use crate::data::folder::{read_resized, to_tensor};
use crate::detect::preprocess::preprocessed_scores;
use crate::detect::{load_detector, DetectorKind, Evaluation, FittedDetector};
use crate::error::{Error, Result};
use crate::models::checkpoint::file_sha256;
use crate::models::{load_checkpoint, LoadedClassifier};

/// What [`OodDetector::score`] says of each image of a batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores {
    /// The classifier's predicted class.
    pub predicted: Vec<i64>,
    /// Its softmax probability.
    pub probability: Vec<f64>,
    /// The detector's score (higher = more in-distribution).
    pub score: Vec<f64>,
    /// The share (percent) of in-distribution images scoring at most as high.
    pub percentile: Vec<f64>,
    /// Whether the score is below the bundle's threshold: out of distribution.
    pub ood: Vec<bool>,
}

/// An OOD detector ready to use: a bundle's classifier and one of its fitted detectors, on one
/// device.
///
/// ```no_run
/// use resflow::bundle::OodDetector;
/// # fn main() -> resflow::Result<()> {
/// let detector = OodDetector::load("output/resnet_fashion-mnist/bundle".as_ref(), None, None, tch::Device::Cpu)?;
/// let scores = detector.score_files(&["image.png".into()])?;
/// println!("in-distribution percentile {:.1}, OOD: {}", scores.percentile[0], scores.ood[0]);
/// # Ok(())
/// # }
/// ```
pub struct OodDetector {
    classifier: LoadedClassifier,
    detector: Box<dyn FittedDetector>,
    chosen: BundleDetector,
    manifest: BundleManifest,
    device: Device,
}

impl OodDetector {
    /// Loads the bundle folder `bundle` with its detector `kind` (`None`: the bundle's default)
    /// onto `device`. The classifier is the one the bundle names, or `classifier`; either way its
    /// SHA-256 must be the one the bundle records.
    pub fn load(
        bundle: &Path,
        kind: Option<DetectorKind>,
        classifier: Option<&Path>,
        device: Device,
    ) -> Result<OodDetector> {
        let manifest = BundleManifest::read(bundle)?;
        let chosen = manifest.detector(kind, bundle)?.clone();
        let path: PathBuf = classifier
            .map(Path::to_path_buf)
            .unwrap_or_else(|| manifest.classifier.path.clone());
        if !path.is_file() {
            return Err(Error::missing(
                &path,
                format!(
                    "the classifier of the bundle {} is not here; pass its new place with \
                     --classifier PATH",
                    bundle.display()
                ),
            ));
        }
        if file_sha256(&path)? != manifest.classifier.sha256 {
            return Err(Error::provenance(
                &path,
                format!(
                    "not the classifier the bundle {} was fitted for (its SHA-256 differs: \
                     retrained or replaced); pass the bundle's classifier or fit a new bundle \
                     with rf-detect fit",
                    bundle.display()
                ),
            ));
        }
        let classifier = load_checkpoint(&path, device)?;
        let detector = load_detector(&bundle.join(&chosen.file), device).map_err(|e| {
            e.with_hint(&format!(
                "(the bundle {} is incomplete or corrupt: write it again with rf-detect fit)",
                bundle.display()
            ))
        })?;
        if detector.kind() != chosen.kind {
            return Err(Error::format(
                bundle.join(&chosen.file),
                format!(
                    "holds a {} detector where bundle.json says {}; fit the bundle again",
                    detector.kind(),
                    chosen.kind
                ),
            ));
        }
        Ok(OodDetector {
            classifier,
            detector,
            chosen,
            manifest,
            device,
        })
    }

    /// The bundle's manifest.
    pub fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    /// The bundle's description of the detector in use.
    pub fn detector(&self) -> &BundleDetector {
        &self.chosen
    }

    /// Side of the square images the classifier takes.
    pub fn input_side(&self) -> i64 {
        self.manifest.classifier.input_side
    }

    /// Scores a batch of `u8` images `[N, 3, S, S]` (pixels 0..=255, `S` the input side).
    pub fn score(&self, images: &Tensor) -> Result<Scores> {
        let side = self.input_side();
        let size = images.size();
        if size.len() != 4 || size[1] != 3 || size[2] != side || size[3] != side {
            return Err(Error::Shape(format!(
                "images of shape {size:?}; the classifier takes [N, 3, {side}, {side}]"
            )));
        }
        let norm = self.classifier.meta.normalization;
        let x = norm.apply(&images.to_device(self.device));
        let (predicted, probability) = tch::no_grad(|| {
            let logits = self.classifier.net.forward_t(&x, false);
            let (p, c) = logits.softmax(1, Kind::Float).max_dim(1, false);
            (
                Vec::<i64>::try_from(c.to_device(Device::Cpu)),
                Vec::<f64>::try_from(p.to_kind(Kind::Double).to_device(Device::Cpu)),
            )
        });
        let score = self.scores_of(&x, norm.std)?;
        let percentile = score.iter().map(|&s| self.chosen.percentile(s)).collect();
        let ood = score.iter().map(|&s| s < self.chosen.threshold).collect();
        Ok(Scores {
            predicted: predicted?,
            probability: probability?,
            score,
            percentile,
            ood,
        })
    }

    /// Decodes, resizes and scores image files (as `rf-prepare` reads image folders).
    pub fn score_files(&self, files: &[PathBuf]) -> Result<Scores> {
        let side = self.input_side() as u32;
        let images = files
            .iter()
            .map(|f| read_resized(f, side))
            .collect::<Result<Vec<_>>>()?;
        self.score(&to_tensor(&images))
    }

    /// The detector's score of normalised images `x`: per layer, the best class score after
    /// input pre-processing at the bundle's magnitude, then the regression's negated log-odds
    /// (or the one layer's score as it is).
    fn scores_of(&self, x: &Tensor, std: [f64; 3]) -> Result<Vec<f64>> {
        let net = self.classifier.net.as_ref();
        let eps = [self.chosen.eps];
        let mut columns = Vec::with_capacity(self.chosen.layers.len());
        for &layer in &self.chosen.layers {
            let score = self.detector.layer_scores(layer, self.chosen.variant)?;
            let per_eps = preprocessed_scores(net, x, layer, std, &eps, score.as_ref())?;
            let class_scores = per_eps
                .first()
                .ok_or_else(|| Error::Shape("no scores at the bundle's magnitude".into()))?;
            columns.push(Vec::<f64>::try_from(class_scores.max_dim(1, false).0)?);
        }
        let rows = x.size()[0] as usize;
        match self.chosen.evaluation() {
            Evaluation::Regression => Ok((0..rows)
                .map(|i| {
                    let z: f64 = columns
                        .iter()
                        .zip(&self.chosen.coef)
                        .map(|(c, w)| c[i] * w)
                        .sum::<f64>()
                        + self.chosen.intercept;
                    -z
                })
                .collect()),
            Evaluation::Direct => columns.into_iter().next().ok_or_else(|| {
                Error::Shape(format!("the {} detector has no layer", self.chosen.kind))
            }),
        }
    }
}
