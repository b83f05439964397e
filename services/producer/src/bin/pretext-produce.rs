//! `pretext-produce`: the producer service alone, with the flags of
//! `pretext produce`, in a binary that does not link libtorch (a few MB of
//! memory at start instead of hundreds). The compose file runs producers
//! with it.

use clap::Parser;

/// A pretext producer: validates Parquet, buckets rows by length, builds
/// the self-supervised targets and publishes Arrow IPC batches.
#[derive(Debug, Parser)]
#[command(name = "pretext-produce", version)]
struct Cli {
    /// Log as JSON lines (for log shippers).
    #[arg(long, global = true, env = "PRETEXT_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    args: pretext_producer::cli::produce::Args,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pretext_ops::init_tracing(cli.log_json, "info");
    match pretext_producer::cli::produce::run_cmd(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
