//! The classifiers: the paper's ResNet-34 and DenseNet-BC-100 for 32x32 inputs, any TorchScript
//! model that follows the feature contract ([`torchscript`]), one trait over them
//! ([`Classifier`]), their architecture names ([`NetType`]) and sizes ([`NetConfig`]), seeded
//! initialisation, checkpoints, feature extraction and training from scratch ([`train`]).
//!
//! Parameter and BatchNorm buffer names equal the PyTorch state-dict names of the reference
//! modules (`layer1.0.shortcut.0.weight`, `block1.layer.3.bn2.running_var`, ...), so converted
//! weights load by name.
pub mod checkpoint;
pub mod densenet;
pub mod features;
pub mod init;
mod layers;
pub mod net_type;
pub mod resnet;
pub mod torchscript;
pub mod train;

use tch::{nn, Tensor};

use crate::error::{Error, Result};

pub use checkpoint::{
    load_checkpoint, load_weights_strict, save_checkpoint, CheckpointMeta, LoadedClassifier,
};
pub use densenet::DenseNet;
pub use features::{extract, Features};
pub use net_type::NetType;
pub use resnet::ResNet;
pub use torchscript::{TorchScriptClassifier, TorchScriptMeta};

/// A classifier whose hidden layers the detectors read.
///
/// All inputs are normalised images `[N,3,S,S]` with `S` = [`Classifier::input_side`]; every
/// method runs in eval mode except [`Classifier::forward_t`] with `train = true`.
pub trait Classifier: std::fmt::Debug {
    /// Logits `[N,num_classes]`; `train` selects batch statistics in BatchNorm.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor;

    /// Logits and the activation `[N,C_l,H_l,W_l]` of every feature layer, in one eval pass.
    fn feature_list(&self, x: &Tensor) -> (Tensor, Vec<Tensor>);

    /// The activation of feature layer `layer` (eval mode), computing only what it needs.
    /// Fails when `layer >= num_layers()`.
    fn intermediate_forward(&self, x: &Tensor, layer: usize) -> Result<Tensor>;

    /// Side `S` of the square inputs (32 for the paper's networks).
    fn input_side(&self) -> i64 {
        crate::data::IMAGE_SIDE
    }

    /// Number of feature layers (ResNet 5, DenseNet 4).
    fn num_layers(&self) -> usize {
        self.layer_channels().len()
    }

    /// Channels C_l of each feature layer.
    fn layer_channels(&self) -> Vec<i64>;

    /// Number of classes (size of the logits).
    fn num_classes(&self) -> i64;

    /// The final linear layer, weight `[num_classes, d]` and bias `[num_classes]` with `d` the
    /// channels of the last feature layer: the logits are
    /// `mean_pool(last layer's activation) W^T + b` (the global average pool covers the last
    /// activation). Fails for a model whose head is not known (a TorchScript model whose sidecar
    /// names no `linear_head`).
    fn linear_head(&self) -> Result<(Tensor, Tensor)>;

    /// The architecture.
    fn net_type(&self) -> NetType;
}

/// Averages an activation `[N,C,H,W]` over its spatial positions: `[N,C]`.
pub fn mean_pool(activation: &Tensor) -> Tensor {
    activation
        .flatten(2, -1)
        .mean_dim(2, false, activation.kind())
}

/// Architecture, width and number of classes: everything needed to build a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// Which network.
    pub net_type: NetType,
    /// ResNet: channels of the stem and layer1 (64 in the paper; layers 2-4 use 2x, 4x, 8x).
    /// DenseNet: growth rate (12 in the paper).
    pub width: i64,
    /// Number of classes.
    pub num_classes: i64,
}

impl NetConfig {
    /// The paper's size of `net_type` for `num_classes` classes.
    pub fn paper(net_type: NetType, num_classes: i64) -> Self {
        NetConfig {
            net_type,
            width: default_width(net_type),
            num_classes,
        }
    }

    /// Checks that width and number of classes are usable.
    pub fn validate(&self) -> Result<()> {
        if self.width < 1 {
            return Err(Error::bad_option(
                "--width",
                format!("the network width must be positive, got {}", self.width),
            ));
        }
        if self.num_classes < 1 {
            return Err(Error::bad_option(
                "num_classes",
                format!(
                    "the number of classes must be positive, got {}",
                    self.num_classes
                ),
            ));
        }
        Ok(())
    }

    /// Builds the network in `vs` with weights drawn from a generator seeded by `seed`
    /// ([`init::seeded_init`]): the same seed gives the same network whatever else the process does.
    pub fn build_seeded(&self, vs: &nn::VarStore, seed: u64) -> Result<Box<dyn Classifier>> {
        let net = self.build(&vs.root())?;
        init::seeded_init(vs, seed)?;
        Ok(net)
    }

    /// Builds the network with its variables under `p` (usually a `VarStore`'s root).
    pub fn build(&self, p: &nn::Path) -> Result<Box<dyn Classifier>> {
        self.validate()?;
        Ok(match self.net_type {
            NetType::Resnet => Box::new(ResNet::new(p, self.width, self.num_classes)),
            NetType::Densenet => Box::new(DenseNet::new(p, self.width, self.num_classes)),
            NetType::TorchScript => {
                return Err(Error::bad_option(
                    "--net-type",
                    "a TorchScript model is loaded from its file (--classifier model.pt), not \
                     built or trained here",
                ))
            }
        })
    }
}

/// The paper's width of `net_type`: ResNet base width 64, DenseNet growth rate 12.
pub fn default_width(net_type: NetType) -> i64 {
    match net_type {
        NetType::Resnet => resnet::PAPER_WIDTH,
        NetType::Densenet => densenet::PAPER_GROWTH,
        NetType::TorchScript => 0,
    }
}

/// The error for a feature-layer index out of range.
fn layer_error(net: NetType, layer: usize, num_layers: usize) -> Error {
    Error::bad_option(
        "layer",
        format!(
            "{} has feature layers 0 to {}, layer {layer} requested",
            net.name(),
            num_layers.saturating_sub(1)
        ),
    )
}
