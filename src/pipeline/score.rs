//! The scoring stages (`rf-mahalanobis`, `rf-score`, `rf-baselines`;
//! `docs/method.md#input-pre-processing`): each detector is fitted on the run's training data
//! ([`RunTrainingData`], through [`DetectorParams::fit`]), then its class scores of every layer
//! with input pre-processing at every magnitude are computed for the test split, each prepared
//! OOD set and, with FGSM validation, the FGSM sets; they are written as score files in the
//! detector's [`ScoreLayout`] ([`crate::store::scores`]). The test split is scored once for all
//! OOD sets.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use tch::{Device, Kind, Tensor};

use super::Common;
use crate::data::{self, BatchSource, ImageSet, Split};
use crate::detect::fgsm::FgsmSets;
use crate::detect::preprocess::{score_set, ScoreFn};
use crate::detect::{DetectorKind, DetectorParams, FittedDetector, ScoreLayout};
use crate::error::{Error, Result};
use crate::fit::Validation;
use crate::models::checkpoint::file_sha256;
use crate::models::{load_checkpoint, LoadedClassifier};
use crate::progress::Progress;
use crate::store::features::{FeatureDir, FeatureManifest};
use crate::store::scores::{write_score_manifest, write_scores, ScoreFile, ScoreManifest, FGSM};
use crate::store::training_data::RunTrainingData;
use crate::store::RunDir;

/// Default batch size of the scoring stages.
pub const SCORING_BATCH_SIZE: usize = 100;

/// The stage's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run, data and device (batch size default [`SCORING_BATCH_SIZE`]).
    pub common: Common,
    /// The detectors to fit and score, each with its parameters (magnitudes included).
    pub detectors: Vec<DetectorParams>,
    /// With [`Validation::Fgsm`], also the FGSM sets written by `rf-fgsm`.
    pub validation: Validation,
    /// Classifier checkpoint; `None`: the one `rf-prepare` used (from the feature manifest).
    pub classifier: Option<PathBuf>,
}

impl Options {
    /// The stage's options for the detectors `kinds` with their default parameters.
    pub fn for_kinds(common: Common, kinds: &[DetectorKind]) -> Options {
        Options {
            common,
            detectors: kinds
                .iter()
                .map(|&k| DetectorParams::default_for(k))
                .collect(),
            validation: Validation::Ood,
            classifier: None,
        }
    }
}

impl Default for Options {
    /// The residual flow on the OOD sets at the seven magnitudes of
    /// `docs/method.md#input-pre-processing`.
    fn default() -> Self {
        Options::for_kinds(Common::default(), &[DetectorKind::Resflow])
    }
}

/// What [`run`] wrote for one detector.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The detector.
    pub kind: DetectorKind,
    /// The layers scored.
    pub layers: Vec<usize>,
    /// The magnitudes scored.
    pub magnitudes: Vec<f64>,
    /// The detector's score folder.
    pub dir: PathBuf,
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Per detector, in the options' order.
    pub detectors: Vec<Scored>,
    /// The sets scored (OOD sets, then [`FGSM`] when validating on it).
    pub sets: Vec<String>,
}

/// Runs the stage: checks every detector's parameters, opens the inputs once
/// ([`ScoringStage::open`]), then fits each detector on the run's training data and scores every
/// set ([`score`]).
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    if options.detectors.is_empty() {
        return Err(Error::bad_option("--detectors", "no detector to score"));
    }
    for params in &options.detectors {
        params.check()?;
    }
    let stage = ScoringStage::open(options)?;
    let inputs = stage.inputs()?;
    let data = RunTrainingData::new(
        &stage.run,
        &stage.features,
        &stage.manifest,
        stage.classifier.net.as_ref(),
        stage.device,
    );
    let mut detectors = Vec::new();
    let mut sets = Vec::new();
    for params in &options.detectors {
        let detector = params.fit(&data)?;
        let magnitudes = params.magnitudes();
        sets = score(&stage, &inputs, detector.as_ref(), &magnitudes, progress)?;
        detectors.push(Scored {
            kind: params.kind(),
            layers: detector.layers(),
            magnitudes,
            dir: stage.run.detector_dir(params.kind()),
        });
    }
    Ok(Summary { detectors, sets })
}

/// What a scoring stage scores: the test split and every OOD set, each cut to the size
/// `rf-prepare` used.
pub struct ScoredInputs {
    /// The in-distribution test split.
    pub test: ImageSet,
    /// The OOD sets, in the manifest's order.
    pub oods: Vec<ImageSet>,
}

/// Everything a scoring stage reads.
pub struct ScoringStage {
    /// The classifier whose features are scored.
    pub classifier: LoadedClassifier,
    /// The feature folder written by rf-prepare.
    pub features: FeatureDir,
    /// Its manifest.
    pub manifest: FeatureManifest,
    /// The FGSM sets, when validating on them.
    pub fgsm: Option<FgsmSets>,
    /// The data sets' folder.
    pub dataroot: PathBuf,
    /// The run folder the score files go to.
    pub run: RunDir,
    /// Compute device.
    pub device: Device,
    /// Batch size.
    pub batch_size: usize,
}

impl ScoringStage {
    /// Opens the inputs named by the options: `classifier` overrides the checkpoint recorded in
    /// the feature manifest; FGSM validation also loads the FGSM sets written by rf-fgsm.
    pub fn open(options: &Options) -> Result<ScoringStage> {
        let common = &options.common;
        let run = common.run_dir();
        let features = run.features();
        let manifest = features.manifest()?;
        let classifier_path: &Path = options
            .classifier
            .as_deref()
            .unwrap_or(&manifest.classifier);
        let classifier = load_checkpoint(classifier_path, common.device)?;
        if let Some(expected) = &manifest.classifier_sha256 {
            if &file_sha256(classifier_path)? != expected {
                return Err(Error::provenance(
                    classifier_path,
                    format!(
                        "not the weights rf-prepare used for {} (their SHA-256 differs); pass the \
                         classifier it used ({}) or rerun rf-prepare with this one",
                        features.path.display(),
                        manifest.classifier.display()
                    ),
                ));
            }
        }
        let fgsm = if options.validation == Validation::Fgsm {
            let sets = FgsmSets::load_for(&run.fgsm_dir(), &classifier)
                .map_err(|e| with_hint(e, "(run rf-fgsm first)"))?;
            Some(sets)
        } else {
            None
        };
        Ok(ScoringStage {
            classifier,
            features,
            manifest,
            fgsm,
            dataroot: common.dataroot.clone(),
            run,
            device: common.device,
            batch_size: common.batch_size_or(SCORING_BATCH_SIZE),
        })
    }

    /// Checks that the features were prepared with this classifier, and loads the sets to score.
    pub fn inputs(&self) -> Result<ScoredInputs> {
        check_classifier(&self.classifier, &self.manifest, &self.features)?;
        let side = self.classifier.net.input_side();
        let (test, oods) = scored_sets(&self.features, &self.manifest, &self.dataroot, side)?;
        Ok(ScoredInputs { test, oods })
    }

    /// Scores `set` at feature layer `layer` for every magnitude with the stage's classifier,
    /// batch size and device ([`score_set`]), showing progress under `{set} layer {layer}`.
    pub fn score_layer(
        &self,
        set: BatchSource<'_>,
        layer: usize,
        magnitudes: &[f64],
        score: &ScoreFn,
        progress: &mut dyn Progress,
    ) -> Result<Vec<Tensor>> {
        progress.start(&format!("{} layer {layer}", set.name()), set.len());
        let out = score_set(
            self.classifier.net.as_ref(),
            set,
            self.classifier.meta.normalization,
            layer,
            magnitudes,
            self.batch_size,
            self.device,
            score,
            &mut |n| progress.advance(n),
        );
        progress.finish();
        out
    }
}

/// Per set name, one score matrix per magnitude.
type SetScores = BTreeMap<String, Vec<Tensor>>;

/// Scores the test split, every OOD set and (when loaded) the FGSM sets with `detector`, layer
/// by layer, and writes the score files of its layout under the stage's run folder. Returns the
/// sets written.
pub fn score(
    stage: &ScoringStage,
    inputs: &ScoredInputs,
    detector: &dyn FittedDetector,
    magnitudes: &[f64],
    progress: &mut dyn Progress,
) -> Result<Vec<String>> {
    let kind = detector.kind();
    let test_key = format!("test_{}", inputs.test.name);
    let mut sets: Vec<(String, BatchSource<'_>)> = vec![(test_key.clone(), (&inputs.test).into())];
    sets.extend(inputs.oods.iter().map(|o| (o.name.clone(), o.into())));
    if let Some(f) = &stage.fgsm {
        sets.extend(f.named().map(|s| (s.name.clone(), s.into())));
    }
    // With one file for all layers, per set and (layer, variant) the best class scores [N] of
    // each magnitude are kept until the end.
    let mut kept: BTreeMap<String, Vec<Vec<Tensor>>> = BTreeMap::new();
    let variants = detector.variants();
    if variants != 1 && kind.layout() != ScoreLayout::LayerColumns {
        return Err(Error::Shape(format!(
            "{}: {variants} score variants per layer need one file of columns per magnitude",
            kind.label()
        )));
    }
    for layer in detector.layers() {
        for variant in 0..variants {
            let score = detector.layer_scores(layer, variant)?;
            let mut this_layer = SetScores::new();
            for (key, set) in &sets {
                let per_eps =
                    stage.score_layer(*set, layer, magnitudes, score.as_ref(), progress)?;
                this_layer.insert(key.clone(), per_eps);
            }
            match kind.layout() {
                ScoreLayout::ClassScoresPerLayer => write_files(
                    stage,
                    inputs,
                    kind,
                    layer,
                    magnitudes,
                    &test_key,
                    &this_layer,
                )?,
                ScoreLayout::LayerColumns => {
                    for (key, per_eps) in this_layer {
                        let best = per_eps.iter().map(|t| t.max_dim(1, false).0).collect();
                        kept.entry(key).or_default().push(best);
                    }
                }
            }
        }
    }
    if kind.layout() == ScoreLayout::LayerColumns {
        // Per set and magnitude, the (layer, variant) columns side by side: one [N, L * V] matrix.
        let columns: SetScores = kept
            .into_iter()
            .map(|(key, layers)| {
                let per_eps = (0..magnitudes.len())
                    .map(|k| {
                        let cols: Vec<&Tensor> = layers.iter().map(|l| &l[k]).collect();
                        Tensor::stack(&cols, 1)
                    })
                    .collect();
                (key, per_eps)
            })
            .collect();
        write_files(stage, inputs, kind, 0, magnitudes, &test_key, &columns)?;
    }
    let mut written: Vec<String> = inputs.oods.iter().map(|o| o.name.clone()).collect();
    if stage.fgsm.is_some() {
        written.push(FGSM.to_string());
    }
    // Last: the manifest says which files make up this detector's scores.
    write_score_manifest(
        &stage.run.detector_dir(kind),
        &ScoreManifest {
            magnitudes: magnitudes.to_vec(),
            layers: detector.layers(),
            sets: written.clone(),
            params: Some(detector.params()),
        },
    )?;
    Ok(written)
}

/// Writes the score files of `layer` (ignored by [`ScoreLayout::LayerColumns`]): per OOD set
/// and magnitude, its rows then the test split's; for FGSM, adversarial then clean then noisy.
fn write_files(
    stage: &ScoringStage,
    inputs: &ScoredInputs,
    kind: DetectorKind,
    layer: usize,
    magnitudes: &[f64],
    test_key: &str,
    scores: &SetScores,
) -> Result<()> {
    let at = |key: &str, k: usize| -> Result<Array2<f64>> { to_array2(&scores[key][k]) };
    for (k, &eps) in magnitudes.iter().enumerate() {
        for ood in &inputs.oods {
            let file = ScoreFile::from_parts(at(&ood.name, k)?, at(test_key, k)?)?;
            write_scores(&stage.run.score_path(kind, &ood.name, layer, eps), &file)?;
        }
        if let Some(f) = &stage.fgsm {
            let [clean, noisy, adv] = f.named().map(|s| s.name.as_str());
            let file = ScoreFile::fgsm_from_parts(at(adv, k)?, at(clean, k)?, at(noisy, k)?)?;
            write_scores(&stage.run.score_path(kind, FGSM, layer, eps), &file)?;
        }
    }
    Ok(())
}

/// A float64 `[R, C]` tensor as an ndarray matrix.
fn to_array2(t: &Tensor) -> Result<Array2<f64>> {
    let (rows, cols) = (t.size()[0] as usize, t.size()[1] as usize);
    let data = Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view(-1))?;
    Ok(Array2::from_shape_vec((rows, cols), data).expect("shape matches the data"))
}

/// The image sets a scoring stage evaluates: the test split and the OOD sets of the feature
/// folder `features`, each cut to the size that `rf-prepare` used.
fn scored_sets(
    features: &FeatureDir,
    manifest: &FeatureManifest,
    dataroot: &Path,
    side: i64,
) -> Result<(ImageSet, Vec<ImageSet>)> {
    let cut = |set: ImageSet, key: &str| -> Result<ImageSet> {
        let rows = manifest.sets[key];
        if set.len() < rows {
            return Err(Error::provenance(
                features.manifest_path(),
                format!(
                    "`{}` (under {}) has {} images but the features were prepared from {rows}; rerun rf-prepare",
                    set.name,
                    dataroot.display(),
                    set.len()
                ),
            ));
        }
        Ok(set.take(rows))
    };
    let test = cut(
        data::load_in_distribution(&manifest.dataset, dataroot, Split::Test, side)?,
        "test",
    )?;
    let oods = manifest
        .ood_names()
        .iter()
        .map(|name| {
            let set = data::load_ood(&manifest.ood_spec(name), dataroot, side)?;
            cut(set, &format!("ood_{name}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((test, oods))
}

/// `e` with `hint` on a line of its own after its message (for the kinds of error that carry one;
/// others are returned as they are).
fn with_hint(e: Error, hint: &str) -> Error {
    let add = |message: String| format!("{message}\n{hint}");
    match e {
        Error::MissingArtefact { path, message } => Error::missing(path, add(message)),
        Error::Provenance { path, message } => Error::provenance(path, add(message)),
        Error::Format { path, message } => Error::format(path, add(message)),
        other => other,
    }
}

/// Fails when the feature folder was prepared with another network than `classifier`.
fn check_classifier(
    classifier: &LoadedClassifier,
    manifest: &FeatureManifest,
    features: &FeatureDir,
) -> Result<()> {
    let channels = classifier.net.layer_channels();
    if manifest.net_type != classifier.meta.architecture
        || manifest.layer_channels != channels
        || manifest.num_classes != classifier.meta.num_classes as usize
    {
        return Err(Error::provenance(
            features.manifest_path(),
            format!(
                "features of a {} with layers {:?} and {} classes, but the classifier is a {} with layers {:?} and {} classes; rerun rf-prepare with this classifier",
                manifest.net_type.name(),
                manifest.layer_channels,
                manifest.num_classes,
                classifier.meta.architecture.name(),
                channels,
                classifier.meta.num_classes
            ),
        ));
    }
    Ok(())
}
