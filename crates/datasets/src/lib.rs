//! pretext-datasets: the datasets pretext makes and the yardsticks it
//! measures against, without libtorch or a broker.
//!
//! # Layout
//! - [`rows`]: labeled rows and the one Parquet writer of the raw-input
//!   contract (`id`, `values`, `label`, `split`).
//! - [`synth`]: the synthetic dataset of `pretext gen-data`.
//! - [`genomes`]: the real dataset of `pretext import-genomes` (bacterial genomes).
//! - [`sample`]: deterministic subsets and written samples of train rows.
//! - [`floor`]: the histogram + length classifier, the floor any model must beat.
//! - [`trivial`]: the trivial token predictors pretraining must beat.
//! - [`error`]: the crate's one error type.

pub mod error;
pub mod floor;
pub mod genomes;
pub mod rows;
pub mod sample;
pub mod synth;
pub mod trivial;

pub use error::DatasetError;
