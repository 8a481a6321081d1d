//! Any classifier as a TorchScript module (`torch.jit.save`) with a JSON sidecar: the user's own
//! model, exported by `scripts/export_torchscript.py`.
//!
//! The contract (also in the README, "Your own model and data"):
//! - `forward(x)` returns the logits `[N, classes]` of normalised images `x` `[N,3,S,S]`;
//! - `feature_list(x)` returns `(logits, [f_0, ..., f_{L-1}])`, the activations of the chosen
//!   layers, each `[N,C_l,H_l,W_l]` or `[N,C_l]`, in one pass (the reference's `feature_list`);
//! - the sidecar (`model.json` next to `model.pt`) gives the input side `S`, the normalisation,
//!   the class names, the feature layers' names and, optionally, the module path of the final
//!   linear layer (for the baselines that need it) and the training set's name.
//!
//! One layer's activation for the input gradient of pre-processing
//! ([`Classifier::intermediate_forward`]) is taken from `feature_list`: every layer is computed
//! and one kept, which costs the deeper layers' forward pass but needs nothing more of the model.
use std::path::Path;

use tch::jit::{CModule, IValue};
use tch::{Device, Kind, Tensor};

use super::{layer_error, Classifier, NetType};
use crate::data::Normalization;
use crate::error::{Error, Result};

/// The sidecar's `format` value.
pub const SIDECAR_FORMAT: &str = "resflow-torchscript-1";

/// The JSON sidecar of a TorchScript classifier.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchScriptMeta {
    /// Always [`SIDECAR_FORMAT`].
    pub format: String,
    /// A name for the model (e.g. `resnet18`), for the user's records.
    pub name: String,
    /// Side `S` of the square inputs `[N,3,S,S]`.
    pub input_size: i64,
    /// Per-channel mean of the input normalisation (pixels in [0, 1]).
    pub mean: [f64; 3],
    /// Per-channel standard deviation of the input normalisation.
    pub std: [f64; 3],
    /// Class names, in the order of the logits.
    pub class_names: Vec<String>,
    /// Names of the feature layers, in the order `feature_list` returns them.
    pub feature_layers: Vec<String>,
    /// Module path of the final linear layer (`{path}.weight` `[classes, d]`, `{path}.bias`), whose
    /// input is the mean-pooled last feature layer; needed by MSP, ODIN, Energy, MaxLogit and ViM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_head: Option<String>,
    /// Name of the training set (checked against `--dataset` when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
}

impl TorchScriptMeta {
    /// Reads and checks a sidecar.
    pub fn read(path: &Path) -> Result<TorchScriptMeta> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = format!(
                "cannot read the TorchScript model's sidecar ({e}); write it with \
                 scripts/export_torchscript.py"
            );
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::missing(path, message)
            } else {
                Error::format(path, message)
            }
        })?;
        let meta: TorchScriptMeta = serde_json::from_str(&text).map_err(|e| {
            Error::format(
                path,
                format!(
                    "not a TorchScript model sidecar ({e}): truncated, corrupt or of another \
                         version; write it again with scripts/export_torchscript.py"
                ),
            )
        })?;
        let problem = if meta.format != SIDECAR_FORMAT {
            Some(format!(
                "format must be \"{SIDECAR_FORMAT}\", found \"{}\"",
                meta.format
            ))
        } else if meta.input_size < 1 {
            Some(format!(
                "input_size must be positive, found {}",
                meta.input_size
            ))
        } else if meta.std.iter().any(|s| !(*s > 0.0 && s.is_finite()))
            || meta.mean.iter().any(|m| !m.is_finite())
        {
            Some("mean must be finite and std positive".to_string())
        } else if meta.class_names.is_empty() {
            Some("class_names is empty".to_string())
        } else if meta.feature_layers.is_empty() {
            Some("feature_layers is empty".to_string())
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::format(path, p)),
            None => Ok(meta),
        }
    }

    /// The input normalisation.
    pub fn normalization(&self) -> Normalization {
        Normalization {
            mean: self.mean,
            std: self.std,
        }
    }
}

/// A TorchScript classifier that follows the contract of this module, checked at load time.
#[derive(Debug)]
pub struct TorchScriptClassifier {
    module: CModule,
    meta: TorchScriptMeta,
    channels: Vec<i64>,
    head: Option<(Tensor, Tensor)>,
}

impl TorchScriptClassifier {
    /// Loads `model` and its sidecar `sidecar` onto `device` (eval mode, parameters frozen), then
    /// runs `feature_list` once on a zero batch at the sidecar's input size to check the model
    /// against the sidecar: class count, layer count and input size. Errors name the file and
    /// what disagrees.
    pub fn load(model: &Path, sidecar: &Path, device: Device) -> Result<TorchScriptClassifier> {
        let meta = TorchScriptMeta::read(sidecar)?;
        let mut module = CModule::load_on_device(model, device).map_err(|e| {
            Error::format(
                model,
                format!(
                    "not a TorchScript archive ({}); export the model with \
                     scripts/export_torchscript.py",
                    first_line(&e.to_string())
                ),
            )
        })?;
        module.set_eval();
        let parameters = module.named_parameters()?;
        for (_, p) in &parameters {
            let _ = p.shallow_clone().set_requires_grad(false);
        }
        let mut classifier = TorchScriptClassifier {
            module,
            meta,
            channels: Vec::new(),
            head: None,
        };
        classifier.check(model, sidecar, device)?;
        if let Some(path) = &classifier.meta.linear_head {
            let find = |suffix: &str| {
                let name = format!("{path}.{suffix}");
                parameters
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| t.detach())
                    .ok_or_else(|| {
                        Error::format(
                            sidecar,
                            format!("linear_head `{path}`: the model has no parameter `{name}`"),
                        )
                    })
            };
            let (w, b) = (find("weight")?, find("bias")?);
            let classes = classifier.num_classes();
            let last = *classifier.channels.last().expect("at least one layer");
            if w.size() != [classes, last] || b.size() != [classes] {
                return Err(Error::format(
                    sidecar,
                    format!(
                        "linear_head's weight is {:?} and bias {:?}, expected [{classes}, {last}] \
                         and [{classes}] (classes, channels of the last feature layer)",
                        w.size(),
                        b.size()
                    ),
                ));
            }
            classifier.head = Some((w, b));
        }
        Ok(classifier)
    }

    /// The sidecar.
    pub fn meta(&self) -> &TorchScriptMeta {
        &self.meta
    }

    /// Runs the model once and records the layers' channels; errors say how model and sidecar
    /// disagree.
    fn check(&mut self, model: &Path, sidecar: &Path, device: Device) -> Result<()> {
        let side = self.meta.input_size;
        let x = Tensor::zeros([2, 3, side, side], (Kind::Float, device));
        let (logits, features) = tch::no_grad(|| self.call_feature_list(&x)).map_err(|e| {
            Error::format(
                model,
                format!(
                    "{e} (on a [2,3,{side},{side}] input, the sidecar's input_size; if the model \
                     takes another size, correct input_size in {})",
                    sidecar.display()
                ),
            )
        })?;
        let classes = self.meta.class_names.len() as i64;
        if logits.size() != [2, classes] {
            return Err(Error::format(
                sidecar,
                format!(
                    "the sidecar lists {classes} classes, but the model's logits are {:?}; \
                     correct class_names",
                    logits.size()
                ),
            ));
        }
        if features.len() != self.meta.feature_layers.len() {
            return Err(Error::format(
                sidecar,
                format!(
                    "the sidecar names {} feature layers ({}), but the model's feature_list \
                     returns {}; correct feature_layers or re-export the model",
                    self.meta.feature_layers.len(),
                    self.meta.feature_layers.join(", "),
                    features.len()
                ),
            ));
        }
        self.channels = features.iter().map(|f| f.size()[1]).collect();
        Ok(())
    }

    /// `feature_list(x)` of the module, activations as `[N,C,H,W]` (`[N,C]` becomes `[N,C,1,1]`).
    fn call_feature_list(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let out = self
            .module
            .method_is("feature_list", &[IValue::Tensor(x.shallow_clone())])
            .map_err(|e| {
                let message = first_line(&e.to_string());
                Error::Shape(if message.contains("feature_list") {
                    format!(
                        "the model has no usable `feature_list` method ({message}); export it \
                         with scripts/export_torchscript.py"
                    )
                } else {
                    format!("the model's feature_list failed: {message}")
                })
            })?;
        let contract = || {
            Error::Shape(
                "feature_list must return (logits, list of feature tensors); export the model \
                 with scripts/export_torchscript.py"
                    .to_string(),
            )
        };
        let IValue::Tuple(mut parts) = out else {
            return Err(contract());
        };
        if parts.len() != 2 {
            return Err(contract());
        }
        let features = match parts.pop() {
            Some(IValue::TensorList(list)) => list,
            Some(IValue::GenericList(list)) => list
                .into_iter()
                .map(|v| match v {
                    IValue::Tensor(t) => Ok(t),
                    _ => Err(contract()),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(contract()),
        };
        let Some(IValue::Tensor(logits)) = parts.pop() else {
            return Err(contract());
        };
        let features = features
            .into_iter()
            .map(|f| match f.dim() {
                4 => Ok(f),
                2 => Ok(f.unsqueeze(-1).unsqueeze(-1)),
                d => Err(Error::Shape(format!(
                    "feature_list returned a {d}-dimensional feature {:?}; each must be \
                     [N,C,H,W] or [N,C]",
                    f.size()
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((logits, features))
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

impl Classifier for TorchScriptClassifier {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        self.module
            .forward_ts(&[x])
            .expect("the TorchScript model's forward failed on a checked input")
    }

    fn feature_list(&self, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        self.call_feature_list(x)
            .expect("feature_list was checked when the model was loaded")
    }

    fn intermediate_forward(&self, x: &Tensor, layer: usize) -> Result<Tensor> {
        if layer >= self.channels.len() {
            return Err(layer_error(
                NetType::TorchScript,
                layer,
                self.channels.len(),
            ));
        }
        let (_, mut features) = self.call_feature_list(x)?;
        Ok(features.swap_remove(layer))
    }

    fn input_side(&self) -> i64 {
        self.meta.input_size
    }

    fn layer_channels(&self) -> Vec<i64> {
        self.channels.clone()
    }

    fn num_classes(&self) -> i64 {
        self.meta.class_names.len() as i64
    }

    fn linear_head(&self) -> Result<(Tensor, Tensor)> {
        self.head
            .as_ref()
            .map(|(w, b)| (w.shallow_clone(), b.shallow_clone()))
            .ok_or_else(|| {
                Error::bad_option(
                    "linear_head",
                    "this TorchScript model's sidecar names none, which MSP, ODIN, Energy, \
                     MaxLogit and ViM need; add the module path of the final linear layer (e.g. \
                     \"fc\") or re-export with scripts/export_torchscript.py",
                )
            })
    }

    fn net_type(&self) -> NetType {
        NetType::TorchScript
    }
}
