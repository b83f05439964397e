//! The shared delivery-semantics checks run against the in-process transport.

mod common;

use pretext_mq::{MemoryTransport, Transport};
use std::sync::Arc;

fn transport() -> MemoryTransport {
    MemoryTransport::new()
}

#[tokio::test]
async fn publish_n_consume_exactly_once() {
    common::publish_n_consume_exactly_once(&transport(), 500).await;
}

#[tokio::test]
async fn nack_requeue_redelivers() {
    common::nack_requeue_redelivers(&transport()).await;
}

#[tokio::test]
async fn dropped_consumer_redelivers() {
    common::dropped_consumer_redelivers(&transport()).await;
}

#[tokio::test]
async fn prefetch_bounds_unacked() {
    common::prefetch_bounds_unacked(&transport()).await;
}

#[tokio::test]
async fn reject_keeps_reason() {
    common::reject_keeps_reason(&transport()).await;
}

#[tokio::test]
async fn delivery_limit_dead_letters() {
    common::delivery_limit_dead_letters(&transport()).await;
}

#[tokio::test]
async fn late_stream_consumer_reads_all() {
    common::late_stream_consumer_reads_all(&transport()).await;
}

#[tokio::test]
async fn bounded_queue_blocks_one_at_a_time_publisher() {
    let transport: Arc<dyn Transport> = Arc::new(transport());
    common::bounded_queue_blocks_publisher(transport, false).await;
}

#[tokio::test]
async fn bounded_queue_blocks_windowed_publisher() {
    let transport: Arc<dyn Transport> = Arc::new(transport());
    common::bounded_queue_blocks_publisher(transport, true).await;
}

#[tokio::test]
async fn delete_and_close_end_consumers() {
    common::delete_and_close_end_consumers(&transport()).await;
}

#[tokio::test]
async fn unroutable_is_an_error() {
    common::unroutable_is_an_error(&transport()).await;
}

#[tokio::test]
async fn cancel_hands_out_what_was_sent_then_ends() {
    common::cancel_hands_out_what_was_sent_then_ends(&transport(), false).await;
}
