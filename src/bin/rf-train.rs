//! rf-train: trains the residual flows of one layer, all classes at once (SPEC section 5).
//! Checkpoints go to `{outf}/{net}_{dataset}/flow/layer_{L}/`, the history to `.../history/`.
use anyhow::Result;
use clap::Parser;
use resflow::artefacts::run_dir;
use resflow::cli::CommonArgs;
use resflow::features::FeatureDir;
use resflow::flow::TrainConfig;
use resflow::flow_stage::{train_layer, FlowTrainOptions};

#[derive(Parser)]
#[command(version, about = "Train the residual flows of one feature layer")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Feature layer to train (ResNet 0..=4, DenseNet 0..=3).
    #[arg(long)]
    layer: usize,
    /// Total number of iterations (one pass over every class each).
    #[arg(long = "num-iter", alias = "num_iter", default_value_t = 1000)]
    num_iter: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// Hidden width factor of the s/t-nets (default: the reference's table, usually 1).
    #[arg(long = "length-hidden", alias = "length_hidden")]
    length_hidden: Option<f64>,
    /// Monitor the validation AUROC against this OOD set (default: the first prepared one).
    #[arg(long = "monitor-ood", alias = "monitor_ood")]
    monitor_ood: Option<String>,
    /// Iterations between monitoring points.
    #[arg(long = "monitor-every", default_value_t = 20)]
    monitor_every: usize,
    /// Iterations between checkpoints.
    #[arg(long = "checkpoint-every", default_value_t = 500)]
    checkpoint_every: usize,
    /// Held-out validation samples in total, divided evenly over the classes.
    #[arg(long = "validation-total", default_value_t = resflow::flow_stage::VALIDATION_TOTAL)]
    validation_total: usize,
    /// Continue from the layer's last checkpoint.
    #[arg(long)]
    resume: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let common = &cli.common;
    let device = common.device().device;
    let features = FeatureDir::new(&common.outf, common.net_type, &common.dataset);
    let run = run_dir(&common.outf, common.net_type.name(), &common.dataset);
    let options = FlowTrainOptions {
        layer: cli.layer,
        num_iter: cli.num_iter,
        config: TrainConfig {
            lr: cli.lr,
            batch_size: common.batch_size_or(256),
            seed: common.seed,
            monitor_every: cli.monitor_every,
        },
        length_hidden: cli.length_hidden,
        checkpoint_every: cli.checkpoint_every,
        resume: cli.resume,
        validation_total: cli.validation_total,
        monitor_ood: cli.monitor_ood.clone(),
        device,
    };
    let bar = resflow::progress::bar(cli.num_iter as u64, format!("layer {} flow", cli.layer));
    let mut last_auroc = None;
    let history = train_layer(&features, &run, &options, &mut |record| {
        if let Some(a) = record.monitor.as_ref().and_then(|m| m.auroc) {
            last_auroc = Some(a);
        }
        bar.set_position(record.iteration as u64 + 1);
        bar.set_message(format!(
            "loss {:.3} val {:.3} AUROC {}",
            record.train_loss,
            record.validation_loss,
            last_auroc.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a))
        ));
    })?;
    bar.finish();
    if let Some(last) = history.last() {
        println!(
            "layer {}: {} iterations, train loss {:.4}, validation loss {:.4}, monitored AUROC {}",
            cli.layer,
            history.len(),
            last.train_loss,
            last.validation_loss,
            last_auroc.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a))
        );
    }
    println!(
        "flow saved in {}",
        resflow::artefacts::flow_dir(&run, cli.layer).display()
    );
    Ok(())
}
