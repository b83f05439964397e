//! [`ProcessGroup`]: a c10d backend (Gloo on the CPU; NCCL behind the
//! `nccl` feature) and the collectives a data-parallel trainer needs.

use std::ffi::{CString, c_int, c_void};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::error::DistError;
use crate::ffi;
use crate::store::{Store, timeout_ms};

/// Default time a collective (or the group's rendezvous) may wait for a peer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time survivors wait for each other's liveness marks after a
/// failed collective before naming the ranks that did not answer.
pub const DEFAULT_LIVENESS_GRACE: Duration = Duration::from_secs(2);
/// Store key prefix of a fixed group (`init`); an elastic generation has
/// its own, so its keys never meet another generation's.
pub(crate) const DEFAULT_PREFIX: &str = "pretext";
/// Store key (under the group's prefix) of the rank hosting the store.
pub(crate) const STORE_HOST_KEY: &str = "store_host";

/// Which c10d backend carries the collectives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors over TCP.
    #[default]
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors; only with the `nccl` feature.
    Nccl,
}

/// The network device Gloo binds (each rank must be reachable at it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GlooDevice {
    /// `127.0.0.1` when the store is on a loopback address, the interface
    /// in `GLOO_SOCKET_IFNAME` when set, else this host's name (as torch).
    #[default]
    Auto,
    /// The address (or host name) given.
    Hostname(String),
    /// The network interface given (`eth0`).
    Interface(String),
}

/// How a [`ProcessGroup`] is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOptions {
    /// The backend (default Gloo).
    pub backend: Backend,
    /// Longest wait for a peer in the rendezvous, a store call or a
    /// collective: a dead or hung peer makes the others fail within this,
    /// naming it included (collectives give up after `timeout` less the
    /// liveness grace) (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Gloo's network device (default [`GlooDevice::Auto`]).
    pub gloo_device: GlooDevice,
    /// Gloo worker threads (default 2, as torch).
    pub gloo_threads: usize,
    /// NCCL: the CUDA device of this rank, where the small tensors of
    /// [`ProcessGroup::all_reduce_i64`] and friends live (default 0).
    pub cuda_device: usize,
    /// After a failed collective, how long survivors wait for each other's
    /// liveness marks in the store; at most a quarter of the timeout
    /// (default [`DEFAULT_LIVENESS_GRACE`]).
    pub liveness_grace: Duration,
}

impl GroupOptions {
    /// The grace actually used: at most a quarter of the timeout.
    fn grace(&self) -> Duration {
        self.liveness_grace.min(self.timeout / 4)
    }

    /// What the backend's own waits are bounded by: the timeout less the
    /// grace, so that failing and naming the lost rank fit in the timeout.
    fn backend_timeout(&self) -> Duration {
        self.timeout.saturating_sub(self.grace())
    }
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Gloo,
            timeout: DEFAULT_TIMEOUT,
            gloo_device: GlooDevice::Auto,
            gloo_threads: 2,
            cuda_device: 0,
            liveness_grace: DEFAULT_LIVENESS_GRACE,
        }
    }
}

/// Whether this build can make NCCL groups (the `nccl` feature).
pub fn nccl_built() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { ffi::pd_nccl_built() != 0 }
}

/// One rank's membership of a process group: its store connection and its
/// c10d backend. Every rank must call the same collectives in the same
/// order with tensors of the same shapes; a failed collective leaves the
/// group unusable.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut ffi::PdGroup,
    store: Store,
    rank: usize,
    world: usize,
    backend: Backend,
    options: GroupOptions,
    /// The rank whose process hosts the store, when it said so.
    store_host: Option<usize>,
    /// Prefix of this group's store keys.
    prefix: String,
}

// SAFETY: c10d backends enqueue work under their own locks; the handle is
// only freed in Drop. Callers keep collectives in one order (documented).
unsafe impl Send for ProcessGroup {}
// SAFETY: as above.
unsafe impl Sync for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group of `world` ranks as `rank` through `store`, waiting
    /// up to `options.timeout` for every rank to join.
    pub fn new(
        store: Store,
        rank: usize,
        world: usize,
        options: GroupOptions,
    ) -> Result<Self, DistError> {
        Self::with_prefix(store, rank, world, options, DEFAULT_PREFIX)
    }

    /// [`Self::new`] with this group's store keys under `prefix`: several
    /// groups, one after another, can meet in one store (elastic
    /// generations).
    pub fn with_prefix(
        store: Store,
        rank: usize,
        world: usize,
        options: GroupOptions,
        prefix: &str,
    ) -> Result<Self, DistError> {
        let init_err = |message: String| DistError::Init {
            rank: Some(rank),
            world,
            message,
        };
        if world == 0 || rank >= world {
            return Err(init_err(format!(
                "rank {rank} is outside a world of {world}"
            )));
        }
        let group_prefix = format!("{prefix}/pg");
        let prefix_c = CString::new(group_prefix.as_str()).map_err(|e| init_err(e.to_string()))?;
        let (rank_c, world_c) = (
            c_int::try_from(rank).map_err(|e| init_err(e.to_string()))?,
            c_int::try_from(world).map_err(|e| init_err(e.to_string()))?,
        );
        let timeout = timeout_ms(options.backend_timeout());
        let raw = match options.backend {
            Backend::Gloo => {
                let (kind, name) = gloo_device(&options.gloo_device, &store);
                let name = CString::new(name).map_err(|e| init_err(e.to_string()))?;
                let threads = c_int::try_from(options.gloo_threads.max(1)).unwrap_or(2);
                ffi::call(|err| {
                    // SAFETY: live store, valid C strings; exceptions caught.
                    let raw = unsafe {
                        ffi::pd_gloo_new(
                            store.raw(),
                            prefix_c.as_ptr(),
                            rank_c,
                            world_c,
                            kind,
                            name.as_ptr(),
                            timeout,
                            threads,
                            err,
                        )
                    };
                    (!raw.is_null()).then_some(raw)
                })
                .map_err(init_err)?
            }
            Backend::Nccl => {
                if !nccl_built() {
                    return Err(DistError::Unsupported(
                        "NCCL was requested but pretext-dist was built without the `nccl` feature"
                            .into(),
                    ));
                }
                ffi::call(|err| {
                    // SAFETY: as above.
                    let raw = unsafe {
                        ffi::pd_nccl_new(
                            store.raw(),
                            prefix_c.as_ptr(),
                            rank_c,
                            world_c,
                            timeout,
                            err,
                        )
                    };
                    (!raw.is_null()).then_some(raw)
                })
                .map_err(init_err)?
            }
        };
        let mut group = Self {
            raw,
            store,
            rank,
            world,
            backend: options.backend,
            options,
            store_host: None,
            prefix: prefix.to_owned(),
        };
        // Every rank has joined, so the host's mark (set before it joined)
        // is there if it exists.
        let host_key = group.key(STORE_HOST_KEY);
        if group.store.check(&host_key).unwrap_or(false)
            && let Ok(v) = group.store.get(&host_key)
        {
            group.store_host = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
        }
        tracing::debug!(rank, world, backend = ?group.backend, store = group.store.addr(), "process group ready");
        Ok(group)
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The collective timeout.
    pub fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// The store the group met in, for small exchanges between ranks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store key `name` of this group (under its prefix): keys of
    /// other groups in the same store never collide with it.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Sums each tensor over the ranks, in place. One collective per
    /// tensor, all in flight together; tensors must be contiguous.
    pub fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<(), DistError> {
        let ptrs = handles("all_reduce", tensors)?;
        let ok = ffi::call(|err| {
            // SAFETY: live group; the pointers are live `at::Tensor`s that
            // `tensors` borrows for the whole (blocking) call.
            (unsafe { ffi::pd_group_allreduce_sum(self.raw, ptrs.as_ptr(), ptrs.len(), err) } != 0)
                .then_some(())
        });
        ok.map_err(|m| self.failed("all_reduce", m))
    }

    /// Overwrites each tensor with rank `root`'s, in place.
    pub fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), DistError> {
        if root >= self.world {
            return Err(DistError::InvalidTensor {
                op: "broadcast",
                reason: format!("root {root} is outside a world of {}", self.world),
            });
        }
        let ptrs = handles("broadcast", tensors)?;
        let root = c_int::try_from(root).expect("root < world fits");
        let ok = ffi::call(|err| {
            // SAFETY: as in all_reduce_sum.
            (unsafe { ffi::pd_group_broadcast(self.raw, ptrs.as_ptr(), ptrs.len(), root, err) }
                != 0)
                .then_some(())
        });
        ok.map_err(|m| self.failed("broadcast", m))
    }

    /// Where this group's collectives take their tensors: the CPU for
    /// Gloo, the rank's CUDA device for NCCL.
    pub fn device(&self) -> Device {
        match self.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(self.options.cuda_device),
        }
    }

    /// `values` as a tensor on [`Self::device`].
    fn small<T: tch::kind::Element>(&self, values: &[T]) -> Result<Tensor, DistError> {
        Ok(Tensor::f_from_slice(values)?.f_to_device(self.device())?)
    }

    /// Sums a few `f64` values over the ranks, in place (loss sums, token
    /// counts: exact for integers below 2^53).
    pub fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), DistError> {
        let mut t = [self.small(values)?];
        self.all_reduce_sum(&mut t)?;
        let out = Vec::<f64>::try_from(&t[0].f_to_device(Device::Cpu)?)?;
        values.copy_from_slice(&out);
        Ok(())
    }

    /// Sums a few `i64` values over the ranks, in place (flags, counts).
    pub fn all_reduce_i64(&self, values: &mut [i64]) -> Result<(), DistError> {
        let mut t = [self.small(values)?];
        self.all_reduce_sum(&mut t)?;
        let out = Vec::<i64>::try_from(&t[0].f_to_device(Device::Cpu)?)?;
        values.copy_from_slice(&out);
        Ok(())
    }

    /// Fails unless every rank passes the same `value` (e.g. a parameter
    /// count, a resumed step); `what` names it in the error. Rank 0's value
    /// is broadcast, then the ranks agree whether any differs.
    pub fn check_equal(&self, what: &str, value: i64) -> Result<(), DistError> {
        let mut t = [self.small(&[value])?];
        self.broadcast(&mut t, 0)?;
        let first = t[0].f_int64_value(&[0])?;
        let mut differ = [i64::from(first != value)];
        self.all_reduce_i64(&mut differ)?;
        if differ[0] > 0 {
            return Err(DistError::Mismatch(format!(
                "{what}: rank 0 has {first}, rank {} has {value} ({} rank(s) differ from rank 0)",
                self.rank, differ[0]
            )));
        }
        Ok(())
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        let ok = ffi::call(|err| {
            // SAFETY: live group.
            (unsafe { ffi::pd_group_barrier(self.raw, err) } != 0).then_some(())
        });
        ok.map_err(|m| self.failed("barrier", m))
    }

    /// Leaves the group cleanly: a barrier, so the rank hosting the store
    /// does not exit while another still needs it, then frees everything.
    pub fn destroy(self) -> Result<(), DistError> {
        self.barrier()
    }

    /// The error of a failed collective, naming the ranks that do not
    /// answer: every survivor marks itself alive in the store, waits the
    /// grace period, and lists the ranks without a mark. When the store
    /// itself is gone, its host is the lost rank.
    fn failed(&self, op: &'static str, message: String) -> DistError {
        if message.contains("is not contiguous") || message.contains("is undefined") {
            return DistError::InvalidTensor {
                op,
                reason: message,
            };
        }
        let lost = self.lost_ranks();
        tracing::debug!(op, rank = self.rank, ?lost, %message, "collective failed");
        DistError::Collective {
            op,
            rank: self.rank,
            world: self.world,
            lost,
            message,
        }
    }

    fn lost_ranks(&self) -> Vec<usize> {
        let others = || (0..self.world).filter(|&r| r != self.rank);
        let store_lost = || match self.store_host {
            Some(h) if h != self.rank => vec![h],
            _ => Vec::new(),
        };
        if self
            .store
            .set(&self.key(&format!("alive/{}", self.rank)), b"1")
            .is_err()
        {
            return store_lost();
        }
        let deadline = std::time::Instant::now() + self.options.grace();
        loop {
            let mut missing = Vec::new();
            for r in others() {
                match self.store.check(&self.key(&format!("alive/{r}"))) {
                    Ok(true) => {}
                    Ok(false) => missing.push(r),
                    Err(_) => return store_lost(),
                }
            }
            if missing.is_empty() || std::time::Instant::now() >= deadline {
                return missing;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by pd_*_new, freed once; the store outlives it
        // (fields drop after this body).
        unsafe { ffi::pd_group_free(self.raw) };
    }
}

/// The `at::Tensor*` handles of `tensors`, checked first on this side.
fn handles(op: &'static str, tensors: &mut [Tensor]) -> Result<Vec<*const c_void>, DistError> {
    tensors
        .iter_mut()
        .enumerate()
        .map(|(i, t)| {
            if !t.defined() {
                return Err(DistError::InvalidTensor {
                    op,
                    reason: format!("tensor {i} is undefined"),
                });
            }
            if !t.is_contiguous() {
                return Err(DistError::InvalidTensor {
                    op,
                    reason: format!(
                        "tensor {i} is not contiguous (Gloo would reduce the wrong elements); call .contiguous()"
                    ),
                });
            }
            if t.kind() == Kind::Bool {
                return Err(DistError::InvalidTensor {
                    op,
                    reason: format!("tensor {i} is bool; sum an integer tensor"),
                });
            }
            Ok(t.as_mut_ptr() as *const c_void)
        })
        .collect()
}

/// The shim's device kind and name for `device`.
fn gloo_device(device: &GlooDevice, store: &Store) -> (c_int, String) {
    match device {
        GlooDevice::Hostname(h) => (1, h.clone()),
        GlooDevice::Interface(i) => (2, i.clone()),
        GlooDevice::Auto => {
            let host = store
                .addr()
                .rsplit_once(':')
                .map_or(store.addr(), |(h, _)| h);
            if is_loopback(host) {
                (1, "127.0.0.1".into())
            } else if let Ok(ifname) = std::env::var("GLOO_SOCKET_IFNAME")
                && !ifname.is_empty()
            {
                (2, ifname)
            } else {
                (0, String::new())
            }
        }
    }
}

/// Whether `host` names this machine's loopback.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
