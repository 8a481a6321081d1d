//! The dataset registry: names, roles, expected file layout under `--dataroot`, and loaders.
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::{cifar, csv_images, folder, idx, svhn, synthetic, transform, ImageSet, Split};
use crate::error::{Error, Result};

/// What a dataset is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A classifier's training set, with train and test splits.
    InDistribution,
    /// Only ever an out-of-distribution test set (one split).
    OutOfDistribution,
}

/// A registry entry.
#[derive(Debug)]
pub struct DatasetInfo {
    /// Name used on the command line.
    pub name: &'static str,
    /// What the set is used for.
    pub role: Role,
    /// Number of classes (1 for unlabelled OOD sets).
    pub num_classes: usize,
    /// The files expected under `--dataroot`, for error messages and the README.
    pub layout: &'static str,
    /// The OOD sets evaluated against this set when it is in-distribution.
    pub ood_sets: &'static [&'static str],
}

/// Number of images in each generated OOD set (photo crops and noise). A run uses at most as
/// many as its in-distribution test split has ([`generated`]; `rf-prepare --max-ood` overrides).
pub const GENERATED_SET_SIZE: usize = 5000;
const PHOTO_SEED: u64 = 2020;
const UNIFORM_SEED: u64 = 2021;
const GAUSSIAN_SEED: u64 = 2022;

const BENCHMARK_OOD: &[&str] = &["svhn", "imagenet_resize", "lsun_resize"];

/// Every dataset the pipeline knows.
pub const DATASETS: &[DatasetInfo] = &[
    DatasetInfo {
        name: "cifar10",
        role: Role::InDistribution,
        num_classes: 10,
        layout: "cifar-10-batches-bin/data_batch_{1..5}.bin, cifar-10-batches-bin/test_batch.bin (CIFAR-10 binary version)",
        ood_sets: BENCHMARK_OOD,
    },
    DatasetInfo {
        name: "cifar100",
        role: Role::InDistribution,
        num_classes: 100,
        layout: "cifar-100-binary/train.bin, cifar-100-binary/test.bin (CIFAR-100 binary version, fine labels)",
        ood_sets: BENCHMARK_OOD,
    },
    DatasetInfo {
        name: "svhn",
        role: Role::InDistribution,
        num_classes: 10,
        layout: "svhn/train_32x32.mat, svhn/test_32x32.mat (SVHN cropped digits, format 2)",
        ood_sets: &["cifar10", "imagenet_resize", "lsun_resize"],
    },
    DatasetInfo {
        name: "imagenet_resize",
        role: Role::OutOfDistribution,
        num_classes: 1,
        layout: "Imagenet_resize/ (any tree of 32x32 .jpg/.png files, e.g. the extracted Imagenet_resize.tar.gz)",
        ood_sets: &[],
    },
    DatasetInfo {
        name: "lsun_resize",
        role: Role::OutOfDistribution,
        num_classes: 1,
        layout: "LSUN_resize/ (any tree of 32x32 .jpg/.png files, e.g. the extracted LSUN_resize.tar.gz)",
        ood_sets: &[],
    },
    DatasetInfo {
        name: "fashion-mnist",
        role: Role::InDistribution,
        num_classes: 10,
        layout: "fashion-mnist/{train,t10k}-images-idx3-ubyte[.gz], fashion-mnist/{train,t10k}-labels-idx1-ubyte[.gz] (scripts/fetch_data.sh)",
        ood_sets: &["mnist", "digits", "photos", "uniform", "gaussian"],
    },
    DatasetInfo {
        name: "mnist",
        role: Role::OutOfDistribution,
        num_classes: 10,
        layout: "mnist/mnist_5k.csv.gz (784 pixel columns then the label; scripts/fetch_data.sh)",
        ood_sets: &[],
    },
    DatasetInfo {
        name: "digits",
        role: Role::OutOfDistribution,
        num_classes: 10,
        layout: "digits/digits.csv.gz (64 pixel columns with values 0-16 then the label; scripts/fetch_data.sh)",
        ood_sets: &[],
    },
    DatasetInfo {
        name: "photos",
        role: Role::OutOfDistribution,
        num_classes: 1,
        layout: "photos/ (.jpg/.png photos of any size >= 48 pixels; scripts/fetch_data.sh)",
        ood_sets: &[],
    },
    DatasetInfo {
        name: "uniform",
        role: Role::OutOfDistribution,
        num_classes: 1,
        layout: "(generated, no files)",
        ood_sets: &[],
    },
    DatasetInfo {
        name: "gaussian",
        role: Role::OutOfDistribution,
        num_classes: 1,
        layout: "(generated, no files)",
        ood_sets: &[],
    },
];

/// Whether `name` is a set this registry generates (photo crops, uniform and Gaussian noise):
/// its size is ours to choose, not the data's.
pub fn generated(name: &str) -> bool {
    matches!(name, "photos" | "uniform" | "gaussian")
}

/// The registry entry of `name`.
pub fn info(name: &str) -> Result<&'static DatasetInfo> {
    DATASETS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| Error::UnknownDataset {
            name: name.to_string(),
            known: DATASETS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The first of `candidates` (relative to `root`) that exists, or a missing-dataset error.
fn locate(info: &DatasetInfo, root: &Path, candidates: &[&str]) -> Result<PathBuf> {
    candidates
        .iter()
        .map(|c| root.join(c))
        .find(|p| p.exists())
        .ok_or_else(|| Error::MissingDataset {
            name: info.name.to_string(),
            root: root.to_path_buf(),
            missing: candidates.join(" or "),
            layout: info.layout.to_string(),
        })
}

/// Loads split `split` of dataset `name` from `root` as `[N,3,32,32]` `u8` images with labels.
pub fn load(name: &str, root: &Path, split: Split) -> Result<ImageSet> {
    let info = info(name)?;
    if info.role == Role::OutOfDistribution && split == Split::Train {
        return Err(Error::bad_option(
            "--dataset",
            format!("`{name}` is an out-of-distribution set and has no train split"),
        ));
    }
    read_files(info, root, split).map_err(|e| match e {
        // A file that is there but cannot be read is a cut download or a corrupt copy.
        Error::Format { path, message } => Error::format(
            path,
            format!(
                "{message}; the file is truncated, corrupt or not the one expected: download it \
                 again (`{name}` expects {})",
                info.layout
            ),
        ),
        other => other,
    })
}

/// Reads split `split` of the registry set `info` from `root` ([`load`]).
fn read_files(info: &DatasetInfo, root: &Path, split: Split) -> Result<ImageSet> {
    let name = info.name;
    let train = split == Split::Train;
    let (source, images, labels) = match name {
        "cifar10" => {
            let files: Vec<String> = if train {
                (1..=5)
                    .map(|i| format!("cifar-10-batches-bin/data_batch_{i}.bin"))
                    .collect()
            } else {
                vec!["cifar-10-batches-bin/test_batch.bin".to_string()]
            };
            let paths = files
                .iter()
                .map(|f| locate(info, root, &[f]))
                .collect::<Result<Vec<_>>>()?;
            let (x, y) = cifar::read_cifar_batches(&paths, cifar::CIFAR10)?;
            (paths[0].clone(), x, y)
        }
        "cifar100" => {
            let path = locate(
                info,
                root,
                &[if train {
                    "cifar-100-binary/train.bin"
                } else {
                    "cifar-100-binary/test.bin"
                }],
            )?;
            let (x, y) = cifar::read_cifar_batch(&path, cifar::CIFAR100)?;
            (path, x, y)
        }
        "svhn" => {
            let path = locate(
                info,
                root,
                &[if train {
                    "svhn/train_32x32.mat"
                } else {
                    "svhn/test_32x32.mat"
                }],
            )?;
            let (x, y) = svhn::read_svhn_mat(&path)?;
            (path, x, y)
        }
        "imagenet_resize" | "lsun_resize" => {
            let dir = locate(
                info,
                root,
                &[if name == "lsun_resize" {
                    "LSUN_resize"
                } else {
                    "Imagenet_resize"
                }],
            )?;
            let x = folder::read_image_folder(&dir, 32)?;
            let n = x.size()[0];
            (dir, x, Tensor::zeros([n], (Kind::Int64, tch::Device::Cpu)))
        }
        "fashion-mnist" => {
            let prefix = if train { "train" } else { "t10k" };
            let image_name = format!("fashion-mnist/{prefix}-images-idx3-ubyte");
            let label_name = format!("fashion-mnist/{prefix}-labels-idx1-ubyte");
            let image_path = locate(info, root, &[&format!("{image_name}.gz"), &image_name])?;
            let label_path = locate(info, root, &[&format!("{label_name}.gz"), &label_name])?;
            let raw = idx::read_idx_images(&image_path)?;
            if raw.size()[1..] != [28, 28] {
                return Err(Error::format(
                    &image_path,
                    format!("expected 28x28 images, found {:?}", &raw.size()[1..]),
                ));
            }
            let y = idx::read_idx_labels(&label_path, info.num_classes)?;
            if y.size()[0] != raw.size()[0] {
                return Err(Error::format(
                    &label_path,
                    format!(
                        "{} labels for {} images in {}",
                        y.size()[0],
                        raw.size()[0],
                        image_path.display()
                    ),
                ));
            }
            (
                image_path,
                transform::gray_to_rgb(&transform::pad_to_32(&raw)),
                y,
            )
        }
        "mnist" => {
            let path = locate(info, root, &["mnist/mnist_5k.csv.gz", "mnist/mnist_5k.csv"])?;
            let (x, y) = csv_images::read_csv_images(&path, 28, 10, 255.0)?;
            let x = transform::pad_to_32(&x.round().to_kind(Kind::Uint8));
            (path, transform::gray_to_rgb(&x), y)
        }
        "digits" => {
            let path = locate(info, root, &["digits/digits.csv.gz", "digits/digits.csv"])?;
            let (x, y) = csv_images::read_csv_images(&path, 8, 10, 16.0)?;
            let x = transform::upsample_to_32(&(x * (255.0 / 16.0)));
            (path, transform::gray_to_rgb(&x), y)
        }
        "photos" => {
            let dir = locate(info, root, &["photos"])?;
            let photos = folder::image_files(&dir)?
                .iter()
                .map(|f| folder::read_rgb(f))
                .collect::<Result<Vec<_>>>()?;
            let x = synthetic::photo_crops(&photos, GENERATED_SET_SIZE, PHOTO_SEED).ok_or_else(
                || Error::format(&dir, "no photo of at least 48x48 pixels in this folder"),
            )?;
            (
                dir,
                x,
                Tensor::zeros([GENERATED_SET_SIZE as i64], (Kind::Int64, tch::Device::Cpu)),
            )
        }
        "uniform" | "gaussian" => {
            let x = if name == "uniform" {
                synthetic::uniform_noise(GENERATED_SET_SIZE, UNIFORM_SEED)
            } else {
                synthetic::gaussian_noise(GENERATED_SET_SIZE, GAUSSIAN_SEED)
            };
            let y = Tensor::zeros([GENERATED_SET_SIZE as i64], (Kind::Int64, tch::Device::Cpu));
            (PathBuf::from(format!("<generated {name}>")), x, y)
        }
        other => unreachable!("registry entry `{other}` has no loader"),
    };
    ImageSet::new(name, &source, images, labels, info.num_classes)
}
