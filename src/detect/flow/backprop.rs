//! The flows' training loss and its gradients by an explicit backward pass on the CPU.
//!
//! Same arithmetic as [`FlowModel::log_prob_centred`] followed by autograd: the forward pass is
//! [`FlowModel::couplings_forward`] itself, with its products done by the `gemm` crate
//! ([`batched_product`]) and the tensors each coupling's backward pass needs kept on a tape; the
//! backward pass applies the chain rule layer by layer with the same element-wise formulas as
//! libtorch's (`leaky_relu_backward`, `tanh_backward`). Only the weight-norm rescales, a few
//! hundred numbers per class, go through autograd. Used by the trainer on the CPU, where the
//! products are most of a step (see `Trainer::with_backward`).
use super::config::{NUM_COUPLINGS, NUM_PERMUTATIONS};
use super::model::{coupling_halves, CouplingTape, FlowModel};
use super::products::batched_product;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Slope of the s- and t-nets' LeakyReLU for negative inputs (PyTorch's default).
const LEAKY_SLOPE: f64 = 0.01;

/// `-sum over the batch of log p_c(x)` for every class `c` of `model` (`centred` is `[C, B, d]`,
/// row `c` holding class `c`'s centred features; returns `[C]`), and the gradients of the sum over
/// classes with respect to [`FlowModel::parameters`], in that order.
///
/// `model` must be on the CPU in float32 or float64 with its trainable tensors tracking gradients
/// ([`FlowModel::set_trainable`]); `threads` above 1 splits each product over rayon tasks.
pub fn class_losses_and_gradients(
    model: &FlowModel,
    centred: &Tensor,
    threads: usize,
) -> Result<(Tensor, Vec<Tensor>)> {
    check_model(model)?;
    let kind = model.kind();
    if model.parameters().iter().any(|p| !p.requires_grad()) {
        return Err(Error::Shape(
            "explicit flow pass: the model's trainable tensors do not track gradients".into(),
        ));
    }
    // The rescales keep their autograd graph back to g and v; the rest runs without one.
    let scales_graph = model.neg_scales(|t| t.shallow_clone());
    let neg_scales: Vec<Tensor> = scales_graph.iter().map(|t| t.detach()).collect();
    let (losses, mut grads, d_scales) = tch::no_grad(|| -> Result<_> {
        let mut tape = Vec::with_capacity(NUM_COUPLINGS);
        let (log_p, z) = forward(model, centred, &neg_scales, threads, Some(&mut tape))?;
        let (grads, d_scales) = backward(model, z, tape, &neg_scales, threads)?;
        Ok((-log_p.sum_dim_intlist(1, false, kind), grads, d_scales))
    })?;
    // The rescales' share: the gradient of sum_i <scale_i, d_scale_i> with respect to g and v.
    let scale_terms: Vec<Tensor> = scales_graph
        .iter()
        .zip(&d_scales)
        .map(|(s, d)| (s * d).sum(kind))
        .collect();
    let g_and_v: Vec<&Tensor> = model.couplings.iter().flat_map(|p| [&p.g, &p.v]).collect();
    let scale_grads = Tensor::f_run_backward(
        &[Tensor::stack(&scale_terms, 0).sum(kind)],
        &g_and_v,
        false,
        false,
    )?;
    for (i, pair) in scale_grads.chunks(2).enumerate() {
        grads[i].extend(pair.iter().map(|g| g.shallow_clone()));
    }
    Ok((losses, grads.into_iter().flatten().collect()))
}

/// `log p_c(x)` of centred features `[C, B, d]` (row `c` holding class `c`'s) for every class `c`
/// of `model`, `[C, B]`, without gradients: [`FlowModel::log_prob_centred`] with the products of
/// the explicit pass (same requirements on `model` and `threads` as
/// [`class_losses_and_gradients`], except gradient tracking).
pub fn log_prob_centred(model: &FlowModel, centred: &Tensor, threads: usize) -> Result<Tensor> {
    check_model(model)?;
    tch::no_grad(|| {
        let neg_scales = model.neg_scales(|t| t.shallow_clone());
        Ok(forward(model, centred, &neg_scales, threads, None)?.0)
    })
}

/// Whether the explicit pass applies to a model of `kind` on `device`: float32 or float64 on the
/// CPU.
pub fn explicit_pass_applies(device: Device, kind: Kind) -> bool {
    device == Device::Cpu && matches!(kind, Kind::Float | Kind::Double)
}

/// How a training step gets its gradients; both give the reference's gradients (to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backward {
    /// libtorch's autograd through [`FlowModel::log_prob_centred`] (any device and kind).
    Autograd,
    /// [`class_losses_and_gradients`], with products by the `gemm` crate (CPU, float32
    /// or float64), whose forward pass also computes the validation losses. Steps over part of the
    /// classes (the last batches when class sizes differ) still use autograd.
    Explicit,
}

/// The [`Backward`] a trainer uses on `device` for a model of `kind`: explicit where it applies
/// (CPU, float32 or float64), autograd elsewhere.
pub fn default_backward(device: Device, kind: Kind) -> Backward {
    if explicit_pass_applies(device, kind) {
        Backward::Explicit
    } else {
        Backward::Autograd
    }
}

/// Errors unless the explicit pass applies to `model` ([`explicit_pass_applies`]).
pub(super) fn check_model(model: &FlowModel) -> Result<()> {
    let kind = model.kind();
    if !explicit_pass_applies(model.device(), kind) {
        return Err(Error::Shape(format!(
            "explicit flow pass: needs a float32 or float64 model on the CPU, got {kind:?} on {:?}",
            model.device()
        )));
    }
    Ok(())
}

/// `(log p [C, B], final latent z [C, k, B])` of all classes, the products by `gemm`, taping the
/// couplings when asked (run without gradient tracking).
fn forward(
    model: &FlowModel,
    centred: &Tensor,
    neg_scales: &[Tensor],
    threads: usize,
    tape: Option<&mut Vec<CouplingTape>>,
) -> Result<(Tensor, Tensor)> {
    let (z, logdet) = model.latent_start(centred, model.num_classes() as i64)?;
    let layer = |bias: &Tensor, input: &Tensor, weight: &Tensor| -> Result<Tensor> {
        let size = weight.size();
        let out = bias
            .transpose(1, 2)
            .expand([size[0], size[1], input.size()[2]], false)
            .contiguous();
        batched_product(&out, weight, input, true, threads)?;
        Ok(out)
    };
    let perm = |j: usize| model.perms.get(j as i64);
    let (z, logdet) = model.couplings_forward(z, logdet, neg_scales, &layer, &perm, tape)?;
    Ok((model.log_density(logdet, &z, 1), z))
}

/// The backward pass from the final latent `z` (`[C, k, B]`, feature-major) through the taped
/// couplings and the permutations: per coupling the gradients of `w1, b1, w2, b2, w3, b3`, and
/// per coupling the gradient of its `[C, k/2, 1]` rescale.
fn backward(
    model: &FlowModel,
    z: Tensor,
    tape: Vec<CouplingTape>,
    neg_scales: &[Tensor],
    threads: usize,
) -> Result<(Vec<Vec<Tensor>>, Vec<Tensor>)> {
    let kind = model.kind();
    let size = z.size();
    let (c, k, b) = (size[0], size[1], size[2]);
    let half = k / 2;
    let mut grads: Vec<Vec<Tensor>> = (0..NUM_COUPLINGS).map(|_| Vec::new()).collect();
    let mut d_scales: Vec<Tensor> = (0..NUM_COUPLINGS).map(|_| Tensor::new()).collect();
    // d(sum of losses)/dz = z, from the +z^2/2 of -log p; every -s adds -1 per sample.
    let mut dz = z;
    let mut taped = tape.into_iter().rev();
    for j in 0..NUM_PERMUTATIONS {
        // Permutation j gathered row perm[f] into row f: its gradient goes back to perm[f].
        let inverse = model.perms.get(j as i64).argsort(1, false);
        let joined = dz.gather(1, &inverse.unsqueeze(2).expand([c, k, b], false), false);
        let mut halves = joined.split(half, 1);
        for i in [2 * j, 2 * j + 1] {
            let t = taped
                .next()
                .filter(|t| t.coupling == i)
                .ok_or_else(|| Error::Shape(format!("tape out of order at coupling {i}")))?;
            let p = &model.couplings[i];
            let out_half = usize::from(coupling_halves(i, model.meta.k).1 != 0);
            // new = u * e with u = z_out - t_out and e = exp(-s); logdet += sum(-s).
            let d_new = &halves[out_half];
            let d_neg_s = (d_new * &t.u) * &t.e - 1.0;
            let d_u = d_new * &t.e;
            d_scales[i] = (&d_neg_s * &t.th).sum_dim_intlist(2, true, kind);
            let d_s_raw = Tensor::tanh_backward(&(&d_neg_s * &neg_scales[i]), &t.th);
            let d_out = Tensor::cat(&[d_s_raw, -&d_u], 0);
            let (dw3, db3, dh2) = linear_backward(&d_out, &t.h2, &p.w3, threads)?;
            let da2 = t.h2.leaky_relu_backward(&dh2, LEAKY_SLOPE, true);
            let (dw2, db2, dh1) = linear_backward(&da2, &t.h1, &p.w2, threads)?;
            let da1 = t.h1.leaky_relu_backward(&dh1, LEAKY_SLOPE, true);
            let dw1 = Tensor::empty(p.w1.size(), (kind, Device::Cpu));
            batched_product(&dw1, &da1, &t.x_in.transpose(1, 2), false, threads)?;
            let db1 = bias_gradient(&da1);
            // The first coupling applied reads and changes the whitened input: nothing before it.
            let first_applied = j == NUM_PERMUTATIONS - 1 && i == 2 * j + 1;
            if !first_applied {
                // x_in fed the s-nets (rows 0..C) and the t-nets (rows C..2C).
                let d_in = &halves[1 - out_half];
                for r in 0..2 {
                    let rows = |t: &Tensor| t.narrow(0, r * c, c);
                    batched_product(
                        d_in,
                        &rows(&p.w1).transpose(1, 2),
                        &rows(&da1),
                        true,
                        threads,
                    )?;
                }
                halves[out_half] = d_u;
            }
            grads[i] = vec![dw1, db1, dw2, db2, dw3, db3];
        }
        dz = Tensor::cat(&halves, 1);
    }
    Ok((grads, d_scales))
}

/// The gradients of a Linear `out = W input + b` (feature-major, see `FlowModel::latent`) given
/// `d_out`: `(dW, db, d_input)`.
fn linear_backward(
    d_out: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    threads: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let opts = (d_out.kind(), Device::Cpu);
    let dw = Tensor::empty(weight.size(), opts);
    batched_product(&dw, d_out, &input.transpose(1, 2), false, threads)?;
    let d_input = Tensor::empty(input.size(), opts);
    batched_product(&d_input, &weight.transpose(1, 2), d_out, false, threads)?;
    Ok((dw, bias_gradient(d_out), d_input))
}

/// A bias's gradient (`[N, 1, out]`) from its Linear's output gradient (`[N, out, B]`).
fn bias_gradient(d_out: &Tensor) -> Tensor {
    d_out.sum_dim_intlist(2, false, d_out.kind()).unsqueeze(1)
}
