//! cargo-fuzz target: bytes from the queue into the batch decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pretext_fuzz::targets::batch_message(data));
