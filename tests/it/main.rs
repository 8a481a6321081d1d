//! The integration tests, one binary (each test module used to be its own binary, each linking
//! libtorch). Shared helpers: `common` (Python, data, classifiers), `synth` (synthetic score
//! files), `flow_ref` (an independent RealNVP).
mod common;
mod flow_ref;
mod synth;

mod artefacts;
mod baselines;
mod classifier_small;
mod cli_flags;
mod compare;
mod convert_weights;
mod cuda_link;
mod data_formats;
mod data_registry;
mod detect;
mod detector;
mod docs;
mod export;
mod export_densenet;
mod faults;
mod fgsm;
mod flow_model;
mod flow_train;
mod gaussian;
mod metrics;
mod models_checkpoint;
mod models_init;
mod models_parity;
mod models_recalibrate;
mod openood_detectors;
mod own_model;
mod pipeline;
mod prepare;
mod registry;
mod regression;
mod report;
mod scoring;
mod scripts;
mod small_set;
mod splits;
