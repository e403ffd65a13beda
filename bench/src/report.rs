//! Samples into figures: percentiles, a markdown row, the CSV for `bench plot`.

use std::io::Write as _;

pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

pub(crate) fn summary(label: &str, imp: &str, samples_ms: &[f64], csv: &mut Csv) -> String {
    let mut s = samples_ms.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    for v in &s {
        csv.row(label, imp, *v);
    }
    format!(
        "| {label} | {imp} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        s.len(),
        pct(&s, 0.0),
        pct(&s, 50.0),
        pct(&s, 90.0),
        pct(&s, 99.0),
        s.last().copied().unwrap_or(f64::NAN)
    )
}

pub(crate) const HEAD: &str =
    "| figure | impl | trials | min ms | median ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|";

pub(crate) struct Csv(pub(crate) Option<std::fs::File>);

impl Csv {
    pub(crate) fn row(&mut self, label: &str, imp: &str, v: f64) {
        if let Some(f) = &mut self.0 {
            let _ = writeln!(f, "{label},{imp},{v:.3}");
        }
    }
}

/// A small deterministic generator for waiting times.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
