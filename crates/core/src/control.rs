//! Control messages on `{ns}.control` (a stream every trainer reads from
//! its start) and the work items of `{ns}.files`. JSON bodies.
//!
//! The end of the data is derived, not guessed: the plan says how many file
//! tasks exist, each task's completion says how many batches it published,
//! so a trainer knows it is done when every task is done and it has applied
//! that many distinct batches.

use serde::{Deserialize, Serialize};

/// A message on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlMessage {
    /// The work of a run: published once by the producer that planned it
    /// (possibly again after a crash; identical content).
    Plan {
        /// Number of file tasks (file × row group × epoch).
        tasks: u64,
        /// Task the batches carry (`masked`, `next`, `classify`).
        task: String,
        /// Epochs planned.
        epochs: u32,
    },
    /// Every batch of one file task is confirmed by the broker.
    TaskDone {
        /// The task's id.
        task_id: String,
        /// Distinct batches the task published (deterministic per task).
        batches: u64,
        /// Rows in those batches.
        rows: u64,
        /// Producer that did it.
        producer: String,
    },
    /// A producer found no more work and stopped.
    ProducerDone {
        /// Producer id.
        producer: String,
        /// Batches it published in total.
        batches: u64,
    },
}

impl ControlMessage {
    /// JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("control messages serialise")
    }

    /// Parses a JSON body.
    pub fn from_bytes(b: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(b)
    }

    /// A deterministic message id (the same message gets the same id).
    pub fn message_id(&self) -> String {
        match self {
            ControlMessage::Plan { .. } => "plan".to_owned(),
            ControlMessage::TaskDone { task_id, .. } => format!("task-done:{task_id}"),
            ControlMessage::ProducerDone { producer, .. } => format!("producer-done:{producer}"),
        }
    }
}

/// One unit of producer work on `{ns}.files`: consecutive row groups of a
/// file in one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTask {
    /// Stable id: `<file index>:<first row group>:<epoch>`.
    pub task_id: String,
    /// The Parquet file.
    pub file: String,
    /// Consecutive row groups within it.
    pub row_groups: Vec<usize>,
    /// Epoch (masks differ per epoch).
    pub epoch: u32,
}

impl FileTask {
    /// JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("file tasks serialise")
    }

    /// Parses a JSON body.
    pub fn from_bytes(b: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

/// Tracks the control stream to decide when all data has been published.
#[derive(Clone, Debug, Default)]
pub struct EndOfData {
    planned_tasks: Option<u64>,
    done: std::collections::BTreeMap<String, u64>,
}

impl EndOfData {
    /// Takes one control message into account.
    pub fn observe(&mut self, msg: &ControlMessage) {
        match msg {
            ControlMessage::Plan { tasks, .. } => self.planned_tasks = Some(*tasks),
            ControlMessage::TaskDone {
                task_id, batches, ..
            } => {
                self.done.insert(task_id.clone(), *batches);
            }
            ControlMessage::ProducerDone { .. } => {}
        }
    }

    /// `Some(total distinct batches)` once every planned task is done.
    pub fn total_batches(&self) -> Option<u64> {
        let planned = self.planned_tasks?;
        (self.done.len() as u64 >= planned).then(|| self.done.values().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_data_needs_the_plan_and_every_task_once() {
        let mut e = EndOfData::default();
        let done = |id: &str, n| ControlMessage::TaskDone {
            task_id: id.into(),
            batches: n,
            rows: 0,
            producer: "p".into(),
        };
        e.observe(&done("a", 3));
        assert_eq!(e.total_batches(), None, "no plan yet");
        e.observe(&ControlMessage::Plan {
            tasks: 2,
            task: "masked".into(),
            epochs: 1,
        });
        assert_eq!(e.total_batches(), None);
        e.observe(&done("a", 3)); // a redone task is counted once
        assert_eq!(e.total_batches(), None);
        e.observe(&done("b", 4));
        assert_eq!(e.total_batches(), Some(7));
        let m = ControlMessage::from_bytes(&done("b", 4).to_bytes()).unwrap();
        assert_eq!(m, done("b", 4));
    }
}
