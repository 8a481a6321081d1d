//! Class scores with input pre-processing (`docs/method.md#input-pre-processing` and
//! `docs/method.md#the-mahalanobis-detector`), shared by the residual flow and the Mahalanobis
//! detector: one gradient per (batch, layer), reused for every magnitude.
use tch::{Device, Kind, Tensor};

use crate::data::{BatchSource, Normalization};
use crate::error::Result;
use crate::models::{mean_pool, Classifier};

/// A differentiable map from mean-pooled layer features `[N, d]` to class scores `[N, C]`.
pub type ScoreFn<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// The sign step of `docs/method.md#sign-step`: +1 where `grad >= 0` (zero included), else -1, each
/// channel divided by the normalisation std of that channel.
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
        scores_of_features(score, &pooled_features(net, input, layer)?)
    };
    let perturbed: Vec<f64> = magnitudes.iter().copied().filter(|&e| e != 0.0).collect();
    let (clean, mut perturbed_scores) = if perturbed.is_empty() {
        (scores_of(x)?, Vec::new().into_iter())
    } else {
        // The gradient's forward pass already gives the clean scores (magnitude 0).
        let (step, clean) = gradient_step_and_scores(net, x, layer, std, score)?;
        let inputs: Vec<Tensor> = perturbed.iter().map(|&eps| x - &step * eps).collect();
        let all: Vec<Tensor> = if x.device() == Device::Cpu {
            // On the CPU one copy at a time: a batch-sized forward stays in cache, while all
            // copies at once (6 x the batch) run memory-bound and slower per image.
            inputs.iter().map(scores_of).collect::<Result<_>>()?
        } else {
            // On a GPU all copies in one call: far fewer, larger kernels.
            scores_of(&Tensor::cat(&inputs, 0))?.chunk(perturbed.len() as i64, 0)
        };
        (to_output(&clean), all.into_iter())
    };
    Ok(magnitudes
        .iter()
        .map(|&eps| {
            if eps == 0.0 {
                clean.shallow_clone()
            } else {
                perturbed_scores
                    .next()
                    .expect("one score matrix per non-zero magnitude")
            }
        })
        .collect())
}

/// Scores as [`preprocessed_scores`] returns them: float64, on the CPU, without gradients.
fn to_output(s: &Tensor) -> Tensor {
    s.detach().to_kind(Kind::Double).to_device(Device::Cpu)
}

/// The mean-pooled features `[N, d]` of layer `layer` for the normalised images `x`, without
/// gradients: what the class scores of an input without pre-processing are computed from.
pub fn pooled_features(net: &dyn Classifier, x: &Tensor, layer: usize) -> Result<Tensor> {
    tch::no_grad(|| Ok(mean_pool(&net.intermediate_forward(x, layer)?)))
}

/// The class scores `score(f)` of pooled features `f` ([`pooled_features`]) as
/// [`preprocessed_scores`] returns them: float64, on the CPU, without gradients.
pub fn scores_of_features(score: &ScoreFn, f: &Tensor) -> Result<Tensor> {
    tch::no_grad(|| Ok(to_output(&score(f)?)))
}

/// The sign step of the pre-processing loss at `x` (`docs/method.md#input-pre-processing` steps
/// 1-3).
pub fn gradient_step(
    net: &dyn Classifier,
    x: &Tensor,
    layer: usize,
    std: [f64; 3],
    score: &ScoreFn,
) -> Result<Tensor> {
    Ok(gradient_step_and_scores(net, x, layer, std, score)?.0)
}

/// [`gradient_step`] and the clean scores `[N, C]` its forward pass computed on the way.
fn gradient_step_and_scores(
    net: &dyn Classifier,
    x: &Tensor,
    layer: usize,
    std: [f64; 3],
    score: &ScoreFn,
) -> Result<(Tensor, Tensor)> {
    let (grad, scores) = input_gradient(net, x, layer, score)?;
    Ok((sign_step(&grad, std), scores))
}

/// The gradient with respect to the normalised input `x` of the pre-processing loss
/// (`docs/method.md#input-pre-processing` steps 1-2: the batch mean of `-score_{c*}`, `c*` the best
/// class of each row), and the clean scores `[N, C]`.
pub fn input_gradient(
    net: &dyn Classifier,
    x: &Tensor,
    layer: usize,
    score: &ScoreFn,
) -> Result<(Tensor, Tensor)> {
    let input = x.detach().set_requires_grad(true);
    let f = mean_pool(&net.intermediate_forward(&input, layer)?);
    let s = score(&f)?;
    let best = s.argmax(1, true).detach();
    let loss = -s.gather(1, &best, false).mean(s.kind());
    let grad = Tensor::run_backward(&[loss], &[&input], false, false)
        .pop()
        .expect("one gradient per input");
    Ok((grad, s.detach()))
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
