//! pretext-core: the data contract of pretext (rows in, batches out) and
//! the token vocabulary; no torch and no broker. Datasets live in
//! `pretext-datasets`.
//!
//! # Layout
//! - [`validate`]: the row rules of the raw-input contract and their reasons.
//! - [`input`]: streaming Parquet reader that validates row groups and
//!   quarantines rejected rows; what every service uses on input.
//! - [`listcol`]: the fast decoder of the `values` list column under [`input`].
//! - [`manifest`]: producers' records of published batches, read by the audit.
//! - [`report`]: per-file validation reports (`pretext validate`).
//! - [`split`]: `train` / `valid` / `test` and the hash that decides an absent split.
//! - [`bucket`]: length buckets and token-budget batching.
//! - [`task`]: masked / next / classify targets.
//! - [`batch`]: the batch type and its Arrow IPC codec.
//! - [`encoder`]: batch messages built in place (what producers publish).
//! - [`ipc_limit`]: the decompressed-size bound checked before decoding.
//! - [`control`]: control-stream messages, file tasks, and the end-of-data rule.

pub mod batch;
pub mod bucket;
pub mod control;
pub mod encoder;
pub mod input;
pub mod ipc_limit;
pub mod jsonl;
pub mod listcol;
pub mod manifest;
pub mod pagecheck;
pub mod report;
pub mod split;
pub mod task;
pub mod validate;

/// Largest value a step may hold (values are 0..=MAX_VALUE).
pub const MAX_VALUE: u8 = 40;
/// Number of value classes (41): the width of the token heads.
pub const NUM_VALUES: usize = MAX_VALUE as usize + 1;
/// Token id of the mask token in batches.
pub const MASK_TOKEN: u8 = 41;
/// Token id of padding in batches.
pub const PAD_TOKEN: u8 = 42;
/// Number of distinct token ids a batch input may hold (values, MASK, PAD).
pub const NUM_TOKENS: usize = PAD_TOKEN as usize + 1;
