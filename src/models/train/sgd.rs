//! SGD with momentum and weight decay, as `torch.optim.SGD` (dampening 0, no Nesterov), with its
//! momentum buffers exposed by name so that a training run can be checkpointed and resumed.
use std::collections::HashMap;

use tch::{nn::VarStore, Tensor};

/// SGD over the trainable variables of a `VarStore`.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<(String, Tensor)>,
    buffers: Vec<Tensor>,
    /// Momentum factor.
    pub momentum: f64,
    /// L2 weight decay added to every gradient.
    pub weight_decay: f64,
}

impl Sgd {
    /// SGD over every trainable variable of `vs` (momentum buffers start at zero).
    pub fn new(vs: &VarStore, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Sgd {
            params,
            buffers,
            momentum,
            weight_decay,
        }
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`: `buf = momentum * buf + (grad + wd * p)`, `p -= lr * buf`.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for ((_, p), buf) in self.params.iter_mut().zip(self.buffers.iter_mut()) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let d = grad + &*p * self.weight_decay;
                let _ = buf.g_mul_scalar_(self.momentum);
                let _ = buf.g_add_(&d);
                let _ = p.g_sub_(&(&*buf * lr));
            }
        })
    }

    /// The momentum buffers by parameter name.
    pub fn buffers(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .zip(&self.buffers)
            .map(|((n, _), b)| (n.clone(), b.shallow_clone()))
            .collect()
    }
}
