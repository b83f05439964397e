//! `pretext experiment --quick` on generated data as a user runs it (a tiny
//! model so it fits CI): `summary.json`'s paired differences are the ones
//! `results.json` implies, each interval holds its mean, every classical
//! baseline ran beside the CNNs, each pretraining run is scored against the
//! trivial predictors, and seeds give different pretraining checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use pretext_model::tch::Tensor;

fn pretext(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running pretext")
}

/// `pretext experiment --quick` on `data` into `out` with a tiny model, and `extra` flags.
fn experiment(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["experiment", "--quick", "--data", data, "--out", out];
    args.extend([
        "--width",
        "8",
        "--depth",
        "1",
        "--threads",
        "1",
        "--max-len",
        "1024",
    ]);
    args.extend_from_slice(extra);
    pretext(&args)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The weights of the newest checkpoint of a pretraining run.
fn weights(run: &Path) -> BTreeMap<String, Tensor> {
    let ck = pretext_model::latest_checkpoint(&run.join("checkpoints"))
        .unwrap()
        .expect("a checkpoint");
    Tensor::read_safetensors(ck.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn quick_experiment_writes_paired_intervals_that_match_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let g = pretext(&[
        "gen-data",
        "--out",
        data.to_str().unwrap(),
        "--sequences",
        "160",
        "--seed",
        "3",
        "--max-len",
        "1024",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let o = experiment(&data, &out, &["--protocols", "finetune"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let results = json(&out.join("results.json"));
    let results = results.as_array().unwrap();
    let summary = json(&out.join("summary.json"));
    let comps = summary["comparisons"].as_array().unwrap();
    // masked and next, each at the 3 quick label fractions.
    assert_eq!(comps.len(), 6, "{summary}");
    let acc = |method: &str, lf: f64, seed: u64| -> f64 {
        results
            .iter()
            .find(|r| {
                r["method"] == method
                    && r["protocol"] == "finetune"
                    && r["label_fraction"].as_f64() == Some(lf)
                    && r["seed"].as_u64() == Some(seed)
            })
            .unwrap_or_else(|| panic!("no {method} {lf} {seed}"))["test_accuracy"]
            .as_f64()
            .unwrap()
    };
    for c in comps {
        let (method, lf) = (
            c["method"].as_str().unwrap(),
            c["label_fraction"].as_f64().unwrap(),
        );
        let seeds: Vec<u64> = c["seeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert_eq!(seeds, [0, 1, 2]);
        let diffs: Vec<f64> = seeds
            .iter()
            .map(|&s| 100.0 * (acc(method, lf, s) - acc("none", lf, s)))
            .collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let d = c["diff_mean"].as_f64().unwrap();
        assert!((d - mean).abs() < 1e-9, "{c}: {mean}");
        let (lo, hi) = (
            c["ci95"][0].as_f64().unwrap(),
            c["ci95"][1].as_f64().unwrap(),
        );
        assert!(lo <= d && d <= hi, "{c}");
        let verdict = c["verdict"].as_str().unwrap();
        let want = if lo > 0.0 {
            "yes"
        } else if hi < 0.0 {
            "no"
        } else {
            "undecided"
        };
        assert_eq!(verdict, want, "{c}");
    }
    // The classical baselines ran on the same subsets, every seed and fraction.
    for method in ["majority", "histogram", "ngram"] {
        let n = results.iter().filter(|r| r["method"] == method).count();
        assert_eq!(n, 9, "{method}");
    }
    // Every pretraining run is scored against the trivial predictors.
    let pre = json(&out.join("pretraining.json"));
    let pre = pre.as_array().unwrap();
    assert_eq!(pre.len(), 6);
    for p in pre {
        let t = &p["score"]["trivial"];
        assert!(t["positions"].as_u64().unwrap() > 0, "{p}");
        assert!(t["most_frequent"].as_f64().unwrap() > 0.0, "{p}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Pretext tasks against trivial predictors"));
    assert!(report.contains("paired comparisons with `none`"));

    // Seeds re-draw pretraining: different weights for each seed.
    let runs = out.join("runs");
    let w0 = weights(&runs.join("pretrain-masked-100-s0"));
    let w1 = weights(&runs.join("pretrain-masked-100-s1"));
    assert_eq!(w0.len(), w1.len());
    let differ = w0.iter().filter(|(k, a)| !a.equal(&w1[*k])).count();
    assert!(
        differ > w0.len() / 2,
        "{differ} of {} tensors differ",
        w0.len()
    );

    // Reusing a run with other settings is refused, naming the difference.
    let again = experiment(&data, &out, &["--reuse-pretrained", "--mask-span", "7"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("other settings") && err.contains("targets"),
        "{err}"
    );
}
