//! Adam's hyper-parameters, shared by the per-class optimizer ([`super::adam`]) and its CPU loop
//! (`adam_cpu`).
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
