//! cargo-fuzz target: whole Parquet files into the validating reader (seed it with `tests/fixtures/*.parquet`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = std::env::temp_dir().join(format!("pretext-fuzz-{}.parquet", std::process::id()));
    pretext_fuzz::targets::parquet_file(data, &scratch)
});
