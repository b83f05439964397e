//! Shared by the lean binaries' tests.

use std::process::Command;

/// Fails unless the binary at `path` links shared libraries and none of
/// them is libtorch's (`torch*`, `c10*`).
pub fn assert_links_no_libtorch(path: &str) {
    let out = Command::new("readelf")
        .args(["-d", path])
        .output()
        .expect("readelf (binutils) is installed");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Only the names of the NEEDED libraries: addresses elsewhere in the
    // dynamic section can spell `c10` in hex.
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(!needed.is_empty(), "{text}");
    assert!(
        !needed
            .iter()
            .any(|lib| lib.starts_with("libtorch") || lib.starts_with("libc10")),
        "{path} links libtorch: {needed:?}"
    );
}
