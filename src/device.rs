//! Choosing the compute device from the `--gpu` flag, and the CPU threads libtorch computes on.
use tch::{Cuda, Device};

/// The device a run uses, and a one-line notice when the request could not be honoured.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceChoice {
    /// The device to compute on.
    pub device: Device,
    /// Set when the user asked for a GPU that is not there and CPU is used instead.
    pub notice: Option<String>,
}

/// libtorch's intra-op thread count (`--threads`, `OMP_NUM_THREADS`), at least 1: the work the
/// CPU code of its own splits (lanes, Adam's loop, products) is shared out over that many threads.
pub fn libtorch_threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// Picks CUDA device `gpu` (device 0 when `gpu` is `None`) when it exists, else the CPU with a notice.
pub fn select_device(gpu: Option<usize>) -> DeviceChoice {
    select_device_with(
        gpu,
        Cuda::is_available(),
        Cuda::device_count().max(0) as usize,
    )
}

/// [`select_device`] with the CUDA facts given, so the choice can be tested without a GPU.
pub fn select_device_with(
    gpu: Option<usize>,
    cuda_available: bool,
    cuda_devices: usize,
) -> DeviceChoice {
    let index = gpu.unwrap_or(0);
    if cuda_available && index < cuda_devices {
        return DeviceChoice {
            device: Device::Cuda(index),
            notice: None,
        };
    }
    let reason = if !cuda_available {
        let build = if cfg!(feature = "cuda") {
            ""
        } else {
            " (built without the `cuda` feature)"
        };
        format!("CUDA is not available{build}")
    } else {
        format!("only {cuda_devices} CUDA device(s) found")
    };
    let asked = gpu
        .map(|i| format!("--gpu {i} requested but "))
        .unwrap_or_default();
    DeviceChoice {
        device: Device::Cpu,
        notice: Some(format!("{asked}{reason}; using the CPU.")),
    }
}

/// A short human-readable name of a device ("cpu", "cuda:0").
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
