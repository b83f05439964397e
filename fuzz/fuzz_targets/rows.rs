//! cargo-fuzz target: raw-input record batches (Arrow IPC) into the row rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pretext_fuzz::targets::rows(data));
