//! Compiles the C++ shim over c10d against the libtorch in `LIBTORCH`
//! (set by `.cargo/config.toml`), links torch_cpu and c10, and bakes
//! libtorch's library directory into the rpath of this crate's tests.
include!("../../ops/libtorch_rpath.rs");

fn main() {
    emit_libtorch_rpath();
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_INCLUDE_DIRS");
    let libtorch = std::path::PathBuf::from(
        std::env::var("LIBTORCH")
            .expect("LIBTORCH must point at libtorch (see .cargo/config.toml)"),
    );
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    let include = libtorch.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/shim.cpp")
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // libtorch's headers are not ours to fix.
        .warnings(false)
        .flag_if_supported("-w");
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        build
            .define("PRETEXT_DIST_NCCL", None)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None);
        if let Ok(dirs) = std::env::var("CUDA_INCLUDE_DIRS") {
            for dir in dirs.split(':').filter(|d| !d.is_empty()) {
                build.include(dir);
            }
        }
    }
    build.compile("pretext_dist_shim");
    println!(
        "cargo:rustc-link-search=native={}",
        libtorch.join("lib").display()
    );
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
