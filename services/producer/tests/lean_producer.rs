//! The lean producer binary: it links no libtorch, takes `pretext produce`'s
//! flags and variables, refuses bad ones, and runs a producer end to end on
//! the in-process transport.

mod support;

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretext-produce"));
    c.env_clear();
    c
}

#[test]
fn it_needs_no_libtorch() {
    support::assert_links_no_libtorch(env!("CARGO_BIN_EXE_pretext-produce"));
}

#[test]
fn it_takes_the_produce_flags_and_refuses_bad_ones() {
    let ok = bin()
        .args(["--data", "/x", "--task", "next", "--epochs", "2", "--help"])
        .env("PRETEXT_METRICS_ADDR", "0.0.0.0:9100")
        .output()
        .unwrap();
    assert!(ok.status.success());
    let help = String::from_utf8(ok.stdout).unwrap();
    for flag in [
        "--broker",
        "--ns",
        "--run-dir",
        "--splits",
        "--max-tokens",
        "--metrics-addr",
    ] {
        assert!(help.contains(flag), "no {flag} in:\n{help}");
    }
    for bad in [
        vec!["--data", "/x", "--task", "nonsense", "--run-dir", "/r"],
        vec!["--data", "/x", "--no-such-flag", "--run-dir", "/r"],
        vec![
            "--data",
            "/x",
            "--metrics-addr",
            "not-an-address",
            "--run-dir",
            "/r",
        ],
    ] {
        let out = bin().args(&bad).output().unwrap();
        assert!(!out.status.success(), "{bad:?} was accepted");
    }
}

#[test]
fn it_produces_on_the_in_process_transport() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    pretext_datasets::synth::generate(
        &pretext_datasets::synth::SynthConfig {
            sequences: 60,
            max_len: 2000,
            ..Default::default()
        },
        &data,
    )
    .unwrap();
    let out = bin()
        .args([
            "--data",
            data.to_str().unwrap(),
            "--broker",
            "memory",
            "--ns",
            "lean",
        ])
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("produced: "), "{line}");
    let manifest = pretext_core::manifest::read_manifests(&dir.path().join("run")).unwrap();
    assert!(!manifest.is_empty());
    assert!(
        line.contains(&format!("{} batches", manifest.len())),
        "{line}"
    );
}
