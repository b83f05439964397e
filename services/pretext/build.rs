//! Bakes libtorch's library directory into the rpath of the `pretext` binary and its tests.
include!("../../ops/libtorch_rpath.rs");

fn main() {
    emit_libtorch_rpath();
}
