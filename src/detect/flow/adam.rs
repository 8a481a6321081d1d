//! Adam with independent state per class on class-stacked parameters.
//!
//! Every parameter tensor has a leading dimension of `reps * C` rows, row `r` belonging to class
//! `r % C` (the flow stacks s-nets and t-nets, so `reps` is 2 for those tensors). Each class has its
//! own step count; a step only touches the rows of the classes that take part in it, so a class
//! that does not step keeps its moments and parameters unchanged. The update is PyTorch's
//! (`torch.optim.Adam`, no weight decay, no amsgrad):
//! `m = lerp(m, g, 1 - beta1)`, `v = beta2 v + (1 - beta2) g^2`,
//! `p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`.
//!
//! The moments live in one flat buffer each (`m` and `v` hold views of it, one per parameter).
//! When the parameters are views of one flat buffer as well ([`ClassAdam::with_flat_parameters`],
//! see `FlowModel::flatten_parameters`), a step in which every class takes part updates all of
//! them in a handful of element-wise passes over the buffers instead of several per parameter
//! tensor: at the demo's sizes that removes most of a training step's kernel launches. Large
//! layers on the CPU under [`CpuStep::TensorOps`] keep the per-tensor passes (row by row for long
//! rows, which stay in cache).
//!
//! On the CPU a large layer's step is one pass over memory instead (`adam_cpu`: a loop over the
//! rows of the active classes, same arithmetic), see [`CpuStep`]; CUDA always uses the tensor
//! operations.
pub use super::adam_config::AdamConfig;
use super::adam_cpu;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Parameter rows with at least this many elements are updated one row at a time.
const ROW_CHUNK: i64 = 1 << 16;

/// Under [`CpuStep::TensorOps`], CPU layers with more parameters than this are updated tensor by
/// tensor (their passes are long enough to hide the per-kernel cost, and row by row they stay in
/// cache); by default such layers take the loop.
const FLAT_MAX_CPU: i64 = 1 << 23;

/// Per-class Adam state for a list of class-stacked parameters.
#[derive(Debug)]
pub struct ClassAdam {
    /// Hyper-parameters.
    pub config: AdamConfig,
    /// Steps taken by each class.
    pub steps: Vec<u64>,
    /// First moments, one per parameter (views of one flat buffer).
    pub m: Vec<Tensor>,
    /// Second moments, one per parameter (views of one flat buffer).
    pub v: Vec<Tensor>,
    /// The buffer `m` views.
    m_flat: Tensor,
    /// The buffer `v` views.
    v_flat: Tensor,
    /// The parameters' buffer, when they are views of one too.
    flat: Option<FlatParams>,
    /// How CPU steps are computed.
    cpu_step: CpuStep,
}

/// How [`ClassAdam::step`] updates CPU tensors. Both agree to rounding (the tensor operations'
/// `lerp` may fuse its multiply-add).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuStep {
    /// The loop for layers of at least [`cpu_loop_min`] parameters, the tensor operations below
    /// (their buffers are in cache, where the vectorised kernels on libtorch's thread pool win).
    BySize,
    /// One pass over memory: a loop over the rows of the active classes, split over libtorch's
    /// thread count (float32 and float64 tensors; otherwise the tensor operations).
    Loop,
    /// Element-wise tensor operations, as always on CUDA.
    TensorOps,
}

/// The name of the per-class step counts in [`ClassAdam::state_tensors`].
pub(super) const STEPS: &str = "steps";

/// With several libtorch threads, layers with at least this many parameters take
/// [`CpuStep::Loop`] under [`CpuStep::BySize`] (4 MiB per float32 buffer, beyond a core's cache).
pub const CPU_LOOP_MIN: usize = 1 << 20;

/// [`CPU_LOOP_MIN`] with one libtorch thread, as in the trainer's lanes: there the tensor
/// operations run on one core too, and the loop's single pass won from k = 32 (about 215,000
/// parameters for 5 classes: 10% faster per iteration; k = 64: 6%; k = 16, 56,000: even).
pub const CPU_LOOP_MIN_ONE_THREAD: usize = 1 << 17;

/// The number of parameters from which [`CpuStep::BySize`] takes the loop, with `threads`
/// libtorch threads.
pub fn cpu_loop_min(threads: i32) -> usize {
    if threads <= 1 {
        CPU_LOOP_MIN_ONE_THREAD
    } else {
        CPU_LOOP_MIN
    }
}

/// The parameters as one flat buffer, for steps over all of them at once.
#[derive(Debug)]
struct FlatParams {
    /// The buffer (each parameter is a view of it, in order).
    params: Tensor,
    /// The class of every parameter row, parameter by parameter.
    row_classes: Vec<usize>,
    /// The length of each of those rows (int64, on the parameters' device).
    row_lengths: Tensor,
}

/// The coefficients of a class's update `p += m / (sqrt(v) * scale + offset)` after `t` steps:
/// with `step_size = lr / (1 - beta1^t)`, `scale = -1 / (sqrt(1 - beta2^t) * step_size)` and
/// `offset = -eps / step_size`, which is PyTorch's `p -= step_size * m / (sqrt(v) /
/// sqrt(1 - beta2^t) + eps)`. Returns `(scale, offset)`.
fn update_coefficients(cfg: AdamConfig, t: u64) -> (f64, f64) {
    let t = t as i32;
    let step_size = cfg.lr / (1.0 - cfg.beta1.powi(t));
    let bc2_sqrt = (1.0 - cfg.beta2.powi(t)).sqrt();
    (-1.0 / (bc2_sqrt * step_size), -cfg.eps / step_size)
}

/// A flat zero buffer shaped like `params` laid end to end, and a view of it per parameter.
fn flat_zeros(params: &[&Tensor]) -> (Tensor, Vec<Tensor>) {
    let total: i64 = params.iter().map(|p| p.numel() as i64).sum();
    let (kind, device) = params
        .first()
        .map_or((Kind::Float, Device::Cpu), |p| (p.kind(), p.device()));
    let flat = Tensor::zeros([total], (kind, device));
    let views = flat_views(&flat, params.iter().map(|p| p.size()));
    (flat, views)
}

/// Consecutive views of the 1-D tensor `flat` with the given shapes.
pub(crate) fn flat_views(flat: &Tensor, shapes: impl Iterator<Item = Vec<i64>>) -> Vec<Tensor> {
    let mut offset = 0;
    shapes
        .map(|shape| {
            let n: i64 = shape.iter().product();
            let view = flat.narrow(0, offset, n).view(shape.as_slice());
            offset += n;
            view
        })
        .collect()
}

impl ClassAdam {
    /// Zero state for `params` (each with a leading dimension that is a multiple of `num_classes`).
    pub fn new(params: &[&Tensor], num_classes: usize, config: AdamConfig) -> Result<Self> {
        for p in params {
            let rows = p.size().first().copied().unwrap_or(0);
            if num_classes == 0 || rows % num_classes as i64 != 0 {
                return Err(Error::Shape(format!(
                    "parameter with {rows} rows cannot be split over {num_classes} classes"
                )));
            }
        }
        let (m_flat, m) = flat_zeros(params);
        let (v_flat, v) = flat_zeros(params);
        Ok(ClassAdam {
            config,
            steps: vec![0; num_classes],
            m,
            v,
            m_flat,
            v_flat,
            flat: None,
            cpu_step: CpuStep::BySize,
        })
    }

    /// Chooses how CPU steps are computed (default [`CpuStep::BySize`]).
    pub fn with_cpu_step(mut self, cpu_step: CpuStep) -> Self {
        self.cpu_step = cpu_step;
        self
    }

    /// Declares that the parameters (as given to [`ClassAdam::new`]) are consecutive views of the
    /// 1-D tensor `flat`, in order, so that steps can update them all at once. Checked: an error
    /// when they are not.
    pub fn with_flat_parameters(mut self, params: &[&Tensor], flat: &Tensor) -> Result<Self> {
        let c = self.num_classes();
        let total: i64 = params.iter().map(|p| p.numel() as i64).sum();
        let elem = flat.kind().elt_size_in_bytes() as i64;
        let mut offset = 0;
        for (i, p) in params.iter().enumerate() {
            let expected = flat.data_ptr() as i64 + offset * elem;
            if !p.is_contiguous() || p.kind() != flat.kind() || p.data_ptr() as i64 != expected {
                return Err(Error::Shape(format!(
                    "parameter {i} is not the view of the flat buffer at element {offset}"
                )));
            }
            offset += p.numel() as i64;
        }
        if flat.dim() != 1 || flat.numel() as i64 != total || params.len() != self.m.len() {
            return Err(Error::Shape(format!(
                "flat buffer of shape {:?} for {} parameters of {total} elements",
                flat.size(),
                params.len()
            )));
        }
        let mut row_classes = Vec::new();
        let mut row_lengths = Vec::new();
        for p in params {
            let rows = p.size()[0];
            for r in 0..rows {
                row_classes.push(r as usize % c);
                row_lengths.push(p.numel() as i64 / rows);
            }
        }
        self.flat = Some(FlatParams {
            params: flat.shallow_clone(),
            row_classes,
            row_lengths: Tensor::from_slice(&row_lengths).to_device(flat.device()),
        });
        Ok(self)
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.steps.len()
    }

    /// One Adam step for the classes in `active` (distinct, each `< C`) on `params` (the same
    /// list, in the same order, as given to [`ClassAdam::new`]) with their gradients `grads`
    /// (e.g. from `Tensor::run_backward`; undefined tensors for parameters without one).
    pub fn step(&mut self, params: &[&Tensor], grads: &[Tensor], active: &[usize]) -> Result<()> {
        let c = self.num_classes();
        if params.len() != self.m.len() || grads.len() != params.len() {
            return Err(Error::Shape(format!(
                "Adam state has {} tensors, got {} parameters and {} gradients",
                self.m.len(),
                params.len(),
                grads.len()
            )));
        }
        if active.iter().any(|&a| a >= c) {
            return Err(Error::Shape(format!(
                "active classes {active:?} out of range 0..{c}"
            )));
        }
        if active.is_empty() {
            return Ok(());
        }
        for &a in active {
            self.steps[a] += 1;
        }
        let cfg = self.config;
        let all = active.len() == c;
        // Each class's (scale, offset) of the update.
        let coef = |cls: usize| update_coefficients(cfg, self.steps[cls]);
        let numel: usize = params.iter().map(|p| p.numel()).sum();
        let looped = match self.cpu_step {
            CpuStep::BySize => numel >= cpu_loop_min(tch::get_num_threads()),
            CpuStep::Loop => true,
            CpuStep::TensorOps => false,
        };
        if looped && adam_cpu::cpu_loop_applies(params, &self.m, &self.v, grads) {
            let per_class: Vec<(f64, f64)> = (0..c).map(coef).collect();
            return adam_cpu::step(params, &self.m, &self.v, grads, active, &per_class, cfg);
        }
        if all && grads.iter().all(|g| g.defined()) {
            if let Some(flat) = &self.flat {
                let n = flat.params.numel() as i64;
                if flat.params.device() != Device::Cpu || n <= FLAT_MAX_CPU {
                    let per_class: Vec<(f64, f64)> = (0..c).map(coef).collect();
                    return tch::no_grad(|| self.flat_step(flat, grads, &per_class));
                }
            }
        }
        let classes: Vec<usize> = if all {
            (0..c).collect()
        } else {
            active.to_vec()
        };
        // The rows a step touches and their coefficients depend only on how many stacked copies
        // (`reps`) a parameter has and on its rank: made once per step and shared by every
        // parameter of that shape (a handful of tensors per step instead of several per parameter).
        let mut shared: Vec<RowCoefficients> = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (((p, grad), m), v) in params
                .iter()
                .zip(grads)
                .zip(self.m.iter_mut())
                .zip(self.v.iter_mut())
            {
                if !grad.defined() {
                    continue;
                }
                let (kind, device) = (p.kind(), p.device());
                let reps = p.size()[0] as usize / c;
                let rank = p.dim();
                let at = match shared.iter().position(|r| r.reps == reps && r.rank == rank) {
                    Some(at) => at,
                    None => {
                        shared.push(RowCoefficients::new(
                            reps, rank, c, &classes, &coef, all, kind, device,
                        ));
                        shared.len() - 1
                    }
                };
                let rc = &shared[at];
                // p += m / denom with denom = sqrt(v) * scale + offset (update_coefficients).
                let row_len = p.numel() as i64 / p.size()[0];
                if row_len >= ROW_CHUNK {
                    // Large rows: one row at a time with scalar coefficients, so that the successive
                    // element-wise passes find the row in cache.
                    for (&r, &(scale, offset)) in rc.rows.iter().zip(&rc.coefficients) {
                        let (mut pr, gr, mut mr, mut vr) =
                            (p.get(r), grad.get(r), m.get(r), v.get(r));
                        let _ = mr.f_lerp_(&gr, 1.0 - cfg.beta1)?;
                        let _ = vr.f_mul_scalar_(cfg.beta2)?;
                        let _ = vr.f_addcmul_(&(&gr * (1.0 - cfg.beta2)), &gr)?;
                        let mut denom = vr.sqrt();
                        let _ = denom.f_mul_scalar_(scale)?;
                        let _ = denom.f_add_scalar_(offset)?;
                        let _ = pr.f_addcdiv_(&mr, &denom)?;
                    }
                } else {
                    let mut param = p.shallow_clone();
                    match &rc.index {
                        None => {
                            let _ = m.f_lerp_(grad, 1.0 - cfg.beta1)?;
                            let _ = v.f_mul_scalar_(cfg.beta2)?;
                            let _ = v.f_addcmul_(&(grad * (1.0 - cfg.beta2)), grad)?;
                            let denom = rc.offset.f_addcmul(&v.sqrt(), &rc.scale)?;
                            let _ = param.f_addcdiv_(&*m, &denom)?;
                        }
                        Some(idx) => {
                            let g = grad.index_select(0, idx);
                            let ms = m.index_select(0, idx).lerp(&g, 1.0 - cfg.beta1);
                            let vs =
                                v.index_select(0, idx) * cfg.beta2 + &g * &g * (1.0 - cfg.beta2);
                            let update = &ms / (vs.sqrt() * &rc.scale + &rc.offset);
                            let _ = m.f_index_copy_(0, idx, &ms)?;
                            let _ = v.f_index_copy_(0, idx, &vs)?;
                            let _ = param.f_index_add_(0, idx, &update)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// The state as named tensors (`m.{i}`, `v.{i}`, `steps`) for checkpoints (CPU).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            out.push((format!("m.{i}"), m.to_device(tch::Device::Cpu)));
            out.push((format!("v.{i}"), v.to_device(tch::Device::Cpu)));
        }
        let steps: Vec<i64> = self.steps.iter().map(|&s| s as i64).collect();
        out.push((STEPS.to_string(), Tensor::from_slice(&steps)));
        out
    }

    /// Restores the state written by [`ClassAdam::state_tensors`] (shapes must match).
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        let find = |name: &str| {
            named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::Shape(format!("optimizer state lacks `{name}`")))
        };
        let steps = Vec::<i64>::try_from(&find(STEPS)?.to_kind(Kind::Int64))?;
        if steps.len() != self.steps.len() {
            return Err(Error::Shape(format!(
                "optimizer state is for {} classes, not {}",
                steps.len(),
                self.steps.len()
            )));
        }
        for i in 0..self.m.len() {
            for (slot, name) in [
                (&mut self.m[i], format!("m.{i}")),
                (&mut self.v[i], format!("v.{i}")),
            ] {
                let t = find(&name)?;
                if t.size() != slot.size() {
                    return Err(Error::Shape(format!(
                        "optimizer `{name}` has shape {:?}",
                        t.size()
                    )));
                }
                tch::no_grad(|| slot.f_copy_(&t))?;
            }
        }
        self.steps = steps.into_iter().map(|s| s as u64).collect();
        Ok(())
    }
}

/// The rows of one step for parameters with `reps` stacked copies of the classes and rank
/// `rank`, with their Adam coefficients.
struct RowCoefficients {
    reps: usize,
    rank: usize,
    /// Rows that take part, copy-major (`r * C + class`).
    rows: Vec<i64>,
    /// `(scale, offset)` of each of those rows (see [`update_coefficients`]).
    coefficients: Vec<(f64, f64)>,
    /// The scales, shaped `[rows, 1, ...]` to broadcast over a row.
    scale: Tensor,
    /// The offsets, shaped like `scale`.
    offset: Tensor,
    /// The rows as an index tensor when only some classes step (`None`: every row, in order).
    index: Option<Tensor>,
}

impl RowCoefficients {
    #[allow(clippy::too_many_arguments)]
    fn new(
        reps: usize,
        rank: usize,
        c: usize,
        classes: &[usize],
        coef: &dyn Fn(usize) -> (f64, f64),
        all: bool,
        kind: Kind,
        device: tch::Device,
    ) -> Self {
        let rows: Vec<i64> = (0..reps)
            .flat_map(|r| classes.iter().map(move |&cls| (r * c + cls) as i64))
            .collect();
        let coefficients: Vec<(f64, f64)> = rows.iter().map(|&r| coef(r as usize % c)).collect();
        let mut shape = vec![rows.len() as i64];
        shape.extend(std::iter::repeat_n(1, rank - 1));
        let coef_tensor = |x: Vec<f64>| {
            Tensor::from_slice(&x)
                .view(shape.as_slice())
                .to_kind(kind)
                .to_device(device)
        };
        let scale = coef_tensor(coefficients.iter().map(|c| c.0).collect());
        let offset = coef_tensor(coefficients.iter().map(|c| c.1).collect());
        let index = (!all).then(|| Tensor::from_slice(&rows).to_device(device));
        RowCoefficients {
            reps,
            rank,
            rows,
            coefficients,
            scale,
            offset,
            index,
        }
    }
}

impl ClassAdam {
    /// One step of every class over the flat buffers: `per_class` holds each class's
    /// `(scale, offset)` (see [`update_coefficients`]). The arithmetic per element is the
    /// per-tensor path's.
    fn flat_step(
        &self,
        flat: &FlatParams,
        grads: &[Tensor],
        per_class: &[(f64, f64)],
    ) -> Result<()> {
        let cfg = self.config;
        let g = Tensor::f_cat(
            &grads.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(),
            0,
        )?;
        let (mut m, mut v, mut params) = (
            self.m_flat.shallow_clone(),
            self.v_flat.shallow_clone(),
            flat.params.shallow_clone(),
        );
        let _ = m.f_lerp_(&g, 1.0 - cfg.beta1)?;
        let _ = v.f_mul_scalar_(cfg.beta2)?;
        let _ = v.f_addcmul_(&(&g * (1.0 - cfg.beta2)), &g)?;
        let denom = if per_class.windows(2).all(|w| w[0] == w[1]) {
            // Every class has taken as many steps: scalar coefficients.
            let ((scale, offset), mut denom) = (per_class[0], v.sqrt());
            let _ = denom.f_mul_scalar_(scale)?;
            let _ = denom.f_add_scalar_(offset)?;
            denom
        } else {
            // One coefficient per row, repeated over the row's elements.
            let per_element = |pick: fn(&(f64, f64)) -> f64| {
                let rows: Vec<f64> = flat
                    .row_classes
                    .iter()
                    .map(|&cls| pick(&per_class[cls]))
                    .collect();
                Tensor::from_slice(&rows)
                    .to_kind(v.kind())
                    .to_device(v.device())
                    .f_repeat_interleave_self_tensor(&flat.row_lengths, 0, Some(v.numel() as i64))
            };
            per_element(|c| c.1)?.f_addcmul(&v.sqrt(), &per_element(|c| c.0)?)?
        };
        let _ = params.f_addcdiv_(&m, &denom)?;
        Ok(())
    }
}
