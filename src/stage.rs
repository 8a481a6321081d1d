//! The inputs shared by the scoring stages (`rf-mahalanobis`, `rf-score`), opened once from the
//! shared flags: classifier, feature folder, optional FGSM sets, run folder, device, batch size.
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use crate::artefacts::run_dir;
use crate::cli::ScoringArgs;
use crate::data::{self, BatchSource, ImageSet, Split};
use crate::error::{Error, Result};
use crate::features::{FeatureDir, FeatureManifest};
use crate::fgsm::{fgsm_dir, FgsmSets};
use crate::models::{load_checkpoint, LoadedClassifier};
use crate::progress::Progress;
use crate::scoring::{score_set, ScoreFn};

/// Default batch size of the scoring stages.
pub const SCORING_BATCH_SIZE: usize = 100;

/// What a scoring stage scores: the feature manifest (checked against the classifier), the
/// test split and every OOD set, each cut to the size `rf-prepare` used.
pub struct ScoredInputs {
    /// The feature folder's manifest.
    pub manifest: FeatureManifest,
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
    /// The FGSM sets, when validating on them.
    pub fgsm: Option<FgsmSets>,
    /// The data sets' folder.
    pub dataroot: PathBuf,
    /// The run folder the score files go to.
    pub run: PathBuf,
    /// Compute device.
    pub device: Device,
    /// Batch size.
    pub batch_size: usize,
}

impl ScoringStage {
    /// Opens the inputs named by the flags: `--classifier` overrides the checkpoint recorded in the
    /// feature manifest; `--validation-src fgsm` also loads the FGSM sets written by rf-fgsm.
    pub fn open(args: &ScoringArgs) -> Result<ScoringStage> {
        let common = &args.common;
        let classifier: Option<&Path> = args.classifier.as_deref();
        let fgsm = args.validation.fgsm();
        let device = common.device().device;
        let features = FeatureDir::new(&common.outf, common.net_type, &common.dataset);
        let manifest = features.manifest()?;
        let classifier = load_checkpoint(classifier.unwrap_or(&manifest.classifier), device)?;
        let fgsm = if fgsm {
            let dir = fgsm_dir(&common.outf, common.net_type, &common.dataset);
            let sets = FgsmSets::load_for(&dir, &classifier)
                .map_err(|e| Error::Invalid(format!("{e}\n(run rf-fgsm first)")))?;
            Some(sets)
        } else {
            None
        };
        Ok(ScoringStage {
            classifier,
            features,
            fgsm,
            dataroot: common.dataroot.clone(),
            run: run_dir(&common.outf, common.net_type.name(), &common.dataset),
            device,
            batch_size: common.batch_size_or(SCORING_BATCH_SIZE),
        })
    }
}

impl ScoringStage {
    /// Reads the manifest, checks that it was prepared with this classifier, and loads the sets
    /// to score.
    pub fn inputs(&self) -> Result<ScoredInputs> {
        let manifest = self.features.manifest()?;
        check_classifier(&self.classifier, &manifest, &self.features)?;
        let (test, oods) = scored_sets(&manifest, &self.dataroot)?;
        Ok(ScoredInputs {
            manifest,
            test,
            oods,
        })
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

/// The image sets a scoring stage evaluates: the test split and the OOD sets of the feature
/// folder, each cut to the size that `rf-prepare` used.
fn scored_sets(manifest: &FeatureManifest, dataroot: &Path) -> Result<(ImageSet, Vec<ImageSet>)> {
    let load = |name: &str, key: &str| -> Result<ImageSet> {
        let set = data::load(name, dataroot, Split::Test)?;
        let rows = manifest.sets[key];
        if set.len() < rows {
            return Err(Error::Invalid(format!(
                "`{name}` under {} has {} images but the features were prepared from {rows}; rerun rf-prepare",
                dataroot.display(),
                set.len()
            )));
        }
        Ok(set.take(rows))
    };
    let test = load(&manifest.dataset, "test")?;
    let oods = manifest
        .sets
        .keys()
        .filter_map(|k| k.strip_prefix("ood_"))
        .map(|name| load(name, &format!("ood_{name}")))
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
        return Err(Error::format(
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
