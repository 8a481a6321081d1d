//! Reports of the regression stage: text and Markdown tables ([`tables`]) and PNG plots
//! ([`plots`]). The stage itself is [`crate::pipeline::regress`]; what it stores,
//! [`crate::store::results`].
//!
//! Files written by `rf-regress` in a run folder `{outf}/{net}_{dataset}/`:
//!
//! ```text
//! results.json                                 ResultsFile: every (detector, validation, OOD set) result,
//!                                              the OOD sets' groups, the paired comparisons
//! results.md                                   Markdown tables of results.json: per detector, the
//!                                              comparison with near/far means, the paired comparison
//! regression/{detector}_{validation}/{ood}.npz test-set outputs of the chosen detector (TestScores:
//!                                              confidence_in, confidence_ood, logit_in, logit_ood)
//! plots/roc_{validation}_{ood}.png             ROC curves of the detectors with test outputs
//! plots/hist_{detector}_{validation}_{ood}.png detector log-odds histogram, in-distribution vs OOD
//! plots/auroc_vs_iteration.png                 flow training's validation AUROC per layer
//! plots/comparison_auroc_{validation}.png      AUROC with 95% intervals, per detector and OOD set
//! ```
pub mod compare;
pub mod plots;
pub mod tables;

pub use compare::{auroc_table_text, paired_text};
pub use plots::{plot_auroc_history, plot_histogram, plot_roc, LayerCurve};
pub use tables::{comparison_text, detector_comparison_markdown, format_table, markdown};
