//! The classifier architectures, by name: the paper's two and TorchScript models.
use std::str::FromStr;

/// The classifier architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetType {
    /// ResNet-34 for 32x32 inputs.
    Resnet,
    /// DenseNet-BC-100.
    Densenet,
    /// Any TorchScript model with a JSON sidecar ([`crate::models::torchscript`]); its input
    /// size and feature layers come from the sidecar.
    TorchScript,
}

impl NetType {
    /// Every architecture, in the order the command line lists them.
    pub const ALL: [NetType; 3] = [NetType::Resnet, NetType::Densenet, NetType::TorchScript];

    /// The lowercase name used in file names and by the original scripts.
    pub fn name(self) -> &'static str {
        match self {
            NetType::Resnet => "resnet",
            NetType::Densenet => "densenet",
            NetType::TorchScript => "torchscript",
        }
    }

    /// Number of feature layers the detectors read (ResNet 5, DenseNet 4), whatever the width;
    /// `None` for TorchScript models (their sidecar says).
    pub fn num_layers(self) -> Option<usize> {
        match self {
            NetType::Resnet => Some(5),
            NetType::Densenet => Some(4),
            NetType::TorchScript => None,
        }
    }
}

impl std::fmt::Display for NetType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetType {
    type Err = String;

    /// Parses `resnet`, `densenet` or `torchscript` (any case).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        NetType::ALL
            .into_iter()
            .find(|n| n.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown network `{s}`; expected resnet, densenet or torchscript")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::NetType;

    #[test]
    fn names_parse_back_in_any_case() {
        for net in NetType::ALL {
            assert_eq!(net.name().parse::<NetType>(), Ok(net));
            assert_eq!(net.name().to_uppercase().parse::<NetType>(), Ok(net));
        }
        assert!("vgg"
            .parse::<NetType>()
            .unwrap_err()
            .contains("resnet, densenet or torchscript"));
        assert_eq!(
            (NetType::Resnet.num_layers(), NetType::Densenet.num_layers()),
            (Some(5), Some(4))
        );
    }
}
