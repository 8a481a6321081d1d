//! What the benchmarks against the Python reference-style loops share: the measured float32
//! matrix-product peak (libtorch's or the `gemm` crate's, whichever is faster here), the median
//! of the rounds, and running a Python script of `benches/` with the set-up's Python (the torch
//! whose libtorch `tch` links against).
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use resflow::detect::flow::products::batched_product;
use tch::{Device, Kind, Tensor};

/// The best GFLOP/s of `trials` timings of `reps` calls of `f`, each worth `flops`: the peak of
/// a shared machine is what its quietest moment reaches.
pub fn best_gflops(flops: f64, trials: usize, reps: usize, f: &dyn Fn()) -> f64 {
    f();
    (0..trials)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            flops * reps as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Float32 GFLOP/s of 1024^3 matrix products on this machine and thread count (best of 5 x 4
/// each): libtorch's (MKL, one product on all threads) and the `gemm` crate's, which the flows'
/// CPU training uses (one single-threaded product per thread at once, as in the trainer's lanes).
/// The better of the two is the peak the benchmarks report.
pub fn matmul_peaks() -> (f64, f64) {
    let n = 1024;
    let flops = 2.0 * (n * n * n) as f64;
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let libtorch = best_gflops(flops, 5, 4, &|| {
        let _ = a.matmul(&b);
    });
    // gemm as the trainer's lanes run it: one single-threaded product per thread, all at once.
    let threads = resflow::device::libtorch_threads();
    let operands: Vec<[Tensor; 3]> = (0..threads)
        .map(|_| {
            let out = Tensor::zeros([1, n, n], (Kind::Float, Device::Cpu));
            [out, a.unsqueeze(0).copy(), b.unsqueeze(0).copy()]
        })
        .collect();
    let gemm = best_gflops(flops * threads as f64, 5, 4, &|| {
        std::thread::scope(|scope| {
            for [out, a, b] in &operands {
                let [out, a, b] = [out, a, b].map(|t| t.shallow_clone());
                scope.spawn(move || {
                    batched_product(&out, &a, &b, false, 1).expect("a 1024^3 product")
                });
            }
        });
    });
    (libtorch, gemm)
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The set-up's Python: `RESFLOW_PYTHON` (set by the generated `.cargo/config.toml`), else the
/// venv under `RESFLOW_HOME` (default `~/.cache/resflow`).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("RESFLOW_PYTHON") {
        return p.into();
    }
    let home = std::env::var_os("RESFLOW_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/resflow")
        });
    home.join("venv/bin/python")
}

/// Runs `benches/{script}` with `args` and returns the one JSON line it prints.
pub fn run_python(script: &str, args: &[String]) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("start the set-up's Python (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON line from {}: {e}", path.display()))
}
