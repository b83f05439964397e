//! Dataset splits and the deterministic hash that assigns a row without one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Which part of the dataset a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Pretraining and fine-tuning.
    Train,
    /// Model selection.
    Valid,
    /// The held-out judge; never trained on.
    Test,
}

impl Split {
    /// All splits in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    /// Parses `train`, `valid` or `test`.
    pub fn parse(s: &str) -> Option<Split> {
        match s {
            "train" => Some(Split::Train),
            "valid" => Some(Split::Valid),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    /// The split of a row whose file gives none: 80% train, 10% valid, 10%
    /// test, decided by a hash of the id so that it never changes.
    pub fn from_id_hash(id: &str) -> Split {
        let digest = Sha256::digest(id.as_bytes());
        let bucket = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) % 100;
        match bucket {
            0..80 => Split::Train,
            80..90 => Split::Valid,
            _ => Split::Test,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Split::parse(s)
            .ok_or_else(|| format!("unknown split `{s}` (expected train, valid or test)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_split_is_stable_and_roughly_80_10_10() {
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            let id = format!("row-{i}");
            let s = Split::from_id_hash(&id);
            assert_eq!(s, Split::from_id_hash(&id));
            counts[s as usize] += 1;
        }
        assert!((7_700..8_300).contains(&counts[0]), "{counts:?}");
        assert!((800..1_200).contains(&counts[1]), "{counts:?}");
        assert!((800..1_200).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn parse_round_trips() {
        for s in Split::ALL {
            assert_eq!(Split::parse(s.as_str()), Some(s));
        }
        assert_eq!(Split::parse("Train"), None);
    }
}
