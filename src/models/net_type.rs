//! The classifier architectures of the paper, by name.
use std::str::FromStr;

/// The classifier architectures of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetType {
    /// ResNet-34 for 32x32 inputs.
    Resnet,
    /// DenseNet-BC-100.
    Densenet,
}

impl NetType {
    /// Every architecture, in the order the command line lists them.
    pub const ALL: [NetType; 2] = [NetType::Resnet, NetType::Densenet];

    /// The lowercase name used in file names and by the original scripts.
    pub fn name(self) -> &'static str {
        match self {
            NetType::Resnet => "resnet",
            NetType::Densenet => "densenet",
        }
    }

    /// Number of feature layers the detectors read (ResNet 5, DenseNet 4), whatever the width.
    pub fn num_layers(self) -> usize {
        match self {
            NetType::Resnet => 5,
            NetType::Densenet => 4,
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

    /// Parses `resnet` or `densenet` (any case).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        NetType::ALL
            .into_iter()
            .find(|n| n.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown network `{s}`; expected resnet or densenet"))
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
            .contains("resnet or densenet"));
        assert_eq!(
            (NetType::Resnet.num_layers(), NetType::Densenet.num_layers()),
            (5, 4)
        );
    }
}
