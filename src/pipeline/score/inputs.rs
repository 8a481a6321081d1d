//! What a scoring stage reads ([`ScoringStage`]): the classifier (checked against the weights the
//! features were made from), the feature folder, the FGSM sets (checked against the classifier)
//! and the image sets to score, cut to the sizes `rf-prepare` used; and where a detector's score
//! folder is locked with the provenance of all of it.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::{Options, SCORING_BATCH_SIZE};
use crate::data::{self, BatchSource, ImageSet, Split};
use crate::detect::fgsm::FgsmSets;
use crate::detect::preprocess::{pooled_features, score_set, scores_of_features, ScoreFn};
use crate::detect::FittedDetector;
use crate::error::{Error, Result};
use crate::fit::Validation;
use crate::models::checkpoint::file_sha256;
use crate::models::{load_checkpoint, LoadedClassifier};
use crate::progress::Progress;
use crate::store::features::{FeatureDir, FeatureManifest};
use crate::store::fgsm::FGSM_SUMMARY;
use crate::store::provenance::{PendingOutput, Provenance, StageOutput};
use crate::store::scores::score_manifest_path;
use crate::store::RunDir;

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
    /// SHA-256 of the classifier's weights (the features' and FGSM sets' provenance records it).
    pub classifier_sha256: String,
    /// Where the detectors are fitted and their magnitudes selected.
    pub validation: Validation,
    /// The data sets' folder.
    pub dataroot: PathBuf,
    /// The run folder the score files go to.
    pub run: RunDir,
    /// Compute device.
    pub device: Device,
    /// Batch size.
    pub batch_size: usize,
    /// Per (set, layer): the mean-pooled features of each batch without pre-processing, computed
    /// by the first detector scored at magnitude 0 alone and reused by the others (the post-hoc
    /// detectors of one `rf-baselines` run share one forward pass per set).
    clean_features: RefCell<BTreeMap<(String, usize), Vec<Tensor>>>,
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
        let classifier_sha256 = file_sha256(classifier_path)?;
        if classifier_sha256 != manifest.provenance.classifier_sha256 {
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
        let fgsm = if options.validation == Validation::Fgsm {
            let sets = FgsmSets::load_for(&run.fgsm_dir(), &classifier, &classifier_sha256)
                .map_err(|e| e.with_hint("(run rf-fgsm first)"))?;
            Some(sets)
        } else {
            None
        };
        Ok(ScoringStage {
            classifier,
            features,
            manifest,
            fgsm,
            classifier_sha256,
            validation: options.validation,
            dataroot: common.dataroot.clone(),
            run,
            device: common.device,
            batch_size: common.batch_size_or(SCORING_BATCH_SIZE),
            clean_features: RefCell::new(BTreeMap::new()),
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
        if magnitudes == [0.0] {
            let out = self.score_clean(set, layer, score, progress);
            progress.finish();
            return out.map(|s| vec![s]);
        }
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

impl ScoringStage {
    /// The scores of `set` at layer `layer` without pre-processing: the same numbers as
    /// [`score_set`] at magnitude 0 (the same batches, features and score function), with the
    /// batches' pooled features computed once per stage run and kept for the next detector.
    fn score_clean(
        &self,
        set: BatchSource<'_>,
        layer: usize,
        score: &ScoreFn,
        progress: &mut dyn Progress,
    ) -> Result<Tensor> {
        let key = (set.name().to_string(), layer);
        if !self.clean_features.borrow().contains_key(&key) {
            let net = self.classifier.net.as_ref();
            let norm = self.classifier.meta.normalization;
            let mut batches = Vec::new();
            for batch in set.batches(norm, self.batch_size, self.device) {
                batches.push(pooled_features(net, &batch.images, layer)?);
                progress.advance(batch.labels.size()[0] as usize);
            }
            self.clean_features
                .borrow_mut()
                .insert(key.clone(), batches);
        } else {
            progress.advance(set.len());
        }
        let cache = self.clean_features.borrow();
        let scores = cache[&key]
            .iter()
            .map(|f| scores_of_features(score, f))
            .collect::<Result<Vec<Tensor>>>()?;
        Ok(Tensor::cat(&scores, 0))
    }

    /// Takes the lock of `detector`'s score folder (the folder is not touched until
    /// [`PendingOutput::begin`]) with the provenance of the scores started: the classifier, the
    /// feature manifest, the FGSM summary when validating on FGSM samples, the other artefacts
    /// `read` while fitting, the parameters and validation.
    pub fn lock_output(
        &self,
        detector: &dyn FittedDetector,
        read: BTreeMap<String, String>,
    ) -> Result<PendingOutput> {
        let kind = detector.kind();
        let mut provenance = Provenance::new(kind.stage(), &self.classifier_sha256);
        provenance.input("features/manifest.json", &self.features.manifest_path())?;
        if self.fgsm.is_some() {
            let summary = self.run.fgsm_dir().join(FGSM_SUMMARY);
            provenance.input(&format!("fgsm/{FGSM_SUMMARY}"), &summary)?;
        }
        provenance.inputs.extend(read);
        provenance.option("params", detector.params())?;
        provenance.option("validation", self.validation)?;
        let dir = self.run.detector_dir(kind);
        StageOutput::lock(
            &dir,
            &score_manifest_path(&dir),
            provenance,
            &format!("{} is writing {} scores here", kind.stage(), kind.label()),
        )
    }
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
        let rows = *manifest.sets.get(key).ok_or_else(|| {
            Error::format(
                features.manifest_path(),
                format!("lists no set `{key}` in `sets`; rerun rf-prepare"),
            )
        })?;
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
