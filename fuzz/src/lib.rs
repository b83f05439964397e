//! pretext-fuzz: the fuzz targets' bodies ([`targets`]), for the cargo-fuzz binaries in `fuzz_targets/`.

pub mod targets;
