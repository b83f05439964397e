//! `pretext validate`: the command lives in `pretext-cli`, which the lean
//! `pretext-validate` binary shares.

pub use pretext_producer::cli::validate::{Args, run};
