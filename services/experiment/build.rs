//! Bakes libtorch's library directory into the rpath of this crate's tests.
include!("../../ops/libtorch_rpath.rs");

fn main() {
    emit_libtorch_rpath();
}
