//! `pretext-validate`: `pretext validate` in a binary that does not link
//! libtorch, so checking a file costs no libtorch start-up (0.4 s and
//! hundreds of MB with the `pretext` binary).

use clap::Parser;

/// Checks Parquet files against the raw-input contract, row by row, with a
/// reason for each rejected row.
#[derive(Debug, Parser)]
#[command(name = "pretext-validate", version)]
struct Cli {
    #[command(flatten)]
    args: pretext_producer::cli::validate::Args,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pretext_ops::init_tracing(false, "info");
    match pretext_producer::cli::validate::run(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
