//! The membership ledger of an elastic run, `checkpoints/membership.jsonl`:
//! one line per generation, written by its rank 0 when the generation
//! starts training, so that `pretext audit` can list who trained when.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The ledger's file, in the checkpoint directory.
pub const MEMBERSHIP_FILE: &str = "membership.jsonl";

/// One generation of an elastic run: who trained in it, from which step,
/// and how the membership changed from the generation before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Its number (1, 2, …).
    pub generation: u64,
    /// The step of the checkpoint it started from (0: fresh).
    pub step: u64,
    /// Its ranks.
    pub world_size: usize,
    /// Its members by rank (`host:pid`).
    pub members: Vec<String>,
    /// Members new in it.
    #[serde(default)]
    pub joined: Vec<String>,
    /// Members of the generation before that said they left (SIGTERM).
    #[serde(default)]
    pub left: Vec<String>,
    /// Members of the generation before that were lost (killed, hung, cut
    /// off): the generation started from the last durable checkpoint.
    #[serde(default)]
    pub lost: Vec<String>,
    /// Seconds its rank 0 spent between the end of the generation before
    /// and the start of this one's training (none for a fresh member).
    #[serde(default)]
    pub reform_secs: Option<f64>,
    /// When it started training, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_unix_ms: u64,
}

/// Appends `generation` to `DIR/membership.jsonl`, synced.
pub fn record_generation(dir: &Path, generation: &Generation) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(TrainError::io("create", dir))?;
    let path = dir.join(MEMBERSHIP_FILE);
    let line = serde_json::to_vec(generation).expect("a generation serialises");
    let mut file =
        pretext_core::jsonl::open_append(&path).map_err(TrainError::io("open", &path))?;
    pretext_core::jsonl::append_synced(&mut file, &[line]).map_err(TrainError::io("append", &path))
}

/// The generations recorded in `DIR/membership.jsonl`, in order; none
/// without the file (a run with a fixed group).
pub fn read_generations(dir: &Path) -> Result<Vec<Generation>, TrainError> {
    let path = dir.join(MEMBERSHIP_FILE);
    pretext_core::jsonl::read_records(&path).map_err(TrainError::io("read", &path))
}

/// One line for a person: `generation 3 at step 40: 2 ranks [a, b]; left c`.
pub fn describe(g: &Generation) -> String {
    let mut s = format!(
        "generation {} at step {}: {} rank{} [{}]",
        g.generation,
        g.step,
        g.world_size,
        if g.world_size == 1 { "" } else { "s" },
        g.members.join(", ")
    );
    for (what, who) in [("joined", &g.joined), ("left", &g.left), ("lost", &g.lost)] {
        if !who.is_empty() {
            s.push_str(&format!("; {what} {}", who.join(", ")));
        }
    }
    if let Some(secs) = g.reform_secs {
        s.push_str(&format!("; re-formed in {secs:.2} s"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_read_back_in_order_and_described() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_generations(dir.path()).unwrap().is_empty());
        let g = |n: u64, members: &[&str], lost: &[&str]| Generation {
            generation: n,
            step: 10 * n,
            world_size: members.len(),
            members: members.iter().map(|s| (*s).to_owned()).collect(),
            joined: Vec::new(),
            left: Vec::new(),
            lost: lost.iter().map(|s| (*s).to_owned()).collect(),
            reform_secs: (n > 1).then_some(1.5),
            started_unix_ms: n,
        };
        record_generation(dir.path(), &g(1, &["a"], &[])).unwrap();
        record_generation(dir.path(), &g(2, &["a", "b"], &[])).unwrap();
        record_generation(dir.path(), &g(3, &["a"], &["b"])).unwrap();
        let read = read_generations(dir.path()).unwrap();
        assert_eq!(
            read,
            vec![
                g(1, &["a"], &[]),
                g(2, &["a", "b"], &[]),
                g(3, &["a"], &["b"])
            ]
        );
        assert_eq!(describe(&read[0]), "generation 1 at step 10: 1 rank [a]");
        assert_eq!(
            describe(&read[2]),
            "generation 3 at step 30: 1 rank [a]; lost b; re-formed in 1.50 s"
        );
    }
}
