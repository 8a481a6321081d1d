//! The regression stage (`rf-regress`, `docs/method.md#the-regression-detector`) for one run
//! folder: reads a detector's score files into per-magnitude feature matrices, fits and evaluates
//! the regression detector ([`crate::fit::detector`]) on each OOD set, and writes `results.json`,
//! `results.md`, the test outputs and the plots.
use std::path::PathBuf;

use super::train_flow::MONITOR_ROWS;
use crate::detect::{DetectorKind, Evaluation, ScoreLayout};
use crate::error::{Error, Result};
use crate::fit::bootstrap::BootstrapParams;
use crate::fit::detector::{
    evaluate_detector, evaluate_direct, DetectorResult, EpsInput, TestScores, Validation,
};
use crate::fit::metrics;
use crate::fit::regression::LogisticRegressionCv;
use crate::fit::splits::IoSplitRule;
use crate::models::NetType;
use crate::progress::Progress;
use crate::report::plots::plot_comparison;
use crate::report::tables::comparison_points;
use crate::report::{markdown, plot_auroc_history, plot_histogram, plot_roc, LayerCurve};
use crate::store::fgsm::{FgsmSummary, FGSM_STAGE, FGSM_SUMMARY};
use crate::store::history::read_history;
use crate::store::provenance::{read_manifest, remove_temporary_files, remove_temporary_siblings};
use crate::store::results::{
    read_results, read_test_scores, write_results, write_test_scores, ResultRecord, ResultsFile,
    OPENOOD_AUROC,
};
use crate::store::score_sets::ScoreFolder;
use crate::store::scores::{read_scores, FGSM};
use crate::store::{list_datasets, lock, RunDir};

/// What [`regress_dataset`] did for one in-distribution set.
#[derive(Debug, Clone)]
pub struct RegressOutcome {
    /// The new records (one per OOD set), in OOD-set order.
    pub records: Vec<ResultRecord>,
    /// `results.json` after merging them.
    pub results: ResultsFile,
    /// Plot files written.
    pub plots: Vec<PathBuf>,
    /// Problems that did not stop the run (small sets split in proportion, plots that could not
    /// be drawn).
    pub warnings: Vec<String>,
    /// OOD sets that could not be evaluated, with the reason; the other sets' results are written.
    pub failed: Vec<(String, String)>,
}

/// Whether an error of evaluating one OOD set lies in the run's artefacts (missing, corrupt,
/// made from other inputs) rather than in the data (too few rows): the first stops the whole
/// stage, unless partial results are allowed.
fn is_artefact_problem(e: &Error) -> bool {
    match e {
        Error::MissingArtefact { .. }
        | Error::Provenance { .. }
        | Error::Format { .. }
        | Error::Io { .. }
        | Error::MissingDataset { .. } => true,
        Error::UnknownDataset { .. }
        | Error::Shape(_)
        | Error::BadOption { .. }
        | Error::BadData(_)
        | Error::Fit(_)
        | Error::NonFiniteLoss { .. }
        | Error::Torch(_) => false,
    }
}

/// The stage's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder of the pipeline's outputs.
    pub outf: PathBuf,
    /// Classifier architecture (names the run folders).
    pub net_type: NetType,
    /// In-distribution sets; empty: every run folder with score files of the detector.
    pub datasets: Vec<String>,
    /// The detector whose score files are used.
    pub detector: DetectorKind,
    /// Where it is fitted and its magnitude selected.
    pub validation: Validation,
    /// OOD sets to evaluate; empty: every set with score files.
    pub oods: Vec<String>,
    /// Draw the PNG plots.
    pub plots: bool,
    /// Bootstrap intervals of the metrics; `None`: point estimates only.
    pub bootstrap: Option<BootstrapParams>,
    /// Write the results of the sets that could be evaluated even when another set's score files
    /// are missing, corrupt or from another run (they are reported as left out); by default
    /// such a set stops the stage before anything is written.
    pub allow_partial: bool,
}

impl Default for Options {
    /// The residual flow of every ResNet run under `output/`, validated on the OOD sets, every
    /// set, with plots and 95% intervals from 1,000 bootstrap resamples.
    fn default() -> Self {
        Options {
            outf: PathBuf::from("output"),
            net_type: NetType::Resnet,
            datasets: Vec::new(),
            detector: DetectorKind::Resflow,
            validation: Validation::Ood,
            oods: Vec::new(),
            plots: true,
            bootstrap: Some(BootstrapParams::default()),
            allow_partial: false,
        }
    }
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Per in-distribution set evaluated: its name, run folder and outcome.
    pub runs: Vec<(String, RunDir, RegressOutcome)>,
    /// Run folders skipped because they hold no score files of the detector.
    pub skipped: Vec<RunDir>,
}

/// Runs the stage on every requested (or found) in-distribution set ([`regress_dataset`]).
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    let net = options.net_type.name();
    let mut skipped = Vec::new();
    let datasets = if options.datasets.is_empty() {
        // Every run folder that has score files of this detector; the others are named.
        let mut with_scores = Vec::new();
        for d in list_datasets(&options.outf, net)? {
            let run = RunDir::new(&options.outf, net, &d);
            if !run.detector_dir(options.detector).exists() {
                skipped.push(run);
            } else {
                with_scores.push(d);
            }
        }
        with_scores
    } else {
        // A set given as an image folder (`NAME=PATH`, `folder:PATH`) is found by its name.
        options
            .datasets
            .iter()
            .map(|d| crate::data::source::name_of(d))
            .collect()
    };
    if datasets.is_empty() {
        return Err(Error::missing(
            &options.outf,
            format!(
                "no {net}_{{dataset}} run folders with {} score files under {}; run the scoring stages first or pass --outf",
                options.detector.name(),
                options.outf.display()
            ),
        ));
    }
    let mut runs = Vec::new();
    for dataset in datasets {
        let run = RunDir::new(&options.outf, net, &dataset);
        let outcome = regress_dataset(&run, net, &dataset, options, progress)?;
        runs.push((dataset, run, outcome));
    }
    Ok(Summary { runs, skipped })
}

/// The whole regression stage for one run folder: evaluates the detector on each OOD set
/// ([`ScoreFolder::ood_sets`]), stores the test outputs, merges `results.json`, rewrites `results.md` and,
/// with plots, draws the plots of [`crate::report`].
pub fn regress_dataset(
    run: &RunDir,
    net: &str,
    dataset: &str,
    options: &Options,
    progress: &mut dyn Progress,
) -> Result<RegressOutcome> {
    let (detector, validation, plots) = (options.detector, options.validation, options.plots);
    let folder = ScoreFolder::open(run, detector)?;
    let oods = folder.ood_sets(&options.oods)?;
    // One writer of the run's results at a time.
    let _lock = lock::exclusive(
        &run.path().join("results.lock"),
        "rf-regress is writing this run's results",
    )?;
    // What an interrupted rf-regress left behind goes.
    remove_temporary_siblings(&run.results_path())?;
    remove_temporary_siblings(&run.results_markdown_path())?;
    remove_temporary_files(&run.path().join("regression"))?;
    remove_temporary_files(&run.plots_dir())?;
    // The results of earlier runs, merged with the new ones: read before anything is written.
    let path = run.results_path();
    let mut results = read_results(&path)?.unwrap_or(ResultsFile {
        net: net.to_string(),
        dataset: dataset.to_string(),
        results: Vec::new(),
        warnings: Vec::new(),
        test_accuracy: None,
        ood_groups: Default::default(),
        paired: Vec::new(),
        group_means: Vec::new(),
    });
    let mut records = Vec::new();
    let mut results_by_ood = Vec::new();
    let mut warnings = Vec::new();
    let mut failed = Vec::new();
    progress.start(&format!("{dataset} regression"), oods.len());
    for ood in &oods {
        // One set that cannot be evaluated (too few rows, a missing file) does not block the others.
        match evaluate_ood_set(&folder, ood, validation) {
            Ok(r) => {
                if r.counts.split == IoSplitRule::Proportional {
                    warnings.push(small_set_warning(dataset, &r));
                }
                let record = ResultRecord::from_result(&r)
                    .made_from(&folder)?
                    .with_uncertainty(&r.test, options.bootstrap.as_ref())?;
                records.push(record);
                results_by_ood.push(r);
            }
            Err(e) if is_artefact_problem(&e) && !options.allow_partial => {
                progress.finish();
                return Err(e);
            }
            Err(e) => failed.push((ood.clone(), e.to_string())),
        }
        progress.advance(1);
    }
    progress.finish();
    if results_by_ood.is_empty() {
        let reasons: Vec<String> = failed.iter().map(|(o, e)| format!("{o}: {e}")).collect();
        return Err(Error::BadData(format!(
            "{} regression of {}: no OOD set could be evaluated:\n  {}",
            detector.label(),
            run.path().display(),
            reasons.join("\n  ")
        )));
    }
    // Outputs only once every evaluable OOD set has been evaluated.
    for r in &results_by_ood {
        write_test_scores(&run.test_scores_path(detector, validation, &r.ood), &r.test)?;
    }
    warnings.extend(results.merge(&records, &folder.manifest.sets));
    let features = run.features().manifest().ok();
    results.test_accuracy = features.as_ref().map(|f| f.test_accuracy);
    results.ood_groups = features.map(|f| f.ood_groups).unwrap_or_default();
    match &options.bootstrap {
        Some(params) => {
            if let Err(e) = super::compare::update_paired(run, &mut results, validation, params) {
                warnings.push(format!("paired comparison not computed: {e}"));
            }
            if let Err(e) =
                super::compare::update_group_means(run, &mut results, validation, params)
            {
                warnings.push(format!("group mean intervals not computed: {e}"));
            }
        }
        None => {
            results.paired.retain(|p| p.validation != validation);
            results.group_means.retain(|m| m.validation != validation);
        }
    }
    results.warnings = figures_that_mean_little(run, &results.results);
    warnings.extend(results.warnings.iter().cloned());
    write_results(&path, &results)?;
    crate::io::write_text(&run.results_markdown_path(), &markdown(&results))?;
    let mut written = Vec::new();
    if plots {
        fn attempt(
            written: &mut Vec<PathBuf>,
            warnings: &mut Vec<String>,
            p: PathBuf,
            r: Result<()>,
        ) {
            match r {
                Ok(()) => written.push(p),
                Err(e) => warnings.push(format!("plot not written: {e}")),
            }
        }
        let dir = run.plots_dir();
        for r in &results_by_ood {
            let mut stored = Vec::new();
            for &d in DetectorKind::ALL {
                let p = run.test_scores_path(d, validation, &r.ood);
                if d == detector {
                    stored.push((d.label().to_string(), r.test.clone()));
                } else if p.exists() {
                    match read_test_scores(&p) {
                        Ok(t) => stored.push((d.label().to_string(), t)),
                        Err(e) => warnings.push(format!("ignored: {e}")),
                    }
                }
            }
            let curves: Vec<(String, &TestScores)> =
                stored.iter().map(|(l, t)| (l.clone(), t)).collect();
            let p = dir.join(format!("roc_{}_{}.png", validation.name(), r.ood));
            let title = format!("{net} {dataset} vs {}, {}", r.ood, validation.label());
            attempt(
                &mut written,
                &mut warnings,
                p.clone(),
                plot_roc(&p, &title, &curves),
            );
            let p = dir.join(format!(
                "hist_{}_{}_{}.png",
                detector.name(),
                validation.name(),
                r.ood
            ));
            let title = format!("{}: {dataset} vs {} (test set)", detector.label(), r.ood);
            attempt(
                &mut written,
                &mut warnings,
                p.clone(),
                plot_histogram(
                    &p,
                    &title,
                    match detector.evaluation() {
                        Evaluation::Regression => {
                            "Detector score -log-odds(OOD) (higher = in-distribution)"
                        }
                        Evaluation::Direct => "Detector score (higher = in-distribution)",
                    },
                    &r.test.logit_in,
                    &r.test.logit_ood,
                ),
            );
        }
        // The comparison of every detector run so far: OpenOOD's AUROC with its interval.
        let (ood_names, series) = comparison_points(&results, validation, OPENOOD_AUROC);
        if !series.is_empty() {
            let p = dir.join(format!("comparison_auroc_{}.png", validation.name()));
            let title = format!(
                "{net} {dataset}: AUROC with 95% intervals, {}",
                validation.label()
            );
            attempt(
                &mut written,
                &mut warnings,
                p.clone(),
                plot_comparison(&p, &title, "AUROC (%)", &ood_names, &series),
            );
        }
        match history_curves(run) {
            Ok(curves) if !curves.is_empty() => {
                let p = dir.join("auroc_vs_iteration.png");
                let title = format!(
                    "{net} {dataset}: validation AUROC vs {}",
                    curves[0].history.ood
                );
                attempt(
                    &mut written,
                    &mut warnings,
                    p.clone(),
                    plot_auroc_history(&p, &title, &curves),
                );
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("training history ignored: {e}")),
        }
    }
    Ok(RegressOutcome {
        records,
        results,
        plots: written,
        warnings,
        failed,
    })
}

/// The warnings of [`super::warnings::run_warnings`] for `run` and its `records` (the feature
/// manifest and FGSM summary where the run has them: hand-made score folders have neither).
fn figures_that_mean_little(run: &RunDir, records: &[ResultRecord]) -> Vec<String> {
    let features = run.features().manifest().ok();
    let fgsm = read_manifest::<FgsmSummary>(&run.fgsm_dir().join(FGSM_SUMMARY), FGSM_STAGE)
        .ok()
        .map(|s| s.counts);
    match features {
        Some(f) => super::warnings::run_warnings(&f, fgsm.as_ref(), records),
        None => super::warnings::indistinct_detectors(records),
    }
}

/// The warning for a result whose OOD set was split in proportion ([`IoSplitRule::Proportional`]).
fn small_set_warning(dataset: &str, r: &DetectorResult) -> String {
    let c = r.counts;
    format!(
        "{dataset} vs {}: {} OOD test rows; with 1,000 rows or fewer of either kind the split is \
         proportional (fit {} rows, select {}, test {} in-distribution + {} OOD), so the figures \
         are less certain than the paper's",
        r.ood, c.test_ood, c.fit, c.select, c.test_in, c.test_ood
    )
}

/// The flow training histories found in `run` (`history/layer_{l}.json`, consecutive layers
/// from 0), each with the Mahalanobis AUROC of its layer on the same monitoring rows (the first
/// [`MONITOR_ROWS`] of each kind) of the monitored OOD set at eps 0, when that score file exists.
pub fn history_curves(run: &RunDir) -> Result<Vec<LayerCurve>> {
    let mut curves = Vec::new();
    for layer in 0.. {
        let p = run.history_path(layer);
        if !p.exists() {
            break;
        }
        let history = read_history(&p)?;
        let m = run.mahalanobis_path(&history.ood, 0.0);
        let mahalanobis = if m.exists() {
            let f = read_scores(&m, false)?;
            if layer < f.scores.ncols() && f.n_out > 0 && f.n_out < f.n_rows() {
                let col = f.scores.column(layer);
                let out: Vec<f64> = col
                    .iter()
                    .take(f.n_out.min(MONITOR_ROWS))
                    .copied()
                    .collect();
                let inn: Vec<f64> = col
                    .iter()
                    .skip(f.n_out)
                    .take(MONITOR_ROWS)
                    .copied()
                    .collect();
                Some(metrics::compute(&inn, &out)?.auroc)
            } else {
                None
            }
        } else {
            None
        };
        curves.push(LayerCurve {
            layer,
            history,
            mahalanobis,
        });
    }
    Ok(curves)
}

/// Loads the score files of `ood` (and of the FGSM sets for FGSM validation) from `folder` and
/// evaluates them as the detector's [`Evaluation`] says: [`evaluate_detector`] with
/// scikit-learn's default regression, or [`evaluate_direct`]. The layers, magnitudes and
/// parameters are those the scoring stage recorded; every file is checked against its manifest.
pub fn evaluate_ood_set(
    folder: &ScoreFolder,
    ood: &str,
    validation: Validation,
) -> Result<DetectorResult> {
    let scored = &folder.manifest;
    let detector = scored.params.kind();
    let mut inputs = Vec::with_capacity(scored.magnitudes.len());
    for &eps in &scored.magnitudes {
        let io = folder.load_features(ood, eps)?;
        let fgsm = match validation {
            Validation::Ood => None,
            Validation::Fgsm => Some(folder.load_features(FGSM, eps)?),
        };
        inputs.push(EpsInput { io, fgsm });
    }
    match detector.evaluation() {
        Evaluation::Regression => {
            let mut r = evaluate_detector(
                detector,
                ood,
                validation,
                &inputs,
                &LogisticRegressionCv::default(),
            )?;
            // The layers behind the regression's coefficients, in their order.
            r.layers = match detector.layout() {
                ScoreLayout::ClassScoresPerLayer => folder.file_layers(),
                ScoreLayout::LayerColumns => (0..r.coef.len()).collect(),
            };
            Ok(r)
        }
        Evaluation::Direct => evaluate_direct(
            detector,
            ood,
            validation,
            &inputs,
            scored.params.temperatures(),
        ),
    }
}
