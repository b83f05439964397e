//! The `pretext` binary is built with NCCL and really links libtorch_cuda
//! (the linker would drop it: only static initialisers need it), so CUDA
//! and NCCL work wherever a GPU is; and bench/gpu/run.sh, the script a GPU
//! session runs, works end to end on the CPU (`--device cpu --dry-run`).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pretext");
/// The benchmark binary, built from the same crates.
const BENCH: &str = env!("CARGO_BIN_EXE_pretext-bench");

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn binary_needs_libtorch_cuda() {
    let out = Command::new("readelf")
        .args(["-d", BIN])
        .output()
        .expect("readelf runs (binutils)");
    assert!(out.status.success());
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    for lib in [
        "[libtorch_cuda.so]",
        "[libc10_cuda.so]",
        "[libtorch_cpu.so]",
    ] {
        assert!(
            needed.iter().any(|l| l.contains(lib)),
            "{lib} is not NEEDED by {BIN}:\n{}",
            needed.join("\n")
        );
    }
}

#[test]
fn collective_round_on_the_cpu_uses_gloo_in_an_nccl_build() {
    let out = Command::new(BENCH)
        .args([
            "collective",
            "--device",
            "cpu",
            "--width",
            "16",
            "--rounds",
            "1",
        ])
        .output()
        .unwrap();
    let doc = stdout_json(&out);
    assert!(out.status.success(), "{doc}");
    assert_eq!(doc["nccl_built"], true, "{doc}");
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["round"]["backend"], "Gloo", "{doc}");
    assert_eq!(doc["round"]["max_grad_diff"], 0.0, "{doc}");
    assert!(doc["round"]["elements"].as_i64().unwrap() > 0, "{doc}");
}

/// With a GPU the NCCL round must work; without one it must fail cleanly
/// with c10d's own refusal (so the NCCL code path really ran), not crash.
#[test]
fn collective_round_on_cuda_is_nccl_or_a_clean_refusal() {
    let out = Command::new(BENCH)
        .args([
            "collective",
            "--device",
            "cuda",
            "--width",
            "16",
            "--rounds",
            "1",
        ])
        .output()
        .unwrap();
    let doc = stdout_json(&out);
    if doc["cuda_available"] == true {
        assert!(out.status.success(), "{doc}");
        assert_eq!(doc["round"]["backend"], "Nccl", "{doc}");
        assert_eq!(doc["round"]["max_grad_diff"], 0.0, "{doc}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{doc}");
        assert_eq!(doc["ok"], false, "{doc}");
        let err = doc["error"].as_str().unwrap();
        assert!(
            err.contains("ProcessGroupNCCL") || err.contains("GPU"),
            "{doc}"
        );
    }
}

#[test]
fn train_exposes_bf16_precision() {
    let out = Command::new(BIN)
        .args(["train", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--precision"), "{help}");
    assert!(help.contains("bf16"), "{help}");
}

/// The GPU session's script, on the CPU with tiny shapes: every check and
/// both references run, and it prints the table.
#[test]
fn gpu_script_dry_run_on_the_cpu() {
    let python = root().join(".venv/bin/python");
    let out = Command::new(root().join("bench/gpu/run.sh"))
        .args(["--bin", BIN, "--python"])
        .arg(&python)
        .args([
            "--device",
            "cpu",
            "--dry-run",
            "--len",
            "128",
            "--steps",
            "1",
        ])
        .env_remove("OUT")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("| PyTorch `torch.autocast(bfloat16)` | bf16 mixed |"),
        "{text}"
    );
    assert!(text.contains("over Gloo (1 rank)"), "{text}");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("bench/out/gpu-cpu-dry.json")).unwrap(),
    )
    .unwrap();
    for p in ["full", "bf16"] {
        for who in ["pretext", "pytorch"] {
            assert!(
                doc["train"][p][who]["tokens_per_s"].as_f64().unwrap() > 0.0,
                "{doc}"
            );
        }
        assert_eq!(doc["train"][p]["pretext"]["precision"], p, "{doc}");
        assert_eq!(doc["train"][p]["pytorch"]["precision"], p, "{doc}");
    }
}
