//! The services as operated in production, on the real RabbitMQ (AMQP_URL,
//! default the local guest broker): the trainer's `/metrics` is scraped and
//! parsed while it trains and its step counter moves with the data; SIGTERM
//! mid-run ends the trainer and the producer with exit 0, and once restarts
//! complete the run `pretext audit` finds every batch applied exactly once;
//! the broker password comes from `PRETEXT_AMQP_PASSWORD_FILE` and a wrong one
//! is never printed. Fails if the broker is unreachable.

#[path = "http_support/mod.rs"]
mod http;
#[path = "trainer_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http::{free_port, get, scrape};
use pretext_core::task::Task;
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_mq::{RabbitConfig, SharedTransport, Topology};
use support::ranks::audit;
use support::*;

async fn rabbit() -> SharedTransport {
    let url = amqp_url();
    pretext_mq::connect(&url, RabbitConfig::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ at {} is unreachable: {e}",
                pretext_mq::redact_url(&url)
            )
        })
}

/// A running `pretext` process, killed if the test fails.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
    what: &'static str,
}

impl Proc {
    fn start(what: &'static str, args: &[String], log: std::path::PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pretext"))
            .args(args)
            .env("PRETEXT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start pretext");
        Self { child, log, what }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `cond` holds; fails if the process exits first.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.what,
                    self.log()
                );
            }
            assert!(
                start.elapsed() < STEP,
                "{}: timed out waiting for {what}:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn term(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "could not signal {}", self.what);
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < STEP,
                "{} did not exit:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn expect_success(&mut self, when: &str) {
        let status = self.wait_exit();
        assert!(
            status.success(),
            "{} {when}: exit {status}:\n{}",
            self.what,
            self.log()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn trainer_args(ns: &str, run_dir: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "train",
        "--broker",
        &amqp_url(),
        "--ns",
        ns,
        "--task",
        "masked",
        "--checkpoint-every",
        "4",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--width",
        "8",
        "--depth",
        "1",
        "--seed",
        "1",
    ]);
    a.extend(args(&["--run-dir", run_dir.to_str().unwrap()]));
    a.extend(args(&["--metrics-addr", &format!("127.0.0.1:{port}")]));
    a.extend(args(extra));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trainer_metrics_move_with_the_data_and_sigterm_then_restart_loses_nothing() {
    let transport = rabbit().await;
    let topology = Topology::new(unique_namespace("ops-metrics"));
    topology.declare(&*transport).await.expect("declare");
    let _queues = Cleanup::new(&amqp_url(), &topology);
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let data = batches(Task::Masked, "m", 12);
    let (first, later) = data.split_at(4);
    let (second, third) = later.split_at(4);
    control(&*transport, &topology, plan(Task::Masked, 2)).await;
    publish_batches(&*transport, &topology, first).await;
    manifest(run_dir, "a", data.split_at(8).0);

    let port = free_port();
    let mut trainer = Proc::start(
        "trainer",
        &trainer_args(topology.namespace(), run_dir, port, &[]),
        run_dir.join("train-1.log"),
    );
    let steps = |port| scrape(port).and_then(|m| m.get("pretext_trainer_steps_total").copied());
    trainer.wait_for("4 steps on /metrics", || steps(port) == Some(4.0));
    assert_eq!(get(port, "/healthz"), Some((200, "ok\n".to_owned())));
    // The counter follows the data: 4 more batches, 4 more steps.
    publish_batches(&*transport, &topology, second).await;
    control(&*transport, &topology, task_done("a", data.split_at(8).0)).await;
    trainer.wait_for("8 steps on /metrics", || steps(port) == Some(8.0));
    let m = scrape(port).unwrap();
    assert_eq!(m["pretext_trainer_step"], 8.0);
    assert_eq!(m["pretext_trainer_batches_applied_total"], 8.0);
    assert!(
        m["pretext_trainer_tokens_total"] >= 8.0 * 4.0 * 300.0,
        "{m:?}"
    );
    assert!(m["pretext_trainer_loss"] > 0.0);
    assert_eq!(m["pretext_up"], 1.0);
    // Checkpoint at step 8 (every 4), then its 8 deliveries acked.
    trainer.wait_for("8 acks", || {
        scrape(port).and_then(|m| m.get("pretext_trainer_batches_acked_total").copied())
            == Some(8.0)
    });

    // Mid-run (task b is planned, not published): SIGTERM → exit 0.
    trainer.term();
    trainer.expect_success("after SIGTERM");
    assert!(trainer.log().contains("shutting down"));

    // The restart completes the run.
    publish_batches(&*transport, &topology, third).await;
    manifest(run_dir, "b", third);
    control(&*transport, &topology, task_done("b", third)).await;
    let port = free_port();
    let mut trainer = Proc::start(
        "restarted trainer",
        &trainer_args(topology.namespace(), run_dir, port, &[]),
        run_dir.join("train-2.log"),
    );
    trainer.expect_success("at the end of the data");
    assert_eq!(
        audit(run_dir),
        serde_json::json!({"published": 12, "applied": 12, "missing": 0, "applied_twice": 0, "dead": []})
    );
    transport.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_sigterm_waits_for_its_confirms_exits_zero_and_the_redo_loses_nothing() {
    let transport = rabbit().await;
    let topology = Topology::new(unique_namespace("ops-producer"));
    let _queues = Cleanup::new(&amqp_url(), &topology);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 12 files of 20 rows: 12 file tasks, more than a producer holds at
    // once (twice its concurrency); lengths in one bucket (up to 552),
    // several batches a task.
    generate(
        &SynthConfig {
            sequences: 240,
            min_len: 513,
            max_len: 540,
            seed: 5,
            rows_per_file: 20,
            row_group_rows: 10,
            ..Default::default()
        },
        &data,
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    // A batch queue bounded to 1 byte: with no trainer, the broker soon
    // refuses every further batch and the producer waits for confirms that
    // cannot come.
    let bound = ["--queue-max-bytes", "1"];
    let producer_args = |id: &str, port: u16| {
        let mut a = args(&[
            "produce",
            "--broker",
            &amqp_url(),
            "--ns",
            topology.namespace(),
            "--task",
            "masked",
            "--max-tokens",
            "4096",
            "--producer-id",
            id,
            "--shutdown-grace",
            "120",
        ]);
        a.extend(args(&[
            "--data",
            data.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
        ]));
        a.extend(args(&["--metrics-addr", &format!("127.0.0.1:{port}")]));
        a.extend(args(&bound));
        a
    };
    let pport = free_port();
    let mut producer = Proc::start(
        "producer",
        &producer_args("p1", pport),
        dir.path().join("p1.log"),
    );
    // Held back: the broker has refused a batch, which cannot be accepted
    // before a trainer drains the queue.
    producer.wait_for("a publish refused by the full queue", || {
        scrape(pport).is_some_and(|m| {
            m.get("pretext_publish_nacks_total")
                .is_some_and(|&n| n >= 1.0)
        })
    });
    let m = scrape(pport).unwrap();
    assert_eq!(m["pretext_producer_rows_rejected_total"], 0.0, "{m:?}");
    assert!(
        m["pretext_producer_batches_published_total"] >= 1.0,
        "{m:?}"
    );
    // The broker takes a few messages past the bound before it refuses
    // (quorum queues apply it asynchronously), far from all of them.
    assert!(
        m.get("pretext_producer_tasks_total")
            .copied()
            .unwrap_or(0.0)
            < 6.0,
        "the producer should be held back by the bound: {m:?}"
    );

    // SIGTERM: it stops building and waits for the confirms of what it sent,
    // reporting itself as stopping meanwhile; it cannot exit before a
    // trainer drains the queue.
    producer.term();
    producer.wait_for("/healthz to say stopping", || {
        get(pport, "/healthz").is_some_and(|(s, _)| s == 503)
    });
    assert!(
        producer.running(),
        "the producer exited with unconfirmed batches:\n{}",
        producer.log()
    );
    let tport = free_port();
    let mut trainer = Proc::start(
        "trainer",
        &trainer_args(topology.namespace(), &run_dir, tport, &bound),
        dir.path().join("train.log"),
    );
    producer.expect_success("after SIGTERM, once its confirms came");

    // A second producer redoes the handed-back tasks and the rest; the
    // trainer ends at the end of the data.
    let mut second = Proc::start(
        "second producer",
        &producer_args("p2", free_port()),
        dir.path().join("p2.log"),
    );
    second.expect_success("at the end of its work");
    trainer.expect_success("at the end of the data");
    // The tasks p1 handed back or never took were done by p2: between them,
    // all 12, each once.
    let tasks = |producer: &str| -> std::collections::BTreeSet<String> {
        let path = pretext_core::manifest::manifest_dir(&run_dir).join(format!("{producer}.jsonl"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["task_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (first, second) = (tasks("p1"), tasks("p2"));
    assert!(
        first.len() < 12 && !second.is_empty(),
        "p1 did {first:?}, p2 did {second:?}"
    );
    assert!(
        first.is_disjoint(&second),
        "a task done twice: {first:?} {second:?}"
    );
    assert_eq!(first.len() + second.len(), 12);
    let report = audit(&run_dir);
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["applied_twice"], 0, "{report}");
    assert!(report["published"].as_u64().unwrap() >= 12, "{report}");
    assert_eq!(report["published"], report["applied"], "{report}");
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );
    transport.close().await.unwrap();
}

/// `AMQP_URL` split into the URL without user info, the user and the password.
fn url_without_credentials() -> (String, String, String) {
    let url = amqp_url();
    let (scheme, rest) = url.split_once("://").expect("scheme://");
    let (info, host) = rest.rsplit_once('@').expect("AMQP_URL with user:password@");
    let (user, password) = info.split_once(':').expect("user:password");
    (
        format!("{scheme}://{host}"),
        user.to_owned(),
        password.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_password_comes_from_a_secret_file_and_a_wrong_one_is_never_shown() {
    let topology = Topology::new(unique_namespace("ops-credentials"));
    let _queues = Cleanup::new(&amqp_url(), &topology);
    let dir = tempfile::tempdir().unwrap();
    let (url, user, password) = url_without_credentials();
    let run = |secret: &str, run_dir: &str| {
        let file = dir.path().join(format!("{run_dir}.secret"));
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_pretext"))
            .args([
                "train",
                "--broker",
                &url,
                "--ns",
                topology.namespace(),
                "--max-steps",
                "0",
            ])
            .args([
                "--device",
                "cpu",
                "--threads",
                "1",
                "--width",
                "8",
                "--depth",
                "1",
            ])
            .arg("--run-dir")
            .arg(dir.path().join(run_dir))
            .env("PRETEXT_AMQP_USER", &user)
            .env("PRETEXT_AMQP_PASSWORD_FILE", &file)
            .env("PRETEXT_LOG", "debug")
            .output()
            .expect("run pretext train")
    };
    // The URL has no credentials: the user and the file's password let the
    // trainer in (it declares the topology, then stops at --max-steps 0).
    let ok = run(&password, "good");
    assert!(
        ok.status.success(),
        "with the password file the trainer could not connect:\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A wrong password is refused, and appears in no log line or error.
    let wrong = "wr0ng-S3cret-7d41";
    let refused = run(wrong, "bad");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "a wrong password was accepted");
    assert!(
        out.contains("ACCESS_REFUSED") || out.contains("ACCESS-REFUSED"),
        "{out}"
    );
    assert!(!out.contains(wrong), "the password was printed:\n{out}");
}
