//! The cross-validation folds of the logistic regression: scikit-learn's `StratifiedKFold`
//! without shuffling (`docs/method.md#logistic-regression`).
use crate::{Error, Result};

/// scikit-learn's `StratifiedKFold(n_splits).split` without shuffling, as the test fold of each
/// row (fold `f`'s test set is the rows with value `f`, in row order; its training set the rest).
///
/// Classes are numbered by first appearance; a round robin over the class-sorted rows decides how
/// many rows of each class each fold gets; then each class's rows go to folds 0, 1, ... in blocks.
/// Errors if `n_splits < 2`, there are fewer rows than folds, or every class is smaller than
/// `n_splits` (scikit-learn's errors).
pub fn stratified_kfold(y: &[u8], n_splits: usize) -> Result<Vec<usize>> {
    if n_splits < 2 {
        return Err(Error::bad_option(
            "n_splits",
            format!("stratified k-fold needs at least 2 folds, got {n_splits}"),
        ));
    }
    if y.len() < n_splits {
        return Err(Error::BadData(format!(
            "stratified k-fold: need 2 <= n_splits <= number of rows, got n_splits = {n_splits} \
             for {} rows",
            y.len()
        )));
    }
    let (encoded, n_classes) = encode_by_appearance(y);
    let mut counts = vec![0usize; n_classes];
    for &k in &encoded {
        counts[k] += 1;
    }
    if counts.iter().all(|&c| c < n_splits) {
        return Err(Error::BadData(format!(
            "stratified k-fold: n_splits = {n_splits} is larger than every class (sizes {counts:?})"
        )));
    }
    let allocation = fold_allocation(&counts, n_splits);
    let mut next_row_of_class = vec![0usize; n_classes];
    let per_class: Vec<Vec<usize>> = (0..n_classes)
        .map(|k| {
            (0..n_splits)
                .flat_map(|f| std::iter::repeat_n(f, allocation[f][k]))
                .collect()
        })
        .collect();
    Ok(encoded
        .iter()
        .map(|&k| {
            let fold = per_class[k][next_row_of_class[k]];
            next_row_of_class[k] += 1;
            fold
        })
        .collect())
}

/// Labels renumbered 0, 1, ... in order of first appearance, and the number of classes.
fn encode_by_appearance(y: &[u8]) -> (Vec<usize>, usize) {
    let mut seen: Vec<u8> = Vec::new();
    let encoded = y
        .iter()
        .map(|v| match seen.iter().position(|s| s == v) {
            Some(k) => k,
            None => {
                seen.push(*v);
                seen.len() - 1
            }
        })
        .collect();
    (encoded, seen.len())
}

/// `allocation[f][k]`: rows of class `k` in fold `f`, i.e. scikit-learn's
/// `bincount(sort(y)[f::n_splits])`.
fn fold_allocation(counts: &[usize], n_splits: usize) -> Vec<Vec<usize>> {
    let sorted: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(k, &c)| std::iter::repeat_n(k, c))
        .collect();
    (0..n_splits)
        .map(|f| {
            let mut row = vec![0usize; counts.len()];
            for &k in sorted.iter().skip(f).step_by(n_splits) {
                row[k] += 1;
            }
            row
        })
        .collect()
}
