//! Where a data set comes from: a registry name (`cifar10`, `mnist`, ...) or an image folder
//! named on the command line, and loading it at a model's input side.
//!
//! | spec | in-distribution (`--dataset`) | out-of-distribution (`--ood`) |
//! | --- | --- | --- |
//! | `NAME` (registry) | the registry's files under `--dataroot` | the same |
//! | `folder:PATH` | ImageFolder `PATH/{train,test}/<class>/*`, named after PATH's last part | every image under PATH |
//! | `NAME=PATH` | the same, named `NAME` | the same, named `NAME` |
//! | `PATH` (with a `/`, or an existing folder) | - | every image under PATH, named after its last part |
//!
//! The name is what run folders, score folders and reports use; it must be a plain file name
//! (letters, digits, `.`, `_`, `-`) and may not be a registry name unless it is that set.
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::{folder, registry, transform, ImageSet, Split, IMAGE_SIDE};
use crate::error::{Error, Result};

/// A data set: its name and, for image folders, where the images are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    /// The set's name (registry name, or the name given to a folder).
    pub name: String,
    /// The folder of an image-folder set (absolute); `None` for registry sets.
    pub folder: Option<PathBuf>,
}

/// The name a spec gives its set: `NAME` of `NAME=PATH`, the last part of `PATH` for
/// `folder:PATH` or a bare path with a `/`, else the spec itself. Checks nothing.
pub fn name_of(spec: &str) -> String {
    split(spec).0
}

/// A spec's set name and, for image folders, the folder as written: `folder:PATH`, `NAME=PATH`,
/// or a bare path (with a `/`, or an existing folder that is not a registry name).
fn split(spec: &str) -> (String, Option<&str>) {
    if let Some(path) = spec.strip_prefix("folder:") {
        return (last_part(Path::new(path)), Some(path));
    }
    if let Some((name, path)) = spec.split_once('=') {
        return (name.to_string(), Some(path));
    }
    if spec.contains('/') {
        return (last_part(Path::new(spec)), Some(spec));
    }
    if registry::info(spec).is_err() && Path::new(spec).is_dir() {
        return (spec.to_string(), Some(spec));
    }
    (spec.to_string(), None)
}

fn last_part(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The options that take data set specs, as [`Error::BadOption`] names them.
const DATA_SET_OPTIONS: &str = "--dataset/--ood";

impl DataSource {
    /// Parses a spec (see the module's table). Folder specs must name an existing folder.
    pub fn parse(spec: &str) -> Result<DataSource> {
        let (name, folder) = split(spec);
        let Some(path) = folder else {
            // Not a folder, so a registry name; the registry's error lists the known ones.
            registry::info(spec).map_err(|e| match e {
                Error::UnknownDataset { name, known } => Error::UnknownDataset {
                    name,
                    known: format!("{known}; or give an image folder as folder:PATH or NAME=PATH"),
                },
                other => other,
            })?;
            return Ok(DataSource { name, folder: None });
        };
        if path.is_empty() {
            return Err(Error::bad_option(
                DATA_SET_OPTIONS,
                format!(
                    "`{spec}` names no folder; give an image folder as NAME=PATH or folder:PATH"
                ),
            ));
        }
        let absolute = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::bad_option(
                DATA_SET_OPTIONS,
                format!("`{spec}`: no folder {path}; give an existing image folder"),
            ),
            _ => Error::io(path, e),
        })?;
        if !absolute.is_dir() {
            return Err(Error::format(
                &absolute,
                "not a folder; an image-folder data set is a folder of images",
            ));
        }
        if !valid_name(&name) {
            return Err(Error::bad_option(
                DATA_SET_OPTIONS,
                format!(
                    "`{name}` cannot name a data set (use letters, digits, `.`, `_` and `-`); \
                     give the folder a name with NAME={path}"
                ),
            ));
        }
        if registry::info(&name).is_ok() {
            return Err(Error::bad_option(
                DATA_SET_OPTIONS,
                format!(
                    "`{name}` is the name of a registry data set; name the folder {path} \
                     otherwise, e.g. my-{name}={path}"
                ),
            ));
        }
        Ok(DataSource {
            name,
            folder: Some(absolute),
        })
    }

    /// The spec that parses back to this source: the name, or `NAME=ABSOLUTE_PATH` (what
    /// manifests record, so that later stages find the same folder from any working folder).
    pub fn spec(&self) -> String {
        match &self.folder {
            None => self.name.clone(),
            Some(path) => format!("{}={}", self.name, path.display()),
        }
    }

    /// The OOD sets a run of this in-distribution set evaluates unless told otherwise: the
    /// registry's list, none for an image folder.
    pub fn default_ood_sets(&self) -> Result<Vec<String>> {
        match &self.folder {
            None => Ok(registry::info(&self.name)?
                .ood_sets
                .iter()
                .map(|s| s.to_string())
                .collect()),
            Some(_) => Ok(Vec::new()),
        }
    }

    /// Split `split` of this set as an in-distribution set, images `[N,3,side,side]`: registry
    /// sets from `root`, image folders from `{folder}/{train,test}/<class>/*` labelled by the
    /// train split's sorted class folders.
    pub fn load(&self, root: &Path, split: Split, side: i64) -> Result<ImageSet> {
        match &self.folder {
            None => to_side(registry::load(&self.name, root, split)?, side),
            Some(dir) => {
                let classes = folder::class_folders(&dir.join("train"))?;
                let split_dir = dir.join(split.name());
                let (images, labels) =
                    folder::read_class_folder(&split_dir, &classes, side_u32(side)?)
                        .map_err(bad_file)?;
                ImageSet::new(&self.name, &split_dir, images, labels, classes.len())
            }
        }
    }

    /// Whether this is a registry set that the registry generates ([`registry::generated`]).
    pub fn is_generated(&self) -> bool {
        self.folder.is_none() && registry::generated(&self.name)
    }

    /// This set as an out-of-distribution set (the test split of registry sets, every image of a
    /// folder, unlabelled), images `[N,3,side,side]`.
    pub fn load_ood(&self, root: &Path, side: i64) -> Result<ImageSet> {
        match &self.folder {
            None => to_side(registry::load(&self.name, root, Split::Test)?, side),
            Some(dir) => {
                let images = folder::read_image_folder(dir, side_u32(side)?).map_err(bad_file)?;
                let n = images.size()[0];
                let labels = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
                ImageSet::new(&self.name, dir, images, labels, 1)
            }
        }
    }
}

/// An error about one file of an image folder (an image that cannot be decoded) with the fix.
fn bad_file(e: Error) -> Error {
    match e {
        Error::Format { path, message } if path.is_file() => Error::format(
            path,
            format!(
                "{message}; replace or remove this file (every image under the folder is read)"
            ),
        ),
        other => other,
    }
}

fn side_u32(side: i64) -> Result<u32> {
    u32::try_from(side).ok().filter(|&s| s > 0).ok_or_else(|| {
        Error::bad_option(
            "side",
            format!("the input side must be positive, got {side}"),
        )
    })
}

/// A registry set (32x32) brought to `side` ([`transform::to_side`]).
fn to_side(set: ImageSet, side: i64) -> Result<ImageSet> {
    if side == IMAGE_SIDE {
        return Ok(set);
    }
    side_u32(side)?;
    Ok(ImageSet {
        images: transform::to_side(&set.images, side),
        ..set
    })
}

/// Loads split `split` of the in-distribution set `spec` at `side` ([`DataSource::load`]).
pub fn load_in_distribution(spec: &str, root: &Path, split: Split, side: i64) -> Result<ImageSet> {
    DataSource::parse(spec)?.load(root, split, side)
}

/// Loads the OOD set `spec` at `side` ([`DataSource::load_ood`]).
pub fn load_ood(spec: &str, root: &Path, side: i64) -> Result<ImageSet> {
    DataSource::parse(spec)?.load_ood(root, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_their_sets() {
        assert_eq!(name_of("cifar10"), "cifar10");
        assert_eq!(name_of("faces=/data/crops"), "faces");
        assert_eq!(name_of("folder:/data/flowers"), "flowers");
        assert_eq!(name_of("/data/flowers/"), "flowers");
        let parsed = DataSource::parse("svhn").unwrap();
        assert_eq!((parsed.name.as_str(), parsed.folder), ("svhn", None));
        let dir = std::env::temp_dir();
        let spec = format!("x-1={}", dir.display());
        let parsed = DataSource::parse(&spec).unwrap();
        assert_eq!(parsed.name, "x-1");
        assert_eq!(DataSource::parse(&parsed.spec()).unwrap(), parsed);
        assert!(DataSource::parse("nonesuch")
            .unwrap_err()
            .to_string()
            .contains("folder:PATH"));
        assert!(DataSource::parse(&format!("cifar10={}", dir.display()))
            .unwrap_err()
            .to_string()
            .contains("registry"));
        assert!(DataSource::parse(&format!("a b={}", dir.display())).is_err());
        assert!(DataSource::parse("folder:/no/such/folder")
            .unwrap_err()
            .to_string()
            .contains("/no/such/folder"));
    }
}
