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
    assert!(text.contains("(NEEDED)"), "{text}");
    assert!(
        !text.contains("torch") && !text.contains("c10"),
        "{path} links libtorch:\n{text}"
    );
}
