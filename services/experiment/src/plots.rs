//! The experiment's PNG plots: `accuracy.png` (test accuracy against the
//! labeled fraction, a line and a 95% band per CNN method, the classical
//! baselines dashed), `pretrain_data.png` (test accuracy against the share
//! of train rows pretraining saw, at the fewest labels; drawn when the grid
//! has several) and `pretrain_loss.png` (each pretraining run's loss).
//! Text needs a TrueType font: DejaVu Sans from Debian's `fonts-dejavu-core`.

use std::path::{Path, PathBuf};

use crate::record::{Record, fraction_label};
use crate::stats::{bootstrap_ci, mean_std};

const COLORS: [plotters::style::RGBColor; 8] = [
    plotters::style::RGBColor(90, 90, 90),
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(148, 103, 189),
    plotters::style::RGBColor(140, 86, 75),
    plotters::style::RGBColor(23, 190, 207),
];

/// Draws the plots into `out`; returns their file names. `labeled` is the
/// number of labeled train rows (the x axis is the mean share of them a
/// cell trained on, so "one row per class" has its place).
pub fn write_plots(
    out: &Path,
    records: &[Record],
    labeled: usize,
    curves: &[(String, PathBuf)],
) -> Result<Vec<String>, String> {
    register_font()?;
    let mut files = Vec::new();
    // The label-fraction curves use the runs pretrained on every row; the
    // smaller pretraining fractions have their own plot.
    let full: Vec<Record> = records
        .iter()
        .filter(|r| r.pretrain_fraction <= 0.0 || r.pretrain_fraction >= 1.0)
        .cloned()
        .collect();
    if !full.is_empty() {
        let f = "accuracy.png";
        plot_accuracy(&out.join(f), &full, labeled).map_err(|e| e.to_string())?;
        files.push(f.to_owned());
    }
    if let Some(data_lines) = pretrain_data_lines(records) {
        let f = "pretrain_data.png";
        plot_pretrain_data(&out.join(f), &data_lines).map_err(|e| e.to_string())?;
        files.push(f.to_owned());
    }
    if !curves.is_empty() {
        let f = "pretrain_loss.png";
        plot_curves(&out.join(f), curves).map_err(|e| e.to_string())?;
        files.push(f.to_owned());
    }
    Ok(files)
}

fn register_font() -> Result<(), String> {
    use std::sync::OnceLock;
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        ] {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return Ok(());
                }
            }
        }
        Err("no DejaVuSans.ttf found (install fonts-dejavu-core)".into())
    })
    .clone()
}

/// One line of the accuracy plot: (x, mean, lo, hi) per label fraction.
type Line = Vec<(f64, f64, f64, f64)>;

/// Per method label: its points, in label-fraction order.
fn lines(records: &[Record], labeled: usize) -> Vec<(String, bool, Line)> {
    let mut labels: Vec<(String, bool)> = Vec::new();
    for r in records {
        if !labels.iter().any(|(l, _)| *l == r.label()) {
            labels.push((r.label(), r.is_cnn()));
        }
    }
    let mut fracs: Vec<f64> = records.iter().map(|r| r.label_fraction).collect();
    fracs.sort_by(f64::total_cmp);
    fracs.dedup();
    labels
        .into_iter()
        .map(|(label, cnn)| {
            let pts = fracs
                .iter()
                .filter_map(|&f| {
                    let cell: Vec<&Record> = records
                        .iter()
                        .filter(|r| r.label() == label && r.label_fraction == f)
                        .collect();
                    if cell.is_empty() {
                        return None;
                    }
                    let acc: Vec<f64> = cell.iter().map(|r| r.test_accuracy).collect();
                    let rows =
                        cell.iter().map(|r| r.train_rows as f64).sum::<f64>() / cell.len() as f64;
                    let (m, _) = mean_std(&acc);
                    let (lo, hi) = bootstrap_ci(&acc);
                    Some((rows / labeled.max(1) as f64, m, lo, hi))
                })
                .collect();
            (label, cnn, pts)
        })
        .collect()
}

fn plot_accuracy(
    path: &Path,
    records: &[Record],
    labeled: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let lines = lines(records, labeled);
    let xs: Vec<f64> = lines
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|q| q.0))
        .collect();
    let lo = xs.iter().copied().fold(1.0, f64::min).max(1e-4) * 0.8;
    let hi = xs.iter().copied().fold(0.0, f64::max).max(lo * 2.0) * 1.25;
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Test accuracy vs labeled rows (mean, 95% bootstrap band over seeds)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("share of the labeled train rows trained on (log)")
        .y_desc("test accuracy")
        .x_label_formatter(&|x| {
            if *x < 0.01 {
                format!("{:.1}%", 100.0 * x)
            } else {
                format!("{:.0}%", 100.0 * x)
            }
        })
        .draw()?;
    for (i, (label, cnn, pts)) in lines.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let means: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
        if cnn {
            draw_band_line(&mut chart, label, color, &pts)?;
        } else {
            chart
                .draw_series(DashedLineSeries::new(means, 6, 4, color.stroke_width(2)))?
                .label(format!("{label} (classical)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
                });
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The pretraining-data curves: at the smallest label fraction, per
/// pretrained method and protocol, (pretraining fraction, mean, lo, hi);
/// and `none` fine-tuned there (mean, lo, hi). `None` unless the grid has
/// at least two pretraining fractions.
struct DataLines {
    label_fraction: f64,
    lines: Vec<(String, Line)>,
    none: Option<(f64, f64, f64)>,
}

fn pretrain_data_lines(records: &[Record]) -> Option<DataLines> {
    let mut pfs: Vec<f64> = records
        .iter()
        .filter(|r| r.pretrain_fraction > 0.0)
        .map(|r| r.pretrain_fraction)
        .collect();
    pfs.sort_by(f64::total_cmp);
    pfs.dedup();
    if pfs.len() < 2 {
        return None;
    }
    let label_fraction = records
        .iter()
        .map(|r| r.label_fraction)
        .fold(f64::INFINITY, f64::min);
    let at: Vec<&Record> = records
        .iter()
        .filter(|r| r.label_fraction == label_fraction && r.is_cnn())
        .collect();
    let summarise = |cell: &[&Record]| {
        let acc: Vec<f64> = cell.iter().map(|r| r.test_accuracy).collect();
        let (m, _) = mean_std(&acc);
        let (lo, hi) = bootstrap_ci(&acc);
        (m, lo, hi)
    };
    let mut names: Vec<(String, String, crate::record::Protocol)> = Vec::new();
    for r in &at {
        if r.pretrain_fraction > 0.0 {
            let name = match r.protocol {
                crate::record::Protocol::Probe => format!("{} probe", r.method),
                _ => r.method.clone(),
            };
            if !names.iter().any(|(n, _, _)| *n == name) {
                names.push((name, r.method.clone(), r.protocol));
            }
        }
    }
    let lines = names
        .into_iter()
        .map(|(name, method, protocol)| {
            let pts = pfs
                .iter()
                .filter_map(|&pf| {
                    let cell: Vec<&Record> = at
                        .iter()
                        .copied()
                        .filter(|r| {
                            r.method == method
                                && r.protocol == protocol
                                && r.pretrain_fraction == pf
                        })
                        .collect();
                    (!cell.is_empty()).then(|| {
                        let (m, lo, hi) = summarise(&cell);
                        (pf, m, lo, hi)
                    })
                })
                .collect();
            (name, pts)
        })
        .collect();
    let none: Vec<&Record> = at
        .iter()
        .copied()
        .filter(|r| r.method == "none" && r.protocol == crate::record::Protocol::Finetune)
        .collect();
    Some(DataLines {
        label_fraction,
        lines,
        none: (!none.is_empty()).then(|| summarise(&none)),
    })
}

fn plot_pretrain_data(path: &Path, d: &DataLines) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let xs: Vec<f64> = d
        .lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .collect();
    let lo = xs.iter().copied().fold(1.0, f64::min).max(1e-4) * 0.8;
    let hi = 1.25f64;
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Test accuracy vs pretraining data, {} labels (same steps; mean, 95% band)",
                fraction_label(d.label_fraction)
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("share of the train rows pretraining saw (log)")
        .y_desc("test accuracy")
        .x_label_formatter(&|x| format!("{:.0}%", 100.0 * x))
        .draw()?;
    if let Some((m, l, h)) = d.none {
        let grey = COLORS[0];
        chart.draw_series(std::iter::once(Rectangle::new(
            [(lo, l), (hi, h)],
            grey.mix(0.12).filled(),
        )))?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(lo, m), (hi, m)],
                6,
                4,
                grey.stroke_width(2),
            ))?
            .label("none (no pretraining)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1))
            });
    }
    for (i, (label, pts)) in d.lines.iter().enumerate() {
        let color = COLORS[(i + 1) % COLORS.len()];
        draw_band_line(&mut chart, label.clone(), color, pts)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A CNN method's line: the 95% band, the means joined, a dot per point.
fn draw_band_line(
    chart: &mut plotters::chart::ChartContext<
        '_,
        plotters::backend::BitMapBackend<'_>,
        plotters::coord::cartesian::Cartesian2d<
            plotters::coord::combinators::LogCoord<f64>,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
    label: String,
    color: plotters::style::RGBColor,
    pts: &[(f64, f64, f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let means: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
    let mut band: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2)).collect();
    band.extend(pts.iter().rev().map(|p| (p.0, p.3)));
    chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))?;
    chart
        .draw_series(LineSeries::new(means.clone(), color.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart.draw_series(means.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    Ok(())
}

fn plot_curves(
    path: &Path,
    curves: &[(String, PathBuf)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut series = Vec::new();
    for (name, dir) in curves {
        let m = pretext_trainer::metrics::read_metrics(&dir.join(pretext_trainer::METRICS_FILE))?;
        // Moving average over 10 steps: single batches are noisy.
        let pts: Vec<(f64, f64)> = (0..m.len())
            .map(|i| {
                let w = &m[i.saturating_sub(9)..=i];
                (
                    m[i].step as f64,
                    w.iter().map(|s| s.loss).sum::<f64>() / w.len() as f64,
                )
            })
            .collect();
        series.push((name.clone(), pts));
    }
    let max_step = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0, f64::max);
    let max_loss = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.0, f64::max);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Pretraining loss (41-way cross-entropy, 10-step mean)",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0f64..max_step,
            0f64..(max_loss * 1.05).max(41f64.ln() * 1.05),
        )?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 41f64.ln()), (max_step, 41f64.ln())],
            BLACK.mix(0.4),
        ))?
        .label("uniform guess (ln 41)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let color = COLORS[(i + 1) % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The x positions the accuracy plot gives each label fraction (for the
/// report's note on what the axis shows).
pub fn axis_note(records: &[Record], labeled: usize) -> String {
    let mut fracs: Vec<f64> = records.iter().map(|r| r.label_fraction).collect();
    fracs.sort_by(f64::total_cmp);
    fracs.dedup();
    fracs
        .iter()
        .filter_map(|&f| {
            let rows: Vec<usize> = records
                .iter()
                .filter(|r| r.label_fraction == f)
                .map(|r| r.train_rows)
                .collect();
            let mean = rows.iter().sum::<usize>() as f64 / rows.len().max(1) as f64;
            (!rows.is_empty())
                .then(|| format!("{} = {:.0} of {labeled} rows", fraction_label(f), mean))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Protocol, test_record};

    #[test]
    fn pretraining_data_curves_are_drawn_at_the_fewest_labels_from_two_fractions_up() {
        let mut rs = Vec::new();
        for seed in 0..3 {
            for lf in [0.1, 1.0] {
                rs.push(test_record("none", Protocol::Finetune, 0.0, lf, seed, 0.5));
                rs.push(test_record(
                    "ngram",
                    Protocol::Classical,
                    0.0,
                    lf,
                    seed,
                    0.9,
                ));
                for (pf, acc) in [(0.1, 0.55), (1.0, 0.6 + 0.01 * seed as f64)] {
                    rs.push(test_record("masked", Protocol::Finetune, pf, lf, seed, acc));
                    rs.push(test_record(
                        "masked",
                        Protocol::Probe,
                        pf,
                        lf,
                        seed,
                        acc - 0.1,
                    ));
                }
            }
        }
        let d = pretrain_data_lines(&rs).expect("two pretraining fractions");
        assert_eq!(d.label_fraction, 0.1);
        let names: Vec<&str> = d.lines.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["masked", "masked probe"]);
        let pts = &d.lines[0].1;
        assert_eq!(pts.len(), 2);
        assert_eq!((pts[0].0, pts[1].0), (0.1, 1.0));
        assert!((pts[0].1 - 0.55).abs() < 1e-9);
        assert!((pts[1].1 - 0.61).abs() < 1e-9);
        assert!(pts[1].2 <= pts[1].1 && pts[1].1 <= pts[1].3);
        let (m, _, _) = d.none.expect("none at that fraction");
        assert!((m - 0.5).abs() < 1e-9);

        // One pretraining fraction: no such plot.
        let one: Vec<Record> = rs
            .iter()
            .filter(|r| r.pretrain_fraction != 0.1)
            .cloned()
            .collect();
        assert!(pretrain_data_lines(&one).is_none());
    }
}
