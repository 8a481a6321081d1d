//! The IO validation split of the regression stage (SPEC section 8).
use resflow::fit::splits::{io_split, ood_label, IO_VALIDATION_PER_CLASS};

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
    let err = io_split(2500, 1000).unwrap_err().to_string();
    assert!(
        err.contains("got 1000 OOD and 1500 in-distribution"),
        "{err}"
    );
    let err = io_split(2000, 1001).unwrap_err().to_string();
    assert!(
        err.contains("got 1001 OOD and 999 in-distribution"),
        "{err}"
    );
    assert!(io_split(2002, 1001).is_ok());
}
