//! `pretext export` and PyTorch: a briefly trained tiny model (a pretraining
//! model and a classifier) is exported, rebuilt in PyTorch by the exported
//! `pretext_model.py` in the project venv, and its logits on a fixed input
//! match tch's within 1e-5. Fails if the venv (ops/setup.sh) is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use pretext_model::tch::{Device, Kind, Tensor};
use pretext_model::{
    AdamW, AdamWConfig, CheckpointState, Classifier, Direction, InputEncoding, ModelConfig,
    NormKind, PAD_TOKEN, PretrainModel, save_checkpoint,
};

/// The project venv's python (ops/setup.sh links `.venv`).
fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ops/setup.sh to create the project venv",
        p.display()
    );
    p
}

/// Loads the export with the module shipped inside it and prints the
/// logits of the input file as JSON.
const LOAD_AND_RUN: &str = r#"
import json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
import pretext_model
model = pretext_model.load(sys.argv[1])
inp = json.load(open(sys.argv[2]))
tokens = torch.tensor(inp["tokens"], dtype=torch.int64)
lengths = torch.tensor(inp["lengths"], dtype=torch.int64)
with torch.no_grad():
    out = model(tokens, lengths)
json.dump({"kind": type(model).__name__, "shape": list(out.shape), "logits": out.reshape(-1).tolist()}, sys.stdout)
"#;

/// Two rows of length 96: the second padded after 61 steps; a few MASKs.
fn fixed_input() -> (Vec<Vec<i64>>, Vec<i64>) {
    let lengths = vec![96i64, 61];
    let tokens = lengths
        .iter()
        .enumerate()
        .map(|(r, &len)| {
            (0..96i64)
                .map(|t| match t {
                    _ if t >= len => PAD_TOKEN,
                    _ if t % 17 == 5 => 41,
                    _ => (t * 7 + r as i64 * 3 + t / 5) % 41,
                })
                .collect()
        })
        .collect();
    (tokens, lengths)
}

fn tensors(tokens: &[Vec<i64>], lengths: &[i64]) -> (Tensor, Tensor) {
    let flat: Vec<i64> = tokens.iter().flatten().copied().collect();
    let t = Tensor::from_slice(&flat).view([tokens.len() as i64, tokens[0].len() as i64]);
    (t, Tensor::from_slice(lengths))
}

fn export_and_run(run_dir: &Path, out: &Path) -> serde_json::Value {
    let status = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .arg("export")
        .arg(run_dir)
        .arg("--out")
        .arg(out)
        .env("PRETEXT_LOG", "warn")
        .status()
        .expect("run pretext export");
    assert!(status.success(), "pretext export failed");
    for f in ["model.safetensors", "config.json", "pretext_model.py"] {
        assert!(out.join(f).is_file(), "{f} missing from the export");
    }
    let (tokens, lengths) = fixed_input();
    let input = out.join("input.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&serde_json::json!({"tokens": tokens, "lengths": lengths})).unwrap(),
    )
    .unwrap();
    let run = Command::new(python())
        .args(["-c", LOAD_AND_RUN])
        .arg(out)
        .arg(&input)
        .output()
        .expect("run the venv's python");
    assert!(
        run.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).expect("python prints JSON")
}

/// Max |a - b| over the logits, after checking the shape.
fn max_diff(tch: &Tensor, py: &serde_json::Value) -> f64 {
    let shape: Vec<i64> = serde_json::from_value(py["shape"].clone()).unwrap();
    assert_eq!(shape, tch.size(), "logit shapes differ");
    let ours = Vec::<f32>::try_from(tch.reshape([-1])).unwrap();
    let theirs: Vec<f64> = serde_json::from_value(py["logits"].clone()).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let spread = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        spread > 1e-2,
        "logits are all near zero: a vacuous comparison"
    );
    ours.iter()
        .zip(&theirs)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max)
}

fn tiny(config: ModelConfig) -> ModelConfig {
    ModelConfig {
        width: 16,
        depth: 3,
        kernel: 3,
        ..config
    }
}

#[test]
fn a_trained_pretraining_model_gives_the_same_logits_in_pytorch() {
    pretext_model::tch::set_num_threads(1);
    pretext_model::tch::manual_seed(7);
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(ModelConfig::default());
    let model = PretrainModel::new(&config, Device::Cpu).unwrap();
    let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let (tokens, lengths) = fixed_input();
    let (t, l) = tensors(&tokens, &lengths);
    let targets = t.remainder(41);
    let loss_mask = t.eq(41);
    for _ in 0..3 {
        let loss = model.loss(&t, &l, &targets, &loss_mask, true).unwrap();
        opt.zero_grad();
        (&loss.sum / loss.count as f64).backward();
        opt.step().unwrap();
    }
    let state = CheckpointState::new(3, config, serde_json::json!({"task": "masked"}));
    save_checkpoint(
        &dir.path().join("run/checkpoints"),
        model.var_store(),
        &opt,
        &state,
    )
    .unwrap();
    let logits = model.forward_t(&t, &l, false).unwrap();

    let py = export_and_run(&dir.path().join("run"), &dir.path().join("export"));
    assert_eq!(py["kind"], "PretrainModel");
    let diff = max_diff(&logits, &py);
    eprintln!("pretraining model: max |tch - PyTorch| logit difference {diff:e}");
    assert!(diff < 1e-5, "PyTorch logits differ from tch's by {diff}");

    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("export/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["kind"], "pretrain");
    assert_eq!(cfg["step"], 3);
    assert_eq!(cfg["task"], "masked");
    assert_eq!(cfg["model"]["width"], 16);
}

#[test]
fn a_trained_causal_scalar_classifier_gives_the_same_logits_in_pytorch() {
    pretext_model::tch::set_num_threads(1);
    pretext_model::tch::manual_seed(11);
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(ModelConfig {
        input: InputEncoding::Scalar,
        direction: Direction::Causal,
        norm: NormKind::Layer,
        ..Default::default()
    });
    let model = Classifier::new(&config, 3, Device::Cpu).unwrap();
    let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let (tokens, lengths) = fixed_input();
    let (t, l) = tensors(&tokens, &lengths);
    let labels = Tensor::from_slice(&[2i64, 0]);
    for _ in 0..3 {
        let loss = model.loss(&t, &l, &labels, true).unwrap();
        opt.zero_grad();
        (&loss.sum / loss.count as f64).backward();
        opt.step().unwrap();
    }
    // Training moved the head's batch-normalisation statistics off the
    // identity, so the export must carry and apply them.
    let (mean, var) = model.feature_norm_stats();
    assert!(mean.abs().max().double_value(&[]) > 1e-3);
    assert!((var - 1.0).abs().max().double_value(&[]) > 1e-3);
    let state = CheckpointState::new(3, config, serde_json::json!({}));
    // A checkpoint directory given directly, as fine-tuning writes them.
    let ckpt = save_checkpoint(&dir.path().join("ft"), model.var_store(), &opt, &state).unwrap();
    let logits = model.forward_t(&t, &l, false).unwrap().to_kind(Kind::Float);

    let py = export_and_run(&ckpt, &dir.path().join("export"));
    assert_eq!(py["kind"], "Classifier");
    let diff = max_diff(&logits, &py);
    eprintln!("classifier: max |tch - PyTorch| logit difference {diff:e}");
    assert!(diff < 1e-5, "PyTorch logits differ from tch's by {diff}");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("export/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["kind"], "classifier");
    assert_eq!(cfg["num_classes"], 3);
}
