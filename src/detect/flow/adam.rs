//! Adam with independent state per class on class-stacked parameters.
//!
//! Every parameter tensor has a leading dimension of `reps * C` rows, row `r` belonging to class
//! `r % C` (the flow stacks s-nets and t-nets, so `reps` is 2 for those tensors). Each class has its
//! own step count; a step only touches the rows of the classes that take part in it, so a class
//! that does not step keeps its moments and parameters unchanged. The update is PyTorch's
//! (`torch.optim.Adam`, no weight decay, no amsgrad):
//! `m = lerp(m, g, 1 - beta1)`, `v = beta2 v + (1 - beta2) g^2`,
//! `p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`.
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Parameter rows with at least this many elements are updated one row at a time.
const ROW_CHUNK: i64 = 1 << 16;

/// Adam hyper-parameters (PyTorch's defaults except the learning rate).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

impl AdamConfig {
    /// PyTorch's defaults with learning rate `lr`.
    pub fn with_lr(lr: f64) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Per-class Adam state for a list of class-stacked parameters.
#[derive(Debug)]
pub struct ClassAdam {
    /// Hyper-parameters.
    pub config: AdamConfig,
    /// Steps taken by each class.
    pub steps: Vec<u64>,
    /// First moments, one per parameter.
    pub m: Vec<Tensor>,
    /// Second moments, one per parameter.
    pub v: Vec<Tensor>,
}

impl ClassAdam {
    /// Zero state for `params` (each with a leading dimension that is a multiple of `num_classes`).
    pub fn new(params: &[&Tensor], num_classes: usize, config: AdamConfig) -> Result<Self> {
        for p in params {
            let rows = p.size().first().copied().unwrap_or(0);
            if num_classes == 0 || rows % num_classes as i64 != 0 {
                return Err(Error::Invalid(format!(
                    "parameter with {rows} rows cannot be split over {num_classes} classes"
                )));
            }
        }
        Ok(ClassAdam {
            config,
            steps: vec![0; num_classes],
            m: params.iter().map(|p| p.detach().zeros_like()).collect(),
            v: params.iter().map(|p| p.detach().zeros_like()).collect(),
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.steps.len()
    }

    /// One Adam step for the classes in `active` (distinct, each `< C`), using the gradients stored
    /// in `params` (the same list, in the same order, as given to [`ClassAdam::new`]). The gradients
    /// are reset to zero afterwards.
    pub fn step(&mut self, params: &[&Tensor], active: &[usize]) -> Result<()> {
        let c = self.num_classes();
        if params.len() != self.m.len() {
            return Err(Error::Invalid(format!(
                "Adam state has {} tensors, got {} parameters",
                self.m.len(),
                params.len()
            )));
        }
        if active.iter().any(|&a| a >= c) {
            return Err(Error::Invalid(format!(
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
        // Per-class coefficients: lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t).
        let coef = |cls: usize| {
            let t = self.steps[cls] as i32;
            let bc1 = 1.0 - cfg.beta1.powi(t);
            let bc2 = 1.0 - cfg.beta2.powi(t);
            (cfg.lr / bc1, bc2.sqrt())
        };
        let classes: Vec<usize> = if all {
            (0..c).collect()
        } else {
            active.to_vec()
        };
        tch::no_grad(|| -> Result<()> {
            for ((p, m), v) in params.iter().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let (kind, device) = (p.kind(), p.device());
                let reps = p.size()[0] as usize / c;
                let rows: Vec<i64> = (0..reps)
                    .flat_map(|r| classes.iter().map(move |&cls| (r * c + cls) as i64))
                    .collect();
                let (steps, bc2_sqrt): (Vec<f64>, Vec<f64>) =
                    rows.iter().map(|&r| coef(r as usize % c)).unzip();
                // p -= step_size * m / (sqrt(v) / bc2_sqrt + eps), written as p += m / denom with
                // denom = sqrt(v) * (-1 / (bc2_sqrt * step_size)) - eps / step_size.
                let row_len = p.numel() as i64 / p.size()[0];
                if row_len >= ROW_CHUNK {
                    // Large rows: one row at a time with scalar coefficients, so that the successive
                    // element-wise passes find the row in cache.
                    for ((&r, &ss), &b2s) in rows.iter().zip(&steps).zip(&bc2_sqrt) {
                        let (mut pr, gr, mut mr, mut vr) =
                            (p.get(r), grad.get(r), m.get(r), v.get(r));
                        let _ = mr.f_lerp_(&gr, 1.0 - cfg.beta1)?;
                        let _ = vr.f_mul_scalar_(cfg.beta2)?;
                        let _ = vr.f_addcmul_(&(&gr * (1.0 - cfg.beta2)), &gr)?;
                        let mut denom = vr.sqrt();
                        let _ = denom.f_mul_scalar_(-1.0 / (b2s * ss))?;
                        let _ = denom.f_add_scalar_(-cfg.eps / ss)?;
                        let _ = pr.f_addcdiv_(&mr, &denom)?;
                    }
                } else {
                    let mut shape = vec![rows.len() as i64];
                    shape.extend(std::iter::repeat_n(1, p.dim() - 1));
                    let coef_tensor = |x: Vec<f64>| {
                        Tensor::from_slice(&x)
                            .view(shape.as_slice())
                            .to_kind(kind)
                            .to_device(device)
                    };
                    let scale: Vec<f64> = steps
                        .iter()
                        .zip(&bc2_sqrt)
                        .map(|(ss, b)| -1.0 / (b * ss))
                        .collect();
                    let offset: Vec<f64> = steps.iter().map(|ss| -cfg.eps / ss).collect();
                    let (scale, offset) = (coef_tensor(scale), coef_tensor(offset));
                    let mut param = p.shallow_clone();
                    if all {
                        let _ = m.f_lerp_(&grad, 1.0 - cfg.beta1)?;
                        let _ = v.f_mul_scalar_(cfg.beta2)?;
                        let _ = v.f_addcmul_(&(&grad * (1.0 - cfg.beta2)), &grad)?;
                        let mut denom = v.sqrt();
                        let _ = denom.f_mul_(&scale)?;
                        let _ = denom.f_add_(&offset)?;
                        let _ = param.f_addcdiv_(&*m, &denom)?;
                    } else {
                        let idx = Tensor::from_slice(&rows).to_device(device);
                        let g = grad.index_select(0, &idx);
                        let ms = m.index_select(0, &idx).lerp(&g, 1.0 - cfg.beta1);
                        let vs = v.index_select(0, &idx) * cfg.beta2 + &g * &g * (1.0 - cfg.beta2);
                        let update = &ms / (vs.sqrt() * &scale + &offset);
                        let _ = m.f_index_copy_(0, &idx, &ms)?;
                        let _ = v.f_index_copy_(0, &idx, &vs)?;
                        let _ = param.f_index_add_(0, &idx, &update)?;
                    }
                }
                let mut grad = grad;
                let _ = grad.f_zero_()?;
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
        out.push(("steps".to_string(), Tensor::from_slice(&steps)));
        out
    }

    /// Restores the state written by [`ClassAdam::state_tensors`] (shapes must match).
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        let find = |name: &str| {
            named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::Invalid(format!("optimizer state lacks `{name}`")))
        };
        let steps = Vec::<i64>::try_from(&find("steps")?.to_kind(Kind::Int64))?;
        if steps.len() != self.steps.len() {
            return Err(Error::Invalid(format!(
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
                    return Err(Error::Invalid(format!(
                        "optimizer `{name}` has shape {:?}",
                        t.size()
                    )));
                }
                *slot = t.to_kind(slot.kind()).to_device(slot.device());
            }
        }
        self.steps = steps.into_iter().map(|s| s as u64).collect();
        Ok(())
    }
}
