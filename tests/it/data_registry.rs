//! The dataset registry over a small data root written here, batching and device choice.
use crate::common;

use std::path::Path;

use common::{idx_bytes, tiny_root, write};
use resflow::data::{self, registry, synthetic, Batches, Normalization, Split};
use resflow::device::select_device_with;
use tch::{Device, Kind, Tensor};

#[test]
fn fashion_mnist_is_padded_and_replicated() {
    let dir = tempfile::tempdir().unwrap();
    tiny_root(dir.path());
    let train = data::load("fashion-mnist", dir.path(), Split::Train).unwrap();
    assert_eq!((train.len(), train.num_classes), (3, 10));
    assert_eq!(Vec::<i64>::try_from(&train.labels).unwrap(), [4, 0, 9]);
    assert_eq!(train.images.size(), [3, 3, 32, 32]);
    for (n, r, c) in [(0i64, 0i64, 0i64), (1, 5, 7), (2, 27, 27)] {
        let raw = (n * 784 + r * 28 + c) % 251;
        for ch in 0..3 {
            assert_eq!(train.images.int64_value(&[n, ch, r + 2, c + 2]), raw);
        }
    }
    let border = train
        .images
        .narrow(2, 0, 2)
        .sum(Kind::Int64)
        .int64_value(&[])
        + train
            .images
            .narrow(3, 30, 2)
            .sum(Kind::Int64)
            .int64_value(&[]);
    assert_eq!(border, 0, "the 2-pixel frame is zero padding");
    let test = data::load("fashion-mnist", dir.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 2);
}

#[test]
fn offline_ood_sets_load() {
    let dir = tempfile::tempdir().unwrap();
    tiny_root(dir.path());
    let mnist = data::load("mnist", dir.path(), Split::Test).unwrap();
    assert_eq!(Vec::<i64>::try_from(&mnist.labels).unwrap(), [7, 2]);
    // Row 1, column 3 of the 28x28 image holds pixel index 31 (value 31), padded by 2.
    assert_eq!(mnist.images.int64_value(&[0, 1, 3, 5]), 31);

    let digits = data::load("digits", dir.path(), Split::Test).unwrap();
    assert_eq!(digits.images.size(), [1, 3, 32, 32]);
    // Bilinear upsampling of values scaled to 0..=255 stays in range and keeps the mean close.
    let mean = digits
        .images
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    let source_mean = (0..64).map(|i| (i % 17) as f64 * 255.0 / 16.0).sum::<f64>() / 64.0;
    assert!(
        (mean - source_mean).abs() < 8.0,
        "mean {mean} vs {source_mean}"
    );

    let photos = data::load("photos", dir.path(), Split::Test).unwrap();
    assert_eq!(photos.len(), registry::GENERATED_SET_SIZE);
    let again = data::load("photos", dir.path(), Split::Test).unwrap();
    assert!(
        photos.images.equal(&again.images),
        "photo crops are a fixed set"
    );
}

#[test]
fn photo_crops_are_windows_of_the_photo() {
    let photo = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let crops = synthetic::photo_crops(&[photo], 50, 1).unwrap();
    // Only the full-scale level exists (half would be 32 < 48): every crop is a window.
    for i in 0..50 {
        let x0 = crops.int64_value(&[i, 0, 0, 0]);
        let y0 = crops.int64_value(&[i, 1, 0, 0]);
        assert!(x0 <= 32 && y0 <= 32);
        assert_eq!(crops.int64_value(&[i, 0, 9, 31]), x0 + 31);
        assert_eq!(crops.int64_value(&[i, 1, 31, 9]), y0 + 31);
        assert_eq!(crops.int64_value(&[i, 2, 4, 4]), 7);
    }
    assert!(synthetic::photo_crops(&[image::RgbImage::new(40, 40)], 5, 1).is_none());
}

#[test]
fn noise_sets_are_seeded_with_the_documented_statistics() {
    let u = synthetic::uniform_noise(200, 3);
    assert!(u.equal(&synthetic::uniform_noise(200, 3)));
    assert!(!u.equal(&synthetic::uniform_noise(200, 4)));
    let mean = |t: &Tensor| t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) / 255.0;
    let std = |t: &Tensor| {
        (t.to_kind(Kind::Double) / 255.0)
            .std(true)
            .double_value(&[])
    };
    assert!((mean(&u) - 0.5).abs() < 0.01 && (std(&u) - (1.0f64 / 12.0).sqrt()).abs() < 0.01);
    let g = synthetic::gaussian_noise(200, 3);
    assert!(g.equal(&synthetic::gaussian_noise(200, 3)));
    // N(0.5, 0.25) clipped to [0, 1]: mean 0.5, std a little under 0.25.
    assert!((mean(&g) - 0.5).abs() < 0.01);
    assert!(std(&g) > 0.22 && std(&g) < 0.25, "std {}", std(&g));
}

#[test]
fn registry_errors_explain_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let err = data::load("cifar10", dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cifar-10-batches-bin/data_batch_1.bin") && err.contains("Expected layout"),
        "{err}"
    );
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    let err = data::load("svhn", dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(err.contains("svhn/test_32x32.mat"), "{err}");
    let err = data::load("cifar11", dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown dataset `cifar11`") && err.contains("fashion-mnist"),
        "{err}"
    );
    let err = data::load("mnist", dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no train split"), "{err}");
}

#[test]
fn mismatched_image_and_label_counts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    tiny_root(dir.path());
    let labels = dir.path().join("fashion-mnist/t10k-labels-idx1-ubyte");
    write(&labels, &idx_bytes(&[3], &[1, 2, 3]));
    let err = data::load("fashion-mnist", dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 labels for 2 images") && err.contains("t10k-labels"),
        "{err}"
    );
}

#[test]
fn batches_are_ordered_or_reproducibly_shuffled_and_normalised() {
    let images = Tensor::arange(6, (Kind::Uint8, Device::Cpu))
        .view([6, 1, 1, 1])
        .expand([6, 3, 32, 32], false)
        .contiguous();
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 0, 1]);
    let set = data::ImageSet::new("toy", Path::new("toy"), images, labels, 2).unwrap();
    let norm = Normalization {
        mean: [0.0, 0.5, 1.0],
        std: [1.0, 0.5, 2.0],
    };

    let ordered: Vec<_> = Batches::new(&set, norm, 4, Device::Cpu, None).collect();
    assert_eq!(
        ordered
            .iter()
            .map(|b| b.labels.size()[0])
            .collect::<Vec<_>>(),
        [4, 2]
    );
    let first_pixels: Vec<f64> = (0..4)
        .map(|i| ordered[0].images.double_value(&[i, 0, 0, 0]))
        .collect();
    assert_eq!(
        first_pixels,
        [0.0, 1.0 / 255.0, 2.0 / 255.0, 3.0 / 255.0].map(|v: f64| v as f32 as f64)
    );
    let g = ordered[1].images.double_value(&[1, 1, 3, 3]);
    assert!((g - (5.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    let b = ordered[1].images.double_value(&[1, 2, 3, 3]);
    assert!((b - (5.0 / 255.0 - 1.0) / 2.0).abs() < 1e-6);

    let order = |seed| -> Vec<i64> {
        Batches::new(&set, norm, 4, Device::Cpu, Some(seed))
            .flat_map(|b| {
                (0..b.images.size()[0])
                    .map(move |i| (b.images.double_value(&[i, 0, 0, 0]) * 255.0).round() as i64)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (a, b2, c) = (order(7), order(7), order(8));
    assert_eq!(a, b2, "same seed, same order");
    assert_ne!(a, c, "another seed, another order");
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2, 3, 4, 5], "a permutation of the set");
}

#[test]
fn device_choice_falls_back_to_cpu_with_a_notice() {
    let cpu = select_device_with(Some(1), false, 0);
    assert_eq!(cpu.device, Device::Cpu);
    assert!(cpu
        .notice
        .unwrap()
        .contains("--gpu 1 requested but CUDA is not available"));
    assert_eq!(select_device_with(Some(1), true, 2).device, Device::Cuda(1));
    assert_eq!(select_device_with(None, true, 1).device, Device::Cuda(0));
    let few = select_device_with(Some(3), true, 2);
    assert_eq!(few.device, Device::Cpu);
    assert!(few.notice.unwrap().contains("only 2 CUDA device(s)"));
    assert!(select_device_with(None, false, 0)
        .notice
        .unwrap()
        .contains("using the CPU"));
    // On this machine (no GPU) the real query must agree.
    if !tch::Cuda::is_available() {
        assert_eq!(resflow::device::select_device(Some(0)).device, Device::Cpu);
    }
}

#[test]
fn channel_stats_equal_a_direct_computation() {
    let images = synthetic::uniform_noise(5000, 9);
    let set = data::ImageSet::new(
        "u",
        Path::new("u"),
        images.shallow_clone(),
        Tensor::zeros([5000], (Kind::Int64, Device::Cpu)),
        1,
    )
    .unwrap();
    let stats = set.channel_stats();
    let x = images.to_kind(Kind::Double) / 255.0;
    for j in 0..3 {
        let c = x.select(1, j);
        assert!((stats.mean[j as usize] - c.mean(Kind::Double).double_value(&[])).abs() < 1e-12);
        assert!((stats.std[j as usize] - c.std(false).double_value(&[])).abs() < 1e-9);
    }
}

/// Issue 14, defect 11: `rf-data summary` exits non-zero when a data set exists but cannot be
/// read (it printed an ERROR row and exited 0); missing sets are not errors.
#[test]
fn summary_fails_on_unreadable_sets_only() {
    let dir = tempfile::tempdir().unwrap();
    let summary = |root: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rf-data"))
            .arg("summary")
            .arg("--dataroot")
            .arg(root)
            .output()
            .unwrap()
    };
    let out = summary(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dir.path().join("mnist")).unwrap();
    std::fs::write(dir.path().join("mnist/mnist_5k.csv"), b"not,numbers\n").unwrap();
    let out = summary(dir.path());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ERROR") && stdout.contains("mnist_5k.csv"),
        "{stdout}"
    );
    assert!(stderr.contains("could not be read"), "{stderr}");
}
