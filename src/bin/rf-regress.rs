//! rf-regress: the regression detector of `docs/method.md#the-regression-detector` on the score
//! files of one detector, for every in-distribution set and OOD set found (or named), with the
//! reference's printed table, `results.json`, `results.md` and plots in each run folder (see
//! `resflow::report`).
use resflow::cli;

use anyhow::Result;
use clap::Parser;
use resflow::detect::DetectorKind;
use resflow::fit::bootstrap::BootstrapParams;
use resflow::pipeline::regress;
use resflow::progress::Bars;
use resflow::report;

#[derive(Parser)]
#[command(
    version,
    about = "Fit the OOD regression detector and report its metrics"
)]
struct Cli {
    /// Which detector's scores to use (one per run, as in the reference).
    #[arg(long, value_parser = cli::detector_parser(), default_value = "resflow")]
    detector: DetectorKind,
    #[command(flatten)]
    net: cli::NetArgs,
    /// In-distribution sets (comma-separated or repeated); default: every `{net}_{dataset}` run
    /// folder under --outf.
    #[arg(long, value_delimiter = ',')]
    dataset: Vec<String>,
    /// OOD sets (comma-separated or repeated); default: those with score files.
    #[arg(long, value_delimiter = ',')]
    ood: Vec<String>,
    /// Validation data for fitting and magnitude selection.
    #[command(flatten)]
    validation: cli::ValidationArgs,
    #[command(flatten)]
    outf: cli::OutfArgs,
    /// Do not draw the PNG plots.
    #[arg(long = "no-plots", alias = "no_plots")]
    no_plots: bool,
    /// Bootstrap resamples of the test rows for the 95% interval of every metric (0: point
    /// estimates only).
    #[arg(long, default_value_t = BootstrapParams::default().resamples)]
    bootstrap: usize,
    /// Seed of the bootstrap resampling (same seed, same intervals).
    #[arg(long = "bootstrap-seed", alias = "bootstrap_seed", default_value_t = 0)]
    bootstrap_seed: u64,
    /// Write the results of the OOD sets that can be evaluated even when another set's score
    /// files are missing, corrupt or from another run (reported as left out); by default such a
    /// set stops rf-regress before anything is written.
    #[arg(long = "allow-partial", alias = "allow_partial")]
    allow_partial: bool,
    /// Print the comparison already stored in each run's results.json (classifier accuracy,
    /// AUROC with intervals and near / far means, paired comparison) for --validation-src, and
    /// compute nothing.
    #[arg(long)]
    summary: bool,
}

fn main() -> Result<()> {
    cli::fail_writes_past_file_size_limit();
    let cli = Cli::parse();
    let validation = cli.validation.validation_src;
    if cli.summary {
        let net = cli.net.net_type.name();
        for results in
            resflow::pipeline::compare::stored_results(&cli.outf.outf, net, &cli.dataset)?
        {
            print!("{}", report::auroc_table_text(&results, validation));
            print!("{}", report::paired_text(&results, validation));
        }
        return Ok(());
    }
    let options = regress::Options {
        outf: cli.outf.outf,
        net_type: cli.net.net_type,
        datasets: cli.dataset,
        detector: cli.detector,
        validation,
        oods: cli.ood,
        plots: !cli.no_plots,
        bootstrap: (cli.bootstrap > 0).then(|| BootstrapParams {
            resamples: cli.bootstrap,
            seed: cli.bootstrap_seed,
            ..BootstrapParams::default()
        }),
        allow_partial: cli.allow_partial,
    };
    let summary = regress::run(&options, &mut Bars::default())?;
    for run in &summary.skipped {
        eprintln!(
            "note: skipping {}: no {} score files",
            run.path().display(),
            options.detector.name()
        );
    }
    for (dataset, run, out) in &summary.runs {
        print!("{}", report::format_table(dataset, &out.records));
        print!("{}", report::auroc_table_text(&out.results, validation));
        print!("{}", report::paired_text(&out.results, validation));
        let cmp = report::comparison_text(dataset, &out.results.results, validation);
        if !cmp.is_empty() {
            println!("{cmp}");
        }
        for w in &out.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "wrote {}, {}{}",
            run.results_path().display(),
            run.results_markdown_path().display(),
            if out.plots.is_empty() {
                String::new()
            } else {
                format!(
                    " and {} plots in {}",
                    out.plots.len(),
                    run.plots_dir().display()
                )
            }
        );
    }
    let failed: Vec<String> = summary
        .runs
        .iter()
        .flat_map(|(dataset, _, out)| {
            out.failed
                .iter()
                .map(move |(ood, why)| format!("{dataset} vs {ood}: {why}"))
        })
        .collect();
    let left_out = if options.allow_partial {
        "left out"
    } else {
        "error"
    };
    for f in &failed {
        eprintln!("{left_out}: {f}");
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} OOD set(s) could not be evaluated (above); the results of the others were written",
            failed.len()
        );
    }
    Ok(())
}
