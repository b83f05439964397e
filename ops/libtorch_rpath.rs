// Included by the build scripts of crates that link libtorch: bakes the
// directory of libtorch's shared libraries into the binaries' rpath, so that
// `pretext` and the tests run without LD_LIBRARY_PATH.
fn emit_libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}

// Makes the binaries of the calling package need libtorch_cuda and
// libc10_cuda: they register CUDA with libtorch from static initialisers
// only, so an --as-needed link (the default) drops them and libtorch then
// sees no GPU. Nothing when this libtorch has no CUDA libraries.
#[allow(dead_code)]
fn emit_libtorch_cuda_link() {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        if lib.join("libtorch_cuda.so").is_file() {
            println!("cargo:rustc-link-arg=-L{}", lib.display());
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-lc10_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}
