//! The residual flow's scores with input pre-processing (SPEC section 6): for every layer, the
//! `[N, C]` log-densities of the test split and each OOD set at every magnitude.
use tch::{Kind, Tensor};

use crate::artefacts::{flow_dir, resflow_path, write_scores, ScoreFile, FGSM};
use crate::data::BatchSource;
use crate::error::{Error, Result};
use crate::features::LayerStats;
use crate::flow::FlowModel;
use crate::mahalanobis::to_array2;
use crate::progress::Progress;
use crate::stage::{ScoredInputs, ScoringStage};

/// Scores every layer that has a trained flow under `run`, writing one file per
/// (OOD set, layer, magnitude). With `fgsm`, also scores the FGSM sets and writes the `fgsm`
/// files (adversarial rows first, then clean, then noisy). Returns the layers scored.
pub fn run(
    stage: &ScoringStage,
    magnitudes: &[f64],
    progress: &mut dyn Progress,
) -> Result<Vec<usize>> {
    let ScoredInputs {
        manifest,
        test,
        oods,
    } = stage.inputs()?;
    let (features, run) = (&stage.features, &stage.run);
    let (fgsm, device) = (stage.fgsm.as_ref(), stage.device);
    let mut layers = Vec::new();
    for l in 0..manifest.layer_channels.len() {
        let dir = flow_dir(run, l);
        if !dir.exists() {
            continue;
        }
        let flow = FlowModel::load(&dir, Kind::Float, device)?;
        if flow.meta.dim as i64 != manifest.layer_channels[l]
            || flow.meta.num_classes != manifest.num_classes
        {
            return Err(Error::format(
                &dir,
                format!(
                    "flow of {} classes in dimension {}, but layer {l} has {} classes and {} channels; retrain it with rf-train",
                    flow.meta.num_classes, flow.meta.dim, manifest.num_classes, manifest.layer_channels[l]
                ),
            ));
        }
        let means = LayerStats::load(&features.stats_path(l))?
            .means
            .to_kind(Kind::Float)
            .to_device(device);
        let score = |f: &Tensor| flow.log_prob(f, &means);
        let score_all = |set: BatchSource<'_>, progress: &mut dyn Progress| {
            stage.score_layer(set, l, magnitudes, &score, progress)
        };
        let in_dist = score_all((&test).into(), progress)?;
        for ood in &oods {
            let out = score_all(ood.into(), progress)?;
            for ((eps, o), i) in magnitudes.iter().zip(&out).zip(&in_dist) {
                let file = ScoreFile::from_parts(to_array2(o)?, to_array2(i)?)?;
                write_scores(&resflow_path(run, &ood.name, l, *eps), &file)?;
            }
        }
        if let Some(sets) = fgsm {
            let clean = score_all((&sets.clean).into(), progress)?;
            let noisy = score_all((&sets.noisy).into(), progress)?;
            let adv = score_all((&sets.adv).into(), progress)?;
            for (k, eps) in magnitudes.iter().enumerate() {
                let file = ScoreFile::fgsm_from_parts(
                    to_array2(&adv[k])?,
                    to_array2(&clean[k])?,
                    to_array2(&noisy[k])?,
                )?;
                write_scores(&resflow_path(run, FGSM, l, *eps), &file)?;
            }
        }
        layers.push(l);
    }
    if layers.is_empty() {
        return Err(Error::Invalid(format!(
            "no trained flow under {}; train one per layer with `rf-train --layer L`",
            run.join("flow").display()
        )));
    }
    Ok(layers)
}
