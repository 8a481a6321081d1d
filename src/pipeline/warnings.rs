//! Warnings where a figure means nothing: one line each, naming the option that fixes it. The
//! stages print the ones they can see (`rf-classifier`, `rf-prepare`, `rf-fgsm`, `rf-train`), and
//! `rf-regress` gathers all that a run's artefacts show into `results.md`, next to the figures
//! ([`run_warnings`]).
use crate::detect::fgsm::FgsmCounts;
use crate::detect::DetectorKind;
use crate::fit::splits::{fgsm_validation_rows, FGSM_MIN_ROWS_PER_GROUP, FGSM_SMALL_VALIDATION};
use crate::fit::Validation;
use crate::store::features::FeatureManifest;
use crate::store::results::{ResultRecord, OPENOOD_AUROC};

/// FGSM samples below which the FGSM-validated regression rests on few rows: it fits on half of
/// each group's validation block ([`fgsm_validation_rows`]: 50 rows per group below 500 samples),
/// so fewer than 50 samples give it fewer than 25 rows per group.
pub const FGSM_SAMPLES_FOR_REGRESSION: usize = FGSM_SMALL_VALIDATION;

/// OOD or in-distribution test rows below which a comparison's bootstrap intervals are wide.
pub const SMALL_TEST_SPLIT: usize = 1000;

/// An AUROC interval at least this wide (a fraction: one point) is wide: two perfect detectors'
/// zero-width intervals at 100% overlap without the split being too small.
pub const WIDE_INTERVAL: f64 = 0.01;

/// How far above chance (in accuracy, 0.05 = 5 points) a test accuracy must be to mean something.
pub const CHANCE_MARGIN: f64 = 0.05;

/// A warning when test `accuracy` in [0, 1] is at most [`CHANCE_MARGIN`] above chance
/// (`1 / num_classes`): such a classifier has learned (next to) nothing, and the detectors built
/// on it would be meaningless. `fix` says what to do. `None` for a higher accuracy.
pub fn chance_warning(accuracy: f64, num_classes: usize, fix: &str) -> Option<String> {
    let chance = 1.0 / num_classes.max(1) as f64;
    (accuracy <= chance + CHANCE_MARGIN).then(|| {
        let relation = if accuracy < chance {
            "below chance".to_string()
        } else {
            format!("within {:.0} points of chance", 100.0 * CHANCE_MARGIN)
        };
        format!(
            "test accuracy {:.1}% is {relation} ({:.1}% for {num_classes} classes): {fix}",
            100.0 * accuracy,
            100.0 * chance
        )
    })
}

/// An FGSM set of `counts.kept` samples, too few for the FGSM-validated regression, with what
/// lost the others: test images the classifier gets wrong (clean or noisy), or an attack that
/// changes few predictions (the reference's fixed step is small for a classifier with wide
/// margins), where FGSM validation cannot work and OOD validation can.
pub fn few_fgsm_samples(counts: &FgsmCounts) -> Option<String> {
    let kept = counts.kept;
    (kept < FGSM_SAMPLES_FOR_REGRESSION).then(|| {
        let effect = if kept < FGSM_MIN_ROWS_PER_GROUP {
            format!(
                "the FGSM-validated regression needs at least {FGSM_MIN_ROWS_PER_GROUP} and \
                 fails (rf-regress --validation-src fgsm, rf-detect fit)"
            )
        } else {
            format!(
                "the FGSM-validated regression fits on {} row(s) per group (fewer than {} make \
                 it unreliable)",
                fgsm_validation_rows(kept) / 2,
                FGSM_SAMPLES_FOR_REGRESSION / 2
            )
        };
        let percent = |n: usize| 100.0 * counts.fraction(n);
        // Images right when clean and noisy that the attack could have flipped.
        let right = counts.clean_correct.min(counts.noisy_correct);
        let fix = if 2 * counts.adv_correct >= right && right > 0 {
            format!(
                "the attack leaves {:.1}% of the predictions right: FGSM validation needs a \
                 classifier the attack can fool; validate on OOD sets instead (--validation-src \
                 ood, rf-detect fit --validation ood)",
                percent(counts.adv_correct)
            )
        } else if 2 * right < counts.total {
            format!(
                "the classifier gets {:.1}% of the clean and {:.1}% of the noisy test images \
                 right: use a more accurate classifier",
                percent(counts.clean_correct),
                percent(counts.noisy_correct)
            )
        } else {
            "attack more test images (a larger test split, or a larger rf-fgsm --max-test)"
                .to_string()
        };
        format!(
            "rf-fgsm kept {kept} of {} sample(s); {effect}: {fix}",
            counts.total
        )
    })
}

/// Classes with fewer train rows than the flow's batch `batch` (`rows[c]` of class `c`): each
/// iteration is one small optimiser step for them.
pub fn classes_below_batch(rows: &[usize], batch: usize) -> Option<String> {
    let small: Vec<String> = rows
        .iter()
        .enumerate()
        .filter(|(_, &n)| n < batch)
        .map(|(c, n)| format!("{c} ({n})"))
        .collect();
    (!small.is_empty()).then(|| {
        format!(
            "class(es) {} have fewer train rows than the flow's batch of {batch}: one Adam step \
             per iteration each; lower rf-train --batch-size or raise --num-iter",
            small.join(", ")
        )
    })
}

/// A whitening rank `rank` far below the layer's width `width`: the flow sees few of the layer's
/// dimensions, because there are too few train rows per channel.
pub fn low_whitening_rank(layer: usize, rank: usize, width: usize) -> Option<String> {
    (2 * rank < width).then(|| {
        format!(
            "layer {layer}: whitening rank {rank} of {width} channels: the flow and the \
             Mahalanobis detector see less than half of the layer (too few train images); \
             prepare more of them (rf-prepare --max-train)"
        )
    })
}

/// Per (validation, OOD set) whose test split is small (fewer than [`SMALL_TEST_SPLIT`] rows of a
/// kind): when the two best detectors by OpenOOD's AUROC have overlapping intervals, one of them
/// at least [`WIDE_INTERVAL`] wide, the split cannot tell them apart.
pub fn indistinct_detectors(records: &[ResultRecord]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut groups: Vec<(Validation, &str)> = Vec::new();
    for r in records {
        if !groups.contains(&(r.validation, r.ood.as_str())) {
            groups.push((r.validation, &r.ood));
        }
    }
    for (validation, ood) in groups {
        let mut ranked: Vec<(DetectorKind, f64, f64, f64, usize)> = records
            .iter()
            .filter(|r| r.validation == validation && r.ood == ood)
            .filter_map(|r| {
                let (value, interval) = r.all_metrics()[OPENOOD_AUROC]?;
                let interval = interval?;
                let small = r.counts.test_ood.min(r.counts.test_in);
                Some((r.detector, value, interval.0, interval.1, small))
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        if let [first, second, ..] = ranked.as_slice() {
            let widest = (first.3 - first.2).max(second.3 - second.2);
            if first.4 < SMALL_TEST_SPLIT && second.3 >= first.2 && widest >= WIDE_INTERVAL {
                warnings.push(format!(
                    "{ood} ({}): with {} test rows of the smaller kind the AUROC intervals of {} \
                     [{:.2}, {:.2}] and {} [{:.2}, {:.2}] overlap: the split cannot tell them \
                     apart; more OOD and test images (rf-prepare --max-ood, --max-test) would",
                    validation.name(),
                    first.4,
                    first.0.label(),
                    100.0 * first.2,
                    100.0 * first.3,
                    second.0.label(),
                    100.0 * second.2,
                    100.0 * second.3
                ));
            }
        }
    }
    warnings
}

/// The warnings a run's feature manifest and results show: the classifier's test accuracy, each
/// layer's whitening rank, the FGSM samples kept (when known) and detectors a small test split
/// cannot tell apart.
pub fn run_warnings(
    features: &FeatureManifest,
    fgsm: Option<&FgsmCounts>,
    records: &[ResultRecord],
) -> Vec<String> {
    let mut warnings: Vec<String> = chance_warning(
        features.test_accuracy,
        features.num_classes,
        "every figure built on this classifier means little; train it longer (rf-classifier \
         train --epochs N) or check the data",
    )
    .into_iter()
    .collect();
    for (layer, (&rank, &width)) in features
        .layer_ranks
        .iter()
        .zip(&features.layer_channels)
        .enumerate()
    {
        warnings.extend(low_whitening_rank(layer, rank, width as usize));
    }
    warnings.extend(fgsm.and_then(few_fgsm_samples));
    warnings.extend(indistinct_detectors(records));
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_warning_names_accuracies_within_five_points_of_chance() {
        let fix = "train longer (--epochs N)";
        // 3 classes: chance 1/3, warned up to 38.33%.
        assert_eq!(
            chance_warning(0.351, 3, fix).unwrap(),
            "test accuracy 35.1% is within 5 points of chance (33.3% for 3 classes): train \
             longer (--epochs N)"
        );
        assert!(chance_warning(1.0 / 3.0 + 0.05, 3, fix).is_some());
        assert_eq!(
            chance_warning(0.2, 3, fix).unwrap(),
            "test accuracy 20.0% is below chance (33.3% for 3 classes): train longer (--epochs N)"
        );
        for accuracy in [0.39, 0.5, 0.983, 1.0] {
            assert_eq!(chance_warning(accuracy, 3, fix), None, "{accuracy}");
        }
        // 10 classes: up to 15%; 2 classes: up to 55%.
        assert!(chance_warning(0.15, 10, fix).is_some());
        assert!(chance_warning(0.16, 10, fix).is_none());
        assert!(chance_warning(0.55, 2, fix).is_some());
        assert!(chance_warning(0.56, 2, fix).is_none());
    }

    #[test]
    fn few_fgsm_samples_and_small_classes_and_low_ranks_name_their_fix() {
        let counts = |total, kept, clean_correct, noisy_correct, adv_correct| FgsmCounts {
            total,
            kept,
            clean_correct,
            noisy_correct,
            adv_correct,
            mean_linf: 0.1,
        };
        // An accurate classifier, few test images.
        let w = few_fgsm_samples(&counts(40, 30, 40, 38, 8)).unwrap();
        assert_eq!(
            w,
            "rf-fgsm kept 30 of 40 sample(s); the FGSM-validated regression fits on 15 row(s) \
             per group (fewer than 25 make it unreliable): attack more test images (a larger \
             test split, or a larger rf-fgsm --max-test)"
        );
        // Too few to fit at all.
        let w = few_fgsm_samples(&counts(40, 9, 40, 38, 8)).unwrap();
        assert!(w.contains("needs at least 10 and fails"), "{w}");
        // A classifier the step cannot fool (wide margins): nothing kept, and the fix is not a
        // more accurate classifier.
        let w = few_fgsm_samples(&counts(180, 0, 180, 180, 180)).unwrap();
        assert!(
            w.contains("leaves 100.0% of the predictions right")
                && w.contains("--validation-src ood")
                && !w.contains("more accurate"),
            "{w}"
        );
        // A poor classifier.
        let w = few_fgsm_samples(&counts(1000, 20, 300, 250, 10)).unwrap();
        assert!(
            w.contains("30.0% of the clean and 25.0% of the noisy") && w.contains("more accurate"),
            "{w}"
        );
        assert!(few_fgsm_samples(&counts(180, 50, 180, 180, 130)).is_none());
        assert!(few_fgsm_samples(&counts(1500, 800, 1400, 1300, 500)).is_none());
        let w = classes_below_batch(&[300, 120, 256], 256).unwrap();
        assert!(
            w.contains("1 (120)") && !w.contains("2 (") && w.contains("--batch-size"),
            "{w}"
        );
        assert!(classes_below_batch(&[256, 300], 256).is_none());
        let w = low_whitening_rank(4, 88, 512).unwrap();
        assert!(
            w.contains("rank 88 of 512") && w.contains("--max-train"),
            "{w}"
        );
        assert!(low_whitening_rank(4, 256, 512).is_none());
    }
}
