//! rf-regress: the regression detector of SPEC section 8 on the score files of one detector,
//! for every in-distribution set and OOD set found (or named), with the reference's printed
//! table, `results.json`, `results.md` and plots in each run folder (see `resflow::report`).
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use resflow::artefacts::{self, DetectorKind};
use resflow::cli::{NetType, ValidationArgs};
use resflow::report;

#[derive(Parser)]
#[command(
    version,
    about = "Fit the OOD regression detector and report its metrics"
)]
struct Cli {
    /// Which detector's scores to use (one per run, as in the reference).
    #[arg(long, value_enum, default_value_t = DetectorKind::Resflow)]
    detector: DetectorKind,
    /// Classifier architecture.
    #[arg(long = "net-type", alias = "net_type", value_enum, default_value_t = NetType::Resnet)]
    net_type: NetType,
    /// In-distribution sets (comma-separated or repeated); default: every `{net}_{dataset}` run
    /// folder under --outf.
    #[arg(long, value_delimiter = ',')]
    dataset: Vec<String>,
    /// OOD sets (comma-separated or repeated); default: those with score files.
    #[arg(long, value_delimiter = ',')]
    ood: Vec<String>,
    /// Validation data for fitting and magnitude selection.
    #[command(flatten)]
    validation: ValidationArgs,
    /// Folder of the pipeline's outputs.
    #[arg(long, default_value = "output")]
    outf: PathBuf,
    /// Do not draw the PNG plots.
    #[arg(long = "no-plots")]
    no_plots: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let net = cli.net_type.name();
    let datasets = if cli.dataset.is_empty() {
        // Every run folder that has score files of this detector; the others are named.
        let mut with_scores = Vec::new();
        for d in artefacts::list_datasets(&cli.outf, net)? {
            let run = artefacts::run_dir(&cli.outf, net, &d);
            if artefacts::list_ood_sets(&run, cli.detector)?.is_empty() {
                eprintln!(
                    "note: skipping {}: no {} score files",
                    run.display(),
                    cli.detector.name()
                );
            } else {
                with_scores.push(d);
            }
        }
        with_scores
    } else {
        cli.dataset.clone()
    };
    if datasets.is_empty() {
        bail!(
            "no {net}_{{dataset}} run folders with {} score files under {}; run the scoring stages first or pass --outf",
            cli.detector.name(),
            cli.outf.display()
        );
    }
    for dataset in &datasets {
        let run = artefacts::run_dir(&cli.outf, net, dataset);
        let out = report::regress_dataset(
            &run,
            net,
            dataset,
            cli.detector,
            cli.validation.validation_src,
            &cli.ood,
            !cli.no_plots,
        )?;
        print!("{}", report::format_table(dataset, &out.records));
        let cmp =
            report::comparison_text(dataset, &out.results.results, cli.validation.validation_src);
        if !cmp.is_empty() {
            println!("{cmp}");
        }
        for w in &out.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "wrote {}, {}{}",
            report::results_path(&run).display(),
            run.join("results.md").display(),
            if out.plots.is_empty() {
                String::new()
            } else {
                format!(
                    " and {} plots in {}",
                    out.plots.len(),
                    run.join("plots").display()
                )
            }
        );
    }
    Ok(())
}
