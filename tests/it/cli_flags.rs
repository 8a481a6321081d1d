//! Shared flags: kebab-case names, the original snake_case spellings, defaults.
use clap::Parser;
use resflow::cli::CommonArgs;
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

/// Issue 14, defect 8: a zero batch size is refused by every stage's parser (it used to become 1
/// silently in prepare, mahalanobis and score).
#[test]
fn a_zero_batch_size_is_refused() {
    let e = Stage::try_parse_from(["stage", "--batch-size", "0"])
        .err()
        .expect("--batch-size 0 is refused");
    assert!(e.to_string().contains("--batch-size"), "{e}");
    assert!(Stage::try_parse_from(["stage", "--batch_size", "1"]).is_ok());
}

/// Issue 14, defect 8: the flow's learning rate, batch size and monitoring period are checked
/// before any work, with the flag named.
#[test]
fn flow_training_settings_are_checked_up_front() {
    use resflow::detect::flow::FlowTrainConfig;
    for lr in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
        let c = FlowTrainConfig {
            lr,
            ..Default::default()
        };
        let e = c.check().unwrap_err();
        assert!(
            matches!(&e, resflow::Error::BadOption { option, .. } if option == "--lr"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("--lr: must be a finite positive number"),
            "{e}"
        );
    }
    let c = FlowTrainConfig {
        monitor_every: 0,
        ..Default::default()
    };
    assert!(c
        .check()
        .unwrap_err()
        .to_string()
        .contains("--monitor-every"));
    assert!(FlowTrainConfig::default().check().is_ok());
}

/// Issue 13: every stage takes `--threads N` (its share of a shared machine's cores); zero is
/// refused with the flag named, and the default leaves libtorch's choice alone.
#[test]
fn threads_are_a_common_flag() {
    assert_eq!(
        Stage::parse_from(["stage", "--threads", "3"])
            .common
            .threads,
        Some(3)
    );
    assert_eq!(Stage::parse_from(["stage"]).common.threads, None);
    let e = Stage::try_parse_from(["stage", "--threads", "0"])
        .err()
        .expect("--threads 0 is refused");
    assert!(e.to_string().contains("--threads"), "{e}");
}
