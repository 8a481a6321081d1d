//! ResNet-34 for 32x32 inputs (the reference's `ResNet(BasicBlock, [3,4,6,3])`).
//!
//! Stem: 3x3 conv (stride 1) + BN + ReLU, no pooling; four stages of BasicBlocks with widths
//! w, 2w, 4w, 8w (w = 64 in the paper), the first block of stages 2-4 with stride 2 and a
//! 1x1 conv + BN shortcut (`shortcut.0`, `shortcut.1`); 4x4 average pool; linear head `linear`.
//! Feature layers: 0 = stem output, 1..=4 = outputs of `layer1`..`layer4`.
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm, conv, BatchNorm};
use super::{layer_error, Classifier};
use crate::error::Result;
use crate::models::NetType;

/// The paper's base width.
pub const PAPER_WIDTH: i64 = 64;
/// Blocks per stage of ResNet-34.
pub const BLOCKS: [usize; 4] = [3, 4, 6, 3];

/// A BasicBlock: conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU.
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: BatchNorm,
    conv2: nn::Conv2D,
    bn2: BatchNorm,
    shortcut: Option<(nn::Conv2D, BatchNorm)>,
}

impl BasicBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || c_in != c_out).then(|| {
            let s = &p / "shortcut";
            (
                conv(&s / 0, c_in, c_out, 1, stride, 0),
                batch_norm(&s / 1, c_out),
            )
        });
        BasicBlock {
            conv1: conv(&p / "conv1", c_in, c_out, 3, stride, 1),
            bn1: batch_norm(&p / "bn1", c_out),
            conv2: conv(&p / "conv2", c_out, c_out, 3, 1, 1),
            bn2: batch_norm(&p / "bn2", c_out),
            shortcut,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = self.bn1.forward_t(&self.conv1.forward(x), train).relu();
        let out = self.bn2.forward_t(&self.conv2.forward(&out), train);
        let short = match &self.shortcut {
            Some((c, bn)) => bn.forward_t(&c.forward(x), train),
            None => x.shallow_clone(),
        };
        (out + short).relu()
    }
}

/// ResNet-34 (CIFAR variant) with base width `width`.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: BatchNorm,
    stages: Vec<Vec<BasicBlock>>,
    linear: nn::Linear,
    width: i64,
    num_classes: i64,
}

impl ResNet {
    /// Builds the network under `p` with base width `width` (paper: 64) and `num_classes` outputs.
    pub fn new(p: &nn::Path, width: i64, num_classes: i64) -> Self {
        let mut c_in = width;
        let mut stages = Vec::with_capacity(BLOCKS.len());
        for (stage, &blocks) in BLOCKS.iter().enumerate() {
            let c_out = width << stage;
            let sp = p / format!("layer{}", stage + 1);
            let mut stage_blocks = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                stage_blocks.push(BasicBlock::new(&sp / b, c_in, c_out, stride));
                c_in = c_out;
            }
            stages.push(stage_blocks);
        }
        ResNet {
            conv1: conv(p / "conv1", 3, width, 3, 1, 1),
            bn1: batch_norm(p / "bn1", width),
            stages,
            linear: nn::linear(p / "linear", width * 8, num_classes, Default::default()),
            width,
            num_classes,
        }
    }

    fn stem(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn1.forward_t(&self.conv1.forward(x), train).relu()
    }

    fn stage(&self, index: usize, x: &Tensor, train: bool) -> Tensor {
        self.stages[index]
            .iter()
            .fold(x.shallow_clone(), |out, block| block.forward_t(&out, train))
    }

    fn head(&self, x: &Tensor) -> Tensor {
        let pooled = x.avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>);
        self.linear.forward(&pooled.flatten(1, -1))
    }
}

impl Classifier for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut out = self.stem(x, train);
        for s in 0..self.stages.len() {
            out = self.stage(s, &out, train);
        }
        self.head(&out)
    }

    fn feature_list(&self, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        let mut out = self.stem(x, false);
        let mut features = vec![out.shallow_clone()];
        for s in 0..self.stages.len() {
            out = self.stage(s, &out, false);
            features.push(out.shallow_clone());
        }
        (self.head(&out), features)
    }

    fn intermediate_forward(&self, x: &Tensor, layer: usize) -> Result<Tensor> {
        if layer >= self.num_layers() {
            return Err(layer_error(NetType::Resnet, layer, self.num_layers()));
        }
        let mut out = self.stem(x, false);
        for s in 0..layer {
            out = self.stage(s, &out, false);
        }
        Ok(out)
    }

    fn num_layers(&self) -> usize {
        BLOCKS.len() + 1
    }

    fn layer_channels(&self) -> Vec<i64> {
        let w = self.width;
        vec![w, w, 2 * w, 4 * w, 8 * w]
    }

    fn num_classes(&self) -> i64 {
        self.num_classes
    }

    fn linear_head(&self) -> Result<(Tensor, Tensor)> {
        let bias = self.linear.bs.as_ref().expect("the linear head has a bias");
        Ok((self.linear.ws.shallow_clone(), bias.shallow_clone()))
    }

    fn net_type(&self) -> NetType {
        NetType::Resnet
    }
}
