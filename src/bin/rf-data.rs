//! rf-data: lists the datasets the pipeline knows and summarises those found under `--dataroot`;
//! tells scripts the pipeline's stages and each network's feature layers.
use resflow::cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use resflow::data::{self, Role, Split, DATASETS};
use resflow::detect::DetectorKind;
use resflow::models::TorchScriptMeta;
use resflow::pipeline::STAGES;

#[derive(Parser)]
#[command(version, about = "Datasets of the resflow pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every known dataset with its expected file layout.
    List,
    /// Load every dataset found under --dataroot and print its size and pixel statistics.
    Summary {
        #[command(flatten)]
        dataroot: cli::DatarootArgs,
    },
    /// Print the feature layers of a network, space-separated (`0 1 2 3 4` for ResNet; for a
    /// TorchScript model, from the sidecar of --classifier).
    Layers {
        #[command(flatten)]
        net: cli::NetArgs,
        /// The TorchScript model (its .json sidecar lists the feature layers).
        #[arg(long)]
        classifier: Option<std::path::PathBuf>,
    },
    /// Print the stages' binaries in pipeline order, one per line.
    Stages,
    /// Print the post-hoc baselines' names (scored by rf-baselines), space-separated.
    Baselines,
    /// Write the first --count test images of a data set as PNG files, as the classifier sees
    /// them (--side x --side RGB), e.g. to try rf-detect on.
    Export {
        /// The data set: a registry name, NAME=PATH or folder:PATH.
        #[arg(long)]
        dataset: String,
        #[command(flatten)]
        dataroot: cli::DatarootArgs,
        /// How many images.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Side of the square images.
        #[arg(long, default_value_t = 32)]
        side: i64,
        /// Folder to write them to.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    cli::fail_writes_past_file_size_limit();
    match Cli::parse().command {
        Command::List => {
            for d in DATASETS {
                let role = match d.role {
                    Role::InDistribution => "in-distribution",
                    Role::OutOfDistribution => "OOD",
                };
                println!("{:<16} {:<16} {}", d.name, role, d.layout);
            }
        }
        Command::Summary { dataroot } => {
            let errors = summary(&dataroot.dataroot);
            if errors > 0 {
                anyhow::bail!(
                    "{errors} data set split(s) under {} could not be read (ERROR rows above)",
                    dataroot.dataroot.display()
                );
            }
        }
        Command::Layers { net, classifier } => {
            let count = match (net.net_type.num_layers(), classifier) {
                (Some(count), _) => count,
                (None, Some(model)) => {
                    let sidecar = resflow::models::checkpoint::sidecar_path(&model);
                    TorchScriptMeta::read(&sidecar)?.feature_layers.len()
                }
                (None, None) => anyhow::bail!(
                    "the feature layers of a TorchScript model are in its sidecar: pass --classifier MODEL.pt"
                ),
            };
            let layers: Vec<String> = (0..count).map(|l| l.to_string()).collect();
            println!("{}", layers.join(" "));
        }
        Command::Stages => STAGES.iter().for_each(|s| println!("{s}")),
        Command::Export {
            dataset,
            dataroot,
            count,
            side,
            out,
        } => {
            let source = data::DataSource::parse(&dataset)?;
            // A registry in-distribution set: its test split; an OOD set or a folder: its images.
            let set = match data::registry::info(&source.name).map(|d| d.role) {
                Ok(Role::InDistribution) => source.load(&dataroot.dataroot, Split::Test, side)?,
                Ok(Role::OutOfDistribution) | Err(_) => {
                    source.load_ood(&dataroot.dataroot, side)?
                }
            };
            let rows: Vec<usize> = (0..count.min(set.len())).collect();
            let files = data::folder::write_pngs(&set.images, &rows, &out, &source.name)?;
            println!(
                "{} image(s) of {} written to {}",
                files.len(),
                source.name,
                out.display()
            );
        }
        Command::Baselines => {
            let names: Vec<&str> = DetectorKind::scored_by(resflow::detect::BASELINES_STAGE)
                .iter()
                .map(|d| d.name())
                .collect();
            println!("{}", names.join(" "));
        }
    }
    Ok(())
}

/// Prints one row per data set split under `root`; returns the number of splits that exist but
/// could not be read (missing ones are not errors).
fn summary(root: &std::path::Path) -> usize {
    println!(
        "{:<16} {:<6} {:>7} {:>8}  {:<24} {:<24}",
        "dataset", "split", "images", "classes", "channel mean", "channel std"
    );
    let (mut found, mut errors) = (0, 0);
    for d in DATASETS {
        let splits: &[Split] = match d.role {
            Role::InDistribution => &[Split::Train, Split::Test],
            Role::OutOfDistribution => &[Split::Test],
        };
        for &split in splits {
            match data::load(d.name, root, split) {
                Ok(set) => {
                    found += 1;
                    let stats = set.channel_stats();
                    let fmt = |v: [f64; 3]| format!("{:.3} {:.3} {:.3}", v[0], v[1], v[2]);
                    println!(
                        "{:<16} {:<6} {:>7} {:>8}  {:<24} {:<24}",
                        d.name,
                        split.name(),
                        set.len(),
                        set.num_classes,
                        fmt(stats.mean),
                        fmt(stats.std)
                    );
                }
                Err(resflow::Error::MissingDataset { missing, .. }) => {
                    println!("{:<16} {:<6} missing: {missing}", d.name, split.name());
                }
                Err(e) => {
                    errors += 1;
                    println!("{:<16} {:<6} ERROR: {e}", d.name, split.name());
                }
            }
        }
    }
    println!("{found} dataset split(s) found under {}", root.display());
    errors
}
