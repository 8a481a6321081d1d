//! The bytes a CPU tensor's elements lie in, for the raw-pointer loops (`products`, `adam_cpu`)
//! to check that what they write is apart from everything else they touch.
use tch::Tensor;

/// The bytes `[first, end)` a tensor's elements lie in (libtorch's strides are never negative).
pub(super) fn span(t: &Tensor) -> (usize, usize) {
    let first = t.data_ptr() as usize;
    let last: i64 = t
        .size()
        .iter()
        .zip(t.stride())
        .map(|(&n, s)| (n - 1).max(0) * s)
        .sum();
    let bytes = t.kind().elt_size_in_bytes();
    (first, first + last as usize * bytes + bytes)
}

/// Whether two byte ranges `[first, end)` share a byte.
pub(super) fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}
