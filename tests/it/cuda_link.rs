//! The `cuda` feature keeps `libtorch_cuda.so` linked (the linker's `--as-needed` would drop it and
//! CUDA would never initialise on a GPU machine); the default build does not need it.
//! Checked with `readelf -d` and `ldd` on a binary built both ways.
use std::path::{Path, PathBuf};
use std::process::Command;

fn needed_libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf (binutils) is needed");
    assert!(
        out.status.success(),
        "readelf failed on {}",
        binary.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            l.split('[')
                .nth(1)
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect()
}

/// Builds `rf-data` with the given extra cargo arguments in its own target folder; returns the binary.
fn build_rf_data(target: &Path, args: &[&str]) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--profile",
            "link-check",
            "--bin",
            "rf-data",
            "--target-dir",
        ])
        .arg(target)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "cargo build {args:?} failed");
    target.join("link-check/rf-data")
}

/// The `--features cuda` build of `rf-data`: the one `scripts/test.sh` builds in the shared
/// target folder before `cargo test` (path in `RF_DATA_CUDA`), else a nested build here, in a
/// target folder of its own because the outer `cargo test` holds the lock of its own (slow: it
/// compiles every dependency again).
fn cuda_rf_data() -> PathBuf {
    match std::env::var_os("RF_DATA_CUDA") {
        Some(p) => PathBuf::from(p),
        None => {
            let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/link-check");
            build_rf_data(&base.join("cuda"), &["--features", "cuda"])
        }
    }
}

#[test]
fn cuda_feature_links_libtorch_cuda_and_default_build_does_not() {
    let cuda = cuda_rf_data();
    let needed = needed_libraries(&cuda);
    assert!(
        needed.iter().any(|l| l == "libtorch_cuda.so"),
        "cuda build NEEDED: {needed:?}"
    );

    let ldd = Command::new("ldd")
        .arg(&cuda)
        .output()
        .expect("ldd is needed");
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let line = ldd
        .lines()
        .find(|l| l.contains("libtorch_cuda.so"))
        .expect("ldd lists libtorch_cuda.so");
    assert!(
        !line.contains("not found"),
        "libtorch_cuda.so does not resolve: {line}"
    );

    let cpu = Path::new(env!("CARGO_BIN_EXE_rf-data"));
    let needed = needed_libraries(cpu);
    assert!(needed.iter().any(|l| l == "libtorch_cpu.so"), "{needed:?}");
    assert!(
        !needed.iter().any(|l| l == "libtorch_cuda.so"),
        "default build NEEDED: {needed:?}"
    );
}
