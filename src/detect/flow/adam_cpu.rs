//! [`super::adam::ClassAdam`]'s step on the CPU as one pass over memory.
//!
//! The tensor-operation step reads and writes the layer's parameters, moments and gradients
//! about ten times (a `cat` of the gradients, `lerp_`, `mul_`, a scaled copy, `addcmul_`, `sqrt`,
//! the coefficients, `addcdiv_`); at the CIFAR layers' sizes these buffers do not fit in cache
//! and the step is bound by memory traffic. Here every element is read and written once, rows
//! of the active classes only, split over the libtorch thread count. The arithmetic per element
//! is the tensor path's, in the parameters' precision:
//! `m += (1 - beta1) (g - m)` (`lerp` with a weight below 0.5), `v = beta2 v + ((1 - beta2) g) g`,
//! `p += m / (sqrt(v) scale + offset)` (see `update_coefficients`). The tensor path's `lerp`
//! kernel may fuse its multiply-add, so the two agree to rounding, not bit for bit.
use super::adam::AdamConfig;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// The element types the loop handles (float32 and float64 tensors).
trait Element:
    Copy
    + Send
    + Sync
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    fn of(x: f64) -> Self;
    fn sqrt(self) -> Self;
}

impl Element for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Element for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// One parameter row to update: the addresses where its parameter, moment and gradient
/// elements start (in tensors that [`step`] keeps alive; no two rows overlap), its length, its
/// coefficients.
#[derive(Clone, Copy)]
struct Row {
    p: usize,
    m: usize,
    v: usize,
    g: usize,
    len: usize,
    scale: f64,
    offset: f64,
}

/// Whether the loop can run: CPU tensors of one floating kind, every parameter, moment and
/// gradient defined, contiguous (gradients are made contiguous by [`step`]).
pub(super) fn applies(params: &[&Tensor], m: &[Tensor], v: &[Tensor], grads: &[Tensor]) -> bool {
    let kind = match params.first() {
        Some(p) => p.kind(),
        None => return false,
    };
    matches!(kind, Kind::Float | Kind::Double)
        && params
            .iter()
            .copied()
            .chain(m)
            .chain(v)
            .all(|t| t.device() == Device::Cpu && t.kind() == kind && t.is_contiguous())
        && grads
            .iter()
            .all(|g| g.defined() && g.device() == Device::Cpu && g.kind() == kind)
}

/// Updates the rows of the classes in `active` (row `r` of a parameter belongs to class `r % C`,
/// `C = coefficients.len()`) with each class's `(scale, offset)`. Call only where [`applies`].
pub(super) fn step(
    params: &[&Tensor],
    m: &[Tensor],
    v: &[Tensor],
    grads: &[Tensor],
    active: &[usize],
    coefficients: &[(f64, f64)],
    config: AdamConfig,
) -> Result<()> {
    let c = coefficients.len();
    let mut is_active = vec![false; c];
    for &a in active {
        is_active[a] = true;
    }
    let grads: Vec<Tensor> = grads.iter().map(|g| g.contiguous()).collect();
    let elem = params.first().map_or(4, |p| p.kind().elt_size_in_bytes());
    let mut rows = Vec::new();
    for (((p, g), m), v) in params.iter().zip(&grads).zip(m).zip(v) {
        let n = p.numel();
        if g.numel() != n || m.numel() != n || v.numel() != n {
            return Err(Error::Invalid(format!(
                "Adam: gradient of {} elements for a parameter of {n}",
                g.numel()
            )));
        }
        let count = p.size().first().copied().unwrap_or(1).max(1) as usize;
        let len = n / count;
        let starts = [p, m, v, g].map(|t| t.data_ptr() as usize);
        for r in 0..count {
            let class = r % c;
            if !is_active[class] {
                continue;
            }
            let at = r * len * elem;
            let (scale, offset) = coefficients[class];
            rows.push(Row {
                p: starts[0] + at,
                m: starts[1] + at,
                v: starts[2] + at,
                g: starts[3] + at,
                len,
                scale,
                offset,
            });
        }
    }
    match params.first().map(|p| p.kind()) {
        Some(Kind::Double) => run::<f64>(&rows, config),
        _ => run::<f32>(&rows, config),
    }
    // `grads` (the contiguous copies the rows point into) lives until here.
    drop(grads);
    Ok(())
}

/// Splits `rows` into runs of about equal length, one per libtorch thread, and updates them.
fn run<T: Element>(rows: &[Row], config: AdamConfig) {
    let total: usize = rows.iter().map(|r| r.len).sum();
    // Below this many elements per thread, starting the thread costs more than it saves.
    const PER_THREAD: usize = 1 << 17;
    let threads = crate::device::libtorch_threads().min(total / PER_THREAD + 1);
    if threads <= 1 {
        rows.iter().for_each(|r| update_row::<T>(r, config));
        return;
    }
    let share = total.div_ceil(threads);
    let mut groups: Vec<&[Row]> = Vec::with_capacity(threads);
    let (mut start, mut sum) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        sum += r.len;
        if sum >= share {
            groups.push(&rows[start..=i]);
            (start, sum) = (i + 1, 0);
        }
    }
    if start < rows.len() {
        groups.push(&rows[start..]);
    }
    std::thread::scope(|scope| {
        for group in groups {
            scope.spawn(move || group.iter().for_each(|r| update_row::<T>(r, config)));
        }
    });
}

/// The update of one row (see the module docs).
fn update_row<T: Element>(row: &Row, config: AdamConfig) {
    // SAFETY: see `Row`: four live, non-overlapping buffers of `row.len` elements of type T
    // (checked by `applies`: one kind, contiguous; the gradient copy is contiguous).
    let (p, m, v, g) = unsafe {
        (
            std::slice::from_raw_parts_mut(row.p as *mut T, row.len),
            std::slice::from_raw_parts_mut(row.m as *mut T, row.len),
            std::slice::from_raw_parts_mut(row.v as *mut T, row.len),
            std::slice::from_raw_parts(row.g as *const T, row.len),
        )
    };
    let (w, b2, c2) = (
        T::of(1.0 - config.beta1),
        T::of(config.beta2),
        T::of(1.0 - config.beta2),
    );
    let (scale, offset) = (T::of(row.scale), T::of(row.offset));
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        let m_new = *m + w * (g - *m);
        let v_new = *v * b2 + g * c2 * g;
        *p = *p + m_new / (v_new.sqrt() * scale + offset);
        *m = m_new;
        *v = v_new;
    }
}
