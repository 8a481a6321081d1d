//! Saving and loading a layer's flows per class in the reference's state-dict names
//! (`docs/method.md#flow-checkpoints`).
//!
//! A checkpoint directory holds `flow.json` (the [`FlowMeta`]) and `flow_{c}.safetensors` per class
//! with the tensors `mask`, `{s,t}.{i}.fc{1,2,3}.{weight,bias}`, `s.{i}.rescale.weight_{g,v}`,
//! `perm.{j}.{perm,inv_perm,W}`, `A` and `A_`, with full (not mask-restricted) weight matrices.
use super::config::{FlowMeta, FlowSpec, NUM_COUPLINGS, NUM_PERMUTATIONS};
use super::model::{coupling_halves, CouplingFrozen, CouplingParams, FlowModel};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Name of the JSON metadata file in a checkpoint directory.
pub const META_FILE: &str = "flow.json";

/// Name of the file in which `rf-train` records what a layer's flows were trained from (the
/// statistics and train features of the layer, the options): `crate::store::provenance`.
pub const FLOW_PROVENANCE: &str = "provenance.json";

/// The layer of flow folder `dir` (`.../layer_{L}`) as its name says, or `L`, for messages.
pub(crate) fn layer_of(dir: &Path) -> &str {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("layer_"))
        .filter(|l| l.parse::<usize>().is_ok())
        .unwrap_or("L")
}

/// What to do about the flow folder `dir` when it cannot be read.
fn retrain(dir: &Path) -> String {
    format!(
        "retrain the layer with rf-train --layer {} (or convert its published flows again)",
        layer_of(dir)
    )
}

/// Path of class `c`'s weights in checkpoint directory `dir`.
pub fn class_file(dir: &Path, c: usize) -> PathBuf {
    dir.join(format!("flow_{c}.safetensors"))
}

/// The reference's mask rows: `[NUM_COUPLINGS, k]`, right mask on even rows, left on odd rows.
pub fn reference_masks(k: usize, kind: Kind) -> Tensor {
    let half = k / 2;
    let rows: Vec<f64> = (0..NUM_COUPLINGS)
        .flat_map(|i| {
            (0..k).map(move |j| {
                if (j >= half) == (i % 2 == 0) {
                    1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_slice(&rows)
        .view([NUM_COUPLINGS as i64, k as i64])
        .to_kind(kind)
}

/// Puts `used` at offset `used_lo` (of 0 or k/2) and `unused` in the other half along `dim`.
fn join_halves(used: &Tensor, unused: &Tensor, used_lo: usize, dim: i64) -> Tensor {
    if used_lo == 0 {
        Tensor::cat(&[used, unused], dim)
    } else {
        Tensor::cat(&[unused, used], dim)
    }
}

impl FlowModel {
    /// Class `c`'s flow as a state dict in the reference's names (CPU tensors, model kind).
    pub fn class_state_dict(&self, c: usize) -> Result<Vec<(String, Tensor)>> {
        let classes = self.meta.spec.num_classes;
        if c >= classes {
            return Err(Error::Shape(format!("class {c} out of range 0..{classes}")));
        }
        let (k, h) = (self.meta.k, self.meta.hidden as i64);
        let half = (k / 2) as i64;
        let cpu = |t: Tensor| t.detach().to_device(Device::Cpu).contiguous();
        let mut out = vec![("mask".to_string(), reference_masks(k, self.kind()))];
        for (net_name, net) in [("t", 1usize), ("s", 0usize)] {
            let row = (net * classes + c) as i64;
            for i in 0..NUM_COUPLINGS {
                let (p, f) = (&self.couplings[i], &self.frozen[i]);
                let (in_lo, out_lo) = coupling_halves(i, k);
                let prefix = format!("{net_name}.{i}");
                let w1 = join_halves(&p.w1.get(row), &f.w1.get(row), in_lo, 1);
                let w3 = join_halves(&p.w3.get(row), &f.w3.get(row), out_lo, 0);
                let b3 = join_halves(
                    &p.b3.get(row).view([half]),
                    &f.b3.get(row).view([half]),
                    out_lo,
                    0,
                );
                out.push((format!("{prefix}.fc1.weight"), cpu(w1)));
                out.push((format!("{prefix}.fc1.bias"), cpu(p.b1.get(row).view([h]))));
                out.push((format!("{prefix}.fc2.weight"), cpu(p.w2.get(row))));
                out.push((format!("{prefix}.fc2.bias"), cpu(p.b2.get(row).view([h]))));
                out.push((format!("{prefix}.fc3.weight"), cpu(w3)));
                out.push((format!("{prefix}.fc3.bias"), cpu(b3)));
                if net == 0 {
                    out.push((
                        format!("{prefix}.rescale.weight_g"),
                        cpu(p.g.get(c as i64).view([1, 1])),
                    ));
                    out.push((
                        format!("{prefix}.rescale.weight_v"),
                        cpu(p.v.get(c as i64).view([1, k as i64])),
                    ));
                }
            }
        }
        for j in 0..NUM_PERMUTATIONS {
            let perm = cpu(self.perms.get(j as i64).get(c as i64));
            let inv = perm.argsort(0, false);
            let eye = Tensor::eye(k as i64, (self.kind(), Device::Cpu));
            out.push((format!("perm.{j}.W"), eye.index_select(0, &perm)));
            out.push((format!("perm.{j}.perm"), perm));
            out.push((format!("perm.{j}.inv_perm"), inv));
        }
        out.push(("A_".to_string(), cpu(self.a_inv.shallow_clone())));
        out.push(("A".to_string(), cpu(self.a.shallow_clone())));
        Ok(out)
    }

    /// Writes `flow.json` and one safetensors file per class into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let meta_path = dir.join(META_FILE);
        let json = serde_json::to_string_pretty(&self.meta)
            .map_err(|e| Error::format(&meta_path, e.to_string()))?;
        std::fs::write(&meta_path, json).map_err(|e| Error::io(&meta_path, e))?;
        for c in 0..self.meta.spec.num_classes {
            let dict = self.class_state_dict(c)?;
            Tensor::write_safetensors(&dict, class_file(dir, c))?;
        }
        Ok(())
    }

    /// Reads a checkpoint directory written by [`FlowModel::save`] (or converted from the published
    /// PyTorch flows) into a model of `kind` on `device`.
    pub fn load(dir: &Path, kind: Kind, device: Device) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        if !meta_path.is_file() {
            return Err(Error::missing(
                &meta_path,
                "no trained flow here (never trained, or a copy without it); train the layer with \
                 rf-train",
            ));
        }
        let remedy = retrain(dir);
        let file: MetaFile = crate::io::read_json_with(&meta_path, &remedy)?;
        if file.spec.num_classes == 0 {
            return Err(Error::format(
                &meta_path,
                format!("`num_classes` is 0; {remedy}"),
            ));
        }
        let dicts = (0..file.spec.num_classes)
            .map(|c| {
                let path = class_file(dir, c);
                let named = crate::io::read_safetensors(&path, &remedy)?;
                Ok((path, named.into_iter().collect::<HashMap<_, _>>()))
            })
            .collect::<Result<Vec<_>>>()?;
        // A file that does not fit the others (missing tensors, other shapes, another layer's
        // whitening) is remade the same way.
        from_class_state_dicts(file, &dicts, kind, device).map_err(|e| match e {
            Error::Format { path, message } => Error::format(path, format!("{message}; {remedy}")),
            other => other,
        })
    }
}

/// The metadata file as read: a [`FlowMeta`] without the fields that the tensors determine
/// (converted published flows lack them), `log_abs_det_a_inv` optional.
#[derive(Debug, Deserialize)]
struct MetaFile {
    #[serde(flatten)]
    spec: FlowSpec,
    k: usize,
    #[serde(default)]
    log_abs_det_a_inv: Option<f64>,
}

fn from_class_state_dicts(
    file: MetaFile,
    dicts: &[(PathBuf, HashMap<String, Tensor>)],
    kind: Kind,
    device: Device,
) -> Result<FlowModel> {
    let (first_path, first) = dicts
        .first()
        .ok_or_else(|| Error::Shape("a flow checkpoint needs at least one class".into()))?;
    let get = |path: &Path, dict: &HashMap<String, Tensor>, name: &str| -> Result<Tensor> {
        dict.get(name)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| Error::format(path, format!("missing tensor `{name}`")))
    };
    let a_inv = get(first_path, first, "A_")?.to_kind(Kind::Double);
    let a = get(first_path, first, "A")?.to_kind(Kind::Double);
    let k = file.k;
    let (ka, d) = match a_inv.size().as_slice() {
        [ka, d] => (*ka as usize, *d as usize),
        other => {
            return Err(Error::format(
                first_path,
                format!("`A_` has shape {other:?}"),
            ))
        }
    };
    if ka != k {
        return Err(Error::format(
            first_path,
            format!("`A_` has {ka} rows but the metadata says k = {k}"),
        ));
    }
    let h = get(first_path, first, "s.0.fc1.weight")?.size()[0] as usize;
    let log_abs_det_a_inv = match file.log_abs_det_a_inv {
        Some(v) => v,
        None => f64::try_from(a_inv.svd(true, false).1.log().sum(Kind::Double))?,
    };
    let meta = FlowMeta {
        spec: file.spec,
        dim: d,
        k,
        hidden: h,
        log_abs_det_a_inv,
    };
    let masks = reference_masks(k, Kind::Double);
    let half = (k / 2) as i64;
    let mut perms: Vec<Vec<Tensor>> = (0..NUM_PERMUTATIONS).map(|_| Vec::new()).collect();
    for (path, dict) in dicts {
        let mask = get(path, dict, "mask")?.to_kind(Kind::Double);
        if mask.size() != masks.size() || !mask.equal(&masks) {
            return Err(Error::format(
                path,
                "`mask` is not the reference's alternating right/left halves",
            ));
        }
        for name in ["A_", "A"] {
            let (mine, firsts) = (
                get(path, dict, name)?.to_kind(Kind::Double),
                get(first_path, first, name)?,
            );
            let firsts = firsts.to_kind(Kind::Double);
            if mine.size() != firsts.size() || f64::try_from((&mine - &firsts).abs().max())? > 1e-6
            {
                return Err(Error::format(
                    path,
                    format!("`{name}` differs between classes"),
                ));
            }
        }
        for (j, list) in perms.iter_mut().enumerate() {
            let p = get(path, dict, &format!("perm.{j}.perm"))?.to_kind(Kind::Int64);
            let sorted = p.sort(0, false).0;
            if p.size() != [k as i64]
                || !sorted.equal(&Tensor::arange(k as i64, (Kind::Int64, Device::Cpu)))
            {
                return Err(Error::format(
                    path,
                    format!("`perm.{j}.perm` is not a permutation of 0..{k}"),
                ));
            }
            list.push(p);
        }
    }
    let mut couplings = Vec::with_capacity(NUM_COUPLINGS);
    let mut frozen = Vec::with_capacity(NUM_COUPLINGS);
    let dev = |t: Tensor| t.to_kind(kind).to_device(device).contiguous();
    for i in 0..NUM_COUPLINGS {
        let (in_lo, out_lo) = coupling_halves(i, k);
        let (in_lo, out_lo) = (in_lo as i64, out_lo as i64);
        let (masked_in, masked_out) = ((in_lo + half) % (2 * half), (out_lo + half) % (2 * half));
        let mut parts: HashMap<&str, Vec<Tensor>> = HashMap::new();
        for net in ["s", "t"] {
            for (path, dict) in dicts {
                let t = |n: &str| get(path, dict, &format!("{net}.{i}.{n}"));
                let w1 = t("fc1.weight")?;
                let w3 = t("fc3.weight")?;
                let b3 = t("fc3.bias")?;
                let checks = [
                    (&w1, vec![h as i64, k as i64]),
                    (&w3, vec![k as i64, h as i64]),
                    (&b3, vec![k as i64]),
                ];
                for (tensor, want) in checks {
                    if tensor.size() != want {
                        return Err(Error::format(
                            path,
                            format!(
                                "`{net}.{i}` layer has shape {:?}, expected {want:?}",
                                tensor.size()
                            ),
                        ));
                    }
                }
                let mut push = |key: &'static str, v: Tensor| parts.entry(key).or_default().push(v);
                push("w1", w1.narrow(1, in_lo, half));
                push("fw1", w1.narrow(1, masked_in, half));
                push("b1", t("fc1.bias")?.view([1, -1]));
                push("w2", t("fc2.weight")?);
                push("b2", t("fc2.bias")?.view([1, -1]));
                push("w3", w3.narrow(0, out_lo, half));
                push("fw3", w3.narrow(0, masked_out, half));
                push("b3", b3.narrow(0, out_lo, half).view([1, -1]));
                push("fb3", b3.narrow(0, masked_out, half).view([1, -1]));
                if net == "s" {
                    push("g", t("rescale.weight_g")?.view([1, 1]));
                    push("v", t("rescale.weight_v")?.view([1, -1]));
                }
            }
        }
        let mut stack = |key: &str| dev(Tensor::stack(&parts.remove(key).unwrap_or_default(), 0));
        couplings.push(CouplingParams {
            w1: stack("w1"),
            b1: stack("b1"),
            w2: stack("w2"),
            b2: stack("b2"),
            w3: stack("w3"),
            b3: stack("b3"),
            g: stack("g"),
            v: stack("v"),
        });
        frozen.push(CouplingFrozen {
            w1: stack("fw1"),
            w3: stack("fw3"),
            b3: stack("fb3"),
        });
    }
    let perms: Vec<Tensor> = perms.iter().map(|l| Tensor::stack(l, 0)).collect();
    let perms = Tensor::stack(&perms, 0).to_device(device);
    FlowModel::from_parts(meta, dev(a), dev(a_inv), perms, couplings, frozen)
}

impl FlowModel {
    /// A model of `kind` on `device` from `meta` and one state dict per class in the reference's
    /// names ([`FlowModel::class_state_dict`]), each with the path that names it in errors.
    pub fn from_state_dicts(
        meta: &FlowMeta,
        dicts: &[(PathBuf, HashMap<String, Tensor>)],
        kind: Kind,
        device: Device,
    ) -> Result<FlowModel> {
        let file = MetaFile {
            spec: meta.spec.clone(),
            k: meta.k,
            log_abs_det_a_inv: Some(meta.log_abs_det_a_inv),
        };
        from_class_state_dicts(file, dicts, kind, device)
    }
}
