//! The detector contract for every kind in the registry: default parameters fit on training
//! data, score every layer and variant, and come back from a saved file scoring the same numbers.
//! (That every kind reaches the comparison table of `results.md` through its stage binary and
//! `rf-regress` is checked by the end-to-end test in `pipeline.rs`.)

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use resflow::detect::flow::{FlowModel, FlowSpec};
use resflow::detect::gaussian::LayerStats;
use resflow::detect::head::LinearHead;
use resflow::detect::{
    load_detector, save_detector, DetectorKind, DetectorParams, TrainedFlow, TrainingData,
};
use resflow::models::{Classifier, NetConfig, NetType};
use tch::{nn::VarStore, Device, Kind, Tensor};

const CLASSES: usize = 10;
const ROWS: usize = 400;

/// In-memory training data: Gaussian features per layer (class means apart), the statistics fitted
/// on them, a width-4 ResNet's head and a freshly initialised flow per layer.
struct MemoryData {
    features: Vec<Tensor>,
    labels: Tensor,
    net: Box<dyn Classifier>,
    _vs: VarStore,
}

impl MemoryData {
    fn new() -> MemoryData {
        let vs = VarStore::new(Device::Cpu);
        let net = NetConfig {
            net_type: NetType::Resnet,
            width: 4,
            num_classes: CLASSES as i64,
        }
        .build_seeded(&vs, 3)
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let labels: Vec<i64> = (0..ROWS).map(|i| (i % CLASSES) as i64).collect();
        let features = net
            .layer_channels()
            .iter()
            .map(|&c| {
                let c = c as usize;
                let values: Vec<f32> = (0..ROWS * c)
                    .map(|i| normal.sample(&mut rng) + (labels[i / c] as f32) * 0.3)
                    .collect();
                Tensor::from_slice(&values).view([ROWS as i64, c as i64])
            })
            .collect();
        MemoryData {
            features,
            labels: Tensor::from_slice(&labels),
            net,
            _vs: vs,
        }
    }
}

impl TrainingData for MemoryData {
    fn num_layers(&self) -> usize {
        self.features.len()
    }

    fn train_features(&self, layer: usize) -> resflow::Result<Tensor> {
        Ok(self.features[layer].shallow_clone())
    }

    fn layer_stats(&self, layer: usize) -> resflow::Result<LayerStats> {
        LayerStats::fit(&self.features[layer], &self.labels, CLASSES)
    }

    fn linear_head(&self) -> resflow::Result<LinearHead> {
        LinearHead::of(self.net.as_ref(), Device::Cpu)
    }

    fn trained_flows(&self, kind: Kind) -> resflow::Result<Vec<TrainedFlow>> {
        (0..self.num_layers())
            .map(|layer| {
                let spec = FlowSpec {
                    num_classes: CLASSES,
                    length_hidden: 1.0,
                    layer,
                    net: "resnet".into(),
                    dataset: "memory".into(),
                };
                let stats = self.layer_stats(layer)?;
                Ok(TrainedFlow {
                    layer,
                    source: format!("memory/layer_{layer}").into(),
                    model: FlowModel::init(&spec, &stats.whitening, 7, kind, Device::Cpu)?,
                })
            })
            .collect()
    }

    fn device(&self) -> Device {
        Device::Cpu
    }
}

#[test]
fn every_kind_fits_scores_and_scores_the_same_after_save_and_load() {
    let data = MemoryData::new();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let normal = Normal::new(0.0, 1.0).unwrap();
    for &kind in DetectorKind::ALL {
        let params = DetectorParams::default_for(kind);
        let fitted = params.fit(&data).unwrap();
        assert_eq!((fitted.kind(), fitted.params()), (kind, params.clone()));
        let path = dir.path().join(format!("{}.safetensors", kind.name()));
        save_detector(fitted.as_ref(), &path).unwrap();
        let loaded = load_detector(&path, Device::Cpu).unwrap();
        assert_eq!(loaded.params(), params);
        assert_eq!(loaded.layers(), fitted.layers());
        assert_eq!(loaded.variants(), fitted.variants());
        for layer in fitted.layers() {
            let c = data.features[layer].size()[1];
            let values: Vec<f32> = (0..8 * c).map(|_| normal.sample(&mut rng)).collect();
            let phi = Tensor::from_slice(&values).view([8, c]);
            for variant in 0..fitted.variants() {
                let ours = fitted.layer_scores(layer, variant).unwrap()(&phi).unwrap();
                let again = loaded.layer_scores(layer, variant).unwrap()(&phi).unwrap();
                assert_eq!(ours.size()[0], 8, "{kind} layer {layer}");
                assert!(
                    ours.isfinite().all().int64_value(&[]) == 1,
                    "{kind} layer {layer}: {ours}"
                );
                // The same numbers, up to the last bits where a strided view (ViM's null space)
                // comes back contiguous and takes another BLAS path.
                let diff = (&ours - &again).abs().max().double_value(&[]);
                let scale = 1.0 + ours.abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-12 * scale,
                    "{kind} layer {layer} variant {variant}: {ours} vs {again}"
                );
            }
        }
    }
}

#[test]
fn a_saved_detector_whose_tensors_changed_is_refused() {
    let data = MemoryData::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("knn.safetensors");
    let knn = DetectorParams::default_for(DetectorKind::Knn)
        .fit(&data)
        .unwrap();
    save_detector(knn.as_ref(), &path).unwrap();
    let other = dir.path().join("msp.safetensors");
    let msp = DetectorParams::Msp.fit(&data).unwrap();
    save_detector(msp.as_ref(), &other).unwrap();
    std::fs::copy(&other, &path).unwrap();
    let Err(e) = load_detector(&path, Device::Cpu) else {
        panic!("tensors of another detector were accepted");
    };
    assert!(
        matches!(e, resflow::Error::Provenance { .. }) && e.to_string().contains("SHA-256"),
        "{e}"
    );
}
