//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python of the setup's venv (with torch, numpy, safetensors, scikit-learn, scipy).
/// `scripts/setup.sh` records it as `RESFLOW_PYTHON` in the generated cargo config.
pub fn python() -> PathBuf {
    let path = std::env::var_os("RESFLOW_PYTHON")
        .map(PathBuf::from)
        .expect("RESFLOW_PYTHON is not set: run scripts/setup.sh first (it writes .cargo/config.toml)");
    assert!(path.exists(), "RESFLOW_PYTHON={} does not exist: rerun scripts/setup.sh", path.display());
    path
}

/// Runs a Python script (source text) with `args` in the setup's venv; panics with its stderr on failure.
/// Returns its standard output.
pub fn run_python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("cannot start the setup's Python");
    assert!(
        out.status.success(),
        "python script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed non-UTF-8")
}
