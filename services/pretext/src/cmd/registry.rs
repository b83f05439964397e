//! `pretext registry list|show`: reads the scheduler's registry: runs with
//! their status and stage times, their files and models, as a table or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pretext_scheduler::Registry;

use super::schedule::short;

/// `pretext registry` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Every run: status, files, rows, accuracy, the promoted model.
    List(ListArgs),
    /// One run: stage times, error, new files, the candidate model.
    Show(ShowArgs),
}

/// Arguments of `pretext registry list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The registry file.
    #[arg(long)]
    pub registry: PathBuf,
    /// Print JSON: `{"runs": [...], "models": [...], "files": [...], "promoted": ...}`.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pretext registry show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Run id.
    pub id: i64,
    /// The registry file.
    #[arg(long)]
    pub registry: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pretext registry …`.
pub fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::List(a) => list(a),
        Cmd::Show(a) => show(a),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", 100.0 * v))
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let reg = Registry::open_existing(&a.registry)?;
    let runs = reg.runs()?;
    let models = reg.models()?;
    let files = reg.files()?;
    let promoted = reg.promoted_model()?;
    if a.json {
        let doc = serde_json::json!({
            "runs": runs,
            "models": models,
            "files": files,
            "promoted": promoted,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>4}  {:<10}  {:>5}  {:>8}  {:>6}  {:>8}  {:>8}  {:<24}  error",
        "run", "status", "files", "new rows", "replay", "test acc", "baseline", "updated"
    );
    for r in &runs {
        let m = models.iter().find(|m| m.run_id == r.id);
        println!(
            "{:>4}  {:<10}  {:>5}  {:>8}  {:>6}  {:>8}  {:>8}  {:<24}  {}",
            r.id,
            r.status.as_str(),
            files.iter().filter(|f| f.run_id == Some(r.id)).count(),
            r.new_rows.map_or("-".into(), |n| n.to_string()),
            r.replay_rows.map_or("-".into(), |n| n.to_string()),
            pct(m.and_then(|m| m.test_accuracy)),
            pct(m.and_then(|m| m.baseline_accuracy)),
            r.updated_at,
            r.error.as_deref().unwrap_or("")
        );
    }
    let waiting = files.iter().filter(|f| f.run_id.is_none()).count();
    println!(
        "{} files registered ({} waiting for a run); promoted model: {}",
        files.len(),
        waiting,
        promoted.map_or_else(
            || "none".to_owned(),
            |m| format!(
                "{} (run {}, test accuracy {})",
                m.id,
                m.run_id,
                pct(m.test_accuracy)
            )
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let reg = Registry::open_existing(&a.registry)?;
    let d = reg
        .detail(a.id)?
        .with_context(|| format!("no run {} in {}", a.id, a.registry.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = &d.run;
    println!("run {}: {}", r.id, r.status);
    println!("  directory     {}", r.dir);
    for (name, t) in [
        ("registered", Some(&r.registered_at)),
        ("produced", r.produced_at.as_ref()),
        ("pretrained", r.pretrained_at.as_ref()),
        ("fine-tuned", r.finetuned_at.as_ref()),
        ("evaluated", r.evaluated_at.as_ref()),
        ("decided", r.decided_at.as_ref()),
    ] {
        println!("  {name:<13} {}", t.map_or("-", String::as_str));
    }
    if let Some(e) = &r.error {
        println!("  error         {e}");
    }
    println!(
        "  continued from model {}; {} new rows, {} replayed; {} pretraining steps",
        r.base_model
            .map_or("none (from scratch)".into(), |m| m.to_string()),
        r.new_rows.map_or("-".into(), |n| n.to_string()),
        r.replay_rows.map_or("-".into(), |n| n.to_string()),
        r.pretrain_steps.map_or("-".into(), |n| n.to_string()),
    );
    println!("  files:");
    for f in &d.files {
        println!(
            "    {}  {}  {} rows, {} rejected{}",
            short(&f.hash),
            f.path,
            f.rows,
            f.rejected,
            f.error
                .as_deref()
                .map(|e| format!(", unreadable: {e}"))
                .unwrap_or_default()
        );
        for s in reg
            .sightings_of(&f.hash)?
            .iter()
            .filter(|s| s.path != f.path)
        {
            println!("      also seen as {} (not trained on again)", s.path);
        }
    }
    match &d.model {
        Some(m) => {
            println!(
                "  model {}: valid accuracy {}, test accuracy {} on {} rows, macro-F1 {}",
                m.id,
                pct(Some(m.valid_accuracy)),
                pct(m.test_accuracy),
                m.test_rows.map_or("-".into(), |n| n.to_string()),
                m.macro_f1.map_or("-".into(), |v| format!("{v:.3}"))
            );
            println!(
                "    compared with {}: {}; promoted: {}",
                m.baseline_model
                    .map_or("nothing (first model)".into(), |b| format!("model {b}")),
                pct(m.baseline_accuracy),
                if m.promoted { "yes" } else { "no" }
            );
            println!("    checkpoint {}", m.checkpoint);
        }
        None => println!("  model: none yet"),
    }
    Ok(ExitCode::SUCCESS)
}
