//! The prepare stage (`rf-prepare`, `docs/method.md#class-statistics-and-whitening`): features of
//! the train, test and OOD sets, and per-layer statistics, written to the run's [`FeatureDir`].
use std::collections::BTreeMap;
use std::path::PathBuf;

use tch::Device;

use super::Common;
use crate::data::group::{default_group, split_group};
use crate::data::registry::GENERATED_SET_SIZE;
use crate::data::{BatchSource, DataSource, ImageSet, Split};
use crate::detect::fgsm::FgsmSets;
use crate::detect::gaussian::LayerStats;
use crate::error::{Error, Result};
use crate::fit::Validation;
use crate::models::checkpoint::file_sha256;
use crate::models::{extract, Features, LoadedClassifier};
use crate::progress::Progress;
use crate::store::features::{FeatureDir, FeatureManifest, PREPARE_STAGE};
use crate::store::fgsm::FGSM_SUMMARY;
use crate::store::provenance::{Provenance, StageOutput};

/// The stage's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run, data and device.
    pub common: Common,
    /// Classifier checkpoint; `None`: [`Common::default_classifier_path`].
    pub classifier: Option<PathBuf>,
    /// OOD sets to extract (registry names, `NAME=PATH` or folder paths; see
    /// [`crate::data::source`]), each optionally prefixed with its group `near:` or `far:`
    /// ([`crate::data::group`]); `None`: the registry's usual OOD sets of the data set.
    pub ood_sets: Option<Vec<String>>,
    /// With [`Validation::Fgsm`], also the FGSM sets written by `rf-fgsm`.
    pub validation: Validation,
    /// Use at most this many train images (all when `None`).
    pub max_train: Option<usize>,
    /// Use at most this many test images.
    pub max_test: Option<usize>,
    /// Use at most this many images of each OOD set.
    pub max_ood: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            common: Common::default(),
            classifier: None,
            ood_sets: None,
            validation: Validation::Ood,
            max_train: None,
            max_test: None,
            max_ood: None,
        }
    }
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The feature folder.
    pub dir: FeatureDir,
    /// Its manifest.
    pub manifest: FeatureManifest,
    /// Figures that mean little ([`super::warnings`]): a classifier near chance, low whitening
    /// ranks.
    pub warnings: Vec<String>,
}

/// Runs the stage: loads the classifier and the sets, then [`prepare`]s the run's feature folder.
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    let common = &options.common;
    let (classifier_path, classifier) = common.load_classifier(options.classifier.as_deref())?;
    // The manifest records the path as JSON text: refuse one that is not UTF-8 now, not after
    // all the work.
    if classifier_path.to_str().is_none() {
        return Err(Error::format(
            &classifier_path,
            "the classifier's path is not valid UTF-8 and cannot be recorded in the feature \
             manifest; rename or move the file",
        ));
    }
    let ood_sets = match &options.ood_sets {
        Some(list) => list.clone(),
        None => common.dataset_source()?.default_ood_sets()?,
    };
    if ood_sets.is_empty() {
        return Err(Error::bad_option(
            "--ood",
            format!(
                "no OOD sets for `{}`: an image-folder data set has no default ones; pass --ood \
                 NAME=PATH (several, comma-separated) or registry names",
                common.dataset_name()
            ),
        ));
    }
    let run_dir = common.run_dir();
    let sets = FeatureOptions {
        dataroot: common.dataroot.clone(),
        ood_sets,
        batch_size: common.batch_size_or(200),
        max_train: options.max_train,
        max_test: options.max_test,
        max_ood: options.max_ood,
        fgsm: (options.validation == Validation::Fgsm).then(|| run_dir.fgsm_dir()),
    };
    let dir = run_dir.features();
    let manifest = prepare(
        &classifier,
        &classifier_path,
        &common.dataset,
        &dir,
        &sets,
        common.device,
        progress,
    )?;
    let warnings = super::warnings::run_warnings(&manifest, None, &[]);
    Ok(Summary {
        dir,
        manifest,
        warnings,
    })
}

/// Which images to prepare, for [`prepare`].
#[derive(Debug, Clone)]
pub struct FeatureOptions {
    /// Folder of the data sets.
    pub dataroot: std::path::PathBuf,
    /// OOD sets to extract, as specs ([`crate::data::source`]), optionally prefixed `near:` or
    /// `far:` ([`crate::data::group::split_group`]).
    pub ood_sets: Vec<String>,
    /// Batch size of the feature extraction.
    pub batch_size: usize,
    /// Use at most this many train / test / OOD images (all when `None`), for quick runs.
    pub max_train: Option<usize>,
    /// See `max_train`.
    pub max_test: Option<usize>,
    /// See `max_train`.
    pub max_ood: Option<usize>,
    /// FGSM folder (written by rf-fgsm) whose sets are also extracted, as `fgsm_clean`,
    /// `fgsm_noisy` and `fgsm_adv`.
    pub fgsm: Option<std::path::PathBuf>,
}

fn limit(set: ImageSet, max: Option<usize>) -> ImageSet {
    match max {
        Some(n) => set.take(n),
        None => set,
    }
}

/// The images of OOD set `ood` to use: `max_ood` when given; else every image, except for the sets
/// the registry generates (photo crops and noise: [`GENERATED_SET_SIZE`] of them), which have no
/// size of their own and take as many as the in-distribution test split's `test_rows` (all 5,000
/// for a test split of 5,000 images or more; 180 for a folder of 3 classes x 60 test images, not
/// 28 times the test split).
pub fn default_max_ood(
    ood: &DataSource,
    max_ood: Option<usize>,
    test_rows: usize,
) -> Option<usize> {
    max_ood.or_else(|| {
        ood.is_generated()
            .then_some(test_rows.min(GENERATED_SET_SIZE))
    })
}

fn run_set(
    classifier: &LoadedClassifier,
    set: BatchSource<'_>,
    options: &FeatureOptions,
    device: Device,
    progress: &mut dyn Progress,
    label: &str,
) -> Features {
    progress.start(label, set.len());
    let features = extract(
        classifier.net.as_ref(),
        set,
        classifier.meta.normalization,
        options.batch_size,
        device,
        &mut |n| progress.advance(n),
    );
    progress.finish();
    features
}

/// Runs the prepare stage for `classifier` (loaded from `classifier_path`) on `dataset`, writing
/// everything into `dir`. The manifest is written last, so a folder with a manifest is complete.
pub fn prepare(
    classifier: &LoadedClassifier,
    classifier_path: &std::path::Path,
    dataset: &str,
    dir: &FeatureDir,
    options: &FeatureOptions,
    device: Device,
    progress: &mut dyn Progress,
) -> Result<FeatureManifest> {
    let source = DataSource::parse(dataset)?;
    let classifier_sha256 = file_sha256(classifier_path)?;
    let side = classifier.net.input_side();
    let num_classes = classifier.meta.num_classes as usize;
    let train_set = limit(
        source.load(&options.dataroot, Split::Train, side)?,
        options.max_train,
    );
    if train_set.num_classes != num_classes {
        return Err(Error::provenance(
            classifier_path,
            format!(
                "the classifier has {num_classes} classes but `{}` has {}; pass the classifier trained on `{}`",
                source.name, train_set.num_classes, source.name
            ),
        ));
    }
    let test_set = limit(
        source.load(&options.dataroot, Split::Test, side)?,
        options.max_test,
    );
    let fgsm = match &options.fgsm {
        Some(dir) => Some(FgsmSets::load_for(dir, classifier, &classifier_sha256)?),
        None => None,
    };
    // `near:` / `far:` name a set's group; without one, the registry's default for the pair.
    let mut ood_sources = Vec::with_capacity(options.ood_sets.len());
    let mut ood_groups = BTreeMap::new();
    for spec in &options.ood_sets {
        let (group, spec) = split_group(spec)?;
        let ood = DataSource::parse(spec)?;
        let registry_default = match ood.folder {
            None => default_group(&source.name, &ood.name),
            Some(_) => None,
        };
        if let Some(g) = group.or(registry_default) {
            ood_groups.insert(ood.name.clone(), g);
        }
        ood_sources.push(ood);
    }
    for (i, a) in ood_sources.iter().enumerate() {
        if a.name == source.name || ood_sources[..i].iter().any(|b| b.name == a.name) {
            return Err(Error::bad_option(
                "--ood",
                format!(
                    "two sets are named `{}`; name each folder with NAME=PATH",
                    a.name
                ),
            ));
        }
    }
    let oods = ood_sources
        .iter()
        .map(|ood| {
            Ok(limit(
                ood.load_ood(&options.dataroot, side)?,
                default_max_ood(ood, options.max_ood, test_set.len()),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // An empty set has no features to average or score: refuse before writing anything.
    let named = [
        ("train", &train_set, "--max-train"),
        ("test", &test_set, "--max-test"),
    ];
    let ood_named = oods.iter().map(|o| (o.name.as_str(), o, "--max-ood"));
    for (name, set, flag) in named.into_iter().chain(ood_named) {
        if set.is_empty() {
            return Err(Error::BadData(format!(
                "`{name}` has no images to use (under {}, or {flag} 0); every set needs at least one",
                options.dataroot.display()
            )));
        }
    }
    let mut provenance = Provenance::new(PREPARE_STAGE, &classifier_sha256);
    provenance.option("dataset", source.spec())?;
    provenance.option("ood", &options.ood_sets)?;
    provenance.option("max_train", options.max_train)?;
    provenance.option("max_test", options.max_test)?;
    provenance.option("max_ood", options.max_ood)?;
    provenance.option("batch_size", options.batch_size)?;
    if let Some(fgsm_dir) = &options.fgsm {
        provenance.input("fgsm/summary.json", &fgsm_dir.join(FGSM_SUMMARY))?;
    }
    // From here on the folder is incomplete (no manifest) until the end.
    let mut out = StageOutput::begin(
        &dir.path,
        &dir.manifest_path(),
        provenance,
        "rf-prepare is writing these features",
    )?;

    let train = run_set(
        classifier,
        (&train_set).into(),
        options,
        device,
        progress,
        "train",
    )
    .grouped_by_class();
    let mut sets = BTreeMap::new();
    let mut layer_ranks = Vec::new();
    progress.start("statistics", train.layers.len());
    for (l, layer) in train.layers.iter().enumerate() {
        let stats = LayerStats::fit(layer, &train.labels, num_classes)
            .map_err(|e| Error::BadData(format!("layer {l} of the train features: {e}")))?;
        stats.save(&dir.stats_path(l))?;
        out.record(&dir.stats_path(l))?;
        layer_ranks.push(stats.whitening.k);
        progress.advance(1);
    }
    progress.finish();
    record_all(&mut out, dir.write_set("train", &train)?)?;
    sets.insert("train".to_string(), train.len());

    let test = run_set(
        classifier,
        (&test_set).into(),
        options,
        device,
        progress,
        "test",
    );
    record_all(&mut out, dir.write_set("test", &test)?)?;
    sets.insert("test".to_string(), test.len());
    for set in &oods {
        let name = format!("ood_{}", set.name);
        let features = run_set(classifier, set.into(), options, device, progress, &set.name);
        record_all(&mut out, dir.write_set(&name, &features)?)?;
        sets.insert(name, features.len());
    }
    for set in fgsm.iter().flat_map(|f| f.named()) {
        let features = run_set(classifier, set.into(), options, device, progress, &set.name);
        record_all(&mut out, dir.write_set(&set.name, &features)?)?;
        sets.insert(set.name.clone(), features.len());
    }
    out.finish(|provenance| FeatureManifest {
        net_type: classifier.meta.architecture,
        dataset: source.spec(),
        ood_sources: ood_sources
            .iter()
            .map(|o| (o.name.clone(), o.spec()))
            .collect(),
        ood_groups,
        classifier: classifier_path.to_path_buf(),
        num_classes,
        layer_channels: classifier.net.layer_channels(),
        layer_ranks,
        train_accuracy: train.accuracy(),
        test_accuracy: test.accuracy(),
        sets,
        provenance,
    })
}

/// Records every file of `written` as part of the stage's output.
fn record_all(out: &mut StageOutput, written: Vec<PathBuf>) -> Result<()> {
    written.iter().try_for_each(|p| out.record(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ood_sets_default_to_the_test_splits_size() {
        let uniform = DataSource::parse("uniform").unwrap();
        let mnist = DataSource::parse("mnist").unwrap();
        // A small test split: the generated set follows it, a real set keeps all its images.
        assert_eq!(default_max_ood(&uniform, None, 180), Some(180));
        assert_eq!(default_max_ood(&mnist, None, 180), None);
        // 5,000 test images or more: the generated set's 5,000 as before.
        assert_eq!(default_max_ood(&uniform, None, 10_000), Some(5000));
        // --max-ood wins.
        assert_eq!(default_max_ood(&uniform, Some(1500), 180), Some(1500));
        assert_eq!(default_max_ood(&mnist, Some(1500), 180), Some(1500));
        for name in ["photos", "gaussian"] {
            let set = DataSource::parse(name).unwrap();
            assert_eq!(default_max_ood(&set, None, 300), Some(300), "{name}");
        }
        // A folder named like nothing in the registry is the user's data.
        let dir = std::env::temp_dir();
        let folder = DataSource::parse(&format!("noise={}", dir.display())).unwrap();
        assert_eq!(default_max_ood(&folder, None, 180), None);
    }
}
