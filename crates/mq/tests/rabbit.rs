//! The shared delivery-semantics checks, and a broker restart, against the real RabbitMQ at `AMQP_URL`.
//!
//! These tests fail (they do not skip) when the broker is unreachable. The
//! restart test stops the broker's application, so it takes the write side
//! of [`BROKER`]; every other test holds the read side.

mod common;

use common::{STEP, consume, declare, delete, message};
use pretext_mq::{
    AckError, Backoff, RabbitConfig, RabbitTransport, TopologyConfig, Transport, redact_url,
};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::RwLock;
use tokio::time::timeout;

/// Shared by tests that only use the broker; exclusive for the one that
/// stops it.
static BROKER: RwLock<()> = RwLock::const_new(());

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn config() -> RabbitConfig {
    RabbitConfig {
        // Bounded, so a broker that never comes back fails the test instead
        // of hanging it.
        reconnect: Backoff {
            deadline: Some(Duration::from_secs(60)),
            ..Backoff::default()
        },
        ..RabbitConfig::default()
    }
}

async fn connect() -> RabbitTransport {
    let url = amqp_url();
    match RabbitTransport::connect(&url, config()).await {
        Ok(transport) => transport,
        Err(err) => panic!(
            "RabbitMQ at {} is unreachable ({err}); start it with `rabbitmq-server -detached` \
             and `rabbitmqctl await_startup`",
            redact_url(&url)
        ),
    }
}

#[tokio::test]
async fn publish_n_consume_exactly_once() {
    let _shared = BROKER.read().await;
    common::publish_n_consume_exactly_once(&connect().await, 2000).await;
}

#[tokio::test]
async fn nack_requeue_redelivers() {
    let _shared = BROKER.read().await;
    common::nack_requeue_redelivers(&connect().await).await;
}

#[tokio::test]
async fn dropped_consumer_redelivers() {
    let _shared = BROKER.read().await;
    common::dropped_consumer_redelivers(&connect().await).await;
}

#[tokio::test]
async fn prefetch_bounds_unacked() {
    let _shared = BROKER.read().await;
    common::prefetch_bounds_unacked(&connect().await).await;
}

#[tokio::test]
async fn reject_keeps_reason() {
    let _shared = BROKER.read().await;
    common::reject_keeps_reason(&connect().await).await;
}

#[tokio::test]
async fn delivery_limit_dead_letters() {
    let _shared = BROKER.read().await;
    common::delivery_limit_dead_letters(&connect().await).await;
}

#[tokio::test]
async fn late_stream_consumer_reads_all() {
    let _shared = BROKER.read().await;
    common::late_stream_consumer_reads_all(&connect().await).await;
}

#[tokio::test]
async fn bounded_queue_blocks_one_at_a_time_publisher() {
    let _shared = BROKER.read().await;
    let transport: Arc<dyn Transport> = Arc::new(connect().await);
    common::bounded_queue_blocks_publisher(transport, false).await;
}

#[tokio::test]
async fn bounded_queue_blocks_windowed_publisher() {
    let _shared = BROKER.read().await;
    let transport: Arc<dyn Transport> = Arc::new(connect().await);
    common::bounded_queue_blocks_publisher(transport, true).await;
}

#[tokio::test]
async fn delete_and_close_end_consumers() {
    let _shared = BROKER.read().await;
    common::delete_and_close_end_consumers(&connect().await).await;
}

#[tokio::test]
async fn unroutable_is_an_error() {
    let _shared = BROKER.read().await;
    common::unroutable_is_an_error(&connect().await).await;
}

#[tokio::test]
async fn consuming_an_undeclared_queue_is_a_typed_error() {
    let _shared = BROKER.read().await;
    let transport = connect().await;
    let err = transport
        .consume("no-such-queue", Default::default())
        .await
        .err()
        .expect("must fail");
    assert!(
        matches!(err, pretext_mq::MqError::NotDeclared { .. }),
        "{err:?}"
    );
    let err = transport
        .queue_depth(&common::unique_namespace("absent"))
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, pretext_mq::MqError::QueueNotFound { .. }),
        "{err:?}"
    );
    // A failed query closes its channel only; the transport carries on.
    let topology = declare(&transport, "after-404", TopologyConfig::default()).await;
    delete(&transport, &topology).await;
}

#[tokio::test]
async fn redeclaring_with_other_bounds_is_a_mismatch() {
    let _shared = BROKER.read().await;
    let transport = connect().await;
    let topology = declare(&transport, "mismatch", TopologyConfig::default()).await;
    let other = pretext_mq::Topology::with_config(
        topology.namespace(),
        TopologyConfig {
            delivery_limit: 9,
            ..TopologyConfig::default()
        },
    );
    let err = other.declare(&transport).await.expect_err("must fail");
    assert!(
        matches!(err, pretext_mq::MqError::TopologyMismatch { .. }),
        "{err:?}"
    );
    delete(&transport, &topology).await;
}

#[tokio::test]
async fn debug_output_has_no_password() {
    let _shared = BROKER.read().await;
    let transport = connect().await;
    let shown = format!("{transport:?}");
    assert!(
        shown.contains("***") || !amqp_url().contains(':'),
        "{shown}"
    );
    assert!(!shown.contains("guest@"), "{shown}");
}

/// Runs `rabbitmqctl ARGS`, failing the test if it fails.
fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("cannot run rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?} failed: {status}");
}

/// Stops the broker application; starts it again when dropped, even if the
/// test panics, so that later tests find a running broker.
struct StoppedBroker {
    started: bool,
}

impl StoppedBroker {
    async fn stop() -> Self {
        tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
            .await
            .expect("stop_app panicked");
        Self { started: false }
    }

    async fn start(mut self) {
        self.started = true;
        tokio::task::spawn_blocking(|| {
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
        })
        .await
        .expect("start_app panicked");
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        if !self.started {
            let _ = Command::new("rabbitmqctl").arg("start_app").status();
            let _ = Command::new("rabbitmqctl").arg("await_startup").status();
        }
    }
}

/// Publishes in a loop while the broker application stops and starts again,
/// with a consumer busy on another queue and a reader of the control stream
/// idle. Afterwards every published message is in the queue (duplicates,
/// from resending unconfirmed messages, are counted and reported), the
/// consumer has resumed by itself and received everything of its queue, and
/// the stream reader resumes after the last offset it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    let _exclusive = BROKER.write().await;
    let transport = Arc::new(connect().await);
    let topology = declare(&*transport, "restart", TopologyConfig::default()).await;
    let batches = topology.pretrain();
    let tasks = topology.files();
    let consumed = 200;
    // Set once the broker is back; both tasks below keep going until then.
    let restarted = Arc::new(AtomicBool::new(false));
    let wait_for_restart = |restarted: Arc<AtomicBool>| async move {
        while !restarted.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // A consumer that holds unacked deliveries across the restart.
    for i in 0..consumed {
        common::publish(&*transport, &tasks, message(&format!("t{i}"))).await;
    }
    let consuming = {
        let mut consumer = consume(&*transport, &tasks, 10).await;
        let restarted = restarted.clone();
        tokio::spawn(async move {
            let mut seen = BTreeMap::<String, u32>::new();
            let (mut redelivered, mut ack_failures) = (0, 0);
            while seen.len() < consumed {
                let delivery = timeout(Duration::from_secs(90), consumer.next())
                    .await
                    .expect("consumer stalled")
                    .expect("consumer failed")
                    .expect("consumer ended");
                redelivered += u32::from(delivery.redelivered());
                *seen.entry(delivery.message_id().to_owned()).or_default() += 1;
                if seen.len() == 50 {
                    wait_for_restart(restarted.clone()).await;
                }
                match delivery.ack().await {
                    Ok(()) => {}
                    Err(AckError::ChannelClosed) => ack_failures += 1,
                    Err(err) => panic!("ack failed: {err}"),
                }
            }
            (seen, redelivered, ack_failures)
        })
    };

    // A control-stream reader that has read what was there before the stop.
    let control = topology.control();
    for i in 0..3 {
        common::publish(&*transport, &control, message(&format!("c{i}"))).await;
    }
    let mut control_reader = consume(&*transport, &control, 4).await;
    for i in 0..3 {
        let delivery = common::next(&mut control_reader).await;
        assert_eq!(delivery.message_id(), format!("c{i}"));
        delivery.ack().await.expect("ack");
    }

    // A publisher that keeps going until 500 messages after the restart.
    let publishing = {
        let transport = transport.clone();
        let batches = batches.clone();
        let restarted = restarted.clone();
        tokio::spawn(async move {
            let mut publisher = transport.publisher(&batches).await?;
            let (mut sent, mut after_restart) = (0, 0);
            while after_restart < 500 {
                publisher.send(message(&format!("b{sent}"))).await?;
                sent += 1;
                if restarted.load(Ordering::SeqCst) {
                    after_restart += 1;
                }
                if sent % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            publisher.flush().await.map(|()| sent)
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = StoppedBroker::stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stopped.start().await;
    restarted.store(true, Ordering::SeqCst);

    let published = timeout(Duration::from_secs(90), publishing)
        .await
        .expect("publishing did not finish after the restart")
        .expect("publisher task panicked")
        .expect("publishing failed");
    let (seen, redelivered, ack_failures) = timeout(Duration::from_secs(90), consuming)
        .await
        .expect("consumer did not finish after the restart")
        .expect("consumer task panicked");
    assert_eq!(seen.len(), consumed, "every task message consumed");
    eprintln!(
        "consumer across the restart: {redelivered} redelivered, {ack_failures} acks on a dead channel, \
         {} consumed twice",
        seen.values().filter(|&&c| c > 1).count()
    );

    // The stream reader resumes after its last offset: new messages only.
    common::publish(&*transport, &control, message("c3")).await;
    let delivery = common::next(&mut control_reader).await;
    assert_eq!(delivery.message_id(), "c3", "resumed at the wrong offset");
    delivery.ack().await.expect("ack");
    common::assert_quiet(&mut control_reader).await;
    drop(control_reader);

    let mut counts = BTreeMap::<String, u32>::new();
    let mut consumer = consume(&*transport, &batches, 500).await;
    loop {
        match timeout(Duration::from_secs(2), consumer.next()).await {
            Ok(delivery) => {
                let delivery = delivery.expect("consumer failed").expect("consumer ended");
                *counts.entry(delivery.message_id().to_owned()).or_default() += 1;
                delivery.ack().await.expect("ack");
            }
            Err(_) if counts.len() >= published => break,
            Err(_) => panic!(
                "only {} of {published} messages after the restart",
                counts.len()
            ),
        }
    }
    let missing: Vec<_> = (0..published)
        .map(|i| format!("b{i}"))
        .filter(|id| !counts.contains_key(id))
        .collect();
    let duplicates: u32 = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "publisher across the restart: {published} published, {} distinct received, \
         {duplicates} duplicates, {} missing",
        counts.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "missing after restart: {missing:?}");
    drop(consumer);
    timeout(STEP, topology.delete(&*transport))
        .await
        .expect("delete timed out")
        .expect("delete failed");
}

#[tokio::test]
async fn cancel_hands_out_what_was_sent_then_ends() {
    let _shared = BROKER.read().await;
    common::cancel_hands_out_what_was_sent_then_ends(&connect().await, true).await;
}
