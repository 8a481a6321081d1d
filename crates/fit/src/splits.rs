//! Row splits of the regression stage (`docs/method.md#the-regression-detector`).
//!
//! Score files hold the OOD rows first (`n_out` of them), then the in-distribution rows. For the
//! "IO" validation the first [`IO_VALIDATION_PER_CLASS`] rows of each kind form the validation
//! block and everything else is the test set (the reference's rule); sets with 1,000 rows or fewer
//! of either kind are split in proportion instead ([`IoSplitRule`]). The validation block is
//! halved: the first halves fit the logistic regression, the second halves select the
//! pre-processing magnitude.
//!
//! Row order follows the reference (`block_split` then the slicing in `regression_*.py`):
//! in-distribution rows before OOD rows in every part. The order matters for the fit block,
//! because stratified K-fold assigns folds by position.
use crate::{Error, Result};

/// Rows of each kind (in-distribution and OOD) in the IO validation block.
pub const IO_VALIDATION_PER_CLASS: usize = 1000;

/// Indices (into the score rows) of the three parts of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSplit {
    /// Rows the logistic regression is fitted on.
    pub fit: Vec<usize>,
    /// Rows on which the magnitude (eps) is selected.
    pub select: Vec<usize>,
    /// Rows the final metrics are reported on.
    pub test: Vec<usize>,
}

/// Fewest rows of the smaller kind (in-distribution or OOD) that the proportional split accepts:
/// a quarter of them fit the regression, which cross-validates with 5 stratified folds.
pub const MIN_ROWS_PER_KIND: usize = 40;

/// How the IO split divides the rows of one OOD set ([`io_split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoSplitRule {
    /// The reference's split, used when both kinds have more than [`IO_VALIDATION_PER_CLASS`]
    /// rows: 500 + 500 rows of each kind fit and select, the rest is the test set. It is what
    /// reproduces the paper's numbers.
    #[default]
    Reference,
    /// For smaller sets: with `m` the smaller kind's row count, `m / 4` rows of each kind fit and
    /// `m / 4` select (half of the smaller kind validates), the rest is the test set. Figures on
    /// so few rows are less certain than the paper's.
    Proportional,
}

impl IoSplitRule {
    /// The rule for `n_in` in-distribution and `n_out` OOD rows.
    pub fn for_counts(n_in: usize, n_out: usize) -> Self {
        if n_in > IO_VALIDATION_PER_CLASS && n_out > IO_VALIDATION_PER_CLASS {
            IoSplitRule::Reference
        } else {
            IoSplitRule::Proportional
        }
    }

    /// Its name in results files and reports.
    pub fn name(self) -> &'static str {
        match self {
            IoSplitRule::Reference => "reference",
            IoSplitRule::Proportional => "proportional",
        }
    }

    /// Rows of each kind in the fit block (and in the selection block).
    fn half(self, n_in: usize, n_out: usize) -> usize {
        match self {
            IoSplitRule::Reference => IO_VALIDATION_PER_CLASS / 2,
            IoSplitRule::Proportional => n_in.min(n_out) / 4,
        }
    }
}

/// The IO split of `n_rows` score rows whose first `n_out` are OOD, by [`IoSplitRule::for_counts`].
///
/// With `h` rows of each kind per block (500 for the reference rule): fit = in-dist rows 0..h then
/// OOD rows 0..h; select = in-dist h..2h then OOD h..2h; test = the remaining in-dist rows then the
/// remaining OOD rows (counting rows within each kind). Errors when the smaller kind has fewer than
/// [`MIN_ROWS_PER_KIND`] rows.
pub fn io_split(n_rows: usize, n_out: usize) -> Result<RowSplit> {
    if n_out > n_rows {
        return Err(Error::Shape(format!(
            "io split: {n_out} OOD rows claimed but the scores have only {n_rows} rows"
        )));
    }
    let n_in = n_rows - n_out;
    if n_in.min(n_out) < MIN_ROWS_PER_KIND {
        return Err(Error::BadData(format!(
            "io split: need at least {MIN_ROWS_PER_KIND} OOD and {MIN_ROWS_PER_KIND} in-distribution \
             rows (a quarter of the smaller kind fits the regression with 5-fold CV), got {n_out} OOD \
             and {n_in} in-distribution"
        )));
    }
    let half = IoSplitRule::for_counts(n_in, n_out).half(n_in, n_out);
    let val = 2 * half;
    let in_rows = |from: usize, to: usize| (n_out + from)..(n_out + to);
    let part = |a: std::ops::Range<usize>, b: std::ops::Range<usize>| a.chain(b).collect();
    Ok(RowSplit {
        fit: part(in_rows(0, half), 0..half),
        select: part(in_rows(half, val), half..val),
        test: part(in_rows(val, n_in), val..n_out),
    })
}

/// Labels of rows laid out OOD first: 1 (OOD) for rows below `n_out`, else 0.
pub fn ood_label(row: usize, n_out: usize) -> u8 {
    u8::from(row < n_out)
}

/// FGSM group code of clean in-distribution samples.
pub const GROUP_CLEAN: u8 = 0;
/// FGSM group code of noisy in-distribution samples.
pub const GROUP_NOISY: u8 = 1;
/// FGSM group code of adversarial samples (label 1).
pub const GROUP_ADVERSARIAL: u8 = 2;

/// Rows of each FGSM group that validate on a small FGSM set (fewer than 500 rows per group):
/// as many as the reference's tenth of 500, so that the regression fits on 25 rows per group.
pub const FGSM_SMALL_VALIDATION: usize = 50;

/// Fewest rows per FGSM group that [`fgsm_split`] accepts: half of them fit the regression, whose
/// adversarial rows (label 1) must fill five stratified folds.
pub const FGSM_MIN_ROWS_PER_GROUP: usize = 10;

/// Rows of an FGSM group of `n_g` rows that form its validation block (`fit + select`): the
/// reference's tenth (`int(0.1 * n_g)`) from 500 rows up; below, all of them up to
/// [`FGSM_SMALL_VALIDATION`] (the reference's count at 500 rows). The FGSM rows are never tested
/// on (the test rows are the IO split's), so a small set's other 90% would go unused.
pub fn fgsm_validation_rows(n_g: usize) -> usize {
    (n_g / 10).max(n_g.min(FGSM_SMALL_VALIDATION))
}

/// The FGSM validation rows (`docs/method.md#fgsm-validation-split`): for each group in the order
/// clean, noisy, adversarial, its first [`fgsm_validation_rows`] rows (`int(0.1 * n_g)` from 500
/// rows up) form the validation block; of those the first half (rounded down) fit, the rest
/// select. Rows are taken in file order within each group.
///
/// From 500 rows per group identical to the reference for equal group sizes and an even
/// validation count (the reference slices the concatenated block in sixths, which mixes groups
/// otherwise). `test` is left empty: FGSM validation tests on the IO test split. Errors unless
/// every group has at least [`FGSM_MIN_ROWS_PER_GROUP`] rows.
pub fn fgsm_split(group: &[u8]) -> Result<RowSplit> {
    let mut fit = Vec::new();
    let mut select = Vec::new();
    for g in [GROUP_CLEAN, GROUP_NOISY, GROUP_ADVERSARIAL] {
        let rows: Vec<usize> = (0..group.len()).filter(|&i| group[i] == g).collect();
        if rows.len() < FGSM_MIN_ROWS_PER_GROUP {
            return Err(Error::BadData(format!(
                "FGSM split: group {g} has {} rows; need at least {FGSM_MIN_ROWS_PER_GROUP} (half \
                 of them fit the regression, whose 5 stratified folds need 5 adversarial rows)",
                rows.len()
            )));
        }
        let n_val = fgsm_validation_rows(rows.len());
        let half = n_val / 2;
        fit.extend_from_slice(&rows[..half]);
        select.extend_from_slice(&rows[half..n_val]);
    }
    Ok(RowSplit {
        fit,
        select,
        test: Vec::new(),
    })
}
