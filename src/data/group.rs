//! Near and far OOD sets (`docs/method.md#near-and-far-ood`): OpenOOD reports a detector's mean
//! over the OOD sets semantically close to the in-distribution set (near) and over those that
//! differ in kind (far), because detectors that separate noise from photos often fail on a
//! neighbouring data set.
//!
//! Each OOD set of a run has a group: the registry's default for the pair of sets
//! ([`default_group`]), or the one given on the command line as `near:SET` / `far:SET`
//! ([`split_group`]). A set without either (an image folder given without a prefix) is ungrouped
//! and left out of the group means.
use crate::error::{Error, Result};

/// Whether an OOD set is near or far from the in-distribution set.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OodGroup {
    /// Semantically close: another set of the same kind of images (MNIST for Fashion-MNIST,
    /// CIFAR-100 and Tiny-ImageNet for CIFAR-10).
    Near,
    /// Different in kind: other domains, scenes, noise.
    Far,
}

impl OodGroup {
    /// Both groups, in table order.
    pub const ALL: [OodGroup; 2] = [OodGroup::Near, OodGroup::Far];

    /// The name in specs, files and tables (`near`, `far`).
    pub fn name(self) -> &'static str {
        match self {
            OodGroup::Near => "near",
            OodGroup::Far => "far",
        }
    }
}

/// The `--ood` option, as errors name it.
const OOD_OPTION: &str = "--ood";

/// Splits a `near:` or `far:` prefix off an OOD spec: `(group, rest)`, `None` without a prefix.
/// A prefix is the text before the first `:` when it holds no `/` or `=`; `folder:` is the
/// folder spec of [`crate::data::source`], not a group. Any other prefix is an error naming the
/// two that exist.
pub fn split_group(spec: &str) -> Result<(Option<OodGroup>, &str)> {
    let Some((prefix, rest)) = spec.split_once(':') else {
        return Ok((None, spec));
    };
    if prefix.contains(['/', '=']) || prefix == "folder" {
        return Ok((None, spec));
    }
    let group = OodGroup::ALL
        .into_iter()
        .find(|g| g.name() == prefix)
        .ok_or_else(|| {
            Error::bad_option(
                OOD_OPTION,
                format!(
                    "`{spec}`: unknown group `{prefix}:`; an OOD set's group is `near:` or \
                     `far:` (e.g. near:faces=/data/crops, far:uniform), or none"
                ),
            )
        })?;
    if rest.is_empty() {
        return Err(Error::bad_option(
            OOD_OPTION,
            format!("`{spec}` names no set after `{prefix}:`; write {prefix}:NAME or {prefix}:NAME=PATH"),
        ));
    }
    Ok((Some(group), rest))
}

/// The registry's group of OOD set `ood` when `dataset` is in-distribution, OpenOOD's convention:
/// for Fashion-MNIST the handwritten digits (`mnist`, `digits`) are near, photos and noise far;
/// for CIFAR-10 and CIFAR-100 the other CIFAR and Tiny-ImageNet (`imagenet_resize`) are near,
/// SVHN, LSUN and noise far; for SVHN the digit sets are near, photos far. Generated noise is far
/// from every set. `None` for pairs the registry does not know (image folders).
pub fn default_group(dataset: &str, ood: &str) -> Option<OodGroup> {
    use OodGroup::{Far, Near};
    match (dataset, ood) {
        (_, "uniform" | "gaussian") => Some(Far),
        ("fashion-mnist", "mnist" | "digits") => Some(Near),
        ("fashion-mnist", "photos" | "cifar10" | "cifar100" | "svhn") => Some(Far),
        ("fashion-mnist", "imagenet_resize" | "lsun_resize") => Some(Far),
        ("cifar10", "cifar100" | "imagenet_resize") => Some(Near),
        ("cifar100", "cifar10" | "imagenet_resize") => Some(Near),
        ("cifar10" | "cifar100", "svhn" | "lsun_resize" | "photos" | "mnist" | "digits") => {
            Some(Far)
        }
        ("svhn", "mnist" | "digits") => Some(Near),
        ("svhn", "cifar10" | "cifar100" | "imagenet_resize" | "lsun_resize" | "photos") => {
            Some(Far)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_ood_set_of_the_registry_has_a_group() {
        for info in crate::data::DATASETS {
            for ood in info.ood_sets {
                assert!(
                    default_group(info.name, ood).is_some(),
                    "{} vs {ood}",
                    info.name
                );
            }
        }
    }
}
