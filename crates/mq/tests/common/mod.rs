//! Delivery-semantics checks shared by the memory and RabbitMQ test binaries: both transports must pass the same ones.

// Each binary uses a different subset of the helpers.
#![allow(dead_code)]

use pretext_mq::message::{DELIVERY_LIMIT_REASON, header};
use pretext_mq::{
    AckError, ConsumeOptions, Consumer, Delivery, OutMessage, Topology, TopologyConfig, Transport,
};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::timeout;

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(15);

/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(500);

/// A namespace no other test or run uses: `test-{name}-{pid}-{nanos}`.
pub fn unique_namespace(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_nanos();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

/// Declares a fresh namespace with `config`.
pub async fn declare(transport: &dyn Transport, name: &str, config: TopologyConfig) -> Topology {
    let topology = Topology::with_config(unique_namespace(name), config);
    timeout(STEP, topology.declare(transport))
        .await
        .expect("declare timed out")
        .expect("declare failed");
    // Declaring again is a no-op: every service does it at start.
    timeout(STEP, topology.declare(transport))
        .await
        .expect("second declare timed out")
        .expect("declaring twice must be idempotent");
    topology
}

pub async fn delete(transport: &dyn Transport, topology: &Topology) {
    timeout(STEP, topology.delete(transport))
        .await
        .expect("delete timed out")
        .expect("delete failed");
}

/// A message whose body names its id.
pub fn message(id: &str) -> OutMessage {
    OutMessage::new(id, format!("body of {id}").into_bytes()).with_header("x-test-id", id)
}

/// The next delivery, failing the test if none comes within [`STEP`].
pub async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    timeout(STEP, consumer.next())
        .await
        .expect("no delivery within the step timeout")
        .expect("consumer failed")
        .expect("consumer ended")
}

/// Asserts that nothing is delivered for [`QUIET`].
pub async fn assert_quiet(consumer: &mut Box<dyn Consumer>) {
    if let Ok(delivery) = timeout(QUIET, consumer.next()).await {
        panic!("expected no delivery, got {delivery:?}");
    }
}

pub async fn publish(transport: &dyn Transport, queue: &str, message: OutMessage) {
    timeout(STEP, transport.publish(queue, message))
        .await
        .expect("publish timed out")
        .expect("publish failed");
}

pub async fn consume(transport: &dyn Transport, queue: &str, prefetch: u16) -> Box<dyn Consumer> {
    timeout(STEP, transport.consume(queue, ConsumeOptions { prefetch }))
        .await
        .expect("consume timed out")
        .expect("consume failed")
}

/// Publishes `n` messages through a windowed publisher, then consumes and
/// acks them: each arrives exactly once, with id, body and headers intact.
pub async fn publish_n_consume_exactly_once(transport: &dyn Transport, n: usize) {
    let topology = declare(transport, "exactly-once", TopologyConfig::default()).await;
    let queue = topology.pretrain();
    let mut publisher = transport.publisher(&queue).await.expect("publisher");
    for i in 0..n {
        timeout(STEP, publisher.send(message(&format!("m{i}"))))
            .await
            .expect("send timed out")
            .expect("send failed");
    }
    timeout(STEP, publisher.flush())
        .await
        .expect("flush timed out")
        .expect("flush failed");
    assert_eq!(publisher.unconfirmed(), 0);
    // One more through the one-shot path.
    publish(
        transport,
        &queue,
        message("single").with_content_type("text/plain"),
    )
    .await;
    assert_eq!(depth(transport, &queue).await, n as u64 + 1);

    let mut consumer = consume(transport, &queue, 64).await;
    let mut seen = BTreeMap::new();
    for _ in 0..=n {
        let delivery = next(&mut consumer).await;
        assert!(!delivery.redelivered());
        assert_eq!(delivery.delivery_count(), None);
        let id = delivery.message_id().to_owned();
        assert_eq!(delivery.body().as_ref(), format!("body of {id}").as_bytes());
        assert_eq!(
            delivery.headers().get("x-test-id").and_then(|v| v.as_str()),
            Some(id.as_str())
        );
        if id == "single" {
            assert_eq!(delivery.content_type(), "text/plain");
        }
        *seen.entry(id).or_insert(0) += 1;
        delivery.ack().await.expect("ack");
    }
    assert_quiet(&mut consumer).await;
    assert_eq!(seen.len(), n + 1, "every message once");
    assert!(seen.values().all(|&count| count == 1), "{seen:?}");
    drop(consumer);
    assert_eq!(depth(transport, &queue).await, 0);
    delete(transport, &topology).await;
}

pub async fn depth(transport: &dyn Transport, queue: &str) -> u64 {
    timeout(STEP, transport.queue_depth(queue))
        .await
        .expect("depth timed out")
        .expect("depth failed")
}

/// A nacked message comes back with `redelivered` and a delivery count.
pub async fn nack_requeue_redelivers(transport: &dyn Transport) {
    let topology = declare(transport, "nack", TopologyConfig::default()).await;
    let queue = topology.pretrain();
    publish(transport, &queue, message("a")).await;
    let mut consumer = consume(transport, &queue, 4).await;
    let first = next(&mut consumer).await;
    assert!(!first.redelivered());
    first.nack_requeue().await.expect("nack");
    let again = next(&mut consumer).await;
    assert_eq!(again.message_id(), "a");
    assert!(again.redelivered());
    assert_eq!(again.delivery_count(), Some(1));
    again.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;
    drop(consumer);
    delete(transport, &topology).await;
}

/// Unacked deliveries of a dropped consumer go to the next consumer,
/// flagged redelivered; acking one of the old deliveries then reports a
/// closed channel.
pub async fn dropped_consumer_redelivers(transport: &dyn Transport) {
    let topology = declare(transport, "drop", TopologyConfig::default()).await;
    let queue = topology.pretrain();
    publish(transport, &queue, message("a")).await;
    publish(transport, &queue, message("b")).await;
    let mut first = consume(transport, &queue, 4).await;
    let a = next(&mut first).await;
    let b = next(&mut first).await;
    assert_eq!((a.message_id(), b.message_id()), ("a", "b"));
    a.ack().await.expect("ack a");
    drop(first);

    let mut second = consume(transport, &queue, 4).await;
    let b_again = next(&mut second).await;
    assert_eq!(b_again.message_id(), "b");
    assert!(b_again.redelivered());
    // The old delivery's channel is gone: acking it must say so, not panic.
    let late = timeout(STEP, b.ack()).await.expect("late ack timed out");
    assert!(matches!(late, Err(AckError::ChannelClosed)), "{late:?}");
    b_again.ack().await.expect("ack b");
    assert_quiet(&mut second).await;
    drop(second);
    delete(transport, &topology).await;
}

/// A consumer holds at most `prefetch` unacked deliveries.
pub async fn prefetch_bounds_unacked(transport: &dyn Transport) {
    let topology = declare(transport, "prefetch", TopologyConfig::default()).await;
    let queue = topology.pretrain();
    for i in 0..4 {
        publish(transport, &queue, message(&format!("m{i}"))).await;
    }
    let mut consumer = consume(transport, &queue, 2).await;
    let m0 = next(&mut consumer).await;
    let m1 = next(&mut consumer).await;
    assert_quiet(&mut consumer).await;
    m0.ack().await.expect("ack");
    let m2 = next(&mut consumer).await;
    assert_eq!(m2.message_id(), "m2");
    for delivery in [m1, m2] {
        delivery.ack().await.expect("ack");
    }
    next(&mut consumer).await.ack().await.expect("ack");
    drop(consumer);
    delete(transport, &topology).await;
}

/// `reject` moves the message to `{ns}.dead` with the reason; nothing is
/// left in the original queue.
pub async fn reject_keeps_reason(transport: &dyn Transport) {
    let topology = declare(transport, "reject", TopologyConfig::default()).await;
    let queue = topology.pretrain();
    publish(transport, &queue, message("bad")).await;
    let mut consumer = consume(transport, &queue, 4).await;
    next(&mut consumer)
        .await
        .reject("schema mismatch: no `tokens` column")
        .await
        .expect("reject");
    assert_quiet(&mut consumer).await;

    let mut dead = consume(transport, &topology.dead(), 4).await;
    let delivery = next(&mut dead).await;
    assert_eq!(delivery.message_id(), "bad");
    assert_eq!(delivery.body().as_ref(), b"body of bad");
    assert_eq!(
        delivery.dead_letter_reason(),
        Some("schema mismatch: no `tokens` column")
    );
    assert_eq!(
        delivery
            .headers()
            .get(header::ORIGINAL_QUEUE)
            .and_then(|v| v.as_str()),
        Some(queue.as_str())
    );
    assert_eq!(
        delivery.headers().get("x-test-id").and_then(|v| v.as_str()),
        Some("bad")
    );
    delivery.ack().await.expect("ack");
    drop((consumer, dead));
    delete(transport, &topology).await;
}

/// A message returned more than `x-delivery-limit` times goes to the dead
/// queue with the broker's reason. Returns how many times it was delivered.
pub async fn delivery_limit_dead_letters(transport: &dyn Transport) -> u32 {
    let limit = 2;
    let config = TopologyConfig {
        delivery_limit: limit,
        ..TopologyConfig::default()
    };
    let topology = declare(transport, "limit", config).await;
    let queue = topology.pretrain();
    publish(transport, &queue, message("poison")).await;
    let mut consumer = consume(transport, &queue, 4).await;
    let mut deliveries = 0;
    // Nack until nothing comes back: the message has left the queue.
    while let Ok(delivery) = timeout(QUIET * 2, consumer.next()).await {
        let delivery = delivery.expect("consumer failed").expect("consumer ended");
        assert_eq!(delivery.message_id(), "poison");
        assert_eq!(delivery.redelivered(), deliveries > 0);
        deliveries += 1;
        assert!(deliveries <= limit + 2, "never dead-lettered");
        delivery.nack_requeue().await.expect("nack");
    }
    assert_eq!(
        deliveries,
        limit + 1,
        "delivered once plus `limit` redeliveries"
    );
    let mut dead = consume(transport, &topology.dead(), 4).await;
    let delivery = next(&mut dead).await;
    assert_eq!(delivery.message_id(), "poison");
    assert_eq!(delivery.dead_letter_reason(), Some(DELIVERY_LIMIT_REASON));
    assert_eq!(
        delivery
            .headers()
            .get(header::FIRST_DEATH_QUEUE)
            .and_then(|v| v.as_str()),
        Some(queue.as_str())
    );
    delivery.ack().await.expect("ack");
    drop((consumer, dead));
    delete(transport, &topology).await;
    deliveries
}

/// Every consumer of the control stream, including one started after all
/// messages were published, reads every message from the first one.
pub async fn late_stream_consumer_reads_all(transport: &dyn Transport) {
    let topology = declare(transport, "stream", TopologyConfig::default()).await;
    let control = topology.control();
    let early_consumer = consume(transport, &control, 8).await;
    for i in 0..5 {
        publish(transport, &control, message(&format!("eod-{i}"))).await;
    }
    let late_consumer = consume(transport, &control, 2).await;
    for mut consumer in [early_consumer, late_consumer] {
        for i in 0..5 {
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.message_id(), format!("eod-{i}"));
            assert!(delivery.stream_offset().is_some());
            delivery.ack().await.expect("ack");
        }
        assert_quiet(&mut consumer).await;
    }
    delete(transport, &topology).await;
}

/// With a small `x-max-length-bytes` the publisher waits while the queue is
/// full and finishes once a consumer drains it; nothing is lost or doubled.
///
/// One message at a time (`windowed == false`) the queue holds just over its
/// bound. Through a windowed [`Publisher`](pretext_mq::Publisher) RabbitMQ
/// takes up to the window more before its nacks start (it tells publishing
/// channels asynchronously that the queue is full), so more messages than the
/// window are published.
pub async fn bounded_queue_blocks_publisher(
    transport: std::sync::Arc<dyn Transport>,
    windowed: bool,
) {
    let bound = 10_000;
    let body = 3_000;
    let config = TopologyConfig {
        batch_max_length_bytes: bound,
        ..TopologyConfig::default()
    };
    let topology = declare(&*transport, "bounded", config).await;
    let queue = topology.pretrain();
    let total: u32 = if windowed { 400 } else { 12 };
    let publishing = {
        let transport = transport.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let message = |i| OutMessage::new(format!("m{i}"), vec![b'x'; body]);
            if windowed {
                let mut publisher = transport.publisher(&queue).await?;
                for i in 0..total {
                    publisher.send(message(i)).await?;
                }
                publisher.flush().await
            } else {
                for i in 0..total {
                    transport.publish(&queue, message(i)).await?;
                }
                Ok(())
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = depth(&*transport, &queue).await;
    if publishing.is_finished() {
        let outcome = publishing.await.expect("publisher task panicked");
        panic!("the publisher should be blocked, but it ended with {outcome:?}; {held} queued");
    }
    if !windowed {
        // Taken while at or under the bound: 0, 3,000, 6,000 and 9,000 bytes.
        assert_eq!(held, bound.div_ceil(body as u64), "held before blocking");
    }
    assert!((1..u64::from(total)).contains(&held), "{held} held");

    let mut consumer = consume(&*transport, &queue, 16).await;
    let mut seen = BTreeMap::new();
    while seen.values().sum::<u32>() < total {
        let delivery = next(&mut consumer).await;
        *seen.entry(delivery.message_id().to_owned()).or_insert(0) += 1;
        delivery.ack().await.expect("ack");
    }
    timeout(STEP, publishing)
        .await
        .expect("the publisher never finished")
        .expect("publisher task panicked")
        .expect("publishing failed");
    assert_quiet(&mut consumer).await;
    assert_eq!(seen.len(), total as usize, "{seen:?}");
    assert!(seen.values().all(|&c| c == 1), "{seen:?}");
    drop(consumer);
    delete(&*transport, &topology).await;
}

/// Publishing to a queue that does not exist is an error, not a silent drop.
pub async fn unroutable_is_an_error(transport: &dyn Transport) {
    let queue = unique_namespace("missing");
    let err = timeout(STEP, transport.publish(&queue, message("lost")))
        .await
        .expect("publish timed out")
        .expect_err("a missing queue must fail the publish");
    assert!(
        matches!(err, pretext_mq::MqError::Unroutable { .. }),
        "{err:?}"
    );
}

/// Deleting a queue ends its consumers; closing the transport ends the rest
/// and fails later calls with `Closed`.
pub async fn delete_and_close_end_consumers(transport: &dyn Transport) {
    let topology = declare(transport, "end", TopologyConfig::default()).await;
    let mut doomed = consume(transport, &topology.pretrain(), 4).await;
    let mut open = consume(transport, &topology.finetune(), 4).await;
    timeout(STEP, transport.delete_queue(&topology.pretrain()))
        .await
        .expect("delete timed out")
        .expect("delete failed");
    let ended = timeout(STEP, doomed.next())
        .await
        .expect("the consumer of a deleted queue must end");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    delete(transport, &topology).await;
    timeout(STEP, transport.close())
        .await
        .expect("close timed out")
        .expect("close failed");
    let ended = timeout(STEP, open.next())
        .await
        .expect("consumers must end when the transport closes");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    let err = transport
        .publish(&topology.files(), message("late"))
        .await
        .expect_err("publishing after close must fail");
    assert!(matches!(err, pretext_mq::MqError::Closed), "{err:?}");
}

/// `cancel` stops new deliveries; what the broker already sent is still
/// handed out, then `next` ends; deliveries in hand stay settleable, and
/// unsettled ones go back when the consumer is dropped.
///
/// With `pushes_ahead` (RabbitMQ), the test first waits until the broker
/// has sent every message to the consumer (the queue shows none ready)
/// without any being read: those must all come out of the drain. The memory
/// transport's consumers pull, so nothing is sent ahead and the drain is
/// empty.
pub async fn cancel_hands_out_what_was_sent_then_ends(
    transport: &dyn Transport,
    pushes_ahead: bool,
) {
    let topology = declare(transport, "cancel", TopologyConfig::default()).await;
    let queue = topology.pretrain();
    for i in 0..4 {
        publish(transport, &queue, message(&format!("m{i}"))).await;
    }
    let mut consumer = consume(transport, &queue, 4).await;
    let m0 = next(&mut consumer).await;
    if pushes_ahead {
        // The precondition of the producer's end-of-work check: nothing is
        // ready, yet three messages are on their way to this consumer.
        timeout(STEP, async {
            while depth(transport, &queue).await != 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the broker never sent the prefetch ahead");
    }
    consumer.cancel().await.expect("cancel");
    let mut drained = Vec::new();
    while let Some(delivery) = timeout(STEP, consumer.next())
        .await
        .expect("a cancelled consumer must end")
        .expect("consumer failed")
    {
        drained.push(delivery);
    }
    let ids: Vec<&str> = drained.iter().map(|d| d.message_id()).collect();
    let expected: &[&str] = if pushes_ahead {
        &["m1", "m2", "m3"]
    } else {
        &[]
    };
    assert_eq!(ids, expected, "the drain hands out exactly what was sent");
    // Nothing new after the cancel, even when a message arrives.
    publish(transport, &queue, message("late")).await;
    let after = timeout(QUIET, consumer.next()).await;
    assert!(
        matches!(after, Ok(Ok(None))),
        "a cancelled consumer stays ended: {after:?}"
    );
    // Settling still works after the cancel; m0 is left unsettled.
    let acked = drained.len() as u64;
    for delivery in drained {
        delivery.ack().await.expect("ack after cancel");
    }
    drop(consumer);
    // 5 published, the drained ones acked; m0 and the rest are back or still
    // ready.
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let now = depth(transport, &queue).await;
        if now == 5 - acked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "depth {now}, expected {}",
            5 - acked
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(m0);
    delete(transport, &topology).await;
}
