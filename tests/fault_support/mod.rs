//! Helpers for the fault and security suites: the broker lock, `rabbitmqctl` with guards that restore the broker, `pretext` child processes, and `pretext audit`.

// Each binary uses a different subset.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use pretext_mq::{RabbitConfig, SharedTransport};
use tokio::sync::{Mutex, MutexGuard};

/// The longest any wait of these suites may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(90);

/// Serialises the tests of one binary: they stop the broker, set alarms or
/// change users, which would break each other. (Run the binary by hand
/// under `flock -x /tmp/pretext-broker.lock` so other processes' tests wait.)
pub async fn broker_lock() -> MutexGuard<'static, ()> {
    static LOCK: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));
    LOCK.lock().await
}

/// Connects to the broker; a missing broker fails the test.
pub async fn connect(url: &str) -> SharedTransport {
    pretext_mq::connect(url, RabbitConfig::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ at {} is unreachable: {e}",
                pretext_mq::redact_url(url)
            )
        })
}

/// Runs `rabbitmqctl ARGS` and returns its stdout; fails the test if it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("cannot run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts the broker application (idempotent) and waits until it serves.
pub fn start_broker() {
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
}

/// The broker application stopped; started again when dropped, also when
/// the test panics.
pub struct StoppedBroker(());

impl StoppedBroker {
    pub fn stop() -> Self {
        rabbitmqctl(&["stop_app"]);
        Self(())
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        let _ = Command::new("rabbitmqctl").arg("await_startup").status();
    }
}

/// Which RabbitMQ resource alarm a test raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmKind {
    /// The memory high watermark (set to 1 MB).
    Memory,
    /// The free disk limit (set to 1 PB).
    Disk,
}

/// A resource alarm raised on the local broker by lowering its memory
/// watermark or raising its free-disk limit; the previous setting is put
/// back on drop.
pub struct BrokerAlarm {
    kind: AlarmKind,
    previous: String,
}

impl BrokerAlarm {
    /// Sets the threshold so that the broker is past it at once.
    pub fn raise(kind: AlarmKind) -> Self {
        let query = match kind {
            AlarmKind::Memory => "vm_memory_monitor:get_vm_memory_high_watermark().",
            AlarmKind::Disk => "rabbit_disk_monitor:get_disk_free_limit().",
        };
        let previous = rabbitmqctl(&["eval", query]).trim().to_owned();
        match kind {
            AlarmKind::Memory => rabbitmqctl(&["set_vm_memory_high_watermark", "absolute", "1MB"]),
            AlarmKind::Disk => rabbitmqctl(&["set_disk_free_limit", "1000000000000000"]),
        };
        Self { kind, previous }
    }

    /// Whether the broker reports an alarm of `kind`.
    pub fn active(kind: AlarmKind) -> bool {
        let alarms = rabbitmqctl(&["eval", "rabbit_alarm:get_alarms()."]);
        alarms.contains(match kind {
            AlarmKind::Memory => "memory",
            AlarmKind::Disk => "disk",
        })
    }
}

impl Drop for BrokerAlarm {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            Command::new("rabbitmqctl")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        match self.kind {
            AlarmKind::Memory => {
                // `0.4` or `{absolute,1000000}` as printed by the eval.
                let prev = self.previous.trim_matches(|c| c == '{' || c == '}');
                let ok = match prev.strip_prefix("absolute,") {
                    Some(bytes) => run(&["set_vm_memory_high_watermark", "absolute", bytes]),
                    None => run(&["set_vm_memory_high_watermark", prev]),
                };
                if !ok {
                    run(&["set_vm_memory_high_watermark", "0.4"]);
                }
            }
            AlarmKind::Disk => {
                // Bytes, as printed by the eval.
                if self.previous.parse::<u64>().is_err()
                    || !run(&["set_disk_free_limit", &self.previous])
                {
                    run(&["set_disk_free_limit", "50000000"]);
                }
            }
        }
    }
}

/// `pretext ARGS` with its stderr in `log`, info-level logs.
pub fn pretext(args: &[String], log: &Path) -> Command {
    let log = std::fs::File::create(log).expect("create log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretext"));
    cmd.args(args)
        .env("PRETEXT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// Arguments of a tiny `pretext train`: width 16, depth 2, one thread, CPU.
pub fn train_args(url: &str, ns: &str, run_dir: &Path, checkpoint_every: u64) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--broker", url, "--ns", ns, "--run-dir"]
        .map(String::from)
        .to_vec();
    args.push(run_dir.display().to_string());
    args.extend(
        [
            "--task",
            "masked",
            "--checkpoint-every",
            &checkpoint_every.to_string(),
            "--threads",
            "1",
            "--device",
            "cpu",
            "--width",
            "16",
            "--depth",
            "2",
            "--warmup-steps",
            "2",
            "--lr",
            "0.003",
            "--seed",
            "1",
        ]
        .map(String::from),
    );
    args
}

/// Arguments of `pretext produce` of `data` into `run_dir`, 8192-token batches.
pub fn produce_args(url: &str, ns: &str, data: &Path, run_dir: &Path, id: &str) -> Vec<String> {
    let mut args: Vec<String> = ["produce", "--broker", url, "--ns", ns, "--data"]
        .map(String::from)
        .to_vec();
    args.push(data.display().to_string());
    args.push("--run-dir".into());
    args.push(run_dir.display().to_string());
    args.extend(
        [
            "--task",
            "masked",
            "--max-tokens",
            "8192",
            "--seed",
            "5",
            "--producer-id",
            id,
        ]
        .map(String::from),
    );
    args
}

pub use crate::support::{Cleanup, amqp_url};

/// Waits until `done()` holds, failing with the child's log if the child
/// exits first or `LIMIT` passes.
pub fn wait_for(what: &str, child: &mut Child, log: &Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) before {what}:\n{}",
                log.display(),
                read(log)
            );
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `done()` holds, failing after `LIMIT`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (at most [`LIMIT`]) for `child` to exit by itself.
pub fn wait_exit(child: &mut Child, log: &Path) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{} did not exit:\n{}",
            log.display(),
            read(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit by itself and checks it succeeded.
pub fn wait_success(child: &mut Child, log: &Path) {
    let status = wait_exit(child, log);
    assert!(
        status.success(),
        "{} failed ({status}):\n{}",
        log.display(),
        read(log)
    );
}

/// A file's text, empty if unreadable.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `pretext audit --json RUN_DIR`.
pub fn audit(run_dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["audit", "--json"])
        .arg(run_dir)
        .output()
        .expect("run pretext audit");
    assert!(
        out.status.success(),
        "audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("audit --json prints JSON")
}

/// Checks the audit: `published` batches, every one applied exactly once.
pub fn assert_exactly_once(run_dir: &Path, published: u64) {
    let report = audit(run_dir);
    assert_eq!(
        report,
        serde_json::json!({
            "published": published,
            "applied": published,
            "missing": 0,
            "applied_twice": 0,
            "dead": []
        }),
        "audit of {}",
        run_dir.display()
    );
}

/// Resident memory of process `pid` in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}
