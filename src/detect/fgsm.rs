//! FGSM adversarial samples for validation without OOD data (`docs/method.md#fgsm-samples`).
//!
//! For the in-distribution test split, batch by batch: `noisy = clamp(x + sigma * N(0, 1))` and
//! `adv = clamp(x + 0.05 * sign_step(d CE(model(x), y) / d x))`, where `x` is the normalised input,
//! `sign_step` is that of `docs/method.md#sign-step` (+1 where the gradient is >= 0, else -1,
//! channel j divided by std_j) and the clamp is to `[min_j (0 - mean_j) / std_j, max_j (1 - mean_j)
//! / std_j]` (one range for all channels, as in the reference). Only samples whose clean and noisy
//! versions are classified correctly and whose adversarial version is not are kept.
//!
//! The samples' folder on disk: [`crate::store::fgsm`]; the stage: [`crate::pipeline::fgsm`].
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

use crate::data::{BatchSource, ImageSet, Normalization, NormalizedSet};
use crate::detect::preprocess::sign_step;
use crate::error::{Error, Result};
use crate::models::{Classifier, LoadedClassifier, NetType};
use crate::progress::Progress;

/// The adversarial step size, in units of the sign step (0.05 / std_j per channel).
pub const ADVERSARIAL_STEP: f64 = 0.05;

/// The reference's batch size for FGSM generation.
pub const DEFAULT_BATCH_SIZE: usize = 50;

/// The noise standard deviation (in normalised-input units) of the noisy samples: ResNet 0.25/4,
/// DenseNet 0.21/4, each halved again (divided by 8) for CIFAR-100; TorchScript models as ResNet.
pub fn noise_sigma(net: NetType, dataset: &str) -> f64 {
    let base = match net {
        NetType::Resnet | NetType::TorchScript => 0.25,
        NetType::Densenet => 0.21,
    };
    if dataset.eq_ignore_ascii_case("cifar100") {
        base / 8.0
    } else {
        base / 4.0
    }
}

/// The clamp range `[min_j lo_j, max_j hi_j]` of the normalised pixel range
/// ([`Normalization::pixel_range`]), one range for every channel as in the reference.
pub fn clamp_range(norm: &Normalization) -> (f64, f64) {
    let (lo, hi) = norm.pixel_range();
    (
        lo.iter().copied().fold(f64::INFINITY, f64::min),
        hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// The FGSM sample of normalised images `x` with labels `labels`:
/// `clamp(x + 0.05 * sign_step(d CE(net(x), labels) / d x, std))`, the loss being the batch mean
/// of the cross-entropy, the network in eval mode.
pub fn adversarial(
    net: &dyn Classifier,
    x: &Tensor,
    labels: &Tensor,
    norm: &Normalization,
) -> Result<Tensor> {
    let input = x.detach().set_requires_grad(true);
    let loss = net
        .forward_t(&input, false)
        .cross_entropy_for_logits(labels);
    let grad = Tensor::run_backward(&[loss], &[&input], false, false)
        .pop()
        .ok_or_else(|| Error::Shape("FGSM: no gradient with respect to the input".into()))?;
    let (lo, hi) = clamp_range(norm);
    Ok((x.detach() + sign_step(&grad, norm.std) * ADVERSARIAL_STEP).clamp(lo, hi))
}

/// `clamp(x + sigma * noise)` to the range of [`clamp_range`].
pub fn noisy(x: &Tensor, noise: &Tensor, sigma: f64, norm: &Normalization) -> Tensor {
    let (lo, hi) = clamp_range(norm);
    (x + noise.to_device(x.device()) * sigma).clamp(lo, hi)
}

/// Standard normal noise of `shape` (float32, CPU) drawn from `rng`: the same numbers on every
/// device for a given seed.
pub fn standard_noise(shape: &[i64], rng: &mut ChaCha8Rng) -> Tensor {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_slice(&values).view(shape)
}

/// The selection rule: clean and noisy predictions right, adversarial prediction wrong.
/// All arguments are `[N]` integer tensors; returns a boolean mask `[N]`.
pub fn keep_mask(labels: &Tensor, clean: &Tensor, noisy: &Tensor, adv: &Tensor) -> Tensor {
    clean
        .eq_tensor(labels)
        .logical_and(&noisy.eq_tensor(labels))
        .logical_and(&adv.ne_tensor(labels))
}

/// Predicted classes of `x` (eval mode, no gradient).
fn predict(net: &dyn Classifier, x: &Tensor) -> Tensor {
    tch::no_grad(|| net.forward_t(x, false).argmax(1, false))
}

/// Clean, noisy and adversarial versions of every image of a set, with the predictions.
#[derive(Debug)]
pub struct Attacked {
    /// Every sample, nothing selected yet.
    pub sets: FgsmSets,
    /// Predicted classes `[N]` of the clean images.
    pub clean_pred: Tensor,
    /// Predicted classes `[N]` of the noisy images.
    pub noisy_pred: Tensor,
    /// Predicted classes `[N]` of the adversarial images.
    pub adv_pred: Tensor,
}

/// The settings of one FGSM generation.
#[derive(Debug, Clone, Copy)]
pub struct FgsmOptions {
    /// Noise standard deviation ([`noise_sigma`]).
    pub sigma: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Seed of the noise.
    pub seed: u64,
    /// Compute device.
    pub device: Device,
}

/// Computes the noisy and adversarial version of every image of `set`
/// (`docs/method.md#fgsm-samples`), batch by batch in stored order; the noise is drawn from a
/// ChaCha8 generator seeded with `options.seed`.
pub fn attack(
    classifier: &LoadedClassifier,
    set: &ImageSet,
    options: &FgsmOptions,
    progress: &mut dyn Progress,
) -> Result<Attacked> {
    let net = classifier.net.as_ref();
    let norm = classifier.meta.normalization;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut parts: [Vec<Tensor>; 6] = Default::default();
    progress.start(&format!("FGSM {}", set.name), set.len());
    for batch in BatchSource::from(set).batches(norm, options.batch_size, options.device) {
        let x = &batch.images;
        let clean_pred = predict(net, x);
        let noisy_x = noisy(
            x,
            &standard_noise(&x.size(), &mut rng),
            options.sigma,
            &norm,
        );
        let adv_x = adversarial(net, x, &batch.labels, &norm)?;
        let outputs = [
            x.shallow_clone(),
            noisy_x.shallow_clone(),
            adv_x.shallow_clone(),
            clean_pred,
            predict(net, &noisy_x),
            predict(net, &adv_x),
        ];
        for (store, t) in parts.iter_mut().zip(outputs) {
            store.push(t.to_device(Device::Cpu));
        }
        progress.advance(batch.labels.size()[0] as usize);
    }
    progress.finish();
    let [clean, noisy, adv, clean_pred, noisy_pred, adv_pred] = parts.map(|p| Tensor::cat(&p, 0));
    Ok(Attacked {
        sets: FgsmSets::new(clean, noisy, adv, set.labels.shallow_clone()),
        clean_pred,
        noisy_pred,
        adv_pred,
    })
}

impl Attacked {
    /// The kept samples ([`keep_mask`]) and the summary of the whole run (accuracies and mean
    /// L-inf perturbation over all samples, as the reference reports them).
    pub fn select(&self) -> (FgsmSets, FgsmCounts) {
        let labels = &self.sets.labels;
        let mask = keep_mask(labels, &self.clean_pred, &self.noisy_pred, &self.adv_pred);
        let index = mask.nonzero().squeeze_dim(1);
        let correct =
            |pred: &Tensor| pred.eq_tensor(labels).sum(Kind::Int64).int64_value(&[]) as usize;
        let linf = (&self.sets.adv.images - &self.sets.clean.images)
            .abs()
            .flatten(1, -1)
            .max_dim(1, false)
            .0
            .to_kind(Kind::Double);
        let total = self.sets.len();
        let counts = FgsmCounts {
            total,
            kept: index.size()[0] as usize,
            clean_correct: correct(&self.clean_pred),
            noisy_correct: correct(&self.noisy_pred),
            adv_correct: correct(&self.adv_pred),
            mean_linf: if total == 0 {
                0.0
            } else {
                linf.sum(Kind::Double).double_value(&[]) / total as f64
            },
        };
        let pick = |t: &Tensor| t.index_select(0, &index);
        let sets = FgsmSets::new(
            pick(&self.sets.clean.images),
            pick(&self.sets.noisy.images),
            pick(&self.sets.adv.images),
            pick(labels),
        );
        (sets, counts)
    }
}

/// What a generation run measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FgsmCounts {
    /// Test images attacked.
    pub total: usize,
    /// Samples kept by the selection rule.
    pub kept: usize,
    /// Correct predictions on the clean images.
    pub clean_correct: usize,
    /// Correct predictions on the noisy images.
    pub noisy_correct: usize,
    /// Correct predictions on the adversarial images.
    pub adv_correct: usize,
    /// Mean over all images of max |adv - clean|, in normalised-input units (pixel / 255 - mean,
    /// divided by std), as the reference prints it.
    pub mean_linf: f64,
}

impl FgsmCounts {
    /// `n / total` (0 for an empty run).
    pub fn fraction(&self, n: usize) -> f64 {
        n as f64 / self.total.max(1) as f64
    }
}

/// The three FGSM sets (normalised inputs) sharing one label vector.
#[derive(Debug)]
pub struct FgsmSets {
    /// Clean inputs (`fgsm_clean`).
    pub clean: NormalizedSet,
    /// Noisy inputs (`fgsm_noisy`).
    pub noisy: NormalizedSet,
    /// Adversarial inputs (`fgsm_adv`).
    pub adv: NormalizedSet,
    /// Labels `[K]`, int64.
    pub labels: Tensor,
}

impl FgsmSets {
    /// The sets from `[K,3,32,32]` tensors and `[K]` labels.
    pub fn new(clean: Tensor, noisy: Tensor, adv: Tensor, labels: Tensor) -> FgsmSets {
        let set = |name: &str, images: Tensor| NormalizedSet {
            name: name.to_string(),
            images,
            labels: labels.shallow_clone(),
        };
        FgsmSets {
            clean: set("fgsm_clean", clean),
            noisy: set("fgsm_noisy", noisy),
            adv: set("fgsm_adv", adv),
            labels,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// True when no sample was kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sets in the order clean, noisy, adversarial.
    pub fn named(&self) -> [&NormalizedSet; 3] {
        [&self.clean, &self.noisy, &self.adv]
    }
}
