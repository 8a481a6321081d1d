//! KNN (Sun et al. 2022, `docs/method.md#knn`): `-||z - z_(k)||` with `z = phi / ||phi||` and
//! `z_(k)` the k-th nearest normalised training feature; exact search by one matrix product per
//! batch against every training row.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::logit::single_layer;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::{Error, Result};

/// KNN's default number of neighbours `k`.
pub const KNN_NEIGHBOURS: usize = 50;

/// KNN's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KnnParams {
    /// The rank `k` of the neighbour whose distance is the score; `None`: the paper's
    /// [`KNN_NEIGHBOURS`], or every train row where there are fewer.
    pub k: Option<usize>,
}

impl Fit for KnnParams {
    fn check(&self) -> Result<()> {
        if self.k == Some(0) {
            return Err(Error::bad_option("--knn-k", "k must be at least 1"));
        }
        Ok(())
    }

    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let layer = data.last_layer();
        let train = data.train_features(layer)?;
        let rows = train.size()[0] as usize;
        let k = self.k.unwrap_or(KNN_NEIGHBOURS.min(rows));
        let knn = Knn::fit(&train, layer, k, data.device())?;
        Ok(Box::new(Knn {
            params: self.clone(),
            ..knn
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let train = state
            .tensor("train")?
            .to_kind(Kind::Float)
            .to_device(device);
        let meta: KnnMeta = state.meta()?;
        Ok(Box::new(Knn {
            layer: single_layer(state)?,
            train,
            k: meta.k,
            params: self.clone(),
        }))
    }
}

/// `phi / ||phi||` per row (a zero row stays zero).
pub fn normalise(phi: &Tensor) -> Tensor {
    phi / phi.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12)
}

/// KNN's fitted facts that are not tensors.
#[derive(Debug, Serialize, Deserialize)]
struct KnnMeta {
    /// The `k` in use (the parameter, or its default for the train rows).
    k: usize,
}

/// KNN on normalised penultimate features.
pub struct Knn {
    layer: usize,
    /// Normalised training features `[M, d]`, float32 on the device.
    train: Tensor,
    k: usize,
    params: KnnParams,
}

impl Knn {
    /// Fits KNN on the training features `train` `[M, d]` of layer `layer` with `k` neighbours.
    /// Errors unless `1 <= k <= M`.
    pub fn fit(train: &Tensor, layer: usize, k: usize, device: Device) -> Result<Knn> {
        let m = train.size()[0] as usize;
        if k == 0 || k > m {
            return Err(Error::bad_option(
                "--knn-k",
                format!("k = {k} neighbours need 1 <= k <= the {m} training rows"),
            ));
        }
        let train = normalise(&train.to_kind(Kind::Float)).to_device(device);
        Ok(Knn {
            layer,
            train,
            k,
            params: KnnParams { k: Some(k) },
        })
    }

    /// Squared distances `[N, M]` of the normalised `phi` to every normalised training row
    /// (`2 - 2 z . t`, as both have norm 1).
    fn squared_distances(&self, phi: &Tensor) -> Tensor {
        let z = normalise(&phi.to_kind(Kind::Float));
        (z.matmul(&self.train.tr()) * -2.0 + 2.0).clamp_min(0.0)
    }

    /// Indices `[N, k]` of the `k` nearest training rows of each row of `phi`, nearest first.
    pub fn neighbours(&self, phi: &Tensor) -> Tensor {
        self.squared_distances(phi)
            .topk(self.k as i64, 1, false, true)
            .1
    }
}

impl FittedDetector for Knn {
    fn params(&self) -> DetectorParams {
        DetectorParams::Knn(self.params.clone())
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            // The k-th nearest row is the k-th most similar: `topk` of the products, then the
            // distance of that one alone (not of all M rows).
            let z = normalise(&phi.to_kind(Kind::Float));
            let kth = z
                .matmul(&self.train.tr())
                .topk(self.k as i64, 1, true, true)
                .0
                .narrow(1, self.k as i64 - 1, 1);
            Ok(-(kth * -2.0 + 2.0).clamp_min(0.0).sqrt())
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let meta = KnnMeta { k: self.k };
        Ok(DetectorState::new(self.params(), vec![self.layer], meta)?.with("train", &self.train))
    }
}
