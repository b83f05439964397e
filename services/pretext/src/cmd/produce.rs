//! `pretext produce`: one producer service process (the command lives in
//! `pretext-cli`, which the lean `pretext-produce` binary shares).

pub use pretext_producer::cli::produce::{Args, run_cmd};
