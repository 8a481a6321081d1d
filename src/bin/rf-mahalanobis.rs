//! rf-mahalanobis: the Mahalanobis detector's scores with input pre-processing
//! (`docs/method.md#the-mahalanobis-detector`), one file per (OOD set, magnitude) under
//! `{outf}/{net}_{dataset}/mahalanobis/`.
fn main() -> anyhow::Result<()> {
    resflow::cli::fail_writes_past_file_size_limit();
    resflow::cli::scoring::main(
        "rf-mahalanobis",
        "Mahalanobis detector scores with input pre-processing",
    )?;
    Ok(())
}
