//! rf-baselines: the post-hoc detectors' scores (`docs/method.md#baseline-detectors`): MSP,
//! ODIN, Energy, MaxLogit, KNN and ViM on the classifier's penultimate features, one folder
//! each under `{outf}/{net}_{dataset}/`, for `rf-regress --detector NAME`.
fn main() -> anyhow::Result<()> {
    resflow::cli::fail_writes_past_file_size_limit();
    resflow::cli::scoring::main(
        "rf-baselines",
        "Scores of the post-hoc baselines: MSP, ODIN, Energy, MaxLogit, KNN, ViM",
    )?;
    Ok(())
}
