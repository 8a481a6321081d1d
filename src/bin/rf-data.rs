//! rf-data: lists the datasets the pipeline knows and summarises those found under `--dataroot`.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use resflow::data::{self, Role, Split, DATASETS};

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
        /// Folder holding the datasets.
        #[arg(long, default_value = "data")]
        dataroot: PathBuf,
    },
}

fn main() -> Result<()> {
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
        Command::Summary { dataroot } => summary(&dataroot),
    }
    Ok(())
}

fn summary(root: &std::path::Path) {
    println!(
        "{:<16} {:<6} {:>7} {:>8}  {:<24} {:<24}",
        "dataset", "split", "images", "classes", "channel mean", "channel std"
    );
    let mut found = 0;
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
                Err(e) => println!("{:<16} {:<6} ERROR: {e}", d.name, split.name()),
            }
        }
    }
    println!("{found} dataset split(s) found under {}", root.display());
}
