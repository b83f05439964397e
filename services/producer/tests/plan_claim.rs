//! The plan claim (`RUN_DIR/plan.lock`): held by a live planner, however
//! long it takes, it is never taken over; left by a dead one, it is free at
//! once. On the in-process transport.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pretext_core::task::Task;
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_mq::{MemoryTransport, SharedTransport, Topology};
use pretext_producer::ProducerConfig;
use pretext_producer::plan::ensure_plan;

fn setup(dir: &Path) -> (ProducerConfig, SharedTransport, Topology) {
    let cfg = SynthConfig {
        sequences: 60,
        min_len: 512,
        max_len: 700,
        seed: 3,
        rows_per_file: 30,
        row_group_rows: 10,
        ..Default::default()
    };
    generate(&cfg, &dir.join("data")).unwrap();
    let mut producer = ProducerConfig::new(
        vec![dir.join("data")],
        Task::Masked,
        "claim",
        dir.join("run"),
    );
    producer.producer_id = "claim-test".into();
    std::fs::create_dir_all(dir.join("run")).unwrap();
    (
        producer,
        Arc::new(MemoryTransport::new()),
        Topology::new("claim"),
    )
}

/// `plan.lock` as a producer that claimed it an hour ago left it.
fn old_claim(run_dir: &Path) -> File {
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(run_dir.join("plan.lock"))
        .unwrap();
    lock.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    lock
}

#[tokio::test]
async fn a_claim_held_by_a_live_planner_is_never_taken_over_however_old() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, transport, topology) = setup(dir.path());
    topology.declare(&*transport).await.unwrap();
    // A planner that is alive (holds the claim) but has not touched the
    // file for an hour: before, any claim older than 30 s was removed and
    // planned over, so two producers could both plan.
    let holder = old_claim(&cfg.run_dir);
    holder.try_lock().expect("the test holds the claim");
    let planning = tokio::spawn({
        let (cfg, transport, topology) = (cfg.clone(), transport.clone(), topology.clone());
        async move { ensure_plan(&cfg, &transport, &topology).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !planning.is_finished(),
        "planned while another held the claim"
    );
    assert!(!cfg.run_dir.join("plan.json").exists());
    // Released: the waiting producer plans.
    drop(holder);
    let plan = tokio::time::timeout(Duration::from_secs(30), planning)
        .await
        .expect("planned once the claim was free")
        .unwrap()
        .unwrap();
    assert_eq!(plan.planned_by, "claim-test");
    assert!(cfg.run_dir.join("plan.json").exists());
}

#[tokio::test]
async fn a_claim_left_by_a_dead_planner_is_free_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, transport, topology) = setup(dir.path());
    topology.declare(&*transport).await.unwrap();
    // The file of a planner that died: nobody holds its lock.
    let left = old_claim(&cfg.run_dir);
    left.set_modified(SystemTime::now()).unwrap();
    drop(left);
    let plan = tokio::time::timeout(
        Duration::from_secs(10),
        ensure_plan(&cfg, &transport, &topology),
    )
    .await
    .expect("a dead planner's claim is not waited out")
    .unwrap();
    assert!(!plan.tasks.is_empty());
    // A second producer reads the plan, and makes no other.
    let again = ensure_plan(&cfg, &transport, &topology).await.unwrap();
    assert_eq!(again, plan);
}
