//! pretext-dist: data parallelism over libtorch's own c10d, the engine
//! PyTorch DDP uses: `c10d::TCPStore` for the rendezvous and
//! `c10d::ProcessGroupGloo` for the collectives (`ProcessGroupNCCL` behind
//! the `nccl` feature), driven through a small C++ shim (`csrc/shim.cpp`).
//!
//! ```no_run
//! use pretext_dist::{GroupOptions, Rendezvous, init};
//! # fn main() -> Result<(), pretext_dist::DistError> {
//! // torchrun's variables: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK.
//! let rdv = Rendezvous::from_env()?.expect("WORLD_SIZE is set");
//! let group = init(&rdv, GroupOptions::default())?;
//! let mut counts = [group.rank() as i64, 1];
//! group.all_reduce_i64(&mut counts)?; // [0 + 1 + …, world size]
//! group.destroy()?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`rendezvous`]: [`Rendezvous`] from the environment, [`init`] (rank
//!   from `RANK` or from the store's counter), [`free_port`].
//! - [`elastic`]: [`Elastic`] membership (`--nnodes MIN:MAX`): members
//!   join and leave, each change a new [`Generation`] with its own group.
//! - [`store`]: [`Store`], the `TCPStore` (counter, set/get, liveness marks).
//! - [`group`]: [`ProcessGroup`] and its collectives (broadcast, sum
//!   all-reduce of tensors or of a few numbers, barrier, destroy), with
//!   [`GroupOptions`] (backend, timeout, Gloo device).
//! - [`bucket`]: [`GradBuckets`], flat gradient buckets; [`digest`] of
//!   parameters, to show ranks hold identical ones.
//! - [`error`]: the error type, [`DistError`].
//!
//! # What the shim guarantees
//! Tensors must be defined and contiguous (Gloo silently reduces the wrong
//! elements otherwise); C++ exceptions come back as [`DistError`]s; every
//! wait is bounded by [`GroupOptions::timeout`]. After a failed collective
//! the survivors mark themselves alive in the store and name the ranks that
//! do not within [`GroupOptions::liveness_grace`] ([`DistError::Collective`]).

pub mod bucket;
pub mod elastic;
pub mod error;
mod ffi;
pub mod group;
pub mod rendezvous;
pub mod store;

pub use bucket::{DEFAULT_BUCKET_BYTES, GradBuckets, digest};
pub use elastic::{Elastic, ElasticOptions, Generation, JoinWatch, Member, process_name};
pub use error::DistError;
pub use group::{
    Backend, DEFAULT_LIVENESS_GRACE, DEFAULT_TIMEOUT, GlooDevice, GroupOptions, ProcessGroup,
    nccl_built,
};
pub use rendezvous::{Rendezvous, free_port, init};
pub use store::Store;
