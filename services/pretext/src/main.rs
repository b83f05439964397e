//! The `pretext` command: parses arguments, sets up logging, and hands each
//! subcommand to its module under `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

/// Self-supervised pretraining of 1-D CNNs on long integer sequences.
#[derive(Debug, Parser)]
#[command(name = "pretext", version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "PRETEXT_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job end to end on a small synthetic dataset.
    Demo(cmd::demo::Args),
    /// Write the synthetic dataset (Parquet, raw-input contract).
    GenData(cmd::gen_data::Args),
    /// Import bacterial genomes (FASTA) as a species-labeled dataset with a leakage-aware split.
    ImportGenomes(cmd::import_genomes::Args),
    /// Check Parquet files row by row; quarantine rejected rows.
    Validate(cmd::validate::Args),
    /// Describe a dataset: splits, labels, lengths, and the histogram floor.
    Inspect(cmd::inspect::Args),
    /// Publish batches of SSL targets from Parquet to the broker.
    Produce(cmd::produce::Args),
    /// Pretrain the model on the published batches (resumes, exactly once).
    Train(cmd::train::Args),
    /// Start N local ranks of a data-parallel command: `launch --nproc 2 -- train ...`.
    Launch(cmd::launch::Args),
    /// Check a run: published vs applied batches, missing, applied twice.
    Audit(cmd::audit::Args),
    /// Fine-tune a pretrained encoder (or none: the baseline) on labeled rows; report on test.
    Finetune(cmd::finetune::Args),
    /// The grid {none, masked, next} × label fractions × seeds, with report and plots.
    Experiment(cmd::experiment::Args),
    /// Print the batch contract (the checked-in schemas/batch.schema.json).
    Schema,
    /// Export a run's newest checkpoint for PyTorch: model.safetensors + config.json.
    Export(cmd::export::Args),
    /// Scheduled retraining: watch an inbox, register new files, retrain, promote if not worse.
    Schedule(cmd::schedule::Args),
    /// Read the scheduler's registry: `list`, `show ID`.
    #[command(subcommand)]
    Registry(cmd::registry::Cmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: the commands that train keep freed memory
    // for the next step (pretext_model::memory).
    let allocator = matches!(
        cli.command,
        Command::Train(_)
            | Command::Finetune(_)
            | Command::Experiment(_)
            | Command::Demo(_)
            | Command::Schedule(_)
    )
    .then(pretext_model::memory::keep_freed_memory);
    // The demo prints its own story; services log at info.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    pretext_ops::init_tracing(cli.log_json, default_level);
    if let Some(tuning) = allocator {
        tracing::info!(%tuning, "allocator");
    }
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::GenData(a) => cmd::gen_data::run(a),
        Command::ImportGenomes(a) => cmd::import_genomes::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Produce(a) => cmd::produce::run_cmd(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Launch(a) => cmd::launch::run(a),
        Command::Audit(a) => cmd::audit::run(a),
        Command::Finetune(a) => cmd::finetune::run(a),
        Command::Experiment(a) => cmd::experiment::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Schedule(a) => cmd::schedule::run(a),
        Command::Registry(c) => cmd::registry::run(c),
        Command::Schema => {
            let doc = pretext_core::batch::contract_json();
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
            Ok(std::process::ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
