//! Batched matrix products of CPU tensors through the `gemm` crate, for the flow's explicit
//! training pass (`backprop`).
//!
//! libtorch multiplies float32 matrices with MKL, which runs its AVX2 kernels on AMD processors;
//! `gemm` picks AVX-512 kernels at run time wherever the CPU has them (AVX2 or SSE elsewhere) and
//! multiplies the flow's products 25-40% faster on an AMD Zen 4 (README "Performance").
use super::memory_spans::{overlaps, span};
use crate::error::{Error, Result};
use gemm::{gemm, Parallelism};
use tch::{Device, Kind, Tensor};

/// `dst[n] = lhs[n % L] · rhs[n % R]`, or `dst[n] += ...` with `accumulate`, for every `n` of
/// `dst`'s batch, where `L` and `R` are the batch sizes of `lhs` and `rhs` (each divides `dst`'s).
///
/// All three are 3-D CPU tensors of one kind, float32 or float64, with any strides: a transposed
/// view is multiplied as the transpose. `dst` needs distinct elements (no expanded dimensions)
/// and memory apart from both factors: a destination whose span of memory meets a factor's, even
/// interleaved with it, is refused. `threads` above 1 splits each product over that many rayon
/// tasks, with the same result bit for bit.
pub fn batched_product(
    dst: &Tensor,
    lhs: &Tensor,
    rhs: &Tensor,
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    let (ds, ls, rs) = (dst.size(), lhs.size(), rhs.size());
    let fits = ds.len() == 3
        && ls.len() == 3
        && rs.len() == 3
        && ls[0] > 0
        && rs[0] > 0
        && ds[0] % ls[0] == 0
        && ds[0] % rs[0] == 0
        && ls[1] == ds[1]
        && rs[2] == ds[2]
        && ls[2] == rs[1];
    if !fits {
        return Err(Error::Shape(format!(
            "batched product: {ls:?} x {rs:?} does not fit into {ds:?}"
        )));
    }
    let kind = dst.kind();
    let on_cpu = [dst, lhs, rhs].iter().all(|t| t.device() == Device::Cpu);
    if !on_cpu || lhs.kind() != kind || rhs.kind() != kind {
        return Err(Error::Shape(format!(
            "batched product: needs CPU tensors of one kind, got {:?}, {:?}, {:?}",
            dst.kind(),
            lhs.kind(),
            rhs.kind()
        )));
    }
    if dst.stride().iter().zip(&ds).any(|(&s, &n)| s == 0 && n > 1) {
        return Err(Error::Shape(
            "batched product: the destination has an expanded dimension".into(),
        ));
    }
    let (span_dst, span_lhs, span_rhs) = (span(dst), span(lhs), span(rhs));
    if overlaps(span_dst, span_lhs) || overlaps(span_dst, span_rhs) {
        return Err(Error::Shape(
            "batched product: the destination overlaps a factor".into(),
        ));
    }
    match kind {
        Kind::Float => run::<f32>(dst, lhs, rhs, accumulate, threads),
        Kind::Double => run::<f64>(dst, lhs, rhs, accumulate, threads),
        other => {
            return Err(Error::Shape(format!(
                "batched product: {other:?} tensors, expected float32 or float64"
            )))
        }
    }
    Ok(())
}

/// [`batched_product`] on element type `T` (checked by the caller).
fn run<T: Copy + 'static + From<f32>>(
    dst: &Tensor,
    lhs: &Tensor,
    rhs: &Tensor,
    accumulate: bool,
    threads: usize,
) {
    let (ds, dt, lt, rt) = (dst.size(), dst.stride(), lhs.stride(), rhs.stride());
    let (lb, rb) = (lhs.size()[0], rhs.size()[0]);
    let (m, n, k) = (ds[1] as usize, ds[2] as usize, lhs.size()[2] as usize);
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let (d0, l0, r0) = (
        dst.data_ptr() as *mut T,
        lhs.data_ptr() as *const T,
        rhs.data_ptr() as *const T,
    );
    for batch in 0..ds[0] {
        // SAFETY: the offsets stay inside each tensor (index < size along every dimension, times
        // the tensor's own strides), the kinds were checked to be `T`, and `dst` has distinct
        // elements and a memory span apart from both factors' (checked), so the writes alias
        // nothing that is read.
        unsafe {
            let d = d0.offset((batch * dt[0]) as isize);
            let l = l0.offset(((batch % lb) * lt[0]) as isize);
            let r = r0.offset(((batch % rb) * rt[0]) as isize);
            gemm(
                m,
                n,
                k,
                d,
                dt[2] as isize,
                dt[1] as isize,
                accumulate,
                l,
                lt[2] as isize,
                lt[1] as isize,
                r,
                rt[2] as isize,
                rt[1] as isize,
                T::from(1.0),
                T::from(1.0),
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dst[n] = lhs[n % L] rhs[n % R]` by libtorch's `matmul` on the broadcast factors.
    fn expected(lhs: &Tensor, rhs: &Tensor, batch: i64) -> Tensor {
        let pick = |t: &Tensor| {
            let idx: Vec<i64> = (0..batch).map(|n| n % t.size()[0]).collect();
            t.index_select(0, &Tensor::from_slice(&idx))
        };
        pick(lhs).matmul(&pick(rhs))
    }

    #[test]
    fn products_match_libtorch_for_strided_and_broadcast_factors() {
        tch::manual_seed(3);
        for kind in [Kind::Double, Kind::Float] {
            let opts = (kind, Device::Cpu);
            let tol = if kind == Kind::Double { 1e-12 } else { 1e-4 };
            // Plain factors, a transposed left factor, a transposed right factor broadcast over
            // a batch twice its own.
            let lhs = Tensor::randn([4, 5, 7], opts);
            let lhs_t = Tensor::randn([4, 7, 5], opts).transpose(1, 2);
            let rhs = Tensor::randn([4, 7, 3], opts);
            let rhs_half_t = Tensor::randn([2, 3, 7], opts).transpose(1, 2);
            for (l, r) in [(&lhs, &rhs), (&lhs_t, &rhs), (&lhs, &rhs_half_t)] {
                let want = expected(l, r, 4);
                let dst = Tensor::zeros([4, 5, 3], opts);
                batched_product(&dst, l, r, false, 1).unwrap();
                let err = f64::try_from((&dst - &want).abs().max()).unwrap();
                assert!(err < tol, "{kind:?}: max error {err}");
                // Accumulating adds the product again; two rayon tasks give the same values.
                batched_product(&dst, l, r, true, 2).unwrap();
                let err = f64::try_from((&dst - &want * 2.0).abs().max()).unwrap();
                assert!(err < 2.0 * tol, "{kind:?} accumulated: max error {err}");
            }
        }
    }

    #[test]
    fn products_split_over_threads_are_bitwise_those_of_one_thread() {
        // Reproducible training with --seed: splitting a product over rayon tasks must not
        // change its summation order.
        tch::manual_seed(4);
        let opts = (Kind::Float, Device::Cpu);
        let (lhs, rhs) = (
            Tensor::randn([2, 300, 700], opts),
            Tensor::randn([2, 700, 260], opts),
        );
        let one = Tensor::zeros([2, 300, 260], opts);
        batched_product(&one, &lhs, &rhs, false, 1).unwrap();
        for threads in [2, 3] {
            let split = Tensor::zeros([2, 300, 260], opts);
            batched_product(&split, &lhs, &rhs, false, threads).unwrap();
            assert!(split.equal(&one), "{threads} threads");
        }
    }

    #[test]
    fn mismatched_products_are_refused() {
        let opts = (Kind::Float, Device::Cpu);
        let dst = Tensor::zeros([4, 5, 3], opts);
        let lhs = Tensor::zeros([4, 5, 7], opts);
        let bad_inner = Tensor::zeros([4, 6, 3], opts);
        let bad_batch = Tensor::zeros([3, 7, 3], opts);
        let wrong_kind = Tensor::zeros([4, 7, 3], (Kind::Double, Device::Cpu));
        for rhs in [&bad_inner, &bad_batch, &wrong_kind] {
            assert!(batched_product(&dst, &lhs, rhs, false, 1).is_err());
        }
        let expanded = Tensor::zeros([4, 5, 1], opts).expand([4, 5, 3], false);
        let rhs = Tensor::zeros([4, 7, 3], opts);
        assert!(batched_product(&expanded, &lhs, &rhs, false, 1).is_err());
        // A destination sharing memory with a factor.
        let square = Tensor::zeros([4, 5, 5], opts);
        let rhs = Tensor::zeros([4, 5, 5], opts);
        assert!(batched_product(&square, &square, &rhs, false, 1).is_err());
        let both = Tensor::zeros([4, 5, 10], opts);
        let (left, right) = (both.narrow(2, 0, 5), both.narrow(2, 5, 5));
        assert!(batched_product(&left, &right, &rhs, false, 1).is_err());
    }
}
