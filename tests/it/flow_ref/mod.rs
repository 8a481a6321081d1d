//! A straightforward per-class residual flow on the reference's state dict (full weight matrices,
//! multiplicative masks, one class at a time), written independently of `resflow::detect::flow::model`.
#![allow(dead_code)]
use std::collections::HashMap;
use std::path::Path;

use resflow::detect::flow::checkpoint::class_file;
use resflow::detect::flow::FlowModel;
use tch::{Kind, Tensor};

/// One class's flow: tensors by reference name, plus `log |det A_inv|`.
pub struct NaiveFlow {
    pub tensors: HashMap<String, Tensor>,
    pub log_abs_det_a_inv: f64,
}

/// Names of the trainable tensors of a reference flow.
pub fn trainable_names() -> Vec<String> {
    let mut names = Vec::new();
    for net in ["t", "s"] {
        for i in 0..10 {
            for fc in 1..=3 {
                names.push(format!("{net}.{i}.fc{fc}.weight"));
                names.push(format!("{net}.{i}.fc{fc}.bias"));
            }
            if net == "s" {
                names.push(format!("s.{i}.rescale.weight_g"));
                names.push(format!("s.{i}.rescale.weight_v"));
            }
        }
    }
    names
}

impl NaiveFlow {
    pub fn new(dict: Vec<(String, Tensor)>, log_abs_det_a_inv: f64) -> Self {
        NaiveFlow {
            tensors: dict.into_iter().collect(),
            log_abs_det_a_inv,
        }
    }

    fn t(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
    }

    fn linear(&self, x: &Tensor, prefix: &str) -> Tensor {
        x.matmul(&self.t(&format!("{prefix}.weight")).tr()) + self.t(&format!("{prefix}.bias"))
    }

    fn mlp(&self, x: &Tensor, net: &str) -> Tensor {
        let h = self.linear(x, &format!("{net}.fc1")).leaky_relu();
        let h = self.linear(&h, &format!("{net}.fc2")).leaky_relu();
        self.linear(&h, &format!("{net}.fc3"))
    }

    /// Log-density of centred features `x` (`[N, d]`), as the reference's `RealNVP.log_prob`.
    pub fn log_prob(&self, x: &Tensor) -> Tensor {
        let mask = self.t("mask");
        let mut z = x.matmul(&self.t("A_").tr());
        let n = z.size()[0];
        let k = z.size()[1];
        let mut logdet = Tensor::full([n], self.log_abs_det_a_inv, (z.kind(), z.device()));
        for i in (0..10).rev() {
            let m = mask.get(i);
            let inv_m = 1.0 - &m;
            let z_ = &z * &m;
            let g = self.t(&format!("s.{i}.rescale.weight_g"));
            let v = self.t(&format!("s.{i}.rescale.weight_v"));
            let w = g * v / v.square().sum(Kind::Double).sqrt().to_kind(v.kind());
            let s = self.mlp(&z_, &format!("s.{i}")).tanh() * w * &inv_m;
            let t = self.mlp(&z_, &format!("t.{i}")) * &inv_m;
            z = &inv_m * (&z - t) * (-&s).exp() + &z_;
            logdet -= s.sum_dim_intlist(1, false, s.kind());
            if i % 2 == 0 {
                z = z.index_select(1, self.t(&format!("perm.{}.perm", i / 2)));
            }
        }
        let c = -0.5 * k as f64 * (2.0 * std::f64::consts::PI).ln();
        logdet - z.square().sum_dim_intlist(1, false, z.kind()) * 0.5 + c
    }
}

/// Standard normal samples from a seeded generator (independent of libtorch's global RNG, which
/// tests running in parallel would share).
pub fn randn(shape: &[i64], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_slice(&v).view(shape)
}

/// Replaces every trainable (and frozen) weight of every class by random values, through a
/// checkpoint: save, perturb the safetensors files, load.
pub fn randomise(
    model: &FlowModel,
    dir: &Path,
    scale: f64,
    g_range: (f64, f64),
    kind: Kind,
) -> FlowModel {
    model.save(dir).unwrap();
    for c in 0..model.num_classes() {
        let dict = model.class_state_dict(c).unwrap();
        let out: Vec<(String, Tensor)> = dict
            .into_iter()
            .enumerate()
            .map(|(j, (name, t))| {
                let seed = 1000 * c as u64 + j as u64;
                let noise = randn(&t.size(), seed).to_kind(t.kind());
                let new = if name.contains(".fc") {
                    let fan_in = if name.ends_with("weight") {
                        t.size()[1]
                    } else {
                        t.size()[0]
                    };
                    noise * (scale / (fan_in as f64).sqrt())
                } else if name.ends_with("weight_g") {
                    (noise.sigmoid() * (g_range.1 - g_range.0)) + g_range.0
                } else if name.ends_with("weight_v") {
                    noise
                } else {
                    t
                };
                (name, new)
            })
            .collect();
        Tensor::write_safetensors(&out, class_file(dir, c)).unwrap();
    }
    FlowModel::load(dir, kind, tch::Device::Cpu).unwrap()
}
