//! `keep_freed_memory` changes what glibc's malloc does with a step-sized
//! block: it comes from the heap, and freeing it keeps it (a test binary of
//! its own, so no other test's allocations interfere).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use pretext_model::memory::{
    ARENAS, AllocatorTuning, MMAP_THRESHOLD, TRIM_THRESHOLD, keep_freed_memory,
};

/// (bytes in mapped blocks, bytes in heaps) over all arenas.
fn mapped_and_heap() -> (usize, usize) {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.hblkhd, info.arena)
}

#[test]
fn a_freed_activation_sized_block_stays_in_the_heap() {
    assert_eq!(
        keep_freed_memory(),
        AllocatorTuning::Applied {
            mmap_threshold: MMAP_THRESHOLD,
            trim_threshold: TRIM_THRESHOLD,
            arenas: ARENAS,
        },
        "run the tests without MALLOC_* or glibc.malloc tunables in the environment"
    );
    const BLOCK: usize = 16 << 20; // an activation of width 256 at 16k tokens
    let (mapped_before, _) = mapped_and_heap();
    let block = vec![1u8; BLOCK];
    let (mapped_with, heap_with) = mapped_and_heap();
    assert!(
        mapped_with < mapped_before + BLOCK,
        "a {BLOCK}-byte block was mapped afresh: {mapped_before} -> {mapped_with} mapped bytes"
    );
    assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), BLOCK);
    drop(block);
    let (_, heap_after) = mapped_and_heap();
    assert!(
        heap_after + BLOCK > heap_with,
        "freeing the block gave it back: heap {heap_with} -> {heap_after} bytes"
    );
    assert!(
        heap_after >= BLOCK,
        "the heap holds the block: {heap_after}"
    );
}
