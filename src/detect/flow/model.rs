//! The residual flows of all classes of one layer as one batched model
//! (`docs/method.md#the-residual-flow`).
//!
//! Every coupling parameter is stacked with a leading class dimension and evaluated with batched
//! matrix products. The s- and t-nets of a coupling are stacked too (rows `0..C` are the s-nets,
//! rows `C..2C` the t-nets), so one coupling is three `baddbmm` calls for all classes and both nets.
//!
//! Mask-aware layout: coupling `i` only reads the `k/2` unmasked coordinates of `z` and only uses
//! the `k/2` masked-out outputs of its last Linear. The trainable tensors hold exactly those halves
//! (`w1: [2C, h, k/2]`, `w3: [2C, k/2, h]`, `b3: [2C, 1, k/2]`); the other halves get a zero
//! gradient in the reference and never change, so they are kept aside (frozen) only to write full
//! weight matrices into checkpoints.
use super::config::{FlowMeta, NUM_COUPLINGS, NUM_PERMUTATIONS};
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Trainable parameters of one coupling for all classes (compute layout, see the module docs).
#[derive(Debug)]
pub struct CouplingParams {
    /// First Linear, used input columns: `[2C, h, k/2]`.
    pub w1: Tensor,
    /// First Linear bias: `[2C, 1, h]`.
    pub b1: Tensor,
    /// Second Linear: `[2C, h, h]`.
    pub w2: Tensor,
    /// Second Linear bias: `[2C, 1, h]`.
    pub b2: Tensor,
    /// Last Linear, used output rows: `[2C, k/2, h]`.
    pub w3: Tensor,
    /// Last Linear bias, used outputs: `[2C, 1, k/2]`.
    pub b3: Tensor,
    /// Weight-norm magnitude of the s-net rescale: `[C, 1, 1]`.
    pub g: Tensor,
    /// Weight-norm direction of the s-net rescale: `[C, 1, k]`.
    pub v: Tensor,
}

/// What the backward pass of one coupling needs from its forward pass (feature-major tensors of
/// [`FlowModel::couplings_forward`]; `C'` classes, batch `B`).
#[derive(Debug)]
pub(super) struct CouplingTape {
    /// Index of the coupling.
    pub coupling: usize,
    /// The half it reads: `[C', k/2, B]`.
    pub x_in: Tensor,
    /// The s- and t-nets' first and second hidden activations: `[2C', h, B]`.
    pub h1: Tensor,
    pub h2: Tensor,
    /// `tanh` of the s-nets' outputs: `[C', k/2, B]`.
    pub th: Tensor,
    /// `exp(-s)`: `[C', k/2, B]`.
    pub e: Tensor,
    /// The changed half minus the t-nets' outputs: `[C', k/2, B]`.
    pub u: Tensor,
}

/// Names of the trainable tensors of a coupling, in [`CouplingParams::tensors`] order.
pub const PARAM_NAMES: [&str; 8] = ["w1", "b1", "w2", "b2", "w3", "b3", "g", "v"];

impl CouplingParams {
    /// The trainable tensors in [`PARAM_NAMES`] order.
    pub fn tensors(&self) -> [&Tensor; 8] {
        [
            &self.w1, &self.b1, &self.w2, &self.b2, &self.w3, &self.b3, &self.g, &self.v,
        ]
    }

    /// Parameters from tensors in [`PARAM_NAMES`] order.
    pub(super) fn from_tensors([w1, b1, w2, b2, w3, b3, g, v]: [Tensor; 8]) -> Self {
        CouplingParams {
            w1,
            b1,
            w2,
            b2,
            w3,
            b3,
            g,
            v,
        }
    }

    fn tensors_mut(&mut self) -> [&mut Tensor; 8] {
        [
            &mut self.w1,
            &mut self.b1,
            &mut self.w2,
            &mut self.b2,
            &mut self.w3,
            &mut self.b3,
            &mut self.g,
            &mut self.v,
        ]
    }
}

/// The never-used halves of a coupling's weights (kept for checkpoints only).
#[derive(Debug)]
pub struct CouplingFrozen {
    /// First Linear, masked input columns: `[2C, h, k/2]`.
    pub w1: Tensor,
    /// Last Linear, masked output rows: `[2C, k/2, h]`.
    pub w3: Tensor,
    /// Last Linear bias, masked outputs: `[2C, 1, k/2]`.
    pub b3: Tensor,
}

impl CouplingFrozen {
    /// The tensors in field order.
    pub(super) fn tensors(&self) -> [&Tensor; 3] {
        [&self.w1, &self.w3, &self.b3]
    }

    /// Frozen halves from tensors in field order.
    pub(super) fn from_tensors([w1, w3, b3]: [Tensor; 3]) -> Self {
        CouplingFrozen { w1, w3, b3 }
    }
}

/// All class flows of one layer.
#[derive(Debug)]
pub struct FlowModel {
    /// Sizes and identification.
    pub meta: FlowMeta,
    /// `A`: `[d, k]`.
    pub a: Tensor,
    /// `A_inv`: `[k, d]`.
    pub a_inv: Tensor,
    /// The permutations: `[NUM_PERMUTATIONS, C, k]` (int64), one set per class.
    pub perms: Tensor,
    /// Trainable parameters per coupling.
    pub couplings: Vec<CouplingParams>,
    /// Frozen halves per coupling.
    pub frozen: Vec<CouplingFrozen>,
    kind: Kind,
    device: Device,
}

/// `(start of the unmasked input half, start of the used output half)` of coupling `i`:
/// even couplings use the right mask (`[0]*(k/2) ++ [1]*(k/2)`), odd ones the left mask.
pub fn coupling_halves(i: usize, k: usize) -> (usize, usize) {
    let half = k / 2;
    if i.is_multiple_of(2) {
        (half, 0)
    } else {
        (0, half)
    }
}

impl FlowModel {
    /// Assembles a model from its parts (used by checkpoint loading); checks the shapes.
    pub fn from_parts(
        meta: FlowMeta,
        a: Tensor,
        a_inv: Tensor,
        perms: Tensor,
        couplings: Vec<CouplingParams>,
        frozen: Vec<CouplingFrozen>,
    ) -> Result<Self> {
        let (c, d, k, h) = (
            meta.spec.num_classes as i64,
            meta.dim as i64,
            meta.k as i64,
            meta.hidden as i64,
        );
        let half = k / 2;
        let bad = |what: &str, t: &Tensor, want: &[i64]| -> Result<()> {
            if t.size() != want {
                return Err(Error::Shape(format!(
                    "flow {what} has shape {:?}, expected {want:?}",
                    t.size()
                )));
            }
            Ok(())
        };
        bad("A", &a, &[d, k])?;
        bad("A_inv", &a_inv, &[k, d])?;
        bad("permutations", &perms, &[NUM_PERMUTATIONS as i64, c, k])?;
        if couplings.len() != NUM_COUPLINGS || frozen.len() != NUM_COUPLINGS {
            return Err(Error::Shape(format!(
                "a flow needs {NUM_COUPLINGS} couplings"
            )));
        }
        for (p, f) in couplings.iter().zip(&frozen) {
            let want: [&[i64]; 8] = [
                &[2 * c, h, half],
                &[2 * c, 1, h],
                &[2 * c, h, h],
                &[2 * c, 1, h],
                &[2 * c, half, h],
                &[2 * c, 1, half],
                &[c, 1, 1],
                &[c, 1, k],
            ];
            for ((name, t), w) in PARAM_NAMES.iter().zip(p.tensors()).zip(want) {
                bad(name, t, w)?;
            }
            bad("frozen w1", &f.w1, &[2 * c, h, half])?;
            bad("frozen w3", &f.w3, &[2 * c, half, h])?;
            bad("frozen b3", &f.b3, &[2 * c, 1, half])?;
        }
        let (kind, device) = (a_inv.kind(), a_inv.device());
        Ok(FlowModel {
            meta,
            a,
            a_inv,
            perms,
            couplings,
            frozen,
            kind,
            device,
        })
    }

    /// The floating-point kind of the parameters.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.meta.spec.num_classes
    }

    /// All trainable tensors, coupling by coupling in [`PARAM_NAMES`] order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        self.couplings.iter().flat_map(|p| p.tensors()).collect()
    }

    /// Mutable access to the trainable tensors, in [`FlowModel::parameters`] order.
    pub fn parameters_mut(&mut self) -> Vec<&mut Tensor> {
        self.couplings
            .iter_mut()
            .flat_map(|p| p.tensors_mut())
            .collect()
    }

    /// Moves the trainable tensors into one contiguous 1-D buffer, in [`FlowModel::parameters`]
    /// order, each becoming a view of it (values unchanged), and returns the buffer: an optimizer
    /// can then update every parameter at once (see `ClassAdam::with_flat_parameters`).
    pub fn flatten_parameters(&mut self) -> Tensor {
        let flat = tch::no_grad(|| {
            let parts: Vec<Tensor> = self
                .parameters()
                .iter()
                .map(|p| p.detach().reshape([-1]))
                .collect();
            Tensor::cat(&parts, 0)
        });
        let shapes: Vec<Vec<i64>> = self.parameters().iter().map(|p| p.size()).collect();
        let views = super::adam::flat_views(&flat, shapes.into_iter());
        for (p, view) in self.parameters_mut().into_iter().zip(views) {
            *p = view.set_requires_grad(p.requires_grad());
        }
        flat
    }

    /// Turns gradient tracking of the trainable tensors on or off.
    pub fn set_trainable(&mut self, trainable: bool) {
        for p in self.parameters_mut() {
            *p = p.detach().set_requires_grad(trainable);
        }
    }

    /// `log p_c(features - means_c)` for every sample and class: `features` `[N, d]`, `means`
    /// `[C, d]`; returns `[N, C]` in the model's kind, differentiable in `features`.
    pub fn log_prob(&self, features: &Tensor, means: &Tensor) -> Result<Tensor> {
        let c = self.meta.spec.num_classes as i64;
        let d = self.meta.dim as i64;
        if features.dim() != 2 || features.size()[1] != d || means.size() != [c, d] {
            return Err(Error::Shape(format!(
                "log_prob: features {:?} and means {:?} do not fit a flow of {c} classes in dimension {d}",
                features.size(),
                means.size()
            )));
        }
        let features = features.to_kind(self.kind).to_device(self.device);
        let means = means.to_kind(self.kind).to_device(self.device);
        let centred = features.unsqueeze(0) - means.unsqueeze(1);
        Ok(self.log_prob_centred(&centred, None)?.transpose(0, 1))
    }

    /// [`FlowModel::log_prob`] without gradients, `chunk` samples at a time (bounded memory).
    pub fn log_prob_chunked(
        &self,
        features: &Tensor,
        means: &Tensor,
        chunk: usize,
    ) -> Result<Tensor> {
        let n = features.size().first().copied().unwrap_or(0);
        let chunk = chunk.max(1) as i64;
        tch::no_grad(|| {
            let parts = (0..n)
                .step_by(chunk as usize)
                .map(|s| self.log_prob(&features.narrow(0, s, chunk.min(n - s)), means))
                .collect::<Result<Vec<_>>>()?;
            if parts.is_empty() {
                return Ok(Tensor::zeros(
                    [0, self.meta.spec.num_classes as i64],
                    (self.kind, self.device),
                ));
            }
            Ok(Tensor::cat(&parts, 0))
        })
    }

    /// Per-class log-densities of already centred features: `centred` is `[C', B, d]` where row
    /// `j` belongs to class `classes[j]` (all classes `0..C` in order when `classes` is `None`).
    /// Returns `[C', B]`.
    pub fn log_prob_centred(&self, centred: &Tensor, classes: Option<&[i64]>) -> Result<Tensor> {
        let (z, logdet) = self.latent(centred, classes)?;
        Ok(self.log_density(logdet, &z, 2))
    }

    /// `log p = log |det| - |z|^2 / 2 - k/2 log(2 pi)` from the latent `z`, whose features run
    /// along `feature_dim`, and its log-determinant.
    pub(super) fn log_density(&self, logdet: Tensor, z: &Tensor, feature_dim: i64) -> Tensor {
        let k = self.meta.k as f64;
        let const_term = -0.5 * k * (2.0 * std::f64::consts::PI).ln();
        logdet - z.square().sum_dim_intlist(feature_dim, false, self.kind) * 0.5 + const_term
    }

    /// The latent `z = f(x)` (`[C', B, k]`) and `log |det df/dx|` (`[C', B]`), see
    /// [`FlowModel::log_prob_centred`] for the arguments.
    ///
    /// Written for few kernels per step (the small layers are launch-bound):
    /// - the rescales of all couplings are computed at once, only on the halves they multiply,
    ///   and negated (`exp(-s)` and `-sum s` then need no negation of their own; negation is
    ///   exact, so the values are those of the per-coupling formula);
    /// - tensors are cut with `split` and `unbind`, whose backward is one `cat` or `stack`, not
    ///   with `narrow` or `select`, whose backward fills a full-size zero tensor per piece;
    /// - between two permutations `z` is kept as its two halves;
    /// - `z` is kept feature-major (`[C', k, B]`, the transpose of what is returned) and each
    ///   Linear is `W x + b` with the weight (`[2C', out, in]`) on the left: the weight gradients
    ///   then come out of the batched products contiguous, in the parameters' own layout, where
    ///   `x W^T` gave transposed gradients that the optimizer had to copy (about 10% of a
    ///   training step at k = 512); a permutation gathers whole rows.
    pub fn latent(&self, centred: &Tensor, classes: Option<&[i64]>) -> Result<(Tensor, Tensor)> {
        let c = self.meta.spec.num_classes as i64;
        let sel = match classes {
            None => None,
            Some(list) => {
                if let Some(bad) = list.iter().find(|&&x| x < 0 || x >= c) {
                    return Err(Error::Shape(format!("class {bad} out of range 0..{c}")));
                }
                let idx = Tensor::from_slice(list).to_device(self.device);
                let rows = Tensor::cat(&[&idx, &(&idx + c)], 0);
                Some((idx, rows))
            }
        };
        let selected_classes = classes.map_or(c, |l| l.len() as i64);
        let (z, logdet) = self.latent_start(centred, selected_classes)?;
        let pick = |t: &Tensor, class_dim: i64, per_class: bool| match &sel {
            None => t.shallow_clone(),
            Some((idx, rows)) => t.index_select(class_dim, if per_class { idx } else { rows }),
        };
        let neg_scales = self.neg_scales(|t| pick(t, 1, true));
        // One Linear of the s- and t-nets of all classes, feature-major: [2C', in, B] ->
        // [2C', out, B], with the weight ([2C', out, in]) as the left factor. The first Linear's
        // input is shared by the s- and t-nets: [C', k/2, B].
        let layer = |bias: &Tensor, input: &Tensor, weight: &Tensor| {
            let weight = pick(weight, 0, false);
            let input = if input.size()[0] == selected_classes {
                input.repeat([2, 1, 1])
            } else {
                input.shallow_clone()
            };
            Ok(pick(bias, 0, false)
                .transpose(1, 2)
                .baddbmm(&weight, &input, 1.0, 1.0))
        };
        let perm = |j: usize| pick(&self.perms.get(j as i64), 0, true);
        let (z, logdet) = self.couplings_forward(z, logdet, &neg_scales, &layer, &perm, None)?;
        Ok((z.transpose(1, 2), logdet))
    }

    /// The whitened features `z = A_inv x` of centred features `[C', B, d]`, feature-major
    /// (`[C', k, B]`), and the log-determinant they start with (`[C', B]`).
    pub(super) fn latent_start(
        &self,
        centred: &Tensor,
        selected_classes: i64,
    ) -> Result<(Tensor, Tensor)> {
        let size = centred.size();
        if size.len() != 3 || size[0] != selected_classes || size[2] != self.meta.dim as i64 {
            return Err(Error::Shape(format!(
                "centred features have shape {size:?}, expected [{selected_classes}, B, {}]",
                self.meta.dim
            )));
        }
        let centred = centred.to_kind(self.kind).to_device(self.device);
        let z = self.a_inv.matmul(&centred.transpose(1, 2));
        let logdet = Tensor::full(
            [selected_classes, size[1]],
            self.meta.log_abs_det_a_inv,
            (self.kind, self.device),
        );
        Ok((z, logdet))
    }

    /// `-(g * v / |v|)` of every coupling on the outputs it changes, `[C', k/2, 1]` each (to scale
    /// feature-major halves), with `pick` choosing the classes of the stacked `[NUM_COUPLINGS, C,
    /// 1, _]` tensors. Coupling 2j+r changes half r, so the used halves are the diagonal of
    /// (coupling parity, half).
    pub(super) fn neg_scales(&self, pick: impl Fn(&Tensor) -> Tensor) -> Vec<Tensor> {
        let stacked = |field: fn(&CouplingParams) -> &Tensor| {
            let all: Vec<&Tensor> = self.couplings.iter().map(field).collect();
            pick(&Tensor::stack(&all, 0))
        };
        let v = stacked(|p| &p.v);
        let selected_classes = v.size()[1];
        let half = self.meta.k as i64 / 2;
        let pairs = NUM_PERMUTATIONS as i64;
        let v_used = v
            .view([pairs, 2, selected_classes, 1, 2, half])
            .diagonal(0, 1, 4)
            .permute([0, 4, 1, 2, 3])
            .reshape([2 * pairs, selected_classes, 1, half]);
        let neg_scales =
            -(stacked(|p| &p.g) * v_used / v.norm_scalaropt_dim(2.0, [3i64].as_slice(), true));
        neg_scales.transpose(2, 3).unbind(0)
    }

    /// The couplings and permutations applied to feature-major `z` (`[C', k, B]`) and `logdet`,
    /// as in [`FlowModel::latent`]: `layer(bias, input, weight)` computes one Linear of all s- and
    /// t-nets (see `latent`), `perm(j)` gives permutation `j`'s `[C', k]` indices. With a `tape`,
    /// every coupling's tensors that its backward pass needs are pushed onto it, in the order the
    /// couplings are applied (see `backprop`).
    pub(super) fn couplings_forward(
        &self,
        mut z: Tensor,
        mut logdet: Tensor,
        neg_scales: &[Tensor],
        layer: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        perm: &dyn Fn(usize) -> Tensor,
        mut tape: Option<&mut Vec<CouplingTape>>,
    ) -> Result<(Tensor, Tensor)> {
        let size = z.size();
        let (selected_classes, k, b) = (size[0], size[1], size[2]);
        let half = k / 2;
        // Couplings 2j+1 and 2j, then permutation j, for j from the last down to 0.
        for j in (0..NUM_PERMUTATIONS).rev() {
            let mut halves = z.split(half, 1);
            for i in [2 * j + 1, 2 * j] {
                let p = &self.couplings[i];
                // The half this coupling changes (see `coupling_halves`); it reads the other.
                let out_half = usize::from(coupling_halves(i, self.meta.k).1 != 0);
                let (x_in, z_out) = (&halves[1 - out_half], &halves[out_half]);
                let h1 = layer(&p.b1, x_in, &p.w1)?.leaky_relu();
                let h2 = layer(&p.b2, &h1, &p.w2)?.leaky_relu();
                let out = layer(&p.b3, &h2, &p.w3)?;
                // Rows 0..C' are the s-nets' outputs, C'..2C' the t-nets'.
                let s_and_t = out.split(selected_classes, 0);
                // -s = tanh(s_raw) * -(scale).
                let th = s_and_t[0].tanh();
                let neg_s = &th * &neg_scales[i];
                let u = z_out - &s_and_t[1];
                let e = neg_s.exp();
                let new_out = &u * &e;
                logdet += neg_s.sum_dim_intlist(1, false, self.kind);
                if let Some(tape) = tape.as_deref_mut() {
                    let x_in = x_in.shallow_clone();
                    tape.push(CouplingTape {
                        coupling: i,
                        x_in,
                        h1,
                        h2,
                        th,
                        e,
                        u,
                    });
                }
                halves[out_half] = new_out;
            }
            let joined = Tensor::cat(&halves, 1);
            z = joined.gather(
                1,
                &perm(j).unsqueeze(2).expand([selected_classes, k, b], false),
                false,
            );
        }
        Ok((z, logdet))
    }
}
