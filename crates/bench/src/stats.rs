//! Percentiles and the report: a table for people and JSON for machines.

use std::time::Duration;

use serde::Serialize;

/// The `p`th percentile (0–100) of `samples`, nearest-rank.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One measured quantity on both paths (or only through oxbridge).
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub direct: Option<f64>,
    pub proxy: f64,
}

impl Row {
    pub fn both(name: impl Into<String>, unit: &'static str, direct: f64, proxy: f64) -> Row {
        Row {
            name: name.into(),
            unit,
            direct: Some(direct),
            proxy,
        }
    }

    pub fn proxy_only(name: impl Into<String>, unit: &'static str, proxy: f64) -> Row {
        Row {
            name: name.into(),
            unit,
            direct: None,
            proxy,
        }
    }

    /// proxy ÷ direct.
    pub fn ratio(&self) -> Option<f64> {
        self.direct.filter(|d| *d > 0.0).map(|d| self.proxy / d)
    }
}

/// Prints the rows as a table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<58} {:>12} {:>12} {:>8}  unit",
        "measure", "direct", "oxbridge", "ratio"
    );
    for row in rows {
        let direct = row.direct.map_or("-".to_string(), |d| format!("{d:.2}"));
        let ratio = row.ratio().map_or("-".to_string(), |r| format!("{r:.2}x"));
        println!(
            "{:<58} {:>12} {:>12.2} {:>8}  {}",
            row.name, direct, row.proxy, ratio, row.unit
        );
    }
}
