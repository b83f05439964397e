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
