//! A new layer's flows: every class's couplings and permutations drawn from a seeded RNG in the
//! reference's order, on the linear part of the layer's whitening
//! (`docs/method.md#initialisation`).
use super::config::{hidden_size, FlowMeta, FlowSpec, NUM_COUPLINGS, NUM_PERMUTATIONS};
use super::model::{coupling_halves, CouplingFrozen, CouplingParams, FlowModel};
use crate::detect::gaussian::Whitening;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

impl FlowModel {
    /// A new flow for every class, initialised as `docs/method.md#initialisation` with a seeded
    /// RNG: PyTorch's default Linear init (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weights and
    /// biases) for fc1 and fc2, zero fc3, rescale `v = 1`, `g = sqrt(k)`, random permutations per
    /// class. The linear part is `whitening` (`A` `[d, k]`, `A_inv` `[k, d]`, converted to `kind`).
    pub fn init(
        spec: &FlowSpec,
        whitening: &Whitening,
        seed: u64,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let (k, d) = whitened_sizes(whitening)?;
        let h = hidden_size(spec.length_hidden, k);
        if spec.num_classes == 0 {
            return Err(Error::Shape(format!(
                "empty flow: hidden width {h}, {} classes",
                spec.num_classes
            )));
        }
        if h == 0 {
            return Err(Error::bad_option(
                "--length-hidden",
                format!(
                    "{} gives an empty flow: hidden width {h}, {} classes",
                    spec.length_hidden, spec.num_classes
                ),
            ));
        }
        let c = spec.num_classes;
        let meta = FlowMeta {
            spec: spec.clone(),
            dim: d,
            k,
            hidden: h,
            log_abs_det_a_inv: whitening.log_abs_det_a_inv,
        };
        let draws = Draws::new(seed, c, h, k);
        let (couplings, frozen): (Vec<_>, Vec<_>) = (0..NUM_COUPLINGS)
            .map(|i| draws.coupling(i, kind, device))
            .unzip();
        let perms = Tensor::from_slice(&draws.perms)
            .view([NUM_PERMUTATIONS as i64, c as i64, k as i64])
            .to_device(device);
        let to = |t: &Tensor| t.to_kind(kind).to_device(device);
        FlowModel::from_parts(
            meta,
            to(&whitening.a),
            to(&whitening.a_inv),
            perms,
            couplings,
            frozen,
        )
    }
}

/// `(k, d)` of a whitening with `A_inv` `[k, d]` and `A` `[d, k]`; errors unless `k` is even and
/// positive (the couplings split the whitened features into halves).
fn whitened_sizes(whitening: &Whitening) -> Result<(usize, usize)> {
    let (a, a_inv) = (&whitening.a, &whitening.a_inv);
    let (k, d) = match a_inv.size().as_slice() {
        [k, d] => (*k as usize, *d as usize),
        other => return Err(Error::Shape(format!("A_inv must be [k, d], got {other:?}"))),
    };
    if a.size() != [d as i64, k as i64] {
        return Err(Error::Shape(format!(
            "A is {:?}, expected [{d}, {k}]",
            a.size()
        )));
    }
    if k == 0 || k % 2 != 0 {
        return Err(Error::Shape(format!(
            "the whitened dimension k = {k} must be even and positive"
        )));
    }
    Ok((k, d))
}

/// Everything [`FlowModel::init`] draws, `C` classes, hidden width `h`, whitened dimension `k`.
struct Draws {
    /// `(classes, hidden width, whitened dimension)`.
    sizes: (usize, usize, usize),
    /// Per coupling, the full fc1 weights (`[2C, h, k]`), rows ordered [s classes, t classes].
    w1: Vec<Vec<f64>>,
    /// Per coupling, the fc1 biases (`[2C, h]`), rows as `w1`.
    b1: Vec<Vec<f64>>,
    /// Per coupling, the fc2 weights (`[2C, h, h]`), rows as `w1`.
    w2: Vec<Vec<f64>>,
    /// Per coupling, the fc2 biases (`[2C, h]`), rows as `w1`.
    b2: Vec<Vec<f64>>,
    /// The permutations, `[NUM_PERMUTATIONS, C, k]` laid out flat.
    perms: Vec<i64>,
}

impl Draws {
    /// The draws of a ChaCha8 generator seeded with `seed`, in the reference's order: class by
    /// class, its t-nets, then its s-nets (coupling by coupling: fc1 weight, fc1 bias, fc2
    /// weight, fc2 bias), then its permutations.
    fn new(seed: u64, c: usize, h: usize, k: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w1 = vec![vec![0f64; 2 * c * h * k]; NUM_COUPLINGS];
        let mut b1 = vec![vec![0f64; 2 * c * h]; NUM_COUPLINGS];
        let mut w2 = vec![vec![0f64; 2 * c * h * h]; NUM_COUPLINGS];
        let mut b2 = vec![vec![0f64; 2 * c * h]; NUM_COUPLINGS];
        let mut perms_by_class = vec![Vec::new(); c];
        let (bound1, bound2) = (1.0 / (k as f64).sqrt(), 1.0 / (h as f64).sqrt());
        let mut buf = Vec::new();
        for (class, class_perms) in perms_by_class.iter_mut().enumerate() {
            // The reference builds the t-nets, then the s-nets, then the permutations.
            for net in [1usize, 0] {
                let row = net * c + class;
                for i in 0..NUM_COUPLINGS {
                    for (target, n, bound) in [
                        (&mut w1[i], h * k, bound1),
                        (&mut b1[i], h, bound1),
                        (&mut w2[i], h * h, bound2),
                        (&mut b2[i], h, bound2),
                    ] {
                        buf.clear();
                        uniform(&mut rng, &mut buf, n, bound);
                        target[row * n..(row + 1) * n].copy_from_slice(&buf);
                    }
                }
            }
            for _ in 0..NUM_PERMUTATIONS {
                let mut p: Vec<i64> = (0..k as i64).collect();
                p.shuffle(&mut rng);
                class_perms.push(p);
            }
        }
        let mut perms = Vec::with_capacity(NUM_PERMUTATIONS * c * k);
        for j in 0..NUM_PERMUTATIONS {
            for class_perms in &perms_by_class {
                perms.extend_from_slice(&class_perms[j]);
            }
        }
        Draws {
            sizes: (c, h, k),
            w1,
            b1,
            w2,
            b2,
            perms,
        }
    }

    /// Coupling `i`'s trainable and frozen tensors of `kind` on `device`: fc1 and fc2 as drawn
    /// (fc1's weight cut into the half the coupling reads and the masked half), fc3 zero,
    /// `g = sqrt(k)`, `v = 1`.
    fn coupling(&self, i: usize, kind: Kind, device: Device) -> (CouplingParams, CouplingFrozen) {
        let (c, h, k) = self.sizes;
        let opts = (kind, device);
        let (c2, h64, k64, half) = (2 * c as i64, h as i64, k as i64, (k / 2) as i64);
        let (in_lo, _) = coupling_halves(i, k);
        let masked_in = (in_lo + k / 2) % k;
        let tensor = |values: &[f64], shape: [i64; 3]| {
            Tensor::from_slice(values)
                .view(shape)
                .to_kind(kind)
                .to_device(device)
        };
        let w1_full = tensor(&self.w1[i], [c2, h64, k64]);
        let params = CouplingParams {
            w1: w1_full.narrow(2, in_lo as i64, half).contiguous(),
            b1: tensor(&self.b1[i], [c2, 1, h64]),
            w2: tensor(&self.w2[i], [c2, h64, h64]),
            b2: tensor(&self.b2[i], [c2, 1, h64]),
            w3: Tensor::zeros([c2, half, h64], opts),
            b3: Tensor::zeros([c2, 1, half], opts),
            g: Tensor::full([c as i64, 1, 1], (k as f64).sqrt(), opts),
            v: Tensor::ones([c as i64, 1, k64], opts),
        };
        let frozen = CouplingFrozen {
            w1: w1_full.narrow(2, masked_in as i64, half).contiguous(),
            w3: Tensor::zeros([c2, half, h64], opts),
            b3: Tensor::zeros([c2, 1, half], opts),
        };
        (params, frozen)
    }
}

/// Appends `n` draws of `U(-bound, bound)` to `out`.
fn uniform(rng: &mut ChaCha8Rng, out: &mut Vec<f64>, n: usize, bound: f64) {
    out.extend((0..n).map(|_| rng.random_range(-bound..bound)));
}
