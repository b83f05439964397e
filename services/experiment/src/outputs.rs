//! What an experiment writes: `results.json`, `summary.json`, the plots
//! and `report.md` ([`write_outputs`]), and the long-row probes
//! ([`long_runs`]).

use std::path::{Path, PathBuf};

use pretext_finetune::{LabeledData, Pretrained, run_on};

use crate::grid::{Grid, Outcome, epochs_at};
use crate::record::{Record, fraction_label};
use crate::report::markdown_table;
use crate::{Context, plots, report, stats};

/// Writes `results.json`, `summary.json`, the plots and `report.md` under
/// the grid's output directory; returns the report.
pub fn write_outputs(grid: &Grid, o: &Outcome, title: &str) -> crate::Result<String> {
    let summary = stats::summarise(&o.records);
    std::fs::write(
        grid.out.join("results.json"),
        serde_json::to_vec_pretty(&o.records)?,
    )?;
    std::fs::write(
        grid.out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    std::fs::write(
        grid.out.join("pretraining.json"),
        serde_json::to_vec_pretty(&o.runs)?,
    )?;
    let curves: Vec<(String, PathBuf)> = o
        .run_dirs
        .iter()
        .filter(|(_, _, seed, _)| *seed == 0)
        .map(|(t, pf, _, d)| {
            (
                format!("{t} ({:.0}% of train, seed 0)", 100.0 * pf),
                d.clone(),
            )
        })
        .collect();
    let plots = plots::write_plots(&grid.out, &o.records, o.data.train.len(), &curves);
    let s = &grid.spec;
    let b = &grid.budget;
    let mut r = format!("# {title}\n\n");
    r += &format!(
        "Data: {}; {} classes; {} labeled and {} unlabeled train rows, {} valid, {} test rows. \
         Model: width {}, depth {}. Pretraining: {} epoch(s) over the train rows (never valid or test); \
         masked spans of mean {} steps at rate {}, next-step horizon {}{}. \
         Fine-tuning budget, the same for every method at a fraction: max({} epochs, {} steps){}, lr {}, \
         {} evaluations on valid (best kept), crop {}, class-balanced loss. Seeds: {} (each re-draws pretraining, \
         the labeled subset, the head and the batch order). Wall clock {:.0} s.\n\n",
        grid.data
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(", "),
        o.data.classes.len(),
        o.data.train.len(),
        o.data.unlabeled_train,
        o.data.valid.len(),
        o.data.test.len(),
        s.width,
        s.depth,
        s.epochs,
        s.mask.mean_span,
        s.mask.rate,
        s.mask.horizon,
        grid.run_stats.map_or(String::new(), |st| format!(
            " (from the data: median run {} steps, mean {:.1}, copy-previous right at {:.1}% of steps)",
            st.median_run,
            st.mean_run,
            100.0 * st.copy_previous
        )),
        b.epochs,
        b.min_steps,
        b.max_steps
            .map_or(String::new(), |m| format!(", at most {m} steps")),
        b.lr,
        b.evals,
        b.train_crop.map_or("none".to_owned(), |c| format!("{c} steps")),
        grid.seeds,
        o.seconds
    );
    let smaller: Vec<String> = grid
        .pretrain_fractions
        .iter()
        .filter(|&&pf| pf < 1.0)
        .map(|&pf| format!("{:.0}% for {} epochs", 100.0 * pf, epochs_at(s.epochs, pf)))
        .collect();
    if !smaller.is_empty() {
        r += &format!(
            "Pretraining on part of the train rows ({}) runs about as many steps as on all of them; \
             the pretext table below gives each run's steps.\n\n",
            smaller.join(", ")
        );
    }
    r += "## Test accuracy: mean [95% bootstrap interval] over seeds, and macro-F1\n\n";
    r += &markdown_table(&o.records);
    r += &format!(
        "\nClassical rows (`majority`, `histogram`: logistic regression on [value histogram, log length], `ngram`: on hashed 1- to 4-grams) train on the same subsets. ⚠ marks a cell where a run collapsed. Label fractions: {}.\n\n",
        plots::axis_note(&o.records, o.data.train.len())
    );
    for w in report::collapse_warnings(&o.records) {
        r += &format!("- {w}\n");
    }
    match &plots {
        Ok(files) => {
            for f in files {
                r += &format!("\n![{f}]({f})\n");
            }
        }
        Err(e) => r += &format!("\nPlots not drawn: {e}\n"),
    }
    r += "\n## Does pretraining help? Paired differences with `none` (fine-tuned from scratch, same seed and subset)\n\n";
    r += &report::comparison_table(&summary);
    r += &format!("\n{}\n", report::verdict_line(&summary));
    r += "\n## Does the CNN beat the classical baselines? (each side chosen on valid, paired by seed)\n\n";
    r += &report::cnn_vs_classical(&o.records);
    r += "\n## Pretext tasks against trivial predictors (token accuracy over the last quarter of steps, on the same targets)\n\n";
    r += &report::pretext_table(&o.runs);
    for w in report::trivial_warnings(&o.runs) {
        r += &format!("\n- {w}\n");
    }
    let fracs = report::fractions(&o.records);
    if let Some(&largest) = fracs.last() {
        r += &format!(
            "\n## Accuracy by row length at {} labels (all seeds pooled)\n\n",
            fraction_label(largest)
        );
        let at: Vec<Record> = o
            .records
            .iter()
            .filter(|x| x.label_fraction == largest && x.is_cnn())
            .cloned()
            .collect();
        r += &report::band_table(&at);
    }
    std::fs::write(grid.out.join("report.md"), &r)?;
    Ok(r)
}

/// Linear probes of the masked encoder (pretrained on `--data`) and of a
/// random one on `--long-data`, at the smallest label fraction, each seed;
/// returns the report section and the records.
pub fn long_runs(grid: &Grid, path: &Path, masked: &Path) -> crate::Result<(String, Vec<Record>)> {
    let vcfg = grid.budget.validation;
    let long = vec![path.to_path_buf()];
    let data = LabeledData::load(&long, vcfg).context("reading --long-data")?;
    data.check()?;
    let lf = grid
        .label_fractions
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let mut recs = Vec::new();
    for seed in 0..grid.seeds {
        for (method, p) in [
            ("none", Pretrained::None),
            ("masked", Pretrained::Run(masked.to_path_buf())),
        ] {
            let dir = grid
                .out
                .join("runs")
                .join(format!("long-{method}-probe-lf{lf}-s{seed}"));
            let mut cfg = grid.budget.config(&long, p, lf, seed, dir);
            cfg.freeze_encoder = true;
            let r = run_on(&cfg, &data)?;
            recs.push(Record::new(
                method,
                if method == "none" { 0.0 } else { 1.0 },
                &r,
            ));
        }
    }
    let longest = data.test.iter().map(|e| e.values.len()).max().unwrap_or(0);
    let mut s = format!(
        "\n## Trained on short rows, evaluated on long ones\n\nThe seed-0 masked encoder above is probed (frozen, linear head on {} labels) on `{}`, whose test rows reach {longest} steps, against a random encoder under the same probe. Test accuracy by length band (all seeds pooled):\n\n",
        fraction_label(lf),
        path.display()
    );
    s += &report::band_table(&recs);
    Ok((s, recs))
}
