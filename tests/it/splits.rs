//! The IO validation split of the regression stage (`docs/method.md#io-validation-split`).
use resflow::fit::splits::{io_split, ood_label, IoSplitRule, IO_VALIDATION_PER_CLASS};

#[test]
fn io_split_matches_the_reference_layout() {
    // 1200 OOD rows (0..1200) then 1500 in-distribution rows (1200..2700).
    let (n_out, n_rows) = (1200, 2700);
    let split = io_split(n_rows, n_out).unwrap();
    let fit: Vec<usize> = (1200..1700).chain(0..500).collect();
    let select: Vec<usize> = (1700..2200).chain(500..1000).collect();
    let test: Vec<usize> = (2200..2700).chain(1000..1200).collect();
    assert_eq!(split.fit, fit);
    assert_eq!(split.select, select);
    assert_eq!(split.test, test);
    // Every row is in exactly one part.
    let mut all: Vec<usize> = [split.fit, split.select, split.test].concat();
    all.sort_unstable();
    assert_eq!(all, (0..n_rows).collect::<Vec<_>>());
}

#[test]
fn io_split_label_balance() {
    let (n_out, n_rows) = (26032, 36032);
    let split = io_split(n_rows, n_out).unwrap();
    let ood_in = |rows: &[usize]| {
        let ood = rows.iter().filter(|&&r| ood_label(r, n_out) == 1).count();
        (ood, rows.len() - ood)
    };
    assert_eq!(ood_in(&split.fit), (500, 500));
    assert_eq!(ood_in(&split.select), (500, 500));
    assert_eq!(
        ood_in(&split.test),
        (
            n_out - IO_VALIDATION_PER_CLASS,
            n_rows - n_out - IO_VALIDATION_PER_CLASS
        )
    );
    // In-distribution rows come first in every part (stratified folds depend on the order).
    assert_eq!(ood_label(split.fit[0], n_out), 0);
    assert_eq!(ood_label(split.fit[500], n_out), 1);
}

#[test]
fn io_split_rejects_too_few_rows() {
    let err = io_split(1500, 2000).unwrap_err().to_string();
    assert!(err.contains("2000 OOD rows claimed"), "{err}");
    let err = io_split(2500, 39).unwrap_err().to_string();
    assert!(err.contains("got 39 OOD and 2461 in-distribution"), "{err}");
    let err = io_split(1000, 961).unwrap_err().to_string();
    assert!(err.contains("got 961 OOD and 39 in-distribution"), "{err}");
    assert!(io_split(80, 40).is_ok());
}

#[test]
fn the_reference_rule_needs_more_than_1000_rows_of_each_kind() {
    assert_eq!(IoSplitRule::for_counts(1001, 1001), IoSplitRule::Reference);
    assert_eq!(
        IoSplitRule::for_counts(1000, 5000),
        IoSplitRule::Proportional
    );
    assert_eq!(
        IoSplitRule::for_counts(5000, 1000),
        IoSplitRule::Proportional
    );
    // At the boundary the reference rule applies unchanged.
    let split = io_split(2002, 1001).unwrap();
    assert_eq!(
        (split.fit.len(), split.select.len(), split.test.len()),
        (1000, 1000, 2)
    );
}

#[test]
fn small_sets_split_in_proportion_to_the_smaller_kind() {
    // 203 OOD rows (0..203) then 1500 in-distribution rows (203..1703): a quarter of the smaller
    // kind (50 rows of each kind) fits, the next 50 of each select, the rest is the test set.
    let (n_out, n_rows) = (203, 1703);
    let split = io_split(n_rows, n_out).unwrap();
    assert_eq!(split.fit, (203..253).chain(0..50).collect::<Vec<_>>());
    assert_eq!(split.select, (253..303).chain(50..100).collect::<Vec<_>>());
    assert_eq!(split.test, (303..1703).chain(100..203).collect::<Vec<_>>());
    // Same with the kinds' sizes swapped: the in-distribution set is the small one.
    let split = io_split(1703, 1500).unwrap();
    assert_eq!(split.fit, (1500..1550).chain(0..50).collect::<Vec<_>>());
    assert_eq!(
        split.test,
        (1600..1703).chain(100..1500).collect::<Vec<_>>()
    );
    // Every row is in exactly one part, for any sizes.
    for (n_out, n_in) in [(40, 40), (41, 999), (1000, 1000), (777, 45)] {
        let s = io_split(n_out + n_in, n_out).unwrap();
        let mut all: Vec<usize> = [s.fit.clone(), s.select.clone(), s.test.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..n_out + n_in).collect::<Vec<_>>());
        let h = n_out.min(n_in) / 4;
        assert_eq!((s.fit.len(), s.select.len()), (2 * h, 2 * h));
    }
}
