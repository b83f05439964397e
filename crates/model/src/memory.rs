//! The C allocator's settings for a process that trains with libtorch on
//! the CPU: keep freed memory for the next step rather than hand it back to
//! the kernel and fault it in again, zeroed, on every step.
//!
//! libtorch takes every CPU tensor from `malloc`. With glibc's defaults a
//! training step's activations (megabytes each) are either mapped afresh
//! (above the mmap threshold) or returned at the step's end (heap trimming,
//! and whole heaps of a thread's arena unmapped once empty), so each step
//! pays a page fault and a page clear per 4 KiB it touches. Measured on the
//! pretraining model (width 64, depth 4, 4 × 4,096): 2.5× fewer page faults
//! and 7-10% more tokens/s (docs/benchmarks.md).

use std::fmt;

/// Allocations up to this size come from the heap, not from a fresh
/// mapping: glibc's largest allowed value on 64-bit systems (32 MiB).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Freed memory at the top of the heap is kept up to this much.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// One arena for every thread, so the tensors of a step run on a pool
/// thread live in the main heap (a thread arena's extra heaps are unmapped
/// as soon as they empty, whatever the trim threshold).
pub const ARENAS: usize = 1;

/// Environment variables through which a user sets glibc's allocator
/// directly; when one is set, [`keep_freed_memory`] leaves it alone.
pub const ALLOCATOR_VARIABLES: [&str; 5] = [
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
];

/// What [`keep_freed_memory`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocatorTuning {
    /// The settings below were applied.
    Applied {
        /// Bytes up to which allocations come from the heap.
        mmap_threshold: usize,
        /// Free bytes kept at the top of the heap.
        trim_threshold: usize,
        /// Arenas shared by all threads.
        arenas: usize,
    },
    /// The environment sets the allocator (the variable named); nothing
    /// was changed.
    LeftToEnvironment(String),
    /// glibc refused the named setting (the ones before it were applied).
    Refused(&'static str),
    /// Not a glibc target: nothing to set.
    Unsupported,
}

impl fmt::Display for AllocatorTuning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Applied {
                mmap_threshold,
                trim_threshold,
                arenas,
            } => write!(
                f,
                "freed memory kept for reuse (mmap threshold {} MiB, trim threshold {} MiB, {arenas} arena)",
                mmap_threshold >> 20,
                trim_threshold >> 20
            ),
            Self::LeftToEnvironment(var) => {
                write!(f, "allocator left as {var} sets it")
            }
            Self::Refused(what) => write!(f, "glibc refused the {what} setting"),
            Self::Unsupported => write!(f, "allocator left as it is (not glibc)"),
        }
    }
}

/// The variable through which the environment sets the allocator, if any:
/// one of [`ALLOCATOR_VARIABLES`], or `GLIBC_TUNABLES` naming a
/// `glibc.malloc.` tunable. `get` reads a variable.
pub fn allocator_set_by(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(var) = ALLOCATOR_VARIABLES.iter().find(|v| get(v).is_some()) {
        return Some((*var).to_string());
    }
    get("GLIBC_TUNABLES")
        .filter(|t| t.contains("glibc.malloc."))
        .map(|_| "GLIBC_TUNABLES".to_string())
}

/// Applies [`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`] and [`ARENAS`] to glibc's
/// `malloc`, unless the environment already sets the allocator. Call it
/// first thing in `main`, before other threads start (an arena a thread
/// already holds stays its own). The process's resident memory then stays
/// near its peak between steps instead of falling after each one.
pub fn keep_freed_memory() -> AllocatorTuning {
    if let Some(var) = allocator_set_by(|v| std::env::var(v).ok()) {
        return AllocatorTuning::LeftToEnvironment(var);
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> AllocatorTuning {
    let settings = [
        (libc::M_ARENA_MAX, ARENAS, "arena"),
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD, "mmap threshold"),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD, "trim threshold"),
    ];
    for (param, value, what) in settings {
        let value = libc::c_int::try_from(value).expect("allocator settings fit a C int");
        // SAFETY: mallopt only sets glibc's allocator parameters; it takes
        // the main arena's lock itself and returns 0 when it refuses one.
        if unsafe { libc::mallopt(param, value) } != 1 {
            return AllocatorTuning::Refused(what);
        }
    }
    AllocatorTuning::Applied {
        mmap_threshold: MMAP_THRESHOLD,
        trim_threshold: TRIM_THRESHOLD,
        arenas: ARENAS,
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> AllocatorTuning {
    AllocatorTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_environment_wins_where_it_sets_the_allocator() {
        assert_eq!(allocator_set_by(env(&[])), None);
        assert_eq!(
            allocator_set_by(env(&[("MALLOC_ARENA_MAX", "4")])).as_deref(),
            Some("MALLOC_ARENA_MAX")
        );
        assert_eq!(
            allocator_set_by(env(&[("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")]))
                .as_deref(),
            Some("GLIBC_TUNABLES")
        );
        // Tunables of other parts of glibc leave the allocator to us.
        assert_eq!(
            allocator_set_by(env(&[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")])),
            None
        );
    }

    #[test]
    fn reports_say_what_was_set() {
        let applied = AllocatorTuning::Applied {
            mmap_threshold: MMAP_THRESHOLD,
            trim_threshold: TRIM_THRESHOLD,
            arenas: ARENAS,
        };
        assert_eq!(
            applied.to_string(),
            "freed memory kept for reuse (mmap threshold 32 MiB, trim threshold 1024 MiB, 1 arena)"
        );
        assert!(
            AllocatorTuning::LeftToEnvironment("GLIBC_TUNABLES".into())
                .to_string()
                .contains("GLIBC_TUNABLES")
        );
    }
}
