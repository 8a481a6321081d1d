//! A trainer's checkpoints: the model, every class's Adam state and the history written to a
//! folder, and a trainer restored from one that continues exactly where it stopped.
use super::adam::{AdamConfig, STEPS};
use super::class_rows;
use super::lanes::{default_lanes, rows_per_class};
use super::model::FlowModel;
use super::train::Trainer;
use super::train_config::{FlowTrainConfig, IterationRecord};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The trainer's settings and history in a checkpoint folder (next to the model's files).
const TRAINER_FILE: &str = "trainer.json";
/// Every class's Adam state in a checkpoint folder.
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What [`TRAINER_FILE`] holds.
#[derive(Serialize, Deserialize)]
struct TrainerState {
    config: FlowTrainConfig,
    adam: AdamConfig,
    history: Vec<IterationRecord>,
    /// Held-out validation rows per class (absent in checkpoints of older versions).
    #[serde(default)]
    validation_rows: Option<Vec<i64>>,
}

impl Trainer {
    /// Writes the model (see [`FlowModel::save`]), the optimizer state and the history to `dir`.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.model().save(dir)?;
        Tensor::write_safetensors(&self.optimizer_state()?, dir.join(OPTIMIZER_FILE))?;
        let validation: Vec<i64> = self
            .lanes
            .iter()
            .flat_map(|l| rows_per_class(&l.validation))
            .collect();
        let state = TrainerState {
            config: self.config.clone(),
            adam: self.lanes[0].adam.config,
            history: self.history.clone(),
            validation_rows: Some(validation),
        };
        let path = dir.join(TRAINER_FILE);
        let json = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::format(&path, e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| Error::io(&path, e))
    }

    /// The Adam state of all classes as [`ClassAdam::state_tensors`] names it.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        let states: Vec<Vec<(String, Tensor)>> =
            self.lanes.iter().map(|l| l.adam.state_tensors()).collect();
        let counts: Vec<usize> = self.lanes.iter().map(|l| l.model.num_classes()).collect();
        states[0]
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let parts: Vec<&Tensor> = states.iter().map(|s| &s[i].1).collect();
                let joined = if name == STEPS {
                    Tensor::cat(&parts, 0)
                } else {
                    class_rows::join(&parts, &counts)?
                };
                Ok((name.clone(), joined))
            })
            .collect()
    }

    /// Loads the Adam state of all classes (as [`Trainer::optimizer_state`] writes it) into the
    /// lanes.
    fn load_optimizer_state(
        &mut self,
        named: &[(String, Tensor)],
        config: AdamConfig,
    ) -> Result<()> {
        let c: usize = self.lanes.iter().map(|l| l.model.num_classes()).sum();
        for lane in &mut self.lanes {
            let range = lane.classes();
            let part = named
                .iter()
                .map(|(name, t)| {
                    let t = if name == STEPS {
                        if t.size() != [c as i64] {
                            return Err(Error::Shape(format!(
                                "optimizer state is for {:?} classes, not {c}",
                                t.size()
                            )));
                        }
                        t.narrow(0, range.start as i64, range.len() as i64)
                    } else {
                        class_rows::select(t, c, range.clone())?
                    };
                    Ok((name.clone(), t))
                })
                .collect::<Result<Vec<_>>>()?;
            lane.adam.config = config;
            lane.adam.load_state(&part)?;
        }
        Ok(())
    }

    /// Restores a trainer from a checkpoint written by [`Trainer::save_checkpoint`], with the same
    /// data; training continues exactly where it stopped. Errors when the validation hold-out
    /// differs from the checkpoint's (another `--validation-total`).
    pub fn resume(
        dir: &Path,
        train: Vec<Tensor>,
        validation: Vec<Tensor>,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let lanes = default_lanes(device, train.len());
        Self::resume_in_lanes(dir, train, validation, kind, device, lanes)
    }

    /// [`Trainer::resume`] in `lanes` lanes (see [`Trainer::with_lanes`]); the checkpoint does
    /// not depend on the lanes it was written from.
    pub fn resume_in_lanes(
        dir: &Path,
        train: Vec<Tensor>,
        validation: Vec<Tensor>,
        kind: Kind,
        device: Device,
        lanes: usize,
    ) -> Result<Self> {
        let path = dir.join(TRAINER_FILE);
        let state: TrainerState = crate::io::read_json_with(
            &path,
            &format!(
                "this checkpoint cannot be resumed: train the layer afresh (rf-train --layer {} \
                 without --resume)",
                super::checkpoint::layer_of(dir)
            ),
        )?;
        if let Some(saved) = &state.validation_rows {
            let now = rows_per_class(&validation);
            if saved != &now {
                return Err(Error::provenance(
                    dir,
                    format!(
                        "this checkpoint held out {} validation rows ({saved:?} per class), the \
                         resumed run {} ({now:?}); resume with the same --validation-total",
                        saved.iter().sum::<i64>(),
                        now.iter().sum::<i64>()
                    ),
                ));
            }
        }
        let model = FlowModel::load(dir, kind, device)?;
        let mut trainer = Trainer::with_lanes(model, train, validation, state.config, lanes)?;
        let optimizer = dir.join(OPTIMIZER_FILE);
        trainer
            .load_optimizer_state(
                &crate::io::read_safetensors(&optimizer, "train the layer again without --resume")?,
                state.adam,
            )
            .map_err(|e| Error::format(&optimizer, e.to_string()))?;
        trainer.history = state.history;
        Ok(trainer)
    }
}
