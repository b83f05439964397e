//! Bakes libtorch's library directory into the rpath of the `pretext` binary and its tests,
//! and makes them need libtorch_cuda (so CUDA works wherever a GPU is).
include!("../../ops/libtorch_rpath.rs");

fn main() {
    emit_libtorch_rpath();
    emit_libtorch_cuda_link();
}
