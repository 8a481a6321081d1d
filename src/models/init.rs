//! Seeded weight initialisation that does not touch libtorch's process-wide generator.
//!
//! tch draws initial weights from libtorch's global RNG, which every thread of the process shares:
//! any other tensor drawn while a network is built (another test, another job in the same process)
//! silently changes the network. [`seeded_init`] redraws every randomly initialised variable from
//! a ChaCha8 generator instead, with the distributions tch used: conv and linear weights
//! `U(-sqrt(6/fan_in), sqrt(6/fan_in))` (Kaiming uniform, ReLU gain), linear biases
//! `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`. BatchNorm parameters and buffers are constants and stay.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

use tch::{nn::VarStore, Tensor};

use crate::error::{Error, Result};

/// Redraws the random variables of `vs` (see the module docs) from a generator seeded by `seed`,
/// in the sorted order of their names, so the result depends on `seed` and the network alone.
pub fn seeded_init(vs: &VarStore, seed: u64) -> Result<()> {
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let Some(bound) = init_bound(name, &variables)? else {
            continue;
        };
        let mut var = variables[name].shallow_clone();
        let values: Vec<f32> = (0..var.numel())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let fresh = Tensor::from_slice(&values)
            .view(var.size().as_slice())
            .to_kind(var.kind())
            .to_device(var.device());
        tch::no_grad(|| var.copy_(&fresh));
    }
    Ok(())
}

/// The half-width of the uniform distribution `name` is drawn from, or `None` for a constant.
fn init_bound(name: &str, variables: &HashMap<String, Tensor>) -> Result<Option<f32>> {
    let size = variables[name].size();
    if name.ends_with(".weight") {
        if size.len() < 2 {
            return Ok(None); // BatchNorm scale
        }
        let fan_in: i64 = size[1..].iter().product();
        return Ok(Some((6.0 / fan_in as f64).sqrt() as f32));
    }
    if let Some(parent) = name.strip_suffix(".bias") {
        let weight = format!("{parent}.weight");
        let weight_size = variables
            .get(&weight)
            .map(|w| w.size())
            .ok_or_else(|| Error::Shape(format!("bias `{name}` without `{weight}`")))?;
        return Ok(match weight_size.len() {
            2 => Some((1.0 / (weight_size[1] as f64).sqrt()) as f32), // Linear
            1 => None,                                                // BatchNorm shift
            _ => {
                return Err(Error::Shape(format!(
                    "convolution bias `{name}`: the classifiers use bias-free convolutions"
                )))
            }
        });
    }
    Ok(None)
}
