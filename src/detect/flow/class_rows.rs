//! Tensors stacked by class along their first dimension, and the flow models made of them, cut
//! into ranges of classes and joined back: how the trainer's lanes (see [`super::Trainer`]) share
//! out a layer's flows and state.
//!
//! A class-stacked tensor has `reps * C` rows, copy-major: row `r * C + c` belongs to class `c`
//! (the flows' s- and t-net weights have two copies, rescales and Adam moments of those one or two).
use super::config::NUM_COUPLINGS;
use super::model::{CouplingFrozen, CouplingParams, FlowModel};
use crate::error::{Error, Result};
use std::ops::Range;
use tch::Tensor;

/// `(reps, trailing sizes)` of a class-stacked `t` of `num_classes` classes.
fn layout(t: &Tensor, num_classes: usize) -> Result<(i64, Vec<i64>)> {
    let size = t.size();
    let rows = size.first().copied().unwrap_or(0);
    let c = num_classes as i64;
    if c == 0 || rows == 0 || rows % c != 0 {
        return Err(Error::Shape(format!(
            "a tensor of shape {size:?} is not stacked by {num_classes} classes"
        )));
    }
    Ok((rows / c, size[1..].to_vec()))
}

/// The rows of classes `range` of `t` (of `num_classes` classes) as a new contiguous tensor
/// without gradient tracking.
pub fn select(t: &Tensor, num_classes: usize, range: Range<usize>) -> Result<Tensor> {
    if range.start >= range.end || range.end > num_classes {
        return Err(Error::Shape(format!(
            "class range {range:?} is empty or not within 0..{num_classes}"
        )));
    }
    let (reps, rest) = layout(t, num_classes)?;
    let len = (range.end - range.start) as i64;
    let grouped: Vec<i64> = [reps, num_classes as i64]
        .into_iter()
        .chain(rest.iter().copied())
        .collect();
    let out: Vec<i64> = [reps * len].into_iter().chain(rest).collect();
    Ok(tch::no_grad(|| {
        t.detach()
            .reshape(grouped.as_slice())
            .narrow(1, range.start as i64, len)
            .contiguous()
            .view(out.as_slice())
    }))
}

/// Joins class-stacked `parts` of `counts[i]` classes each, in order, into one tensor of all
/// their classes (the inverse of [`select`] over consecutive ranges), without gradient tracking.
pub fn join(parts: &[&Tensor], counts: &[usize]) -> Result<Tensor> {
    if parts.is_empty() || parts.len() != counts.len() {
        return Err(Error::Shape(format!(
            "{} parts for {} class counts",
            parts.len(),
            counts.len()
        )));
    }
    let mut grouped = Vec::with_capacity(parts.len());
    let mut shape: Option<(i64, Vec<i64>)> = None;
    for (t, &c) in parts.iter().zip(counts) {
        let (reps, rest) = layout(t, c)?;
        match &shape {
            Some(s) if *s != (reps, rest.clone()) => {
                return Err(Error::Shape(format!(
                    "class-stacked parts of shapes {:?} and {:?} do not join",
                    parts[0].size(),
                    t.size()
                )))
            }
            _ => shape = Some((reps, rest.clone())),
        }
        let dims: Vec<i64> = [reps, c as i64].into_iter().chain(rest).collect();
        grouped.push(t.detach().view(dims.as_slice()));
    }
    let (reps, rest) = shape.unwrap_or_default();
    let total: usize = counts.iter().sum();
    let out: Vec<i64> = [reps * total as i64].into_iter().chain(rest).collect();
    Ok(tch::no_grad(|| {
        Tensor::cat(&grouped, 1).view(out.as_slice())
    }))
}

/// Consecutive class ranges, at most `lanes` of them and none empty, covering `0..counts.len()`
/// with about equal sums of `counts` (the classes' training rows): a range ends once its sum
/// reaches its share of what the earlier ranges left.
pub fn balanced_ranges(counts: &[usize], lanes: usize) -> Vec<Range<usize>> {
    let c = counts.len();
    let lanes = lanes.clamp(1, c.max(1));
    let mut ranges = Vec::with_capacity(lanes);
    let mut start = 0;
    let mut left: usize = counts.iter().sum();
    for lane in 0..lanes {
        let lanes_left = lanes - lane;
        if lanes_left == 1 {
            ranges.push(start..c);
            break;
        }
        let share = left.div_ceil(lanes_left);
        let mut end = start;
        let mut sum = 0;
        // Leave at least one class for each later lane.
        while end < c - (lanes_left - 1) && (end == start || sum + counts[end] <= share) {
            sum += counts[end];
            end += 1;
        }
        ranges.push(start..end);
        left -= sum;
        start = end;
    }
    ranges
}

impl FlowModel {
    /// The flows of classes `range` as a model of their own: new tensors without gradient
    /// tracking (`A` and `A_inv` shared).
    pub fn select_classes(&self, range: Range<usize>) -> Result<FlowModel> {
        let c = self.meta.spec.num_classes;
        let pick = |t: &Tensor| select(t, c, range.clone());
        let couplings = self
            .couplings
            .iter()
            .map(|p| Ok(CouplingParams::from_tensors(try_map(p.tensors(), pick)?)))
            .collect::<Result<_>>()?;
        let frozen = self
            .frozen
            .iter()
            .map(|f| Ok(CouplingFrozen::from_tensors(try_map(f.tensors(), pick)?)))
            .collect::<Result<_>>()?;
        let len = (range.end - range.start) as i64;
        let perms = self.perms.narrow(1, range.start as i64, len).contiguous();
        FlowModel::from_parts(
            self.meta.with_num_classes(range.len()),
            self.a.shallow_clone(),
            self.a_inv.shallow_clone(),
            perms,
            couplings,
            frozen,
        )
    }

    /// Joins models of consecutive class ranges of one layer (as from
    /// [`FlowModel::select_classes`]) into the model of all their classes, without gradient
    /// tracking (`A` and `A_inv` are the first part's).
    pub fn join_classes(parts: &[&FlowModel]) -> Result<FlowModel> {
        let first = parts
            .first()
            .ok_or_else(|| Error::Shape("no flows to join".into()))?;
        let counts: Vec<usize> = parts.iter().map(|p| p.meta.spec.num_classes).collect();
        let couplings = (0..NUM_COUPLINGS)
            .map(|i| {
                let tensors = join_each(parts, &counts, |p| p.couplings[i].tensors())?;
                Ok(CouplingParams::from_tensors(tensors))
            })
            .collect::<Result<_>>()?;
        let frozen = (0..NUM_COUPLINGS)
            .map(|i| {
                let tensors = join_each(parts, &counts, |p| p.frozen[i].tensors())?;
                Ok(CouplingFrozen::from_tensors(tensors))
            })
            .collect::<Result<_>>()?;
        let perms: Vec<&Tensor> = parts.iter().map(|p| &p.perms).collect();
        FlowModel::from_parts(
            first.meta.with_num_classes(counts.iter().sum()),
            first.a.shallow_clone(),
            first.a_inv.shallow_clone(),
            Tensor::cat(&perms, 1),
            couplings,
            frozen,
        )
    }
}

/// `f` applied to every element of an array, stopping at the first error.
fn try_map<T, const N: usize>(
    items: [T; N],
    f: impl Fn(T) -> Result<Tensor>,
) -> Result<[Tensor; N]> {
    let mut out = Vec::with_capacity(N);
    for item in items {
        out.push(f(item)?);
    }
    out.try_into()
        .map_err(|_| Error::Shape("array length changed".into()))
}

/// For each of the `N` tensors `get` gives of a model, the parts' tensors joined by
/// [`join`] (parts of `counts[i]` classes each).
fn join_each<const N: usize>(
    parts: &[&FlowModel],
    counts: &[usize],
    get: impl Fn(&FlowModel) -> [&Tensor; N],
) -> Result<[Tensor; N]> {
    let each: [Vec<&Tensor>; N] =
        std::array::from_fn(|n| parts.iter().map(|p| get(p)[n]).collect());
    try_map(each, |tensors| join(&tensors, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn select_then_join_gives_the_tensor_back() {
        // 2 copies of 5 classes, rows of 3: row r * 5 + c holds 100 r + 10 c + j.
        let t = Tensor::from_slice(
            &(0..2)
                .flat_map(|r| {
                    (0..5).flat_map(move |c| (0..3).map(move |j| (100 * r + 10 * c + j) as f64))
                })
                .collect::<Vec<_>>(),
        )
        .view([10, 1, 3]);
        let a = select(&t, 5, 0..2).unwrap();
        let b = select(&t, 5, 2..5).unwrap();
        assert_eq!(a.size(), [4, 1, 3]);
        let rows = |x: &Tensor| Vec::<f64>::try_from(x.select(2, 0).reshape([-1])).unwrap();
        assert_eq!(rows(&a), [0.0, 10.0, 100.0, 110.0]);
        assert_eq!(rows(&b), [20.0, 30.0, 40.0, 120.0, 130.0, 140.0]);
        let back = join(&[&a, &b], &[2, 3]).unwrap();
        assert!(back.equal(&t));
        assert!(select(&t, 5, 4..6).is_err());
        assert!(select(&t, 3, 0..1).is_err());
        let other = Tensor::zeros([2, 1, 4], (Kind::Double, Device::Cpu));
        assert!(join(&[&a, &other], &[2, 1]).is_err());
    }

    #[test]
    fn ranges_balance_the_rows() {
        assert_eq!(balanced_ranges(&[10; 10], 2), [0..5, 5..10]);
        assert_eq!(balanced_ranges(&[10; 10], 3), [0..3, 3..6, 6..10]);
        assert_eq!(balanced_ranges(&[10; 3], 8), [0..1, 1..2, 2..3]);
        assert_eq!(balanced_ranges(&[90, 5, 5], 2), [0..1, 1..3]);
        assert_eq!(balanced_ranges(&[5, 5, 90], 2), [0..2, 2..3]);
        assert_eq!(balanced_ranges(&[4, 4], 1), vec![0..2usize; 1]);
    }
}
