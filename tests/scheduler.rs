//! `pretext schedule` and `pretext registry` as a user runs them: files
//! dropped into an inbox directory, `--once` ticks, the registry read back
//! as JSON. Tiny synthetic data (2 files of 64 sequences, at most 1,024
//! steps) and a tiny model (width 16, depth 2) keep each retrain to seconds.
//!
//! - a dropped file is registered, retrained on and promoted, while
//!   symbolic links beside it (out of the inbox, a loop) are skipped and
//!   never read; a second tick does nothing; a renamed copy of a known file
//!   is not retrained on;
//! - the scheduler stopped right after each stage commits (the test hook
//!   `PRETEXT_SCHEDULER_EXIT_AFTER`, which also leaves its lease held, as a
//!   killed process does) and restarted ends in the registry state of an
//!   uninterrupted run;
//! - a retrain that makes the model worse (its fine-tuning learns nothing:
//!   learning rate 0) is recorded, rejected, and the promoted model stays;
//! - the cron loop serves `/metrics` (ticks, files, decisions) and
//!   `/healthz`; SIGTERM during a retrain lets the stage in progress commit
//!   and exits 0, and the next tick finishes the run.

#[path = "http_support/mod.rs"]
mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pretext_datasets::synth::{SynthConfig, generate};
use serde_json::{Value, json};

/// The two data files every test drops (generated once per test dir).
fn dataset(dir: &Path) -> Vec<PathBuf> {
    let cfg = SynthConfig {
        sequences: 128,
        classes: 2,
        labeled_fraction: 1.0,
        max_len: 1024,
        seed: 7,
        holdout_fraction: 0.2,
        rows_per_file: 64,
        row_group_rows: 32,
        motif_density: 0.5,
        ..SynthConfig::default()
    };
    let s = generate(&cfg, &dir.join("gen")).expect("gen-data");
    assert_eq!(s.files.len(), 2);
    s.files
}

/// A scheduler setup: an inbox and a registry under `base`.
struct Setup {
    base: PathBuf,
}

impl Setup {
    fn new(base: &Path) -> Self {
        std::fs::create_dir_all(base.join("inbox")).unwrap();
        Self {
            base: base.to_path_buf(),
        }
    }

    fn inbox(&self) -> PathBuf {
        self.base.join("inbox")
    }

    fn registry(&self) -> PathBuf {
        self.base.join("registry.sqlite")
    }

    fn drop_file(&self, src: &Path, name: &str) {
        std::fs::copy(src, self.inbox().join(name)).unwrap();
    }

    /// `pretext schedule` on this inbox and registry with the tiny budget,
    /// plus `extra` (its `--finetune-epochs` or `--pretrain-epochs`, if
    /// any, replaces the default budget), without the test hook.
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretext"));
        cmd.args(["schedule", "--inbox"])
            .arg(self.inbox())
            .arg("--registry")
            .arg(self.registry())
            .args([
                "--broker",
                "memory",
                "--width",
                "16",
                "--depth",
                "2",
                "--threads",
                "2",
                "--max-len",
                "1024",
            ])
            .args(if extra.contains(&"--pretrain-epochs") {
                &[][..]
            } else {
                &["--pretrain-epochs", "1"][..]
            })
            .args(if extra.contains(&"--finetune-epochs") {
                &[][..]
            } else {
                &["--finetune-epochs", "4", "--finetune-min-steps", "24"][..]
            })
            .args(extra)
            .env_remove("PRETEXT_SCHEDULER_EXIT_AFTER")
            .env_remove("PRETEXT_BROKER")
            .env_remove("PRETEXT_METRICS_ADDR");
        cmd
    }

    /// `pretext schedule --once` (see [`Setup::command`]) with the test hook
    /// set to `exit_after` (or unset).
    fn tick(&self, extra: &[&str], exit_after: Option<&str>) -> Output {
        let mut cmd = self.command(extra);
        cmd.arg("--once");
        if let Some(stage) = exit_after {
            cmd.env("PRETEXT_SCHEDULER_EXIT_AFTER", stage);
        }
        cmd.output().expect("pretext schedule runs")
    }

    fn tick_ok(&self, extra: &[&str]) -> String {
        let out = self.tick(extra, None);
        assert!(
            out.status.success(),
            "schedule failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn list(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
            .args(["registry", "list", "--json", "--registry"])
            .arg(self.registry())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("registry list --json prints JSON")
    }

    fn show(&self, id: i64) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
            .args(["registry", "show", &id.to_string(), "--registry"])
            .arg(self.registry())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The registry without what legitimately differs between two runs of the
/// same work (times, absolute paths): statuses, counts, which stages have
/// a time, metrics, decisions.
fn state(list: &Value) -> Value {
    let runs: Vec<Value> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let stages_timed: Vec<bool> = [
                "produced_at",
                "pretrained_at",
                "finetuned_at",
                "evaluated_at",
                "decided_at",
            ]
            .iter()
            .map(|k| !r[*k].is_null())
            .collect();
            json!({
                "id": r["id"], "status": r["status"], "error": r["error"],
                "base_model": r["base_model"], "new_rows": r["new_rows"],
                "replay_rows": r["replay_rows"], "pretrain_steps": r["pretrain_steps"],
                "stages_timed": stages_timed,
            })
        })
        .collect();
    let models: Vec<Value> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            json!({
                "id": m["id"], "run_id": m["run_id"], "valid_accuracy": m["valid_accuracy"],
                "test_accuracy": m["test_accuracy"], "macro_f1": m["macro_f1"],
                "test_rows": m["test_rows"], "baseline_model": m["baseline_model"],
                "baseline_accuracy": m["baseline_accuracy"], "promoted": m["promoted"],
            })
        })
        .collect();
    let files: Vec<Value> = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            json!({
                "hash": f["hash"], "path": f["path"], "rows": f["rows"], "valid": f["valid"],
                "rejected": f["rejected"], "error": f["error"], "run_id": f["run_id"],
            })
        })
        .collect();
    json!({ "runs": runs, "models": models, "files": files, "promoted": list["promoted"]["id"] })
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_dropped_file_is_retrained_on_once_and_a_renamed_copy_never() {
    let dir = tempfile::tempdir().unwrap();
    let files = dataset(dir.path());
    let s = Setup::new(&dir.path().join("sched"));
    s.drop_file(&files[0], "batch-1.parquet");
    // Beside it, a link to a file outside the inbox (a secret, say) and a
    // link loop: neither is read, neither stops the good file.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.parquet");
    std::fs::copy(&files[1], &secret).unwrap();
    std::os::unix::fs::symlink(&secret, s.inbox().join("secret.parquet")).unwrap();
    std::os::unix::fs::symlink("loop.parquet", s.inbox().join("loop.parquet")).unwrap();
    std::os::unix::fs::symlink(&outside, s.inbox().join("outside-dir")).unwrap();

    let out = s.tick_ok(&[]);
    assert!(out.contains("registered batch-1.parquet"), "{out}");
    assert!(out.contains("run 1: promoted"), "{out}");
    for link in ["secret.parquet", "loop.parquet", "outside-dir"] {
        assert!(
            out.contains(&format!("skipped {link}: a symbolic link")),
            "{link}: {out}"
        );
    }
    assert!(!out.contains("registered secret"), "{out}");
    let secret_bytes = std::fs::read(&secret).unwrap();
    let mut dirs = vec![s.base.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(e.path());
            } else if kind.is_file() {
                assert_ne!(
                    std::fs::read(e.path()).unwrap(),
                    secret_bytes,
                    "{} holds the outside file's bytes",
                    e.path().display()
                );
            }
        }
    }
    let l = s.list();
    let runs = l["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "promoted");
    assert!(runs[0]["new_rows"].as_i64().unwrap() > 0);
    assert_eq!(runs[0]["replay_rows"], 0, "nothing earlier to replay");
    assert_eq!(
        runs[0]["base_model"],
        Value::Null,
        "the first run starts from scratch"
    );
    assert_eq!(l["files"].as_array().unwrap().len(), 1);
    assert_eq!(l["files"][0]["run_id"], 1);
    assert_eq!(l["promoted"]["run_id"], 1);
    let acc = l["promoted"]["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let ckpt = PathBuf::from(l["promoted"]["checkpoint"].as_str().unwrap());
    assert!(
        ckpt.join("model.safetensors").exists(),
        "{}",
        ckpt.display()
    );

    // Nothing new: nothing done.
    let before = s.list();
    let out = s.tick_ok(&[]);
    assert!(out.contains("nothing new"), "{out}");
    assert_eq!(s.list(), before, "an idle tick changes nothing");

    // A renamed copy: seen, recognised by its hash, not retrained on.
    s.drop_file(&files[0], "renamed-copy.parquet");
    let out = s.tick_ok(&[]);
    assert!(
        out.contains("already registered: renamed-copy.parquet"),
        "{out}"
    );
    assert!(out.contains("nothing new"), "{out}");
    let after = s.list();
    assert_eq!(after["runs"], before["runs"]);
    assert_eq!(after["files"], before["files"]);
    let shown = s.show(1);
    assert!(
        shown.contains("also seen as renamed-copy.parquet"),
        "{shown}"
    );
    assert!(shown.contains("promoted: yes"), "{shown}");
}

#[test]
fn a_scheduler_that_loses_its_lease_stops_the_stage_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = dataset(dir.path());
    let s = Setup::new(&dir.path().join("sched"));
    s.drop_file(&files[0], "a.parquet");
    // Pretraining long enough to be stolen from mid-stage; the lease is
    // renewed every second.
    let log = dir.path().join("schedule.log");
    let mut child = s
        .command(&["--once", "--lease-secs", "3", "--pretrain-epochs", "500"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("pretraining to start", &mut child, || {
        s.registry().exists()
            && s.list()["runs"]
                .as_array()
                .is_some_and(|r| r.len() == 1 && r[0]["status"] == "produced")
    });
    std::thread::sleep(Duration::from_secs(2));
    // Another scheduler takes the lease over (as after an expiry).
    let conn = pretext_scheduler::registry::connect(&s.registry()).unwrap();
    let far = pretext_scheduler::lease::unix_now() + 3600;
    let n = conn
        .execute(
            &format!("UPDATE lease SET holder = 'thief', expires_at = {far}"),
            (),
        )
        .unwrap();
    assert_eq!(n, 1, "the running scheduler holds the lease");
    let stolen = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if stolen.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the scheduler kept working a minute after losing its lease");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "a lost lease is a failed tick");
    assert!(err.contains("lost to `thief`"), "{err}");
    // Nothing committed past the stage, no error recorded on the run: the
    // new holder continues it.
    let l = s.list();
    assert_eq!(l["runs"][0]["status"], "produced", "{l}");
    assert_eq!(l["runs"][0]["error"], Value::Null, "{l}");
}

#[test]
fn killed_after_each_stage_and_restarted_ends_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let files = dataset(dir.path());
    // Run 1 (uninterrupted) gives a promoted model, so the interrupted run
    // 2 continues pretraining from it and replays run 1's rows.
    let work = dir.path().join("work");
    let s = Setup::new(&work);
    s.drop_file(&files[0], "a.parquet");
    s.tick_ok(&[]);
    let snapshot = dir.path().join("snapshot");
    copy_dir(&work, &snapshot);

    s.drop_file(&files[1], "b.parquet");
    s.tick_ok(&[]);
    let reference = state(&s.list());
    assert_eq!(reference["runs"].as_array().unwrap().len(), 2);
    assert_eq!(reference["runs"][1]["base_model"], 1);
    assert!(reference["runs"][1]["replay_rows"].as_i64().unwrap() > 0);
    let decided = reference["runs"][1]["status"].as_str().unwrap().to_owned();
    assert!(decided == "promoted" || decided == "rejected");

    for stage in [
        "registered",
        "produced",
        "pretrained",
        "fine-tuned",
        "evaluated",
    ] {
        // The same absolute paths as the reference run: restore the
        // snapshot in place.
        std::fs::remove_dir_all(&work).unwrap();
        copy_dir(&snapshot, &work);
        s.drop_file(&files[1], "b.parquet");
        let out = s.tick(&[], Some(stage));
        assert_eq!(
            out.status.code(),
            Some(3),
            "{stage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let l = s.list();
        assert_eq!(l["runs"][1]["status"], stage, "stopped right after {stage}");
        // Restart: the dead process's lease does not block it, and the run
        // continues from the stage after `stage`.
        let out = s.tick_ok(&[]);
        assert!(out.contains(&format!("run 2: {decided}")), "{stage}: {out}");
        assert_eq!(state(&s.list()), reference, "after a stop at {stage}");
        // And nothing is left to do.
        assert!(s.tick_ok(&[]).contains("nothing new"));
    }
}

#[test]
fn a_retrain_that_makes_the_model_worse_is_recorded_and_not_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let files = dataset(dir.path());
    let s = Setup::new(&dir.path().join("sched"));
    s.drop_file(&files[0], "a.parquet");
    let out = s.tick_ok(&["--finetune-epochs", "8", "--finetune-min-steps", "48"]);
    assert!(out.contains("run 1: promoted"), "{out}");
    let first = s.list()["promoted"]["test_accuracy"].as_f64().unwrap();

    // Run 2's fine-tuning cannot learn (learning rate 0): its fresh head
    // guesses, which is worse than the promoted model on the same rows.
    s.drop_file(&files[1], "b.parquet");
    let out = s.tick_ok(&["--finetune-lr", "0"]);
    assert!(out.contains("run 2: rejected"), "{out}");
    let l = s.list();
    assert_eq!(l["runs"][1]["status"], "rejected");
    assert_eq!(l["runs"][1]["error"], Value::Null);
    assert_eq!(l["promoted"]["run_id"], 1, "the promoted model stays");
    let models = l["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "the rejected candidate is recorded");
    let candidate = &models[1];
    assert_eq!(candidate["run_id"], 2);
    assert_eq!(candidate["promoted"], false);
    assert_eq!(candidate["baseline_model"], models[0]["id"]);
    let (worse, baseline) = (
        candidate["test_accuracy"].as_f64().unwrap(),
        candidate["baseline_accuracy"].as_f64().unwrap(),
    );
    assert!(
        worse < baseline,
        "the candidate ({worse}) is worse than the promoted model ({baseline})"
    );
    // The promoted model was re-scored on the candidate's test rows (both
    // files), not its run-1 score (file a only) copied: its accuracy is a
    // whole number of those rows.
    let (rows, first_rows) = (
        candidate["test_rows"].as_i64().unwrap(),
        models[0]["test_rows"].as_i64().unwrap(),
    );
    assert!(
        rows > first_rows,
        "run 2 tests on both files: {rows} vs {first_rows}"
    );
    let right = baseline * rows as f64;
    assert!(
        (right - right.round()).abs() < 1e-6,
        "the baseline {baseline} (run 1: {first}) is a count of {rows} rows"
    );
    // Both files were used, each once; the next tick has nothing to do.
    for f in l["files"].as_array().unwrap() {
        assert!(f["run_id"].is_i64(), "{f}");
    }
    assert!(s.tick_ok(&[]).contains("nothing new"));
    assert!(s.show(2).contains("rejected"), "{}", s.show(2));
}

/// Polls `done` every 100 ms for up to five minutes.
fn wait_until(what: &str, child: &mut std::process::Child, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the scheduler exited ({status}) before {what}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the first series of `/metrics` whose text contains every
/// one of `parts`, 0 when there is none.
fn sample(series: &std::collections::BTreeMap<String, f64>, parts: &[&str]) -> f64 {
    series
        .iter()
        .find(|(k, _)| parts.iter().all(|p| k.contains(p)))
        .map_or(0.0, |(_, v)| *v)
}

#[test]
fn the_cron_loop_serves_metrics_and_sigterm_stops_it_after_the_stage_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let files = dataset(dir.path());
    let s = Setup::new(&dir.path().join("sched"));
    s.drop_file(&files[0], "a.parquet");
    let port = http::free_port();
    let stdout = dir.path().join("schedule.out");
    /// Killed if the test fails before it exits.
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut daemon = Daemon(
        s.command(&[
            "--cron",
            "* * * * * *",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let child = &mut daemon.0;

    // Every second a tick: the first retrains on a.parquet and promotes.
    wait_until("run 1 is promoted", child, || {
        http::scrape_series(port).is_some_and(|m| {
            sample(&m, &["pretext_scheduler_runs_decided_total", "promoted"]) >= 1.0
        })
    });
    let m = http::scrape_series(port).unwrap();
    assert!(sample(&m, &["pretext_scheduler_ticks_total"]) >= 1.0);
    assert_eq!(
        sample(&m, &["pretext_scheduler_files_registered_total"]),
        1.0
    );
    assert!(sample(&m, &["pretext_scheduler_last_tick_seconds"]) > 1.7e9);
    assert_eq!(sample(&m, &["pretext_scheduler_tick_errors_total"]), 0.0);
    assert_eq!(http::get(port, "/healthz").map(|r| r.0), Some(200));
    // Idle ticks keep counting and change nothing.
    let ticks = sample(&m, &["pretext_scheduler_ticks_total"]);
    wait_until("an idle tick", child, || {
        http::scrape_series(port)
            .is_some_and(|m| sample(&m, &["pretext_scheduler_ticks_total"]) > ticks)
    });

    // A new file starts run 2; SIGTERM as soon as it exists.
    s.drop_file(&files[1], "b.parquet");
    wait_until("run 2 starts", child, || {
        s.list()["runs"].as_array().unwrap().len() == 2
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    let exit = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "SIGTERM ends the scheduler with 0: {exit}");
    let printed = std::fs::read_to_string(&stdout).unwrap();
    assert!(printed.contains("schedule: stopped"), "{printed}");

    // The run stopped at a committed stage, without an error: the next
    // tick continues it to a decision.
    let l = s.list();
    let stopped_at = l["runs"][1]["status"].as_str().unwrap().to_owned();
    assert!(
        [
            "registered",
            "produced",
            "pretrained",
            "fine-tuned",
            "evaluated"
        ]
        .contains(&stopped_at.as_str()),
        "run 2 was mid-way when SIGTERM came, and stops after that stage: {stopped_at}"
    );
    assert_eq!(l["runs"][1]["error"], Value::Null);
    let out = s.tick_ok(&[]);
    assert!(
        out.contains("run 2: promoted") || out.contains("run 2: rejected"),
        "{out}"
    );
    let l = s.list();
    for f in l["files"].as_array().unwrap() {
        assert!(f["run_id"].is_i64(), "every file used: {f}");
    }
    assert!(s.tick_ok(&[]).contains("nothing new"));
}
