//! metaids-model: the meta-learned universal threat model.
//!
//! A candle MLP [`Encoder`] maps preprocessed flows to embeddings; [`train()`] meta-trains it with
//! prototypical-network episodes on seen families (validation families choose the kept weights; novel
//! families and the benign query pool are never read); [`BenignReference`] holds k-means benign
//! prototypes and held-out benign calibration rows so a new family is enrolled from K flows (prototype =
//! support mean) with a threshold meeting a false-positive budget (the rules are `metaids-decide`'s);
//! [`io`] saves and loads the model as a directory (`weights.safetensors` + `manifest.json`) with
//! strict checks and gives it its [`io::ModelIdentity`]. The benchmark adapter (`ProtoNetMethod`)
//! lives in `metaids-eval`. This crate reads no dataset files.

#![forbid(unsafe_code)]

pub mod adapt;
pub mod config;
pub mod encoder;
pub mod error;
pub mod finetune;
pub mod io;
pub mod model;
pub mod score;
pub mod train;

pub use adapt::{adapt_layer_norms, NormAdaptation, NormStatistics};
pub use encoder::{Encoder, EncoderConfig};
pub use error::{ModelError, Result};
pub use finetune::{Adapted, FinetuneConfig, Finetuner};
pub use io::{check_save_target, load, save, FORMAT_VERSION};
pub use metaids_decide::{BenignReference, FamilyPrototype, Verdict, VerdictKind};
pub use model::{
    DataFileHash, FinetuneCandidate, KnownCandidate, Provenance, ThreatModel, TrainingRecord,
    ValidationPoint,
};
pub use score::{flops_per_flow, ScoringKernel, Scratch, SimdCap, KERNEL_BATCH};
pub use train::{train, TrainConfig, TrainProgress};
