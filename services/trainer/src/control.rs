//! Reads the `{ns}.control` and `{ns}.dead` streams from their first
//! message, alongside training: the end-of-data total as soon as every
//! planned task is done, and the batches of the run that went to the
//! dead-letter queue, with why.

use pretext_core::batch::header::FILE_TASK;
use pretext_core::control::{ControlMessage, EndOfData};
use pretext_core::task::Task;
use pretext_mq::{ConsumeOptions, Delivery, HeaderValue, MqError, SharedTransport};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::trusts;
use crate::dead::DeadBatch;
use crate::error::TrainError;

/// Stream messages read ahead of their acks (a stream only needs some).
const STREAM_PREFETCH: u16 = 64;

/// What the two streams say so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RunView {
    /// `Some(total distinct batches)` once all planned tasks are done.
    total: Option<u64>,
    /// File tasks reported done.
    done: BTreeSet<String>,
    /// Batches of the run's batch queue in the dead-letter queue: id → (why,
    /// the first reason seen; the file task that published it).
    dead: BTreeMap<String, (String, Option<String>)>,
}

impl RunView {
    /// The dead batches `applied` lacks that belong to a task reported
    /// done: a stray message (no task, or one not of this run) does not
    /// count, so it cannot end a run early.
    fn dead_planned<'a>(
        &'a self,
        applied: &'a HashSet<String>,
    ) -> impl Iterator<Item = (&'a String, &'a String)> + 'a {
        self.dead
            .iter()
            .filter(|(id, (_, task))| {
                !applied.contains(*id) && task.as_ref().is_some_and(|t| self.done.contains(t))
            })
            .map(|(id, (reason, _))| (id, reason))
    }
}

/// The running stream readers. Dropping it stops them.
#[derive(Debug)]
pub struct ControlWatch {
    view: watch::Receiver<RunView>,
    /// Reads both streams; ends with the stream that failed.
    reader: JoinHandle<Result<(), (String, MqError)>>,
    streams: Streams,
}

/// The queues a [`ControlWatch`] reads, and the batch queue whose dead
/// letters count.
#[derive(Clone, Debug)]
pub struct Streams {
    /// `{ns}.control`.
    pub control: String,
    /// `{ns}.dead`.
    pub dead: String,
    /// `{ns}.pretrain`: dead letters from elsewhere are not this run's.
    pub batches: String,
}

impl ControlWatch {
    /// Subscribes to both streams (failing if it cannot) and starts reading
    /// them.
    pub async fn start(
        transport: &SharedTransport,
        streams: &Streams,
        task: Task,
        trusted: Vec<String>,
    ) -> Result<Self, TrainError> {
        let subscribe = |queue: &str| {
            let queue = queue.to_owned();
            async move {
                transport
                    .consume(
                        &queue,
                        ConsumeOptions {
                            prefetch: STREAM_PREFETCH,
                        },
                    )
                    .await
                    .map_err(|source| TrainError::Control { queue, source })
            }
        };
        let mut control = subscribe(&streams.control).await?;
        let mut dead = subscribe(&streams.dead).await?;
        let (tx, view) = watch::channel(RunView::default());
        let streams = streams.clone();
        let names = streams.clone();
        let reader = tokio::spawn(async move {
            let mut end = EndOfData::default();
            let (mut control_open, mut dead_open) = (true, true);
            while control_open || dead_open {
                tokio::select! {
                    next = control.next(), if control_open => {
                        match next.map_err(|e| (streams.control.clone(), e))? {
                            Some(delivery) if !trusts(&trusted, delivery.user_id()) => {
                                tracing::warn!(queue = %streams.control, id = delivery.message_id(), publisher = ?delivery.user_id(), "ignoring a control message from an untrusted publisher");
                                release(delivery, &streams.control).await;
                            }
                            Some(delivery) => on_control(delivery, &streams.control, task, &mut end, &tx).await,
                            None => control_open = false,
                        }
                    }
                    next = dead.next(), if dead_open => {
                        match next.map_err(|e| (streams.dead.clone(), e))? {
                            // Rejected for its publisher, or forged: not the run's.
                            Some(delivery) if !trusts(&trusted, delivery.original_publisher()) => {
                                release(delivery, &streams.dead).await;
                            }
                            Some(delivery) => on_dead(delivery, &streams, &tx).await,
                            None => dead_open = false,
                        }
                    }
                }
            }
            Ok(())
        });
        Ok(Self {
            view,
            reader,
            streams: names,
        })
    }

    /// The total so far.
    pub fn total(&self) -> Option<u64> {
        self.view.borrow().total
    }

    /// How many batches of the run's done tasks `applied` lacks because
    /// they are in the dead-letter queue.
    pub fn dead_count(&self, applied: &HashSet<String>) -> u64 {
        self.view.borrow().dead_planned(applied).count() as u64
    }

    /// Those batches, with why.
    pub fn dead_batches(&self, applied: &HashSet<String>) -> Vec<DeadBatch> {
        let view = self.view.borrow();
        view.dead_planned(applied)
            .map(|(id, reason)| DeadBatch {
                id: id.clone(),
                reason: reason.clone(),
            })
            .collect()
    }

    /// Waits until the total or the dead letters change. `Err` once both
    /// readers have stopped: then [`Self::finish`] says why.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.view.changed().await
    }

    /// The reader's result once it has stopped: `Ok` when both streams
    /// ended (deleted, or the transport closed).
    pub async fn finish(&mut self) -> Result<(), TrainError> {
        match (&mut self.reader).await {
            Ok(result) => result.map_err(|(queue, source)| TrainError::Control { queue, source }),
            Err(join) => Err(TrainError::Panic(format!(
                "reader of {} and {}: {join}",
                self.streams.control, self.streams.dead
            ))),
        }
    }
}

/// Takes one control message into account and publishes the new total.
async fn on_control(
    delivery: Delivery,
    queue: &str,
    task: Task,
    end: &mut EndOfData,
    tx: &watch::Sender<RunView>,
) {
    let mut done = None;
    match ControlMessage::from_bytes(delivery.body()) {
        Ok(msg) => {
            if let ControlMessage::TaskDone { task_id, .. } = &msg {
                done = Some(task_id.clone());
            }
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
    release(delivery, queue).await;
    let now = end.total_batches();
    tx.send_if_modified(|view| {
        let new_task = done.is_some_and(|t| view.done.insert(t));
        let changed = view.total != now || new_task;
        view.total = now;
        changed
    });
}

/// Records a dead letter of the run's batch queue (others are ignored).
async fn on_dead(delivery: Delivery, streams: &Streams, tx: &watch::Sender<RunView>) {
    let id = delivery.message_id().to_owned();
    let ours = delivery.dead_letter_origin() == Some(streams.batches.as_str());
    let task = delivery
        .headers()
        .get(FILE_TASK)
        .and_then(HeaderValue::as_str)
        .map(str::to_owned);
    let reason = delivery
        .dead_letter_reason()
        .unwrap_or("no reason recorded")
        .to_owned();
    release(delivery, &streams.dead).await;
    if !ours || id.is_empty() {
        return;
    }
    tx.send_if_modified(|view| {
        if view.dead.contains_key(&id) {
            return false;
        }
        tracing::warn!(id, reason, task, "a batch is in the dead-letter queue");
        view.dead.insert(id, (reason, task));
        true
    });
}

/// On a stream an ack only frees the prefetch slot.
async fn release(delivery: Delivery, queue: &str) {
    if let Err(err) = delivery.ack().await {
        tracing::debug!(%queue, error = %err, "stream ack failed");
    }
}

impl Drop for ControlWatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
