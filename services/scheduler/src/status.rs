//! The run state machine: `registered → produced → pretrained → fine-tuned
//! → evaluated → promoted | rejected`. A run's status is the last stage it
//! completed (committed to the registry); a restarted scheduler does the
//! next stage, so a run killed anywhere continues where it stopped.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a run stands: the last stage it completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    /// Created with its new files assigned; nothing done yet.
    #[serde(rename = "registered")]
    Registered,
    /// Its pretraining input is fixed: the new files and the replay sample
    /// of earlier data, and the model it continues from.
    #[serde(rename = "produced")]
    Produced,
    /// Pretraining continued from the promoted checkpoint on that input.
    #[serde(rename = "pretrained")]
    Pretrained,
    /// The classifier is fine-tuned; a candidate model is recorded.
    #[serde(rename = "fine-tuned")]
    Finetuned,
    /// The candidate and the promoted model are scored on the same test rows.
    #[serde(rename = "evaluated")]
    Evaluated,
    /// The candidate was not worse by more than the margin: it is the
    /// promoted model now. Terminal.
    #[serde(rename = "promoted")]
    Promoted,
    /// The candidate was worse by more than the margin: recorded, not
    /// promoted. Terminal.
    #[serde(rename = "rejected")]
    Rejected,
}

impl RunStatus {
    /// Every status, in stage order.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Registered,
        RunStatus::Produced,
        RunStatus::Pretrained,
        RunStatus::Finetuned,
        RunStatus::Evaluated,
        RunStatus::Promoted,
        RunStatus::Rejected,
    ];

    /// The name stored in the registry and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Registered => "registered",
            RunStatus::Produced => "produced",
            RunStatus::Pretrained => "pretrained",
            RunStatus::Finetuned => "fine-tuned",
            RunStatus::Evaluated => "evaluated",
            RunStatus::Promoted => "promoted",
            RunStatus::Rejected => "rejected",
        }
    }

    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Promoted | RunStatus::Rejected)
    }

    /// The statuses the next stage may end in: one, except after
    /// evaluation, which ends promoted or rejected.
    pub fn successors(self) -> &'static [RunStatus] {
        match self {
            RunStatus::Registered => &[RunStatus::Produced],
            RunStatus::Produced => &[RunStatus::Pretrained],
            RunStatus::Pretrained => &[RunStatus::Finetuned],
            RunStatus::Finetuned => &[RunStatus::Evaluated],
            RunStatus::Evaluated => &[RunStatus::Promoted, RunStatus::Rejected],
            RunStatus::Promoted | RunStatus::Rejected => &[],
        }
    }

    /// Whether a run at `self` may move to `to` (one stage forward, never
    /// back, never skipping).
    pub fn can_advance_to(self, to: RunStatus) -> bool {
        self.successors().contains(&to)
    }

    /// The registry column holding the time a run reached this status.
    pub fn time_column(self) -> &'static str {
        match self {
            RunStatus::Registered => "registered_at",
            RunStatus::Produced => "produced_at",
            RunStatus::Pretrained => "pretrained_at",
            RunStatus::Finetuned => "finetuned_at",
            RunStatus::Evaluated => "evaluated_at",
            RunStatus::Promoted | RunStatus::Rejected => "decided_at",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown run status `{0}` (one of registered, produced, pretrained, fine-tuned, evaluated, promoted, rejected)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;

    /// The stored names; `finetuned` and `fine_tuned` are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace(['_', '-'], "");
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().replace('-', "") == norm)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_go_forward_one_at_a_time() {
        use RunStatus::*;
        let path = [Registered, Produced, Pretrained, Finetuned, Evaluated];
        for w in path.windows(2) {
            assert!(w[0].can_advance_to(w[1]), "{} → {}", w[0], w[1]);
            assert!(
                !w[1].can_advance_to(w[0]),
                "never back: {} → {}",
                w[1],
                w[0]
            );
        }
        assert!(Evaluated.can_advance_to(Promoted));
        assert!(Evaluated.can_advance_to(Rejected));
        // No skipping: registered cannot jump to pretrained or be promoted.
        assert!(!Registered.can_advance_to(Pretrained));
        assert!(!Registered.can_advance_to(Promoted));
        assert!(!Finetuned.can_advance_to(Promoted));
        assert!(!Produced.can_advance_to(Produced));
        for t in [Promoted, Rejected] {
            assert!(t.is_terminal());
            for s in RunStatus::ALL {
                assert!(!t.can_advance_to(s), "{t} is terminal, not → {s}");
            }
        }
        assert_eq!(RunStatus::ALL.iter().filter(|s| s.is_terminal()).count(), 2);
    }

    #[test]
    fn names_round_trip_and_accept_spellings() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(
            "finetuned".parse::<RunStatus>().unwrap(),
            RunStatus::Finetuned
        );
        assert_eq!(
            "FINE_TUNED".parse::<RunStatus>().unwrap(),
            RunStatus::Finetuned
        );
        assert!("trained".parse::<RunStatus>().is_err());
    }
}
