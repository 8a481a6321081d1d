//! The paired comparison of `rf-regress` (`docs/method.md#paired-comparison`): for each OOD set
//! of one validation, the best detector by AUROC against every other one on the same bootstrap
//! resamples of the same test rows ([`crate::fit::paired`]), from the test outputs that each
//! detector's `rf-regress` run stored.
use crate::detect::DetectorKind;
use crate::error::Result;
use crate::fit::bootstrap::BootstrapParams;
use crate::fit::detector::TestScores;
use crate::fit::paired::{self, Confidences};
use crate::fit::{openood, Validation};
use crate::report::compare::grouped_sets;
use crate::store::results::{
    ood_sets, read_test_scores, GroupMean, PairedComparison, PairedEntry, ResultRecord,
    ResultsFile, SkippedDetector,
};
use crate::store::RunDir;

/// A record's test outputs, read from `run` and checked to be the ones the record was measured
/// on: as many rows of each kind as the record counts, and the same OpenOOD AUROC.
fn checked_test_scores(run: &RunDir, r: &ResultRecord) -> std::result::Result<TestScores, String> {
    let path = run.test_scores_path(r.detector, r.validation, &r.ood);
    if !path.exists() {
        return Err(format!("no test outputs {}", path.display()));
    }
    let t = read_test_scores(&path).map_err(|e| e.to_string())?;
    let (n_in, n_ood) = (t.confidence_in.len(), t.confidence_ood.len());
    if (n_in, n_ood) != (r.counts.test_in, r.counts.test_ood) {
        return Err(format!(
            "{} holds {n_in} + {n_ood} test rows, the result {} + {}; rerun rf-regress --detector {}",
            path.display(),
            r.counts.test_in,
            r.counts.test_ood,
            r.detector.name()
        ));
    }
    let auroc = openood::compute(&t.confidence_in, &t.confidence_ood)
        .map_err(|e| e.to_string())?
        .auroc;
    if r.openood.map(|m| m.auroc) != Some(auroc) {
        return Err(format!(
            "{} does not reproduce the result's AUROC (written by another run); rerun \
             rf-regress --detector {}",
            path.display(),
            r.detector.name()
        ));
    }
    Ok(t)
}

/// Why `r` was not measured on the same test rows as `best` (`None` when it was): the rows come
/// from the feature folder (its digest) by the IO split of its counts.
fn other_rows(best: &ResultRecord, r: &ResultRecord) -> Option<String> {
    if r.features_sha256 != best.features_sha256 {
        return Some(format!(
            "made from another feature folder than {}'s; rerun rf-regress --detector {}",
            best.detector.label(),
            r.detector.name()
        ));
    }
    let rows = |r: &ResultRecord| (r.counts.split, r.counts.test_in, r.counts.test_ood);
    (rows(r) != rows(best)).then(|| {
        format!(
            "{} + {} test rows ({} split), {} has {} + {} ({})",
            r.counts.test_in,
            r.counts.test_ood,
            r.counts.split.name(),
            best.detector.label(),
            best.counts.test_in,
            best.counts.test_ood,
            best.counts.split.name()
        )
    })
}

/// The OpenOOD AUROC of a record (`None` for records of older versions without it).
fn auroc_of(r: &ResultRecord) -> Option<f64> {
    r.openood.map(|m| m.auroc)
}

/// The paired comparison of the records of `(validation, ood)` in `records` (in table order),
/// `None` when fewer than two detectors can be compared.
fn compare_set(
    run: &RunDir,
    records: &[&ResultRecord],
    params: &BootstrapParams,
) -> Result<Option<PairedComparison>> {
    let mut skipped = Vec::new();
    let mut usable: Vec<(&ResultRecord, f64, TestScores)> = Vec::new();
    for &r in records {
        let checked = auroc_of(r)
            .ok_or_else(|| "no OpenOOD AUROC (older results.json); rerun rf-regress".to_string())
            .and_then(|a| checked_test_scores(run, r).map(|t| (a, t)));
        match checked {
            Ok((a, t)) => usable.push((r, a, t)),
            Err(reason) => skipped.push(SkippedDetector {
                detector: r.detector,
                reason,
            }),
        }
    }
    // The first highest AUROC, in table order.
    let Some(best_at) =
        (0..usable.len()).reduce(|b, k| if usable[k].1 > usable[b].1 { k } else { b })
    else {
        return Ok(None);
    };
    let (best, best_auroc, best_scores) = usable.remove(best_at);
    let mut compared = Vec::new();
    for (r, a, t) in usable {
        match other_rows(best, r) {
            Some(reason) => skipped.push(SkippedDetector {
                detector: r.detector,
                reason,
            }),
            None => compared.push((r, a, t)),
        }
    }
    let views: Vec<Confidences<'_>> = compared
        .iter()
        .map(|(_, _, t)| (&t.confidence_in[..], &t.confidence_ood[..]))
        .collect();
    let diffs = paired::auroc_differences(
        (&best_scores.confidence_in, &best_scores.confidence_ood),
        &views,
        params,
    )?;
    skipped.sort_by_key(|s| s.detector);
    Ok(Some(PairedComparison {
        validation: best.validation,
        ood: best.ood.clone(),
        best: best.detector,
        best_auroc,
        test_in: best.counts.test_in,
        test_ood: best.counts.test_ood,
        bootstrap: *params,
        others: compared
            .iter()
            .zip(diffs)
            .map(|((r, a, _), d)| PairedEntry {
                detector: r.detector,
                auroc: *a,
                paired: d,
                excludes_zero: d.excludes_zero(),
            })
            .collect(),
        skipped,
    }))
}

/// Recomputes the paired comparisons of `results` for validation `v` (every OOD set with results
/// of two detectors or more) from the test outputs stored in `run`, and keeps those of the other
/// validations whose detectors still have results (a comparison whose records were dropped goes).
pub fn update_paired(
    run: &RunDir,
    results: &mut ResultsFile,
    v: Validation,
    params: &BootstrapParams,
) -> Result<()> {
    let oods = ood_sets(&results.results, v);
    let mut fresh = Vec::new();
    for ood in oods {
        let records: Vec<&ResultRecord> = DetectorKind::ALL
            .iter()
            .filter_map(|&d| {
                results
                    .results
                    .iter()
                    .find(|r| r.validation == v && r.detector == d && r.ood == ood)
            })
            .collect();
        if records.len() >= 2 {
            fresh.extend(compare_set(run, &records, params)?);
        }
    }
    let records = &results.results;
    let still_holds = |p: &PairedComparison| {
        let mut now: Vec<DetectorKind> = records
            .iter()
            .filter(|r| r.validation == p.validation && r.ood == p.ood)
            .map(|r| r.detector)
            .collect();
        now.sort();
        p.validation != v && now == p.detectors()
    };
    let mut kept: Vec<PairedComparison> = results
        .paired
        .iter()
        .filter(|p| still_holds(p))
        .cloned()
        .collect();
    kept.extend(fresh);
    kept.sort_by(|a, b| (a.validation.name(), &a.ood).cmp(&(b.validation.name(), &b.ood)));
    results.paired = kept;
    Ok(())
}

/// Recomputes the group means with intervals of `results` for validation `v`: for each detector
/// and group (near, far) whose every OOD set of `v` has a result of the detector with its test
/// outputs in `run`, the mean AUROC and its interval ([`paired::mean_auroc_interval`]). Keeps
/// those of the other validations whose detectors still have results for their sets. A detector
/// whose outputs cannot be read or do not reproduce its results gets no interval (the tables then
/// show the point mean).
pub fn update_group_means(
    run: &RunDir,
    results: &mut ResultsFile,
    v: Validation,
    params: &BootstrapParams,
) -> Result<()> {
    let oods = ood_sets(&results.results, v);
    let mut fresh = Vec::new();
    for (group, sets) in grouped_sets(&results.ood_groups, &oods) {
        for &d in DetectorKind::ALL {
            let scores: Option<Vec<TestScores>> = sets
                .iter()
                .map(|ood| {
                    let r = results
                        .results
                        .iter()
                        .find(|r| r.validation == v && r.detector == d && r.ood == *ood)?;
                    checked_test_scores(run, r).ok()
                })
                .collect();
            let Some(scores) = scores else { continue };
            let views: Vec<Confidences<'_>> = scores
                .iter()
                .map(|t| (&t.confidence_in[..], &t.confidence_ood[..]))
                .collect();
            let (auroc, interval) = paired::mean_auroc_interval(&views, params)?;
            fresh.push(GroupMean {
                detector: d,
                validation: v,
                group,
                sets: sets.iter().map(|s| s.to_string()).collect(),
                auroc,
                interval,
                bootstrap: *params,
            });
        }
    }
    let records = &results.results;
    let still_holds = |m: &GroupMean| {
        m.validation != v
            && m.sets.iter().all(|ood| {
                records.iter().any(|r| {
                    r.validation == m.validation && r.detector == m.detector && r.ood == *ood
                })
            })
    };
    let mut kept: Vec<GroupMean> = results
        .group_means
        .iter()
        .filter(|m| still_holds(m))
        .cloned()
        .collect();
    kept.extend(fresh);
    kept.sort_by(|a, b| {
        (a.validation.name(), a.detector, a.group).cmp(&(b.validation.name(), b.detector, b.group))
    });
    results.group_means = kept;
    Ok(())
}

/// The stored comparison of each run, for `rf-regress --summary`: the `results.json` of every named
/// (or, with none named, every found) `{net}_{dataset}` run folder under `outf`, read as it is;
/// nothing is recomputed. A run folder without one is an error saying to run `rf-regress`.
pub fn stored_results(
    outf: &std::path::Path,
    net: &str,
    datasets: &[String],
) -> Result<Vec<ResultsFile>> {
    let datasets = if datasets.is_empty() {
        crate::store::list_datasets(outf, net)?
    } else {
        datasets
            .iter()
            .map(|d| crate::data::source::name_of(d))
            .collect()
    };
    if datasets.is_empty() {
        return Err(crate::error::Error::missing(
            outf,
            format!("no {net}_{{dataset}} run folders; run the pipeline first or pass --outf"),
        ));
    }
    datasets
        .iter()
        .map(|d| {
            let path = RunDir::new(outf, net, d).results_path();
            crate::store::results::read_results(&path)?.ok_or_else(|| {
                crate::error::Error::missing(
                    &path,
                    "no results yet; run rf-regress --detector NAME on this run first",
                )
            })
        })
        .collect()
}
