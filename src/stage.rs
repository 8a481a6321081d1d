//! The inputs shared by the scoring stages (`rf-mahalanobis`, `rf-score`), opened once from the
//! shared flags: classifier, feature folder, optional FGSM sets, run folder, device, batch size.
use std::path::{Path, PathBuf};

use tch::Device;

use crate::artefacts::run_dir;
use crate::cli::ScoringArgs;
use crate::error::{Error, Result};
use crate::features::FeatureDir;
use crate::fgsm::{fgsm_dir, FgsmSets};
use crate::models::{load_checkpoint, LoadedClassifier};

/// Default batch size of the scoring stages.
pub const SCORING_BATCH_SIZE: usize = 100;

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
