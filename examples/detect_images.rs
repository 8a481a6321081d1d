//! Use a fitted detector from another Rust program: load a bundle written by `rf-detect fit` and
//! say of each image whether it is out of distribution for the classifier.
//!
//! Usage: `detect_images BUNDLE IMAGE...`, e.g. after `scripts/demo.sh`:
//! `cargo run --release --example detect_images -- output/resnet_fashion-mnist/bundle output/resnet_fashion-mnist/samples/mnist_00000.png`
use std::path::PathBuf;

use resflow::bundle::OodDetector;

fn main() -> resflow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((bundle, images)) = args.split_first() else {
        eprintln!("usage: detect_images BUNDLE IMAGE...");
        std::process::exit(2);
    };
    // The bundle's default detector (the residual flow when it has one), on the CPU.
    let detector = OodDetector::load(bundle.as_ref(), None, None, tch::Device::Cpu)?;
    let files: Vec<PathBuf> = images.iter().map(PathBuf::from).collect();
    let scores = detector.score_files(&files)?;
    for (i, file) in files.iter().enumerate() {
        println!(
            "{}: class {} (p = {:.3}), {} score {:.4}, in-distribution percentile {:.1}: {}",
            file.display(),
            scores.predicted[i],
            scores.probability[i],
            detector.detector().kind.label(),
            scores.score[i],
            scores.percentile[i],
            if scores.ood[i] {
                "OOD"
            } else {
                "in-distribution"
            }
        );
    }
    Ok(())
}
