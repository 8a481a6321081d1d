//! Shared flags: kebab-case names, the original snake_case spellings, defaults.
use crate::cli::CommonArgs;
use clap::Parser;
use resflow::models::NetType;

#[derive(Parser)]
struct Stage {
    #[command(flatten)]
    common: CommonArgs,
}

#[test]
fn original_snake_case_spellings_are_accepted() {
    let old = Stage::parse_from([
        "stage",
        "--dataset",
        "cifar10",
        "--net_type",
        "densenet",
        "--gpu",
        "1",
        "--batch_size",
        "20",
    ]);
    let new = Stage::parse_from([
        "stage",
        "--dataset",
        "cifar10",
        "--net-type",
        "densenet",
        "--gpu",
        "1",
        "--batch-size",
        "20",
    ]);
    for s in [old.common, new.common] {
        assert_eq!(s.dataset, "cifar10");
        assert_eq!(s.net_type, NetType::Densenet);
        assert_eq!(s.gpu, Some(1));
        assert_eq!(s.batch_size_or(7), 20);
    }
}

#[test]
fn defaults_are_the_offline_setup() {
    let s = Stage::parse_from(["stage"]).common;
    assert_eq!(
        (s.dataset.as_str(), s.net_type, s.gpu, s.seed),
        ("fashion-mnist", NetType::Resnet, None, 0)
    );
    assert_eq!(s.dataroot, std::path::PathBuf::from("data"));
    assert_eq!(s.outf, std::path::PathBuf::from("output"));
    assert_eq!(s.batch_size_or(7), 7);
    assert!(Stage::try_parse_from(["stage", "--net-type", "vgg"]).is_err());
}
