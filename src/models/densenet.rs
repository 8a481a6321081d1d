//! DenseNet-BC-100 for 32x32 inputs (the reference's `DenseNet3(100, num_classes)`: growth 12,
//! reduction 0.5, bottleneck layers, no dropout).
//!
//! `conv1` (3x3, 2g channels); three dense blocks `block{1,2,3}.layer.{i}` of 16 bottleneck layers
//! (BN-ReLU-1x1 conv to 4g, BN-ReLU-3x3 conv to g, concatenated to the input); transitions
//! `trans{1,2}` (BN-ReLU-1x1 conv halving the channels, 2x2 average pool); final `bn1` + ReLU,
//! 8x8 average pool, linear head `fc`.
//! Feature layers: 0 = `conv1` output, 1 = after block1+trans1, 2 = after block2+trans2,
//! 3 = after block3 + `bn1` + ReLU.
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm, conv, BatchNorm};
use super::{layer_error, Classifier};
use crate::error::Result;
use crate::models::NetType;

/// The paper's growth rate.
pub const PAPER_GROWTH: i64 = 12;
/// Bottleneck layers per dense block: (depth 100 - 4) / 3 / 2.
pub const LAYERS_PER_BLOCK: i64 = 16;

/// BN-ReLU-conv, the unit every DenseNet layer is made of.
#[derive(Debug)]
struct BnReluConv {
    bn: BatchNorm,
    conv: nn::Conv2D,
}

impl BnReluConv {
    fn new(p: &nn::Path, index: usize, c_in: i64, c_out: i64, kernel: i64) -> Self {
        BnReluConv {
            bn: batch_norm(p / format!("bn{index}"), c_in),
            conv: conv(
                p / format!("conv{index}"),
                c_in,
                c_out,
                kernel,
                1,
                kernel / 2,
            ),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.conv.forward(&self.bn.forward_t(x, train).relu())
    }
}

/// A dense block: each bottleneck layer appends `growth` channels.
#[derive(Debug)]
struct DenseBlock {
    layers: Vec<(BnReluConv, BnReluConv)>,
}

impl DenseBlock {
    fn new(p: nn::Path, c_in: i64, growth: i64) -> Self {
        let lp = &p / "layer";
        let layers = (0..LAYERS_PER_BLOCK)
            .map(|i| {
                let p = &lp / i;
                let c = c_in + i * growth;
                (
                    BnReluConv::new(&p, 1, c, 4 * growth, 1),
                    BnReluConv::new(&p, 2, 4 * growth, growth, 3),
                )
            })
            .collect();
        DenseBlock { layers }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.layers.iter().fold(x.shallow_clone(), |out, (a, b)| {
            let new = b.forward_t(&a.forward_t(&out, train), train);
            Tensor::cat(&[out, new], 1)
        })
    }
}

/// DenseNet-BC-100 with growth rate `growth`.
#[derive(Debug)]
pub struct DenseNet {
    conv1: nn::Conv2D,
    blocks: Vec<DenseBlock>,
    transitions: Vec<BnReluConv>,
    bn1: BatchNorm,
    fc: nn::Linear,
    channels: Vec<i64>,
    num_classes: i64,
}

impl DenseNet {
    /// Builds the network under `p` with growth rate `growth` (paper: 12) and `num_classes` outputs.
    pub fn new(p: &nn::Path, growth: i64, num_classes: i64) -> Self {
        let mut c = 2 * growth;
        let mut channels = vec![c];
        let conv1 = conv(p / "conv1", 3, c, 3, 1, 1);
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for b in 1..=3 {
            blocks.push(DenseBlock::new(p / format!("block{b}"), c, growth));
            c += LAYERS_PER_BLOCK * growth;
            if b < 3 {
                let out = c / 2; // floor(c * reduction 0.5)
                transitions.push(BnReluConv::new(&(p / format!("trans{b}")), 1, c, out, 1));
                c = out;
            }
            channels.push(c);
        }
        DenseNet {
            conv1,
            blocks,
            transitions,
            bn1: batch_norm(p / "bn1", c),
            fc: nn::linear(p / "fc", c, num_classes, Default::default()),
            channels,
            num_classes,
        }
    }

    /// Runs stage `stage` (1..=3) on the previous feature layer's activation.
    fn stage(&self, stage: usize, x: &Tensor, train: bool) -> Tensor {
        let out = self.blocks[stage - 1].forward_t(x, train);
        match self.transitions.get(stage - 1) {
            Some(t) => t.forward_t(&out, train).avg_pool2d(
                [2, 2],
                [2, 2],
                [0, 0],
                false,
                true,
                None::<i64>,
            ),
            None => self.bn1.forward_t(&out, train).relu(),
        }
    }

    fn head(&self, x: &Tensor) -> Tensor {
        let pooled = x.avg_pool2d([8, 8], [8, 8], [0, 0], false, true, None::<i64>);
        self.fc.forward(&pooled.flatten(1, -1))
    }
}

impl Classifier for DenseNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut out = self.conv1.forward(x);
        for s in 1..=3 {
            out = self.stage(s, &out, train);
        }
        self.head(&out)
    }

    fn feature_list(&self, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        let mut out = self.conv1.forward(x);
        let mut features = vec![out.shallow_clone()];
        for s in 1..=3 {
            out = self.stage(s, &out, false);
            features.push(out.shallow_clone());
        }
        (self.head(&out), features)
    }

    fn intermediate_forward(&self, x: &Tensor, layer: usize) -> Result<Tensor> {
        if layer >= self.num_layers() {
            return Err(layer_error(NetType::Densenet, layer, self.num_layers()));
        }
        let mut out = self.conv1.forward(x);
        for s in 1..=layer {
            out = self.stage(s, &out, false);
        }
        Ok(out)
    }

    fn layer_channels(&self) -> Vec<i64> {
        self.channels.clone()
    }

    fn num_classes(&self) -> i64 {
        self.num_classes
    }

    fn linear_head(&self) -> Result<(Tensor, Tensor)> {
        let bias = self.fc.bs.as_ref().expect("the linear head has a bias");
        Ok((self.fc.ws.shallow_clone(), bias.shallow_clone()))
    }

    fn net_type(&self) -> NetType {
        NetType::Densenet
    }
}
