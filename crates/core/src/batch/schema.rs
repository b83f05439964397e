//! The Arrow schema of a batch message and the batch contract as a JSON
//! document.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::{CONTENT_TYPE, MAX_MESSAGE_BYTES, SCHEMA_VERSION, header, meta};
use crate::PAD_TOKEN;
use crate::task::Task;

/// The item field of the `FixedSizeList<u8, L>` columns.
pub(crate) fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::UInt8, false))
}

/// The Arrow schema of a batch of bucket length `l`.
pub fn batch_schema(task: Task, l: usize, epoch: u32) -> SchemaRef {
    let fsl = DataType::FixedSizeList(item_field(), l as i32);
    let metadata = std::collections::HashMap::from([
        (meta::SCHEMA_VERSION.to_owned(), SCHEMA_VERSION.to_owned()),
        (meta::TASK.to_owned(), task.as_str().to_owned()),
        (meta::BUCKET_LEN.to_owned(), l.to_string()),
        (meta::EPOCH.to_owned(), epoch.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("seq_id", DataType::Utf8, false),
            Field::new("length", DataType::UInt32, false),
            Field::new("input", fsl.clone(), false),
            Field::new("target", fsl.clone(), false),
            Field::new("loss_mask", fsl, false),
            Field::new("label", DataType::Int32, true),
        ],
        metadata,
    ))
}

/// The batch contract as a JSON document (checked in as
/// `schemas/batch.schema.json`; a test keeps the two equal).
pub fn contract_json() -> serde_json::Value {
    let schema = batch_schema(Task::Masked, 0, 0);
    let fields: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::FixedSizeList(item, _) => {
                    format!("FixedSizeList<{}, L>", item.data_type())
                }
                other => other.to_string(),
            };
            serde_json::json!({ "name": f.name(), "type": ty, "nullable": f.is_nullable() })
        })
        .collect();
    serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "content_type": CONTENT_TYPE,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "token_ids": { "values": "0..=40", "mask": crate::MASK_TOKEN, "pad": PAD_TOKEN },
        "fields": fields,
        "schema_metadata": [meta::SCHEMA_VERSION, meta::TASK, meta::BUCKET_LEN, meta::EPOCH],
        "tasks": ["masked", "next", "classify"],
        "targets": {
            "masked": "target[t] = value[t] where loss_mask[t] = 1: positions selected singly or in spans (the producer's mask rate and mean span), 80% shown as MASK, 10% as a random value, 10% unchanged",
            "next": "target[t] = value[t + h] where loss_mask[t] = 1, for t + h < length; h is the producer's horizon (1 = the next step)",
            "classify": "no targets; labels only"
        },
        "amqp": {
            "delivery_mode": "persistent",
            "message_id": "hex of sha256(task, epoch, bucket_len, seq_ids)[..16]: the same batch always has the same id",
            "headers": {
                header::SCHEMA_VERSION: "string",
                header::TASK: "string",
                header::ROWS: "int",
                header::REAL_TOKENS: "int",
                header::PADDED_TOKENS: "int",
            }
        }
    })
}
