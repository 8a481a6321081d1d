//! What identifies a layer's flow: sizes, the hidden width rule and the reference's defaults.
use serde::{Deserialize, Serialize};

/// Number of affine coupling layers of every flow.
pub const NUM_COUPLINGS: usize = 10;
/// Number of fixed permutations (one after every even coupling).
pub const NUM_PERMUTATIONS: usize = NUM_COUPLINGS / 2;

/// The reference's `length_hidden` for a (network, data set, layer), lowered where it ran out of
/// memory on an 11 GB GPU (`docs/method.md#hidden-width`); 1 elsewhere.
pub fn default_length_hidden(net: &str, dataset: &str, layer: usize) -> f64 {
    match (net, dataset, layer) {
        ("densenet", "cifar100", 3) => 0.5,
        ("resnet", "cifar100", 4) => 0.2,
        ("resnet", "svhn", 4) => 0.5,
        _ => 1.0,
    }
}

/// The hidden width `floor(length_hidden * k)` (Python's `int(length_hidden * num_features)`).
pub fn hidden_size(length_hidden: f64, k: usize) -> usize {
    (length_hidden * k as f64) as usize
}

/// What identifies a layer's flow before it is made (the sizes come from the whitening).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowSpec {
    /// Number of classes (one flow each).
    pub num_classes: usize,
    /// The `length_hidden` the hidden width is derived from (see [`default_length_hidden`]).
    pub length_hidden: f64,
    /// Feature layer index.
    pub layer: usize,
    /// Network name (`resnet`, `densenet`, ...).
    pub net: String,
    /// In-distribution data set name.
    pub dataset: String,
}

/// The description of a layer's flow, stored as JSON (`flow.json`) next to the per-class
/// weights: its [`FlowSpec`] and what the whitening gave it.
///
/// The JSON is flat, the spec's fields among the others, in the order of [`META_FIELDS`] (the
/// names `scripts/convert_weights.py` writes too); it reads in any order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FlowMeta {
    /// Classes, `length_hidden`, layer, network and data set.
    #[serde(flatten)]
    pub spec: FlowSpec,
    /// Feature dimension of the layer (`C_l`).
    pub dim: usize,
    /// Whitened dimension (even).
    pub k: usize,
    /// Hidden width of the s- and t-nets.
    pub hidden: usize,
    /// `log |det A_inv|` of the whitening (not part of the reference's state dict).
    pub log_abs_det_a_inv: f64,
}

/// The fields of `flow.json` in the order [`FlowMeta`] writes them.
pub const META_FIELDS: [&str; 9] = [
    "num_classes",
    "dim",
    "k",
    "hidden",
    "length_hidden",
    "layer",
    "net",
    "dataset",
    "log_abs_det_a_inv",
];

impl FlowMeta {
    /// The same description for `num_classes` classes (a range of the layer's classes, or
    /// several ranges joined).
    pub fn with_num_classes(&self, num_classes: usize) -> FlowMeta {
        FlowMeta {
            spec: FlowSpec {
                num_classes,
                ..self.spec.clone()
            },
            ..self.clone()
        }
    }
}

impl Serialize for FlowMeta {
    /// The flat object of [`META_FIELDS`], in that order (the layout `flow.json` always had).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let [num_classes, dim, k, hidden, length_hidden, layer, net, dataset, log_abs_det_a_inv] =
            META_FIELDS;
        let spec = &self.spec;
        let mut out = serializer.serialize_struct("FlowMeta", META_FIELDS.len())?;
        out.serialize_field(num_classes, &spec.num_classes)?;
        out.serialize_field(dim, &self.dim)?;
        out.serialize_field(k, &self.k)?;
        out.serialize_field(hidden, &self.hidden)?;
        out.serialize_field(length_hidden, &spec.length_hidden)?;
        out.serialize_field(layer, &spec.layer)?;
        out.serialize_field(net, &spec.net)?;
        out.serialize_field(dataset, &spec.dataset)?;
        out.serialize_field(log_abs_det_a_inv, &self.log_abs_det_a_inv)?;
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `flow.json` as every earlier version wrote it: the same bytes out, the same meta in.
    #[test]
    fn the_meta_file_keeps_its_layout() {
        let text = r#"{
  "num_classes": 3,
  "dim": 8,
  "k": 6,
  "hidden": 3,
  "length_hidden": 0.5,
  "layer": 2,
  "net": "resnet",
  "dataset": "cifar10",
  "log_abs_det_a_inv": -1.25
}"#;
        let meta = FlowMeta {
            spec: FlowSpec {
                num_classes: 3,
                length_hidden: 0.5,
                layer: 2,
                net: "resnet".into(),
                dataset: "cifar10".into(),
            },
            dim: 8,
            k: 6,
            hidden: 3,
            log_abs_det_a_inv: -1.25,
        };
        assert_eq!(serde_json::to_string_pretty(&meta).unwrap(), text);
        assert_eq!(serde_json::from_str::<FlowMeta>(text).unwrap(), meta);
        let two = meta.with_num_classes(2);
        assert_eq!((two.spec.num_classes, two.spec.layer, two.k), (2, 2, 6));
    }
}
