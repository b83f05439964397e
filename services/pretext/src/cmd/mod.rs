//! One module per subcommand: its clap arguments and its `run`.

pub mod gen_data;
pub mod inspect;
pub mod validate;

use clap::Args as ClapArgs;
use pretext_core::validate::ValidationConfig;

/// Length limits shared by every command that reads raw input.
#[derive(Debug, Clone, Copy, ClapArgs)]
pub struct LimitArgs {
    /// Shortest accepted sequence.
    #[arg(long, default_value_t = 512, env = "PRETEXT_MIN_LEN")]
    pub min_len: usize,
    /// Longest accepted sequence.
    #[arg(long, default_value_t = 30_720, env = "PRETEXT_MAX_LEN")]
    pub max_len: usize,
}

impl LimitArgs {
    /// The validation config these limits give.
    pub fn config(self) -> ValidationConfig {
        ValidationConfig {
            min_len: self.min_len,
            max_len: self.max_len,
        }
    }
}
