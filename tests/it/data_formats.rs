//! Readers of the canonical dataset formats: round trips through files written here (or by
//! scipy/numpy for the MATLAB format), and malformed files that must give errors naming the file.
use crate::common;

use std::path::{Path, PathBuf};

use common::{gzip, idx_bytes, write};

use resflow::data::{cifar, csv_images, folder, idx, svhn};
use tch::Tensor;

fn to_vec_u8(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(t.flatten(0, -1)).unwrap()
}

fn to_vec_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

fn assert_error_names(err: resflow::Error, path: &Path, needle: &str) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name {}: {text}",
        path.display()
    );
    assert!(text.contains(needle), "error lacks `{needle}`: {text}");
}

#[test]
fn idx_round_trip_raw_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 7) as u8).collect();
    for (name, bytes) in [
        ("raw-images", idx_bytes(&[2, 3, 4], &pixels)),
        ("gz-images.gz", gzip(&idx_bytes(&[2, 3, 4], &pixels))),
    ] {
        let path = dir.path().join(name);
        write(&path, &bytes);
        let images = idx::read_idx_images(&path).unwrap();
        assert_eq!(images.size(), [2, 3, 4]);
        assert_eq!(to_vec_u8(&images), pixels);
    }
    let path = dir.path().join("labels");
    write(&path, &idx_bytes(&[3], &[9, 0, 4]));
    assert_eq!(
        to_vec_i64(&idx::read_idx_labels(&path, 10).unwrap()),
        [9, 0, 4]
    );
}

#[test]
fn idx_malformed_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad_magic = dir.path().join("bad-magic");
    write(&bad_magic, &[0, 0, 9, 3, 0, 0, 0, 1]);
    assert_error_names(
        idx::read_idx_images(&bad_magic).unwrap_err(),
        &bad_magic,
        "magic",
    );

    let short = dir.path().join("short");
    write(&short, &idx_bytes(&[2, 28, 28], &[0; 100]));
    assert_error_names(
        idx::read_idx_images(&short).unwrap_err(),
        &short,
        "found 100",
    );

    let bad_label = dir.path().join("bad-label");
    write(&bad_label, &idx_bytes(&[3], &[1, 10, 2]));
    assert_error_names(
        idx::read_idx_labels(&bad_label, 10).unwrap_err(),
        &bad_label,
        "label 10",
    );

    let wrong_rank = dir.path().join("labels-as-images");
    write(&wrong_rank, &idx_bytes(&[3], &[1, 2, 3]));
    assert_error_names(
        idx::read_idx_images(&wrong_rank).unwrap_err(),
        &wrong_rank,
        "[N,H,W]",
    );

    let corrupt_gz = dir.path().join("corrupt.gz");
    let mut gz = gzip(&idx_bytes(&[3], &[1, 2, 3]));
    gz.truncate(gz.len() / 2);
    write(&corrupt_gz, &gz);
    assert_error_names(
        idx::read_idx_labels(&corrupt_gz, 10).unwrap_err(),
        &corrupt_gz,
        "gzip",
    );

    let missing = dir.path().join("nope");
    assert_error_names(
        idx::read_idx_images(&missing).unwrap_err(),
        &missing,
        "No such file",
    );
}

fn cifar_record(labels: &[u8], seed: u8) -> Vec<u8> {
    let mut rec = labels.to_vec();
    rec.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(3).wrapping_add(seed)));
    rec
}

#[test]
fn cifar_batches_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c10 = dir.path().join("data_batch_1.bin");
    write(
        &c10,
        &[cifar_record(&[3], 1), cifar_record(&[9], 2)].concat(),
    );
    let (x, y) = cifar::read_cifar_batch(&c10, cifar::CIFAR10).unwrap();
    assert_eq!(x.size(), [2, 3, 32, 32]);
    assert_eq!(to_vec_i64(&y), [3, 9]);
    // Record layout: 1024 red, then green, then blue, each row-major.
    let green_row1_col5 = 1024 + 32 + 5;
    assert_eq!(
        x.int64_value(&[1, 1, 1, 5]) as u8,
        cifar_record(&[9], 2)[1 + green_row1_col5]
    );

    let c100 = dir.path().join("train.bin");
    write(
        &c100,
        &[cifar_record(&[5, 77], 0), cifar_record(&[19, 99], 0)].concat(),
    );
    let (_, y) = cifar::read_cifar_batch(&c100, cifar::CIFAR100).unwrap();
    assert_eq!(to_vec_i64(&y), [77, 99], "CIFAR-100 uses the fine label");

    let (x, y) = cifar::read_cifar_batches(&[c10.clone(), c10.clone()], cifar::CIFAR10).unwrap();
    assert_eq!((x.size()[0], to_vec_i64(&y)), (4, vec![3, 9, 3, 9]));
}

#[test]
fn cifar_malformed_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.bin");
    let mut bytes = cifar_record(&[1], 0);
    bytes.truncate(3000);
    write(&short, &bytes);
    assert_error_names(
        cifar::read_cifar_batch(&short, cifar::CIFAR10).unwrap_err(),
        &short,
        "3073-byte",
    );

    let bad_label = dir.path().join("label.bin");
    write(&bad_label, &cifar_record(&[10], 0));
    assert_error_names(
        cifar::read_cifar_batch(&bad_label, cifar::CIFAR10).unwrap_err(),
        &bad_label,
        "label 10",
    );
}

/// Writes an SVHN-like `.mat` with scipy: X[h,w,c,n] = (7h + 3w + 50c + 11n) % 256, y = labels.
fn write_svhn_with_scipy(path: &Path, labels: &[i64], side: usize, compress: bool) {
    let script = format!(
        "import sys, numpy as np, scipy.io\n\
         n = {n}; s = {side}\n\
         h, w, c, k = np.meshgrid(np.arange(s), np.arange(s), np.arange(3), np.arange(n), indexing='ij')\n\
         X = ((7*h + 3*w + 50*c + 11*k) % 256).astype(np.uint8)\n\
         y = np.array({labels:?}, dtype=np.uint8).reshape(-1, 1)\n\
         scipy.io.savemat(sys.argv[1], {{'X': X, 'y': y}}, do_compression={compress})\n",
        n = labels.len(),
        compress = if compress { "True" } else { "False" },
    );
    common::run_python(&script, &[path]);
}

#[test]
fn svhn_mat_files_written_by_scipy_read_back() {
    let dir = tempfile::tempdir().unwrap();
    for compress in [false, true] {
        let path = dir.path().join(format!("test_32x32_{compress}.mat"));
        write_svhn_with_scipy(&path, &[10, 1, 5], 32, compress);
        let (x, y) = svhn::read_svhn_mat(&path).unwrap();
        assert_eq!(x.size(), [3, 3, 32, 32]);
        assert_eq!(to_vec_i64(&y), [0, 1, 5], "label 10 means digit 0");
        for (n, c, h, w) in [(0, 0, 0, 0), (1, 2, 5, 17), (2, 1, 31, 3), (2, 2, 30, 31)] {
            let expected = (7 * h + 3 * w + 50 * c + 11 * n) % 256;
            assert_eq!(
                x.int64_value(&[n, c, h, w]),
                expected,
                "pixel n={n} c={c} h={h} w={w}"
            );
        }
    }
}

#[test]
fn svhn_malformed_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.mat");
    write(&garbage, b"definitely not a MATLAB file, just some text that is long enough for a header ....................................................................");
    assert_error_names(
        svhn::read_svhn_mat(&garbage).unwrap_err(),
        &garbage,
        "MATLAB",
    );

    let wrong_size = dir.path().join("small.mat");
    write_svhn_with_scipy(&wrong_size, &[1, 2], 28, false);
    assert_error_names(
        svhn::read_svhn_mat(&wrong_size).unwrap_err(),
        &wrong_size,
        "32x32x3xN",
    );

    let bad_label = dir.path().join("label.mat");
    write_svhn_with_scipy(&bad_label, &[1, 11], 32, false);
    assert_error_names(
        svhn::read_svhn_mat(&bad_label).unwrap_err(),
        &bad_label,
        "label 11",
    );
}

#[test]
fn csv_images_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digits.csv.gz");
    let row = |label: u8| {
        let mut v: Vec<String> = (0..4).map(|i| format!("{}", i * 5)).collect();
        v.push(label.to_string());
        v.join(",")
    };
    write(&path, &gzip(format!("{}\n{}\n", row(3), row(7)).as_bytes()));
    let (x, y) = csv_images::read_csv_images(&path, 2, 10, 16.0).unwrap();
    assert_eq!(x.size(), [2, 2, 2]);
    assert_eq!(
        Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(),
        [0., 5., 10., 15., 0., 5., 10., 15.]
    );
    assert_eq!(to_vec_i64(&y), [3, 7]);

    let columns = dir.path().join("columns.csv");
    write(&columns, b"1,2,3\n");
    assert_error_names(
        csv_images::read_csv_images(&columns, 2, 10, 16.0).unwrap_err(),
        &columns,
        "3 columns",
    );
    let label = dir.path().join("label.csv");
    write(&label, b"1,2,3,4,12\n");
    assert_error_names(
        csv_images::read_csv_images(&label, 2, 10, 16.0).unwrap_err(),
        &label,
        "label 12",
    );
    let text = dir.path().join("text.csv");
    write(&text, b"1,2,x,4,1\n");
    assert_error_names(
        csv_images::read_csv_images(&text, 2, 10, 16.0).unwrap_err(),
        &text,
        "not a number",
    );
    // Issue 14, defect 9: NaN, infinities and out-of-range values are refused with their place
    // (a NaN used to defeat the range check on the whole tensor).
    for (bad, column) in [("nan", 2), ("inf", 3), ("-5000", 1), ("17", 4)] {
        let file = dir.path().join("range.csv");
        let mut values = ["1", "2", "3", "4"];
        values[column - 1] = bad;
        write(
            &file,
            format!("0,0,0,0,1\n{},1\n", values.join(",")).as_bytes(),
        );
        assert_error_names(
            csv_images::read_csv_images(&file, 2, 10, 16.0).unwrap_err(),
            &file,
            &format!("line 2, column {column}: pixel value"),
        );
    }
}

fn save_png(path: &Path, w: u32, h: u32, seed: u8) -> image::RgbImage {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 ^ seed, y as u8, seed]));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
    img
}

#[test]
fn image_folders_read_sorted_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let b = save_png(&dir.path().join("sub/b.png"), 32, 32, 2);
    let a = save_png(&dir.path().join("a.png"), 32, 32, 1);
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let x = folder::read_image_folder(dir.path(), 32).unwrap();
    assert_eq!(x.size(), [2, 3, 32, 32]);
    for (i, img) in [(0, &a), (1, &b)] {
        for (cx, cy) in [(0u32, 0u32), (5, 9), (31, 30)] {
            let p = img.get_pixel(cx, cy);
            for c in 0..3 {
                assert_eq!(
                    x.int64_value(&[i, c, cy as i64, cx as i64]),
                    p[c as usize] as i64
                );
            }
        }
    }
}

#[test]
fn image_folder_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_error_names(
        folder::read_image_folder(dir.path(), 32).unwrap_err(),
        dir.path(),
        "no .jpg",
    );
    save_png(&dir.path().join("ok.png"), 32, 32, 0);
    // Another size is resized and centre-cropped (issue 11), no longer an error.
    let big = dir.path().join("big.png");
    save_png(&big, 40, 32, 0);
    assert_eq!(
        folder::read_image_folder(dir.path(), 32).unwrap().size(),
        [2, 3, 32, 32]
    );
    std::fs::remove_file(&big).unwrap();
    let broken: PathBuf = dir.path().join("broken.jpg");
    write(&broken, b"\xff\xd8\xff not really a jpeg");
    assert_error_names(
        folder::read_image_folder(dir.path(), 32).unwrap_err(),
        &broken,
        "cannot decode",
    );
}
