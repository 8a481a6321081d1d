//! rf-score: residual flow scores with input pre-processing
//! (`docs/method.md#input-pre-processing`), one `[N, C]` file per (OOD set, layer, magnitude)
//! under `{outf}/{net}_{dataset}/resflow/`.
fn main() -> anyhow::Result<()> {
    resflow::cli::fail_writes_past_file_size_limit();
    resflow::cli::scoring::main("rf-score", "Residual flow scores with input pre-processing")?;
    Ok(())
}
