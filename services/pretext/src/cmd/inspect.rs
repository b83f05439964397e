//! `pretext inspect`: what a dataset holds, how far composition alone
//! (value histogram + length) gets on its labels, how long values are held,
//! and what the trivial token predictors score on the pretext targets the
//! given settings would make.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use pretext_core::input::{ValidatingReader, discover};
use pretext_core::split::Split;
use pretext_core::task::Task;
use pretext_core::validate::{IdRegistry, Label};
use pretext_datasets::floor::{FloorReport, features, histogram_floor};
use pretext_datasets::trivial::{RunStats, TrivialAccuracy, run_stats, trivial_for_task};
use serde::Serialize;

use super::LimitArgs;

/// Arguments of `pretext inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Parquet files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub targets: pretext_producer::cli::TargetArgs,
}

/// Train rows the trivial predictors are scored on.
const TRIVIAL_ROWS: usize = 2_000;

/// The pretext targets and the trivial predictors on them.
#[derive(Debug, Serialize)]
struct Targets {
    run_stats: RunStats,
    mask_rate: f64,
    mask_span: f64,
    horizon: usize,
    masked: TrivialAccuracy,
    next: TrivialAccuracy,
}

/// What `inspect` reports.
#[derive(Debug, Serialize)]
struct Inspection {
    rows: u64,
    rejected: u64,
    tokens: u64,
    per_split: BTreeMap<Split, u64>,
    labeled_per_split: BTreeMap<Split, u64>,
    labels: BTreeMap<String, u64>,
    length_quantiles: BTreeMap<String, usize>,
    floor: FloorReport,
    targets: Targets,
}

/// Reads every valid row, prints the description.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut ids = IdRegistry::default();
    let mut lens = Vec::new();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut per_split = BTreeMap::new();
    let mut labeled_per_split = BTreeMap::new();
    let mut labels: BTreeMap<String, u64> = BTreeMap::new();
    let (mut rows, mut rejected, mut tokens) = (0u64, 0u64, 0u64);
    let mut train_rows: Vec<Vec<u8>> = Vec::new();
    for file in discover(&args.paths)? {
        let mut reader = ValidatingReader::open(&file, args.limits.config(), None, None)?;
        while let Some(chunk) = reader.next_chunk(&mut ids)? {
            rejected += chunk.verdict.rejected.len() as u64;
            for r in chunk.verdict.rows {
                rows += 1;
                tokens += r.values.len() as u64;
                lens.push(r.values.len());
                *per_split.entry(r.split).or_insert(0) += 1;
                if r.split == Split::Train && train_rows.len() < TRIVIAL_ROWS {
                    train_rows.push(r.values.clone());
                }
                let Some(label) = r.label else { continue };
                *labeled_per_split.entry(r.split).or_insert(0) += 1;
                *labels.entry(label.to_string()).or_insert(0) += 1;
                let item: (Vec<f64>, Label) = (features(&r.values), label);
                match r.split {
                    Split::Train => train.push(item),
                    Split::Test => test.push(item),
                    Split::Valid => {}
                }
            }
        }
    }
    lens.sort_unstable();
    let q = |p: f64| {
        lens.get(((lens.len().saturating_sub(1)) as f64 * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let length_quantiles = [
        ("min", 0.0),
        ("p25", 0.25),
        ("median", 0.5),
        ("p75", 0.75),
        ("max", 1.0),
    ]
    .into_iter()
    .map(|(k, p)| (k.to_owned(), q(p)))
    .collect();
    let floor = histogram_floor(&train, &test);
    let run_stats = run_stats(train_rows.iter().map(Vec::as_slice));
    let mask = args.targets.with_stats(&run_stats);
    mask.check().map_err(anyhow::Error::msg)?;
    let targets = Targets {
        run_stats,
        mask_rate: mask.rate,
        mask_span: mask.mean_span,
        horizon: mask.horizon,
        masked: trivial_for_task(Task::Masked, &mask, train_rows.iter().map(Vec::as_slice)),
        next: trivial_for_task(Task::Next, &mask, train_rows.iter().map(Vec::as_slice)),
    };
    let ins = Inspection {
        rows,
        rejected,
        tokens,
        per_split,
        labeled_per_split,
        labels,
        length_quantiles,
        floor,
        targets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ins)?);
    } else {
        println!(
            "rows {} (rejected {}), tokens {}",
            ins.rows, ins.rejected, ins.tokens
        );
        println!(
            "per split {:?}, labeled {:?}",
            ins.per_split, ins.labeled_per_split
        );
        println!("labels {:?}", ins.labels);
        println!("lengths {:?}", ins.length_quantiles);
        let f = &ins.floor;
        println!(
            "histogram+length floor: test accuracy {:.3} (majority {:.3}, chance {:.3}; {} train rows, {} test rows)",
            f.accuracy, f.majority_accuracy, f.chance, f.train_rows, f.test_rows
        );
        let t = &ins.targets;
        println!(
            "runs: median {} steps, mean {:.1}; copy-previous right at {:.1}% of steps",
            t.run_stats.median_run,
            t.run_stats.mean_run,
            100.0 * t.run_stats.copy_previous
        );
        for (name, setting, a) in [
            (
                "masked",
                format!("spans of mean {} at rate {}", t.mask_span, t.mask_rate),
                &t.masked,
            ),
            ("next", format!("horizon {}", t.horizon), &t.next),
        ] {
            println!(
                "trivial predictors of `{name}` ({setting}): copy-previous {:.1}%, copy-nearest-unmasked {:.1}%, most-frequent {:.1}% (a model must beat {:.1}%)",
                100.0 * a.copy_previous,
                100.0 * a.copy_nearest,
                100.0 * a.most_frequent,
                100.0 * (a.best() + pretext_datasets::trivial::TRIVIAL_MARGIN)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
