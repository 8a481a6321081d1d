//! Class scores with input pre-processing (SPEC sections 6 and 7), shared by the residual flow and
//! the Mahalanobis detector: one gradient per (batch, layer), reused for every magnitude.
use tch::{Device, Kind, Tensor};

use crate::data::{BatchSource, Normalization};
use crate::error::Result;
use crate::models::{mean_pool, Classifier};

/// A differentiable map from mean-pooled layer features `[N, d]` to class scores `[N, C]`.
pub type ScoreFn<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// The sign step of SPEC section 6: +1 where `grad >= 0` (zero included), else -1, each channel
/// divided by the normalisation std of that channel.
pub fn sign_step(grad: &Tensor, std: [f64; 3]) -> Tensor {
    let sign = grad.ge(0.0).to_kind(Kind::Float) * 2.0 - 1.0;
    let std = Tensor::from_slice(&std.map(|s| s as f32))
        .view([1, 3, 1, 1])
        .to_device(grad.device());
    sign / std
}

/// Scores of layer `layer` for a batch of normalised images `x` after input pre-processing with
/// each of `magnitudes`: `x' = x - eps * sign_step(d loss / d x)` where the loss is the mean of
/// `-score_{c*}` over the batch and `c*` the best class of the clean input. Returns one float64
/// `[N, C]` matrix per magnitude, on the CPU. The gradient is computed once; magnitude 0 needs none.
pub fn preprocessed_scores(
    net: &dyn Classifier,
    x: &Tensor,
    layer: usize,
    std: [f64; 3],
    magnitudes: &[f64],
    score: &ScoreFn,
) -> Result<Vec<Tensor>> {
    let scores_of = |input: &Tensor| -> Result<Tensor> {
        tch::no_grad(|| -> Result<Tensor> {
            let f = mean_pool(&net.intermediate_forward(input, layer)?);
            Ok(score(&f)?.to_kind(Kind::Double).to_device(Device::Cpu))
        })
    };
    let perturbed: Vec<f64> = magnitudes.iter().copied().filter(|&e| e != 0.0).collect();
    // All perturbed copies go through the network in one call (far fewer, larger kernels).
    let mut perturbed_scores = if perturbed.is_empty() {
        Vec::new()
    } else {
        let step = gradient_step(net, x, layer, std, score)?;
        let inputs: Vec<Tensor> = perturbed.iter().map(|&eps| x - &step * eps).collect();
        scores_of(&Tensor::cat(&inputs, 0))?.chunk(perturbed.len() as i64, 0)
    }
    .into_iter();
    let clean = if perturbed.len() < magnitudes.len() {
        Some(scores_of(x)?)
    } else {
        None
    };
    Ok(magnitudes
        .iter()
        .map(|&eps| match (&clean, eps == 0.0) {
            (Some(clean), true) => clean.shallow_clone(),
            _ => perturbed_scores
                .next()
                .expect("one score matrix per non-zero magnitude"),
        })
        .collect())
}

/// The sign step of the pre-processing loss at `x` (SPEC 6 steps 1-3).
pub fn gradient_step(
    net: &dyn Classifier,
    x: &Tensor,
    layer: usize,
    std: [f64; 3],
    score: &ScoreFn,
) -> Result<Tensor> {
    let input = x.detach().set_requires_grad(true);
    let f = mean_pool(&net.intermediate_forward(&input, layer)?);
    let s = score(&f)?;
    let best = s.argmax(1, true).detach();
    let loss = -s.gather(1, &best, false).mean(s.kind());
    let grad = Tensor::run_backward(&[loss], &[&input], false, false)
        .pop()
        .expect("one gradient per input");
    Ok(sign_step(&grad, std))
}

/// [`preprocessed_scores`] over a whole set in stored order: per magnitude, the `[N, C]` scores of
/// every image. `norm` normalises raw image sets and gives the sign step's std. `on_batch`
/// receives each batch's size.
#[allow(clippy::too_many_arguments)]
pub fn score_set(
    net: &dyn Classifier,
    set: BatchSource<'_>,
    norm: Normalization,
    layer: usize,
    magnitudes: &[f64],
    batch_size: usize,
    device: Device,
    score: &ScoreFn,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<Tensor>> {
    let mut parts: Vec<Vec<Tensor>> = magnitudes.iter().map(|_| Vec::new()).collect();
    for batch in set.batches(norm, batch_size, device) {
        let scores = preprocessed_scores(net, &batch.images, layer, norm.std, magnitudes, score)?;
        for (store, s) in parts.iter_mut().zip(scores) {
            store.push(s);
        }
        on_batch(batch.labels.size()[0] as usize);
    }
    Ok(parts.iter().map(|p| Tensor::cat(p, 0)).collect())
}
