//! Tests of the batch message: round trips, message ids, refusals, sizes
//! and the checked-in contract.

use super::*;
use crate::task::MaskConfig;

fn sample(task: Task) -> Batch {
    let rows: Vec<BatchRow> = (0..3)
        .map(|i| BatchRow {
            seq_id: format!("s{i}"),
            values: (0..(20 + i * 5))
                .map(|t| ((t * 7 + i) % 41) as u8)
                .collect(),
            label: (i != 1).then_some(i),
        })
        .collect();
    Batch::build(task, &MaskConfig::default(), 2, 32, &rows)
}

#[test]
fn round_trips_every_task_and_compression() {
    for task in [Task::Masked, Task::Next, Task::Classify] {
        for c in [None, Some(IpcCompression::Lz4), Some(IpcCompression::Zstd)] {
            let b = sample(task);
            let d = decode(b.encode(c)).unwrap();
            assert_eq!(d.to_batch(), b);
            assert_eq!(d.stats(), b.stats());
        }
    }
}

#[test]
fn message_id_depends_on_content_only() {
    assert_eq!(
        sample(Task::Masked).message_id(),
        sample(Task::Masked).message_id()
    );
    assert_ne!(
        sample(Task::Masked).message_id(),
        sample(Task::Next).message_id()
    );
}

#[test]
fn rejects_garbage_oversize_and_unknown_versions() {
    assert!(matches!(
        decode(b"hello".to_vec()),
        Err(DecodeError::NotArrow(_))
    ));
    assert!(matches!(
        decode(vec![0; MAX_MESSAGE_BYTES + 1]),
        Err(DecodeError::TooLarge(_))
    ));
    let bytes = sample(Task::Next).encode(None);
    assert!(decode(bytes[..bytes.len() / 2].to_vec()).is_err());
    // Rewrite the version string in place (same length): a v2 batch.
    let mut forged = bytes.clone();
    let pos = bytes.windows(3).position(|w| w == b"1.1").unwrap();
    forged[pos] = b'2';
    assert_eq!(
        decode(forged).unwrap_err(),
        DecodeError::UnknownVersion("2.1".into())
    );
}

#[test]
fn no_message_exceeds_16_mib_for_any_default_bucket() {
    let cfg = crate::bucket::BucketConfig::default();
    for (b, &l) in cfg.edges.iter().enumerate() {
        let rows: Vec<BatchRow> = (0..cfg.rows_per_batch(b))
            .map(|i| BatchRow {
                seq_id: format!("row-{i:012}"),
                values: vec![40; l],
                label: Some(1),
            })
            .collect();
        let batch = Batch::build(Task::Masked, &MaskConfig::default(), 0, l, &rows);
        let reserved = batch.encoded_capacity();
        let bytes = batch.into_encoded(None);
        assert!(
            bytes.len() <= reserved,
            "bucket {l}: {} bytes overflow the {reserved} reserved",
            bytes.len()
        );
        assert!(
            bytes.len() < MAX_MESSAGE_BYTES,
            "bucket {l}: {} bytes",
            bytes.len()
        );
        assert!(
            bytes.len() >= 3 * rows.len() * l,
            "all three buffers are in the message"
        );
    }
}

#[test]
fn encoding_stays_within_the_reserved_capacity() {
    // Many short rows with long ids: the non-column parts are largest.
    for (rows, l, id_len) in [(1, 1, 1), (128, 512, 60), (4096, 16, 200)] {
        let rows: Vec<BatchRow> = (0..rows)
            .map(|i| BatchRow {
                seq_id: format!("{i:0id_len$}"),
                values: vec![3; l],
                label: (i % 2 == 0).then_some(i),
            })
            .collect();
        for task in [Task::Masked, Task::Next, Task::Classify] {
            let batch = Batch::build(task, &MaskConfig::default(), 0, l, &rows);
            let reserved = batch.encoded_capacity();
            let bytes = batch.into_encoded(None);
            assert!(
                bytes.len() <= reserved,
                "{} rows of {l}: {} bytes overflow the {reserved} reserved",
                rows.len(),
                bytes.len()
            );
            assert_eq!(bytes.capacity(), reserved, "the message was regrown");
        }
    }
}

#[test]
fn checked_in_contract_matches_the_code() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/batch.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("schemas/batch.schema.json exists");
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        file,
        contract_json(),
        "schemas/batch.schema.json differs from the code; regenerate with `pretext schema > schemas/batch.schema.json` after a deliberate change"
    );
}
