//! The producer on the real RabbitMQ (AMQP_URL, default the local broker):
//! exactly-once content, a broker restart mid-publish, back-pressure from a
//! full queue, two producers sharing the work, and bad messages dead-lettered.
//! Every test uses its own namespace and deletes it; a missing broker fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use pretext_core::batch::{Batch, BatchRow, CONTENT_TYPE, DecodeError, check_message};
use pretext_core::manifest::read_manifests;
use pretext_core::split::Split;
use pretext_core::task::{MaskConfig, Task, mask_rng, select_positions};
use pretext_core::{MASK_TOKEN, PAD_TOKEN};
use pretext_datasets::rows::Row;
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_mq::message::header::REASON;
use pretext_mq::{
    ConsumeOptions, OutMessage, RabbitConfig, SharedTransport, Topology, TopologyConfig,
};
use pretext_producer::{ProducerConfig, ProducerSummary, run};

/// Tests that restart the broker must not overlap the others.
static BROKER: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn rabbit() -> SharedTransport {
    pretext_mq::connect(&amqp_url(), RabbitConfig::default())
        .await
        .expect("RabbitMQ must be running at AMQP_URL (ops/setup.sh --broker starts it)")
}

fn ns(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

fn dataset(dir: &Path, sequences: usize, max_len: usize) -> SynthConfig {
    let cfg = SynthConfig {
        sequences,
        min_len: 512,
        max_len,
        seed: 3,
        rows_per_file: 100,
        row_group_rows: 25,
        ..Default::default()
    };
    generate(&cfg, dir).unwrap();
    cfg
}

fn producer(data: &Path, run_dir: &Path, ns: &str, id: &str) -> ProducerConfig {
    let mut c = ProducerConfig::new(
        vec![data.to_path_buf()],
        Task::Masked,
        ns,
        run_dir.to_path_buf(),
    );
    c.producer_id = id.into();
    c.mask.seed = 11;
    c.buckets.max_tokens = 8192;
    c.task_rows = 50;
    c
}

/// Consumes and acks until `want` distinct ids arrived (or times out);
/// returns every batch by id and how many duplicate deliveries came.
async fn drain(t: &SharedTransport, queue: &str, want: usize) -> (BTreeMap<String, Batch>, usize) {
    let ns = queue.strip_suffix(".pretrain").expect("a batch queue");
    Topology::new(ns).declare(&**t).await.unwrap();
    let mut c = t
        .consume(queue, ConsumeOptions { prefetch: 64 })
        .await
        .unwrap();
    let mut got = BTreeMap::new();
    let mut dups = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, c.next())
            .await
            .expect("batches arrive in time")
            .unwrap()
            .unwrap();
        let b =
            check_message(d.content_type(), d.body().to_vec()).expect("producer batches decode");
        if got
            .insert(d.message_id().to_owned(), b.to_batch())
            .is_some()
        {
            dups += 1;
        }
        d.ack().await.unwrap();
    }
    (got, dups)
}

async fn cleanup(t: &SharedTransport, ns: &str) {
    Topology::new(ns).delete(&**t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_arrives_once_and_decodes_to_the_validated_input() {
    let _g = BROKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let synth = dataset(&dir.path().join("data"), 150, 3000);
    let (t, name) = (rabbit().await, ns("exact"));
    let mut cfg = producer(
        &dir.path().join("data"),
        &dir.path().join("run"),
        &name,
        "p1",
    );
    cfg.epochs = 2;
    let summary = run(cfg, t.clone(), std::future::pending()).await.unwrap();
    let manifest = read_manifests(&dir.path().join("run")).unwrap();
    assert_eq!(manifest.len() as u64, summary.batches);
    let (got, dups) = drain(&t, &Topology::new(&name).pretrain(), manifest.len()).await;
    assert_eq!(dups, 0);
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        manifest.keys().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        t.queue_depth(&Topology::new(&name).pretrain())
            .await
            .unwrap(),
        0,
        "nothing extra"
    );

    let originals: BTreeMap<String, _> = synth.rows().unwrap().map(|r| (r.id.clone(), r)).collect();
    let mut seen: BTreeMap<(String, u32), usize> = BTreeMap::new();
    let mask = MaskConfig {
        seed: 11,
        ..Default::default()
    };
    for (id, b) in &got {
        assert_eq!(&b.message_id(), id, "message id is the batch's content id");
        assert!(b.rows() * b.bucket_len <= 8192 || b.rows() == 1);
        for (r, seq) in b.seq_ids.iter().enumerate() {
            *seen.entry((seq.clone(), b.epoch)).or_default() += 1;
            let orig = &originals[seq];
            assert_eq!(orig.split, Split::Train, "only train rows are published");
            let n = orig.values.len();
            let l = b.bucket_len;
            let (input, target, lm) = (
                &b.input[r * l..(r + 1) * l],
                &b.target[r * l..(r + 1) * l],
                &b.loss_mask[r * l..(r + 1) * l],
            );
            assert_eq!(b.lengths[r] as usize, n);
            assert_eq!(
                &target[..n],
                &orig.values[..],
                "targets are the original values"
            );
            assert!(
                target[n..]
                    .iter()
                    .chain(&input[n..])
                    .all(|&v| v == PAD_TOKEN)
            );
            let sel = select_positions(&mask, &mut mask_rng(11, b.epoch, seq), n);
            for p in 0..n {
                assert_eq!(lm[p] == 1, sel[p], "mask matches (seed, epoch, seq_id)");
                if !sel[p] {
                    assert_eq!(input[p], orig.values[p]);
                }
            }
            assert!(input[..n].iter().filter(|&&v| v == MASK_TOKEN).count() > 0 || n < 20);
        }
    }
    let train = originals
        .values()
        .filter(|r| r.split == Split::Train)
        .count();
    assert_eq!(seen.len(), train * 2, "every train row in every epoch");
    assert!(seen.values().all(|&c| c == 1), "no row twice in an epoch");
    cleanup(&t, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_share_the_work_and_publish_each_batch_once() {
    let _g = BROKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("data"), 600, 4000);
    let (t, name) = (rabbit().await, ns("two"));
    let run_dir = dir.path().join("run");
    let a = tokio::spawn(run(
        producer(&dir.path().join("data"), &run_dir, &name, "pa"),
        t.clone(),
        std::future::pending(),
    ));
    let b = tokio::spawn(run(
        producer(&dir.path().join("data"), &run_dir, &name, "pb"),
        rabbit().await,
        std::future::pending(),
    ));
    let (sa, sb): (ProducerSummary, ProducerSummary) =
        (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    // Which producer takes how many tasks is up to timing; between them, all.
    eprintln!("tasks: {} + {}", sa.tasks, sb.tasks);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("plan.json")).unwrap()).unwrap();
    assert_eq!(
        sa.tasks + sb.tasks,
        plan["tasks"].as_array().unwrap().len() as u64
    );
    let manifest = read_manifests(&run_dir).unwrap();
    assert_eq!(
        manifest.len() as u64,
        sa.batches + sb.batches,
        "no batch published by both"
    );
    let (got, dups) = drain(&t, &Topology::new(&name).pretrain(), manifest.len()).await;
    assert_eq!(dups, 0);
    assert_eq!(got.len(), manifest.len());
    cleanup(&t, &name).await;
}

/// Writes `rows` as one Parquet file of the raw-input contract, two rows per
/// row group.
fn write_rows(path: &Path, rows: &[Row]) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(2))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        pretext_datasets::rows::schema(),
        Some(props),
    )
    .unwrap();
    for pair in rows.chunks(2) {
        w.write(&pretext_datasets::rows::to_record_batch(pair))
            .unwrap();
    }
    w.close().unwrap();
}

/// Every row of the quarantine files under `dir`: (id, source row, reason).
fn quarantined(dir: &Path) -> Vec<(String, u64, String)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let (ids, rows, reasons) = (
                b.column_by_name("id").unwrap().as_string::<i32>(),
                b.column_by_name("source_row")
                    .unwrap()
                    .as_primitive::<UInt64Type>(),
                b.column_by_name("reason").unwrap().as_string::<i32>(),
            );
            for r in 0..b.num_rows() {
                out.push((
                    ids.value(r).to_owned(),
                    rows.value(r),
                    reasons.value(r).to_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_are_counted_once_quarantined_with_their_reason_and_never_published() {
    let _g = BROKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dataset(&data, 150, 3000);
    // An id of the first file, to repeat in a later one.
    let first_id = {
        let mut ids = pretext_core::validate::IdRegistry::default();
        let f = pretext_core::input::discover(std::slice::from_ref(&data)).unwrap()[0].clone();
        let mut r = pretext_core::input::ValidatingReader::open(&f, Default::default(), None, None)
            .unwrap();
        let c = r.next_chunk(&mut ids).unwrap().unwrap();
        c.verdict
            .rows
            .into_iter()
            .find(|r| r.split == Split::Train)
            .unwrap()
            .id
    };
    let row = |id: &str, values: Vec<u8>| Row {
        id: id.into(),
        values,
        class: 0,
        labeled: false,
        split: Split::Train,
    };
    let good: Vec<u8> = (0..600).map(|i| (i % 41) as u8).collect();
    let mut out_of_range = good.clone();
    out_of_range[7] = 41;
    write_rows(
        &data.join("zz-bad.parquet"),
        &[
            row(&first_id, good.clone()),           // 0: an id of part-00000
            row("bad-range", out_of_range.clone()), // 1: value 41
            row("bad-short", vec![1; 100]),         // 2: shorter than 512
            row("ok-1", good.clone()),              // 3: published
            row("ok-1", good.clone()),              // 4: repeats row 3 (other row group)
            row("bad-range", out_of_range),         // 5: out of range before duplicate
        ],
    );
    let (t, name) = (rabbit().await, ns("reject"));
    let run_dir = dir.path().join("run");
    let mut cfg = producer(&data, &run_dir, &name, "p1");
    cfg.epochs = 2;
    let summary = run(cfg, t.clone(), std::future::pending()).await.unwrap();
    assert_eq!(summary.rejected_rows, 5, "counted once, not once per epoch");
    let q = quarantined(&run_dir.join("quarantine"));
    let expected = vec![
        ("bad-range".to_owned(), 1, "value_out_of_range".to_owned()),
        ("bad-range".to_owned(), 5, "value_out_of_range".to_owned()),
        ("bad-short".to_owned(), 2, "length_out_of_range".to_owned()),
        (first_id.clone(), 0, "duplicate_id".to_owned()),
        ("ok-1".to_owned(), 4, "duplicate_id".to_owned()),
    ];
    let mut expected = expected;
    expected.sort();
    assert_eq!(q, expected);
    let manifest = read_manifests(&run_dir).unwrap();
    let (got, _) = drain(&t, &Topology::new(&name).pretrain(), manifest.len()).await;
    let mut copies: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for b in got.values() {
        for id in &b.seq_ids {
            *copies.entry((id.clone(), b.epoch)).or_default() += 1;
        }
    }
    for epoch in 0..2 {
        assert_eq!(copies.get(&("ok-1".to_owned(), epoch)), Some(&1));
        assert_eq!(
            copies.get(&(first_id.clone(), epoch)),
            Some(&1),
            "the first copy only"
        );
        assert!(!copies.contains_key(&("bad-range".to_owned(), epoch)));
        assert!(!copies.contains_key(&("bad-short".to_owned(), epoch)));
    }
    cleanup(&t, &name).await;
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_blocks_the_producer_with_flat_memory_until_drained() {
    let _g = BROKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("data"), 600, 4000);
    let (t, name) = (rabbit().await, ns("full"));
    let mut cfg = producer(
        &dir.path().join("data"),
        &dir.path().join("run"),
        &name,
        "p1",
    );
    let bound = 1024 * 1024;
    cfg.topology = TopologyConfig {
        batch_max_length_bytes: bound,
        ..Default::default()
    };
    let task = tokio::spawn(run(cfg, t.clone(), std::future::pending()));
    let queue = Topology::new(&name).pretrain();
    // Wait until the queue stops growing: the producer is blocked.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let d = t.queue_depth(&queue).await.unwrap();
        if d == last && d > 0 {
            break;
        }
        last = d;
    }
    assert!(
        !task.is_finished(),
        "the producer must be blocked, not done"
    );
    let rss0 = rss_mb();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss1 = rss_mb();
    assert!(!task.is_finished());
    assert_eq!(
        t.queue_depth(&queue).await.unwrap(),
        last,
        "nothing more got in"
    );
    assert!(
        rss1 - rss0 < 32.0,
        "memory grew while blocked: {rss0:.0} -> {rss1:.0} MB"
    );
    // Drain: the producer resumes and finishes; nothing is lost.
    let drainer = {
        let t = t.clone();
        let q = queue.clone();
        tokio::spawn(async move {
            let mut c = t
                .consume(&q, ConsumeOptions { prefetch: 32 })
                .await
                .unwrap();
            let mut ids = BTreeSet::new();
            while let Ok(Ok(Some(d))) =
                tokio::time::timeout(Duration::from_secs(10), c.next()).await
            {
                ids.insert(d.message_id().to_owned());
                d.ack().await.unwrap();
            }
            ids
        })
    };
    let summary = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("resumes")
        .unwrap()
        .unwrap();
    let ids = drainer.await.unwrap();
    let manifest = read_manifests(&dir.path().join("run")).unwrap();
    assert_eq!(summary.batches as usize, manifest.len());
    assert_eq!(ids, manifest.keys().cloned().collect::<BTreeSet<_>>());
    cleanup(&t, &name).await;
}

fn rabbitmqctl(args: &[&str]) {
    let ok = std::process::Command::new("rabbitmqctl")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "rabbitmqctl {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_survives_a_broker_restart_mid_publish() {
    let _g = BROKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("data"), 2400, 6000);
    let (t, name) = (rabbit().await, ns("restart"));
    let run_dir = dir.path().join("run");
    let task = tokio::spawn(run(
        producer(&dir.path().join("data"), &run_dir, &name, "p1"),
        t.clone(),
        std::future::pending(),
    ));
    let queue = Topology::new(&name).pretrain();
    while t.queue_depth(&queue).await.unwrap_or(0) < 20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !task.is_finished(),
        "restart must hit mid-publish; make the dataset larger"
    );
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let summary = tokio::time::timeout(Duration::from_secs(180), task)
        .await
        .expect("recovers")
        .unwrap()
        .unwrap();
    let manifest = read_manifests(&run_dir).unwrap();
    assert_eq!(summary.batches as usize, manifest.len());
    let t2 = rabbit().await;
    let (got, dups) = drain(&t2, &queue, manifest.len()).await;
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        manifest.keys().collect::<BTreeSet<_>>()
    );
    eprintln!(
        "broker restart: {} batches, {dups} duplicate deliveries (consumers dedup by id)",
        got.len()
    );
    cleanup(&t2, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_go_to_the_dead_letter_queue_with_their_reason() {
    let _g = BROKER.lock().await;
    let (t, name) = (rabbit().await, ns("bad"));
    let topo = Topology::new(&name);
    topo.declare(&*t).await.unwrap();
    let good = Batch::build(
        Task::Next,
        &MaskConfig::default(),
        0,
        600,
        &[BatchRow {
            seq_id: "g".into(),
            values: vec![3; 600],
            label: None,
        }],
    );
    let mut v2 = good.encode(None);
    let pos = v2.windows(3).position(|w| w == b"1.1").unwrap();
    v2[pos] = b'2';
    // A valid Arrow stream whose columns break the contract.
    let mut wrong_cols = good.encode(None);
    let pos = wrong_cols
        .windows(9)
        .position(|w| w == b"loss_mask")
        .unwrap();
    wrong_cols[pos..pos + 9].copy_from_slice(b"lost_mask");
    let sends: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "garbage",
            b"\x00\x01not arrow".to_vec(),
            CONTENT_TYPE,
            "not an Arrow IPC stream",
        ),
        (
            "json",
            good.encode(None),
            "application/json",
            "content type `application/json`",
        ),
        ("v2", v2, CONTENT_TYPE, "unknown schema version `2.1`"),
        (
            "cols",
            wrong_cols,
            CONTENT_TYPE,
            "schema breaks the batch contract",
        ),
        ("good", good.encode(None), CONTENT_TYPE, ""),
    ];
    for (id, body, ct, _) in &sends {
        t.publish(
            &topo.pretrain(),
            OutMessage::new(*id, body.clone()).with_content_type(*ct),
        )
        .await
        .unwrap();
    }
    // The consumer side: reject with the reason, go on with the next.
    let mut c = t
        .consume(&topo.pretrain(), ConsumeOptions { prefetch: 8 })
        .await
        .unwrap();
    let mut accepted = Vec::new();
    for _ in 0..sends.len() {
        let d = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match check_message(d.content_type(), d.body().to_vec()) {
            Ok(_) => {
                accepted.push(d.message_id().to_owned());
                d.ack().await.unwrap();
            }
            Err(e) => {
                let e: DecodeError = e;
                d.reject(&e.to_string()).await.unwrap();
            }
        }
    }
    assert_eq!(accepted, ["good"]);
    let mut dead = t
        .consume(&topo.dead(), ConsumeOptions { prefetch: 8 })
        .await
        .unwrap();
    let mut reasons = BTreeMap::new();
    for _ in 0..4 {
        let d = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let reason = d
            .headers()
            .get(REASON)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        reasons.insert(d.message_id().to_owned(), reason);
        d.ack().await.unwrap();
    }
    for (id, _, _, want) in &sends[..4] {
        assert!(
            reasons[*id].contains(want),
            "{id}: reason `{}` lacks `{want}`",
            reasons[*id]
        );
    }
    cleanup(&t, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_publish_alternates_the_ceiling_publishers_and_reports_its_rounds() {
    let _g = BROKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("data"), 60, 2000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pretext-bench"))
        .args(["publish", "--broker", &amqp_url(), "--data"])
        .arg(dir.path().join("data"))
        .args(["--repeat", "3", "--settle-ms", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let each = |k: &str| -> Vec<f64> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    assert!(r["batches"].as_u64().unwrap() > 0);
    assert_eq!(r["ceiling_publishers"], serde_json::json!([1, 2]));
    assert_eq!(r["ceiling_publishers_each"], serde_json::json!([1, 2, 1]));
    let (p, c) = (each("produce_seconds_each"), each("ceiling_seconds_each"));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(r["produce_seconds"].as_f64().unwrap(), min(&p));
    assert_eq!(r["ceiling_seconds"].as_f64().unwrap(), min(&c));
    // Ratios to within rounding: the bench may divide in another order.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    let fraction = r["fraction_of_ceiling"].as_f64().unwrap();
    assert!(close(fraction, min(&c) / min(&p)), "{fraction}");
    let mut ratios: Vec<f64> = c.iter().zip(&p).map(|(c, p)| c / p).collect();
    ratios.sort_by(f64::total_cmp);
    let median = r["paired_fraction_median"].as_f64().unwrap();
    assert!(close(median, ratios[1]), "{median} vs {ratios:?}");
}
