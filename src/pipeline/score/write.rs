//! Scoring every set with one fitted detector ([`score`]) and writing its score folder: the score
//! files of its layout, each recorded with its digest, and the score manifest last.
use std::collections::BTreeMap;

use ndarray::Array2;
use tch::{Kind, Tensor};

use super::inputs::{ScoredInputs, ScoringStage};
use crate::data::BatchSource;
use crate::detect::{DetectorKind, FittedDetector, ScoreLayout};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::provenance::StageOutput;
use crate::store::scores::{write_scores, ScoreFile, ScoreManifest, FGSM};

/// Per set name, one score matrix per magnitude.
type SetScores = BTreeMap<String, Vec<Tensor>>;

/// Scores the test split, every OOD set and (when loaded) the FGSM sets with `detector`, layer
/// by layer, and writes the score files of its layout into `output` (begun by
/// [`ScoringStage::lock_output`], then begun), the manifest last. Returns the sets written.
pub fn score(
    stage: &ScoringStage,
    inputs: &ScoredInputs,
    detector: &dyn FittedDetector,
    magnitudes: &[f64],
    mut output: StageOutput,
    progress: &mut dyn Progress,
) -> Result<Vec<String>> {
    let kind = detector.kind();
    let test_key = format!("test_{}", inputs.test.name);
    let mut sets: Vec<(String, BatchSource<'_>)> = vec![(test_key.clone(), (&inputs.test).into())];
    sets.extend(inputs.oods.iter().map(|o| (o.name.clone(), o.into())));
    if let Some(f) = &stage.fgsm {
        sets.extend(f.named().map(|s| (s.name.clone(), s.into())));
    }
    // With one file for all layers, per set and (layer, variant) the best class scores [N] of
    // each magnitude are kept until the end.
    let mut kept: BTreeMap<String, Vec<Vec<Tensor>>> = BTreeMap::new();
    let variants = detector.variants();
    if variants != 1 && kind.layout() != ScoreLayout::LayerColumns {
        return Err(Error::Shape(format!(
            "{}: {variants} score variants per layer need one file of columns per magnitude",
            kind.label()
        )));
    }
    for layer in detector.layers() {
        for variant in 0..variants {
            let score = detector.layer_scores(layer, variant)?;
            let mut this_layer = SetScores::new();
            for (key, set) in &sets {
                let per_eps =
                    stage.score_layer(*set, layer, magnitudes, score.as_ref(), progress)?;
                this_layer.insert(key.clone(), per_eps);
            }
            match kind.layout() {
                ScoreLayout::ClassScoresPerLayer => write_files(
                    stage,
                    inputs,
                    kind,
                    layer,
                    magnitudes,
                    &test_key,
                    &this_layer,
                    &mut output,
                )?,
                ScoreLayout::LayerColumns => {
                    for (key, per_eps) in this_layer {
                        let best = per_eps.iter().map(|t| t.max_dim(1, false).0).collect();
                        kept.entry(key).or_default().push(best);
                    }
                }
            }
        }
    }
    if kind.layout() == ScoreLayout::LayerColumns {
        // Per set and magnitude, the (layer, variant) columns side by side: one [N, L * V] matrix.
        let columns: SetScores = kept
            .into_iter()
            .map(|(key, layers)| {
                let per_eps = (0..magnitudes.len())
                    .map(|k| {
                        let cols: Vec<&Tensor> = layers.iter().map(|l| &l[k]).collect();
                        Tensor::stack(&cols, 1)
                    })
                    .collect();
                (key, per_eps)
            })
            .collect();
        write_files(
            stage,
            inputs,
            kind,
            0,
            magnitudes,
            &test_key,
            &columns,
            &mut output,
        )?;
    }
    let mut written: Vec<String> = inputs.oods.iter().map(|o| o.name.clone()).collect();
    if stage.fgsm.is_some() {
        written.push(FGSM.to_string());
    }
    // Last: the manifest says which files make up this detector's scores.
    output.finish(|provenance| ScoreManifest {
        magnitudes: magnitudes.to_vec(),
        layers: detector.layers(),
        sets: written.clone(),
        params: detector.params(),
        provenance,
    })?;
    Ok(written)
}

/// Writes the score files of `layer` (ignored by [`ScoreLayout::LayerColumns`]) into `output`:
/// per OOD set and magnitude, its rows then the test split's; for FGSM, adversarial then clean
/// then noisy.
#[allow(clippy::too_many_arguments)]
fn write_files(
    stage: &ScoringStage,
    inputs: &ScoredInputs,
    kind: DetectorKind,
    layer: usize,
    magnitudes: &[f64],
    test_key: &str,
    scores: &SetScores,
    output: &mut StageOutput,
) -> Result<()> {
    let at = |key: &str, k: usize| -> Result<Array2<f64>> {
        let matrix = scores.get(key).and_then(|m| m.get(k)).ok_or_else(|| {
            Error::Shape(format!("no scores of `{key}` at magnitude {k} to write"))
        })?;
        to_array2(matrix)
    };
    let mut write = |path: std::path::PathBuf, file: ScoreFile| -> Result<()> {
        write_scores(&path, &file)?;
        output.record(&path)
    };
    for (k, &eps) in magnitudes.iter().enumerate() {
        for ood in &inputs.oods {
            let file = ScoreFile::from_parts(at(&ood.name, k)?, at(test_key, k)?)?;
            write(stage.run.score_path(kind, &ood.name, layer, eps), file)?;
        }
        if let Some(f) = &stage.fgsm {
            let [clean, noisy, adv] = f.named().map(|s| s.name.as_str());
            let file = ScoreFile::fgsm_from_parts(at(adv, k)?, at(clean, k)?, at(noisy, k)?)?;
            write(stage.run.score_path(kind, FGSM, layer, eps), file)?;
        }
    }
    Ok(())
}

/// A float64 `[R, C]` tensor as an ndarray matrix.
fn to_array2(t: &Tensor) -> Result<Array2<f64>> {
    let (rows, cols) = (t.size()[0] as usize, t.size()[1] as usize);
    let data = Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view(-1))?;
    Array2::from_shape_vec((rows, cols), data).map_err(|e| Error::Shape(format!("scores: {e}")))
}
