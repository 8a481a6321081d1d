//! The flow training's histories in `{run}/history/` ([`crate::store::RunDir::history_path`]):
//! `layer_{l}.json` ([`AurocHistory`], the monitoring AUROC for plots) and `layer_{l}_loss.npy`
//! (float64 rows `[iteration, train loss, validation loss]`).
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The flow training's monitoring curve of one layer: validation AUROC (max-class log p,
/// in-distribution test features vs `ood`) at the monitored iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AurocHistory {
    /// The OOD set monitored.
    pub ood: String,
    /// Iterations (from 0) at which the AUROC was measured.
    pub iteration: Vec<usize>,
    /// AUROC (fraction) at each of those iterations.
    pub auroc: Vec<f64>,
}

/// Writes `history` as JSON to `path` (atomically).
pub fn write_history(path: &Path, history: &AurocHistory) -> Result<()> {
    crate::io::write_json(path, history)
}

/// Reads a history written by [`write_history`]; errors on mismatched lengths or bad values.
pub fn read_history(path: &Path) -> Result<AurocHistory> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let h: AurocHistory = serde_json::from_str(&text).map_err(|e| {
        Error::format(
            path,
            format!("{e}; expected {{\"ood\": name, \"iteration\": [..], \"auroc\": [..]}}"),
        )
    })?;
    if h.iteration.len() != h.auroc.len() {
        return Err(Error::format(
            path,
            format!(
                "{} iterations but {} AUROC values",
                h.iteration.len(),
                h.auroc.len()
            ),
        ));
    }
    if let Some(v) = h.auroc.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(Error::format(path, format!("AUROC {v} is not in [0, 1]")));
    }
    Ok(h)
}
