//! What identifies a layer's flow: sizes, the hidden width rule and the reference's defaults.
use serde::{Deserialize, Serialize};

/// Number of affine coupling layers of every flow.
pub const NUM_COUPLINGS: usize = 10;
/// Number of fixed permutations (one after every even coupling).
pub const NUM_PERMUTATIONS: usize = NUM_COUPLINGS / 2;

/// The reference's `length_hidden` for a (network, data set, layer), lowered where it ran out of
/// memory on an 11 GB GPU (SPEC section 4); 1 elsewhere.
pub fn default_length_hidden(net: &str, dataset: &str, layer: usize) -> f64 {
    match (net, dataset, layer) {
        ("densenet", "cifar100", 3) => 0.5,
        ("resnet", "cifar100", 4) => 0.2,
        ("resnet", "svhn", 4) => 0.5,
        _ => 1.0,
    }
}

/// The hidden width `floor(length_hidden * k)` (Python's `int(length_hidden * num_features)`).
pub fn hidden_size(length_hidden: f64, k: usize) -> usize {
    (length_hidden * k as f64) as usize
}

/// The description of a layer's flow, stored as JSON next to the per-class weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowMeta {
    /// Number of classes (one flow each).
    pub num_classes: usize,
    /// Feature dimension of the layer (`C_l`).
    pub dim: usize,
    /// Whitened dimension (even).
    pub k: usize,
    /// Hidden width of the s- and t-nets.
    pub hidden: usize,
    /// The `length_hidden` the hidden width was derived from.
    pub length_hidden: f64,
    /// Feature layer index.
    pub layer: usize,
    /// Network name (`resnet`, `densenet`, ...).
    pub net: String,
    /// In-distribution data set name.
    pub dataset: String,
    /// `log |det A_inv|` of the whitening (not part of the reference's state dict).
    pub log_abs_det_a_inv: f64,
}
