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
use super::adam_config::AdamConfig;
use super::memory_spans::span;
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
/// elements start (in tensors that [`step`] keeps alive and has checked: one kind, contiguous,
/// what it writes apart from everything else, see [`check_apart`]), its length, its
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

/// Whether [`step`]'s loop can run: CPU tensors of one floating kind, every parameter, moment and
/// gradient defined, contiguous (gradients are made contiguous by [`step`]).
pub(super) fn cpu_loop_applies(
    params: &[&Tensor],
    m: &[Tensor],
    v: &[Tensor],
    grads: &[Tensor],
) -> bool {
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
/// `C = coefficients.len()`) with each class's `(scale, offset)`.
///
/// A safe function over raw pointers: it checks what the loop's soundness rests on rather than
/// leaving it to the caller, since the checks cost little next to the pass over memory (a few
/// hundred tensors' properties and one sort of their spans per step). It errors unless
/// [`cpu_loop_applies`] (one floating kind, so the element type is right; contiguous, so each
/// tensor's rows are consecutive and apart), unless each moment and gradient has its parameter's
/// number of elements, and unless every parameter and moment lies apart in memory from every
/// other tensor it gets ([`check_apart`]; gradients may share memory with each other, they are
/// only read). What it cannot see is another thread writing these tensors through other handles
/// during the step, as with any in-place libtorch operation.
pub(super) fn step(
    params: &[&Tensor],
    m: &[Tensor],
    v: &[Tensor],
    grads: &[Tensor],
    active: &[usize],
    coefficients: &[(f64, f64)],
    config: AdamConfig,
) -> Result<()> {
    if !cpu_loop_applies(params, m, v, grads) {
        return Err(Error::Shape(
            "Adam's CPU loop needs defined, contiguous CPU tensors of one kind, float32 or float64"
                .into(),
        ));
    }
    let c = coefficients.len();
    let mut is_active = vec![false; c];
    for &a in active {
        is_active[a] = true;
    }
    let grads: Vec<Tensor> = grads.iter().map(|g| g.contiguous()).collect();
    check_apart(params, m, v, &grads)?;
    let elem = params.first().map_or(4, |p| p.kind().elt_size_in_bytes());
    let mut rows = Vec::new();
    for (((p, g), m), v) in params.iter().zip(&grads).zip(m).zip(v) {
        let n = p.numel();
        if g.numel() != n || m.numel() != n || v.numel() != n {
            return Err(Error::Shape(format!(
                "Adam: gradient of {} elements for a parameter of {n}",
                g.numel()
            )));
        }
        if n == 0 {
            continue;
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

/// Errors unless every parameter and moment tensor lies apart in memory from every other tensor
/// of the step (the gradients, only read, may overlap each other): then no two rows that
/// [`update_row`] writes, or writes and reads, share an element, also across threads. Empty
/// tensors hold no rows and are left out. The counts and lengths match (checked by the caller).
fn check_apart(params: &[&Tensor], m: &[Tensor], v: &[Tensor], grads: &[Tensor]) -> Result<()> {
    let written = params.iter().copied().chain(m).chain(v).map(|t| (t, true));
    let read = grads.iter().map(|t| (t, false));
    let mut spans: Vec<((usize, usize), bool)> = written
        .chain(read)
        .filter(|(t, _)| t.numel() > 0)
        .map(|(t, writes)| (span(t), writes))
        .collect();
    spans.sort_unstable_by_key(|&(s, _)| s);
    // Sorted by start, a span meets an earlier one exactly when it starts before that one's end.
    let (mut end_any, mut end_written) = (0, 0);
    for &((start, end), writes) in &spans {
        if start < end_written || (writes && start < end_any) {
            return Err(Error::Shape(
                "Adam's CPU loop: a parameter or moment shares memory with another tensor of the \
                 step"
                    .into(),
            ));
        }
        end_any = end_any.max(end);
        if writes {
            end_written = end_written.max(end);
        }
    }
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
    // SAFETY: see `Row`: four live buffers of `row.len` elements of type T (checked by `step`
    // through `cpu_loop_applies`: one kind, contiguous; the gradient copy is contiguous), the three
    // written ones apart from every other row's buffers (checked by `check_apart`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_that_share_memory_with_a_written_one_are_refused() {
        let opts = (Kind::Float, Device::Cpu);
        let new = || Tensor::zeros([2, 3], opts);
        let (p, m, v, g) = (new(), new(), new(), new().ones_like());
        let config = AdamConfig::with_lr(0.1);
        let coefficients = [(-1.0, 1.0)];
        let step_with = |params: &[&Tensor], m: &[Tensor], v: &[Tensor], g: &[Tensor]| {
            step(params, m, v, g, &[0], &coefficients, config)
        };
        let one = |t: &Tensor| vec![t.shallow_clone()];
        assert!(step_with(&[&p], &one(&m), &one(&v), &one(&g)).is_ok());
        // A parameter as its own gradient, a moment as both moments.
        assert!(step_with(&[&p], &one(&m), &one(&v), &one(&p)).is_err());
        assert!(step_with(&[&p], &one(&m), &one(&m), &one(&g)).is_err());
        // Two parameters over overlapping parts of one buffer; adjacent parts are apart.
        let flat = Tensor::zeros([12], opts);
        let view = |at: i64| flat.narrow(0, at, 6).view([2, 3]);
        // The gradients, only read, may share memory.
        let pair = || [new(), new()];
        let grads = [g.shallow_clone(), g.shallow_clone()];
        assert!(step_with(&[&view(0), &view(6)], &pair(), &pair(), &grads).is_ok());
        assert!(step_with(&[&view(0), &view(4)], &pair(), &pair(), &grads).is_err());
        // Another kind than float32 or float64.
        let half = new().to_kind(Kind::Half);
        let halves = |t: &Tensor| vec![t.to_kind(Kind::Half)];
        assert!(step_with(&[&half], &halves(&m), &halves(&v), &halves(&g)).is_err());
    }
}
