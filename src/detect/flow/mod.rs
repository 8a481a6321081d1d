//! The residual flow (`docs/method.md#the-residual-flow` and `docs/method.md#flow-training`): one
//! batched model per layer holding every class's flow, its checkpoints in the reference's names,
//! and its trainer.
pub mod adam;
mod adam_config;
mod adam_cpu;
pub mod backprop;
pub mod checkpoint;
pub mod class_rows;
pub mod config;
mod init;
pub mod lanes;
mod memory_spans;
pub mod model;
pub mod products;
mod resume;
pub mod train;
pub mod train_config;

pub use backprop::{default_backward, Backward};
pub use config::{
    default_length_hidden, hidden_size, FlowMeta, FlowSpec, NUM_COUPLINGS, NUM_PERMUTATIONS,
};
pub use lanes::default_lanes;
pub use model::FlowModel;
pub use train::Trainer;
pub use train_config::{
    epoch_order, split_validation, FlowTrainConfig, IterationRecord, MonitorRecord,
};
