//! `--mask-rate`, `--mask-span` and `--horizon`: the pretext targets'
//! settings, with `auto` taken from the data's run lengths.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use pretext_core::task::MaskConfig;
use pretext_core::validate::ValidationConfig;
use pretext_datasets::sample::train_run_stats;
use pretext_datasets::trivial::{RunStats, default_mean_span};

/// Train rows read to measure run lengths for `auto`.
pub const RUN_STATS_ROWS: usize = 2_000;

/// A setting given as a number or `auto` (from the data).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Auto<T> {
    /// Measured on the data.
    Auto,
    /// As given.
    Value(T),
}

impl<T: std::str::FromStr> std::str::FromStr for Auto<T> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Auto::Auto);
        }
        s.parse()
            .map(Auto::Value)
            .map_err(|_| format!("`{s}` is neither `auto` nor a number"))
    }
}

/// The targets' flags shared by `produce`, `demo` and `experiment`.
#[derive(Debug, Clone, Copy, ClapArgs)]
pub struct TargetArgs {
    /// `masked`: fraction of each row's steps selected for the loss.
    #[arg(long, default_value_t = 0.15, env = "PRETEXT_MASK_RATE")]
    pub mask_rate: f64,
    /// `masked`: mean length of masked spans (1 = single positions), or
    /// `auto`: the data's step-weighted median run of a held value (1 on
    /// data whose values change every step), so that copying a neighbour
    /// does not solve the task.
    #[arg(
        long,
        alias = "mean-span",
        default_value = "auto",
        env = "PRETEXT_MASK_SPAN"
    )]
    pub mask_span: Auto<f64>,
    /// `next`: predict the value this many steps ahead, or `auto`: the
    /// data's median run (1 on data whose values change every step).
    #[arg(long, default_value = "auto", env = "PRETEXT_HORIZON")]
    pub horizon: Auto<usize>,
}

impl Default for TargetArgs {
    fn default() -> Self {
        Self {
            mask_rate: 0.15,
            mask_span: Auto::Auto,
            horizon: Auto::Auto,
        }
    }
}

impl TargetArgs {
    /// Whether a setting needs the data's run lengths.
    pub fn needs_data(&self) -> bool {
        self.mask_span == Auto::Auto || self.horizon == Auto::Auto
    }

    /// The mask config for data with run lengths `stats` (seed 0).
    pub fn with_stats(&self, stats: &RunStats) -> MaskConfig {
        let auto = default_mean_span(stats);
        MaskConfig {
            rate: self.mask_rate,
            mean_span: match self.mask_span {
                Auto::Auto => auto,
                Auto::Value(v) => v,
            },
            horizon: match self.horizon {
                Auto::Auto => auto as usize,
                Auto::Value(v) => v,
            },
            ..MaskConfig::default()
        }
    }

    /// The mask config for `paths`: `auto` settings measured on their
    /// first [`RUN_STATS_ROWS`] train rows. Refuses settings out of range.
    pub fn resolve(
        &self,
        paths: &[PathBuf],
        validation: ValidationConfig,
    ) -> anyhow::Result<(MaskConfig, Option<RunStats>)> {
        let stats = if self.needs_data() {
            Some(train_run_stats(paths, validation, RUN_STATS_ROWS)?)
        } else {
            None
        };
        let mask = self.with_stats(&stats.unwrap_or_default());
        mask.check().map_err(anyhow::Error::msg)?;
        if let Some(s) = &stats {
            tracing::info!(
                median_run = s.median_run,
                mean_run = s.mean_run,
                copy_previous = s.copy_previous,
                mean_span = mask.mean_span,
                horizon = mask.horizon,
                "targets from the data's run lengths"
            );
        }
        Ok((mask, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_runs_and_numbers_win() {
        let stats = RunStats {
            runs: 10,
            median_run: 12,
            mean_run: 9.5,
            copy_previous: 0.9,
        };
        let m = TargetArgs::default().with_stats(&stats);
        assert_eq!((m.mean_span, m.horizon, m.rate), (12.0, 12, 0.15));
        let fixed = TargetArgs {
            mask_rate: 0.3,
            mask_span: "3".parse().unwrap(),
            horizon: "1".parse().unwrap(),
        };
        assert!(!fixed.needs_data());
        let m = fixed.with_stats(&stats);
        assert_eq!((m.mean_span, m.horizon, m.rate), (3.0, 1, 0.3));
        assert!("x".parse::<Auto<f64>>().is_err());
    }
}
