//! The fuzz targets' bodies: hostile bytes into the batch decoder, into row validation and (as whole Parquet files) into the validating reader, with the invariants each must keep. Shared by the cargo-fuzz binaries (`fuzz_targets/`) and the stable corpus driver (`crates/core/tests/fuzz_corpus.rs`).

use pretext_core::batch::{self, CONTENT_TYPE, MAX_DECOMPRESSED_BYTES, MAX_MESSAGE_BYTES};
use pretext_core::input::ValidatingReader;
use pretext_core::ipc_limit::read_stream;
use pretext_core::validate::{ColumnLayout, IdRegistry, ValidationConfig, validate_batch};

/// Bytes from the queue, as a trainer receives them: either a batch that
/// keeps the contract (and survives a re-encode unchanged) or an error with
/// a reason for the dead-letter queue. Never a panic.
pub fn batch_message(data: &[u8]) {
    match batch::check_message(CONTENT_TYPE, data.to_vec()) {
        Ok(decoded) => {
            let owned = decoded.to_batch();
            let stats = decoded.stats();
            assert_eq!(stats.rows as usize, decoded.rows());
            assert_eq!(
                stats.real_tokens + stats.padded_tokens,
                (decoded.rows() * decoded.bucket_len) as u64
            );
            let again = batch::decode(owned.encode(None))
                .expect("an accepted batch re-encodes to an accepted one");
            assert_eq!(again.to_batch(), owned, "re-encoding changed the batch");
        }
        Err(err) => assert!(!err.to_string().is_empty(), "an error gives a reason"),
    }
}

/// Record batches of raw input in any schema, as Arrow IPC bytes read as
/// consumers read them ([`read_stream`]), into the row rules: a schema error or a verdict for every row. Never a panic.
pub fn rows(data: &[u8]) {
    if data.len() > MAX_MESSAGE_BYTES {
        return;
    }
    let Ok(batches) = read_stream(data.to_vec(), MAX_DECOMPRESSED_BYTES, 8) else {
        return;
    };
    let mut ids = IdRegistry::default();
    let cfg = ValidationConfig::default();
    for record in batches {
        let Ok(layout) = ColumnLayout::from_schema(&record.schema()) else {
            return;
        };
        let verdict = validate_batch(&record, &layout, &cfg, &mut ids);
        assert_eq!(
            verdict.rows.len() + verdict.rejected.len(),
            record.num_rows(),
            "every row is valid or rejected"
        );
        for row in &verdict.rows {
            let n = row.values.len();
            assert!(
                (cfg.min_len..=cfg.max_len).contains(&n),
                "length {n} accepted"
            );
            assert!(row.values.iter().all(|&v| v <= pretext_core::MAX_VALUE));
        }
    }
}

/// A whole Parquet file, read as `pretext validate` reads it (written to
/// `scratch`, then [`ValidatingReader`]): an error naming the file, or a
/// verdict for every row read. Never a panic.
pub fn parquet_file(data: &[u8], scratch: &std::path::Path) {
    std::fs::write(scratch, data).expect("the scratch file is writable");
    let cfg = ValidationConfig::default();
    let mut reader = match ValidatingReader::open(scratch, cfg, None, None) {
        Ok(r) => r,
        Err(err) => {
            assert!(!err.to_string().is_empty(), "an error gives a reason");
            return;
        }
    };
    let mut ids = IdRegistry::default();
    loop {
        match reader.next_chunk(&mut ids) {
            Ok(Some(chunk)) => {
                for row in &chunk.verdict.rows {
                    let n = row.values.len();
                    assert!(
                        (cfg.min_len..=cfg.max_len).contains(&n),
                        "length {n} accepted"
                    );
                    assert!(row.values.iter().all(|&v| v <= pretext_core::MAX_VALUE));
                }
            }
            Ok(None) => return,
            Err(err) => {
                assert!(!err.to_string().is_empty(), "an error gives a reason");
                return;
            }
        }
    }
}
