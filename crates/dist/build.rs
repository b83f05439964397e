//! Compiles the C++ shim over c10d against the libtorch in `LIBTORCH`
//! (set by `.cargo/config.toml`), links torch_cpu and c10 (and, with the
//! `nccl` feature, torch_cuda and c10_cuda, forced into this crate's tests),
//! and bakes libtorch's library directory into the rpath of its tests.
include!("../../ops/libtorch_rpath.rs");

use std::path::{Path, PathBuf};

/// Include directories the NCCL path needs: `CUDA_INCLUDE_DIRS`
/// (colon-separated) when set, else found next to the torch package in its
/// site-packages: every `nvidia/*/include` (cuda_runtime.h, crt/, nccl.h,
/// from the wheels torch depends on and `nvidia-cuda-crt`) and its `cccl`
/// (`nvidia-cuda-cccl`).
fn cuda_include_dirs(libtorch: &Path) -> Vec<PathBuf> {
    if let Ok(dirs) = std::env::var("CUDA_INCLUDE_DIRS") {
        return dirs
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let nvidia = libtorch.parent().map(|p| p.join("nvidia"));
    let mut dirs = Vec::new();
    if let Some(entries) = nvidia.as_ref().and_then(|n| std::fs::read_dir(n).ok()) {
        let mut packages: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        packages.sort();
        for package in packages {
            let include = package.join("include");
            if include.is_dir() {
                dirs.push(include.clone());
                if include.join("cccl").is_dir() {
                    dirs.push(include.join("cccl"));
                }
            }
        }
    }
    dirs
}

/// Panics with the fix when a header the NCCL path includes is missing.
fn require_header(dirs: &[PathBuf], header: &str, package: &str) {
    if !dirs.iter().any(|d| d.join(header).is_file()) {
        panic!(
            "pretext-dist `nccl`: {header} not found in {dirs:?}; install {package} in the \
             torch venv (ops/requirements.txt, ops/setup.sh) or set CUDA_INCLUDE_DIRS"
        );
    }
}

fn main() {
    emit_libtorch_rpath();
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_INCLUDE_DIRS");
    let libtorch = PathBuf::from(
        std::env::var("LIBTORCH")
            .expect("LIBTORCH must point at libtorch (see .cargo/config.toml)"),
    );
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    let include = libtorch.join("include");
    let nccl = std::env::var_os("CARGO_FEATURE_NCCL").is_some();
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
    if nccl {
        let dirs = cuda_include_dirs(&libtorch);
        require_header(&dirs, "cuda_runtime_api.h", "torch's nvidia-cuda-runtime");
        require_header(&dirs, "crt/host_defines.h", "nvidia-cuda-crt");
        require_header(&dirs, "cuda/std/cstdint", "nvidia-cuda-cccl");
        require_header(&dirs, "nccl.h", "torch's nvidia-nccl");
        build
            .define("PRETEXT_DIST_NCCL", None)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .includes(&dirs);
    }
    build.compile("pretext_dist_shim");
    println!(
        "cargo:rustc-link-search=native={}",
        libtorch.join("lib").display()
    );
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        // This crate's tests; binaries of other packages call it themselves
        // (link args do not propagate), as `pretext` does.
        emit_libtorch_cuda_link();
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
