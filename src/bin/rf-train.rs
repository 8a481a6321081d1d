//! rf-train: trains the residual flows of one layer, all classes at once
//! (`docs/method.md#flow-training`). Checkpoints go to `{outf}/{net}_{dataset}/flow/layer_{L}/`,
//! the history to `.../history/`.
use resflow::cli;

use anyhow::Result;
use clap::Parser;
use resflow::pipeline::train_flow::{self, FlowTrainOptions};
use resflow::progress::Bars;

/// The library's defaults, shown by `--help`.
fn defaults() -> FlowTrainOptions {
    FlowTrainOptions::default()
}

#[derive(Parser)]
#[command(version, about = "Train the residual flows of one feature layer")]
struct Cli {
    #[command(flatten)]
    common: cli::CommonArgs,
    /// Feature layer to train (ResNet 0..=4, DenseNet 0..=3).
    #[arg(long)]
    layer: usize,
    /// Total number of iterations (one pass over every class each).
    #[arg(long = "num-iter", alias = "num_iter", default_value_t = defaults().num_iter)]
    num_iter: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = defaults().lr, allow_negative_numbers = true)]
    lr: f64,
    /// Hidden width factor of the s/t-nets (default: the reference's table, usually 1).
    #[arg(
        long = "length-hidden",
        alias = "length_hidden",
        allow_negative_numbers = true
    )]
    length_hidden: Option<f64>,
    /// Monitor the validation AUROC against this OOD set (default: the first prepared one).
    #[arg(long = "monitor-ood", alias = "monitor_ood")]
    monitor_ood: Option<String>,
    /// Iterations between monitoring points.
    #[arg(long = "monitor-every", alias = "monitor_every", default_value_t = defaults().monitor_every)]
    monitor_every: usize,
    /// Iterations between checkpoints.
    #[arg(long = "checkpoint-every", alias = "checkpoint_every", default_value_t = defaults().checkpoint_every)]
    checkpoint_every: usize,
    /// Held-out validation samples in total, divided evenly over the classes (default: a fifth of
    /// the train rows, at most the reference's 10,000, at least 10 per class).
    #[arg(long = "validation-total", alias = "validation_total")]
    validation_total: Option<usize>,
    /// Continue from the layer's last checkpoint.
    #[arg(long)]
    resume: bool,
}

fn main() -> Result<()> {
    cli::fail_writes_past_file_size_limit();
    let cli = Cli::parse();
    let options = train_flow::Options {
        common: cli.common.common(),
        flow: FlowTrainOptions {
            layer: cli.layer,
            num_iter: cli.num_iter,
            lr: cli.lr,
            monitor_every: cli.monitor_every,
            length_hidden: cli.length_hidden,
            checkpoint_every: cli.checkpoint_every,
            resume: cli.resume,
            validation_total: cli.validation_total,
            monitor_ood: cli.monitor_ood,
        },
    };
    let summary = train_flow::run(&options, &mut Bars::default())?;
    if summary.resume_found_nothing {
        eprintln!(
            "note: --resume found no checkpoint in {}; trained from iteration 0",
            summary.flow_dir.display()
        );
    }
    if let Some(last) = summary.history.last() {
        println!(
            "layer {}: {} iterations, train loss {:.4}, validation loss {:.4}, monitored AUROC {}",
            cli.layer,
            summary.history.len(),
            last.train_loss,
            last.validation_loss,
            summary
                .last_auroc
                .map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a))
        );
    }
    println!("flow saved in {}", summary.flow_dir.display());
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
