//! The Mahalanobis detector's scores (SPEC section 7): tied-covariance class scores of every layer
//! with input pre-processing, one score file per (OOD set, magnitude).
use ndarray::Array2;
use tch::Tensor;

use crate::artefacts::{mahalanobis_path, write_scores, ScoreFile, FGSM};
use crate::data::BatchSource;
use crate::error::Result;
use crate::features::LayerStats;
use crate::gaussian::mahalanobis_scores;
use crate::progress::Progress;
use crate::stage::{ScoredInputs, ScoringStage};

/// Per magnitude, the `[N, L]` matrix of per-layer Mahalanobis scores (max over classes) of `set`.
pub fn layer_scores(
    stage: &ScoringStage,
    stats: &[LayerStats],
    set: BatchSource<'_>,
    magnitudes: &[f64],
    progress: &mut dyn Progress,
) -> Result<Vec<Array2<f64>>> {
    let mut columns: Vec<Vec<Tensor>> = magnitudes.iter().map(|_| Vec::new()).collect();
    for (l, layer) in stats.iter().enumerate() {
        let means = layer.means.to_device(stage.device);
        let precision = layer.precision.to_device(stage.device);
        let score = |f: &Tensor| mahalanobis_scores(f, &means, &precision);
        let per_eps = stage.score_layer(set, l, magnitudes, &score, progress)?;
        for (store, s) in columns.iter_mut().zip(per_eps) {
            store.push(s.max_dim(1, false).0);
        }
    }
    columns
        .iter()
        .map(|cols| to_array2(&Tensor::stack(cols, 1)))
        .collect()
}

/// A float64 `[R, C]` tensor as an ndarray matrix.
pub fn to_array2(t: &Tensor) -> Result<Array2<f64>> {
    let (rows, cols) = (t.size()[0] as usize, t.size()[1] as usize);
    let data = Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).contiguous().view(-1))?;
    Ok(Array2::from_shape_vec((rows, cols), data).expect("shape matches the data"))
}

/// Scores the test split and every prepared OOD set, writing one file per (OOD set, magnitude)
/// under `run` (see [`crate::artefacts`]). The test split is scored once for all OOD sets. With
/// `fgsm`, also scores the FGSM sets and writes the `fgsm` files (adversarial rows first).
pub fn run(
    stage: &ScoringStage,
    magnitudes: &[f64],
    progress: &mut dyn Progress,
) -> Result<Vec<String>> {
    let ScoredInputs {
        manifest,
        test,
        oods,
    } = stage.inputs()?;
    let run = &stage.run;
    let stats = (0..manifest.layer_channels.len())
        .map(|l| LayerStats::load(&stage.features.stats_path(l)))
        .collect::<Result<Vec<_>>>()?;
    let mut score = |set: BatchSource<'_>| layer_scores(stage, &stats, set, magnitudes, progress);
    let in_dist = score((&test).into())?;
    let mut written = Vec::new();
    for ood in &oods {
        let out = score(ood.into())?;
        for ((eps, o), i) in magnitudes.iter().zip(out).zip(&in_dist) {
            write_scores(
                &mahalanobis_path(run, &ood.name, *eps),
                &ScoreFile::from_parts(o, i.clone())?,
            )?;
        }
        written.push(ood.name.clone());
    }
    if let Some(sets) = &stage.fgsm {
        let [clean, noisy, adv] = sets.named().map(|s| score(s.into()));
        for (eps, ((a, c), n)) in magnitudes
            .iter()
            .zip(adv?.into_iter().zip(clean?).zip(noisy?))
        {
            write_scores(
                &mahalanobis_path(run, FGSM, *eps),
                &ScoreFile::fgsm_from_parts(a, c, n)?,
            )?;
        }
        written.push(FGSM.to_string());
    }
    Ok(written)
}
