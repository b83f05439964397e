//! Reads the `{ns}.control` stream from its first message, alongside
//! training, and publishes the end-of-data total as soon as every planned
//! task is done.

use pretext_core::control::{ControlMessage, EndOfData};
use pretext_core::task::Task;
use pretext_mq::{ConsumeOptions, MqError, SharedTransport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::TrainError;

/// Control messages read ahead of their acks (a stream only needs some).
const CONTROL_PREFETCH: u16 = 64;

/// The running control-stream reader. Dropping it stops the reader.
#[derive(Debug)]
pub struct ControlWatch {
    /// `Some(total distinct batches)` once all planned tasks are done.
    total: watch::Receiver<Option<u64>>,
    task: JoinHandle<Result<(), MqError>>,
    /// The stream, for errors.
    queue: String,
}

impl ControlWatch {
    /// Subscribes to `queue` (failing if it cannot) and starts reading it.
    pub async fn start(
        transport: &SharedTransport,
        queue: &str,
        task: Task,
    ) -> Result<Self, MqError> {
        let mut consumer = transport
            .consume(
                queue,
                ConsumeOptions {
                    prefetch: CONTROL_PREFETCH,
                },
            )
            .await?;
        let (tx, total) = watch::channel(None);
        let name = queue.to_owned();
        let queue = name.clone();
        let task = tokio::spawn(async move {
            let mut end = EndOfData::default();
            while let Some(delivery) = consumer.next().await? {
                match ControlMessage::from_bytes(delivery.body()) {
                    Ok(msg) => {
                        if let ControlMessage::Plan {
                            task: planned,
                            tasks,
                            epochs,
                        } = &msg
                        {
                            if planned != task.as_str() {
                                tracing::warn!(%queue, planned = %planned, trainer = %task, "the plan is for another task; its batches will be rejected");
                            }
                            tracing::info!(%queue, tasks, epochs, "plan received");
                        }
                        end.observe(&msg);
                    }
                    Err(err) => {
                        tracing::warn!(%queue, id = delivery.message_id(), error = %err, "ignoring an unreadable control message")
                    }
                }
                // On a stream an ack only frees the prefetch slot.
                if let Err(err) = delivery.ack().await {
                    tracing::debug!(%queue, error = %err, "control ack failed");
                }
                let now = end.total_batches();
                tx.send_if_modified(|total| {
                    let changed = *total != now;
                    *total = now;
                    changed
                });
            }
            Ok(())
        });
        Ok(Self {
            total,
            task,
            queue: name,
        })
    }

    /// The total so far.
    pub fn total(&self) -> Option<u64> {
        *self.total.borrow()
    }

    /// Waits until the total changes. `Err` once the reader has stopped:
    /// then [`Self::finish`] says why.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.total.changed().await
    }

    /// The reader's result once it has stopped: `Ok` when its stream
    /// ended (deleted, or the transport closed).
    pub async fn finish(&mut self) -> Result<(), TrainError> {
        match (&mut self.task).await {
            Ok(result) => result.map_err(|source| TrainError::Control {
                queue: self.queue.clone(),
                source,
            }),
            Err(join) => Err(TrainError::Panic(format!("control reader: {join}"))),
        }
    }
}

impl Drop for ControlWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
