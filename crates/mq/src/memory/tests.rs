//! Unit tests of the memory transport's semantics (the checks shared with RabbitMQ are in `tests/`).

use super::*;
use crate::message::{DELIVERY_LIMIT_REASON, HeaderValue, header};
use crate::topology::{QueueRole, Topology, TopologyConfig};
use std::time::Duration;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);

async fn declared(config: TopologyConfig) -> (MemoryTransport, Topology) {
    let transport = MemoryTransport::new();
    let topology = Topology::with_config("unit", config);
    topology.declare(&transport).await.expect("declare");
    topology
        .declare(&transport)
        .await
        .expect("idempotent declare");
    (transport, topology)
}

fn msg(id: &str) -> OutMessage {
    OutMessage::new(id, id.as_bytes().to_vec())
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    timeout(STEP, consumer.next())
        .await
        .expect("no delivery")
        .expect("consumer failed")
        .expect("consumer ended")
}

async fn quiet(consumer: &mut Box<dyn Consumer>) -> bool {
    timeout(Duration::from_millis(50), consumer.next())
        .await
        .is_err()
}

fn opts(prefetch: u16) -> ConsumeOptions {
    ConsumeOptions { prefetch }
}

#[tokio::test]
async fn ack_removes_and_nack_requeues_with_redelivered_flag() {
    let (t, topo) = declared(TopologyConfig::default()).await;
    let q = topo.pretrain();
    t.publish(&q, msg("a")).await.unwrap();
    t.publish(&q, msg("b")).await.unwrap();
    let mut c = t.consume(&q, opts(8)).await.unwrap();
    let a = next(&mut c).await;
    assert!(!a.redelivered());
    a.nack_requeue().await.unwrap();
    // Returned messages come before never-delivered ones, as in quorum queues.
    let a = next(&mut c).await;
    assert_eq!(a.message_id(), "a");
    assert!(a.redelivered());
    assert_eq!(a.delivery_count(), Some(1));
    a.ack().await.unwrap();
    let b = next(&mut c).await;
    assert_eq!((b.message_id(), b.redelivered()), ("b", false));
    b.ack().await.unwrap();
    assert!(quiet(&mut c).await);
    assert_eq!(t.queue_depth(&q).await.unwrap(), 0);
}

#[tokio::test]
async fn dropping_a_consumer_returns_its_unacked_messages() {
    let (t, topo) = declared(TopologyConfig::default()).await;
    let q = topo.pretrain();
    t.publish(&q, msg("a")).await.unwrap();
    let mut c = t.consume(&q, opts(1)).await.unwrap();
    let held = next(&mut c).await;
    assert_eq!(t.queue_depth(&q).await.unwrap(), 0);
    drop(c);
    assert_eq!(t.queue_depth(&q).await.unwrap(), 1);
    assert!(matches!(held.ack().await, Err(AckError::ChannelClosed)));
    let mut c = t.consume(&q, opts(1)).await.unwrap();
    let again = next(&mut c).await;
    assert!(again.redelivered());
    again.ack().await.unwrap();
}

#[tokio::test]
async fn delivery_limit_dead_letters_after_limit_redeliveries() {
    let (t, topo) = declared(TopologyConfig {
        delivery_limit: 1,
        ..TopologyConfig::default()
    })
    .await;
    let q = topo.pretrain();
    t.publish(&q, msg("poison")).await.unwrap();
    let mut c = t.consume(&q, opts(1)).await.unwrap();
    next(&mut c).await.nack_requeue().await.unwrap();
    // A consumer dying with it counts as a return too.
    let _held = next(&mut c).await;
    drop(c);
    assert_eq!(t.queue_depth(&q).await.unwrap(), 0);
    let mut dead = t.consume(&topo.dead(), opts(1)).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.message_id(), "poison");
    assert_eq!(d.dead_letter_reason(), Some(DELIVERY_LIMIT_REASON));
    assert_eq!(
        d.headers().get(header::FIRST_DEATH_QUEUE),
        Some(&HeaderValue::Str(q.clone()))
    );
    // The dead queue is a stream: acking takes nothing from it, and every
    // reader sees every dead letter from the first.
    d.ack().await.unwrap();
    assert!(quiet(&mut dead).await);
    let mut other = t.consume(&topo.dead(), opts(1)).await.unwrap();
    assert_eq!(next(&mut other).await.message_id(), "poison");
}

#[tokio::test]
async fn reject_copies_to_the_dead_queue_with_reason() {
    let (t, topo) = declared(TopologyConfig::default()).await;
    let q = topo.files();
    t.publish(&q, msg("task").with_header("file", "a.parquet"))
        .await
        .unwrap();
    let mut c = t.consume(&q, opts(1)).await.unwrap();
    next(&mut c)
        .await
        .reject("corrupt row group")
        .await
        .unwrap();
    assert!(quiet(&mut c).await);
    let mut dead = t.consume(&topo.dead(), opts(1)).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.dead_letter_reason(), Some("corrupt row group"));
    assert_eq!(d.headers()["file"], HeaderValue::Str("a.parquet".into()));
    assert_eq!(d.headers()[header::ORIGINAL_QUEUE], HeaderValue::Str(q));
    assert_eq!(d.body().as_ref(), b"task");
}

#[tokio::test]
async fn reject_without_dead_letter_queue_keeps_the_message() {
    let t = MemoryTransport::new();
    t.declare_queue(&QueueSpec::quorum("plain")).await.unwrap();
    t.publish("plain", msg("m")).await.unwrap();
    let mut c = t.consume("plain", opts(1)).await.unwrap();
    let err = next(&mut c).await.reject("nope").await.unwrap_err();
    assert!(matches!(err, AckError::NoDeadLetterQueue { .. }), "{err:?}");
    drop(c);
    assert_eq!(t.queue_depth("plain").await.unwrap(), 1);
}

#[tokio::test]
async fn stream_gives_every_consumer_everything_from_the_first_message() {
    let (t, topo) = declared(TopologyConfig::default()).await;
    let control = topo.control();
    for id in ["eod-0", "eod-1"] {
        t.publish(&control, msg(id)).await.unwrap();
    }
    for _ in 0..2 {
        let mut c = t.consume(&control, opts(1)).await.unwrap();
        let first = next(&mut c).await;
        assert_eq!(
            (first.message_id(), first.stream_offset()),
            ("eod-0", Some(0))
        );
        // Prefetch 1: the second waits for the first to be acked.
        assert!(quiet(&mut c).await);
        first.ack().await.unwrap();
        assert_eq!(next(&mut c).await.stream_offset(), Some(1));
    }
    assert_eq!(t.queue_depth(&control).await.unwrap(), 2);
    assert!(t.purge(&control).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn full_queue_blocks_the_publisher_until_drained() {
    let (t, topo) = declared(TopologyConfig {
        batch_max_length_bytes: 10,
        ..TopologyConfig::default()
    })
    .await;
    let q = topo.pretrain();
    // 6 + 6 bytes: the second is taken since the queue was under the bound.
    t.publish(&q, OutMessage::new("1", vec![0; 6]))
        .await
        .unwrap();
    t.publish(&q, OutMessage::new("2", vec![0; 6]))
        .await
        .unwrap();
    let blocked = {
        let (t, q) = (t.clone(), q.clone());
        tokio::spawn(async move { t.publish(&q, OutMessage::new("3", vec![0; 6])).await })
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!blocked.is_finished());
    let mut c = t.consume(&q, opts(1)).await.unwrap();
    next(&mut c).await.ack().await.unwrap();
    timeout(STEP, blocked).await.unwrap().unwrap().unwrap();
    next(&mut c).await.ack().await.unwrap();
    assert_eq!(next(&mut c).await.message_id(), "3");
}

#[tokio::test]
async fn a_lone_message_over_the_bound_is_accepted() {
    let (t, topo) = declared(TopologyConfig {
        batch_max_length_bytes: 10,
        ..TopologyConfig::default()
    })
    .await;
    timeout(
        STEP,
        t.publish(&topo.pretrain(), OutMessage::new("big", vec![0; 100])),
    )
    .await
    .expect("must not wait on an empty queue")
    .unwrap();
}

#[tokio::test]
async fn errors_are_typed() {
    let (t, topo) = declared(TopologyConfig::default()).await;
    let err = t.publish("nowhere", msg("m")).await.unwrap_err();
    assert!(matches!(err, MqError::Unroutable { .. }), "{err:?}");
    let err = t.consume("nowhere", opts(1)).await.err().unwrap();
    assert!(matches!(err, MqError::QueueNotFound { .. }), "{err:?}");
    let err = t.consume(&topo.pretrain(), opts(0)).await.err().unwrap();
    assert!(matches!(err, MqError::InvalidArgument(_)), "{err:?}");
    let other = Topology::with_config(
        "unit",
        TopologyConfig {
            delivery_limit: 9,
            ..TopologyConfig::default()
        },
    );
    let err = other.declare(&t).await.unwrap_err();
    assert!(matches!(err, MqError::TopologyMismatch { .. }), "{err:?}");
    let huge = OutMessage::new("huge", vec![0; crate::MAX_BODY_BYTES + 1]);
    let err = t.publish(&topo.pretrain(), huge).await.unwrap_err();
    assert!(matches!(err, MqError::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn deleting_a_queue_ends_its_consumers_and_close_ends_everything() {
    let (t, topo) = declared(TopologyConfig::default()).await;
    let q = topo.pretrain();
    t.publish(&q, msg("m")).await.unwrap();
    let mut c = t.consume(&q, opts(1)).await.unwrap();
    let held = next(&mut c).await;
    t.delete_queue(&q).await.unwrap();
    assert!(c.next().await.unwrap().is_none());
    assert!(matches!(held.ack().await, Err(AckError::ChannelClosed)));

    let mut f = t.consume(&topo.finetune(), opts(1)).await.unwrap();
    let waiting = tokio::spawn(async move { f.next().await.map(|d| d.is_none()) });
    t.close().await.unwrap();
    assert!(timeout(STEP, waiting).await.unwrap().unwrap().unwrap());
    let err = t.publish(&topo.files(), msg("m")).await.unwrap_err();
    assert!(matches!(err, MqError::Closed));
    topo.delete(&MemoryTransport::new()).await.unwrap();
}

#[tokio::test]
async fn the_same_url_shares_one_transport() {
    let a = crate::connect("memory://unit-shared", Default::default())
        .await
        .unwrap();
    let b = crate::connect("memory://unit-shared", Default::default())
        .await
        .unwrap();
    let topo = Topology::new("shared");
    topo.declare(&*a).await.unwrap();
    a.publish(&topo.name(QueueRole::Pretrain), msg("m"))
        .await
        .unwrap();
    assert_eq!(b.queue_depth(&topo.pretrain()).await.unwrap(), 1);
    let private = MemoryTransport::new();
    assert!(private.queue_depth(&topo.pretrain()).await.is_err());
    // A closed named transport is replaced by a fresh one.
    b.close().await.unwrap();
    let c = crate::connect("memory://unit-shared", Default::default())
        .await
        .unwrap();
    assert!(c.queue_depth(&topo.pretrain()).await.is_err());
}
