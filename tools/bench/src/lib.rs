//! What the benchmark tools share: latency summaries and CPU accounting in the shape the
//! `run` script reads.

use serde::Serialize;

pub mod cpu;

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Samples summarised.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarise samples given in microseconds (sorted here).
    pub fn of_micros(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let at = |p: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least p of them at or below it.
            let rank = (p * samples.len() as f64).ceil() as usize;
            let i = rank.clamp(1, samples.len()) - 1;
            samples.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let p = Percentiles::of_micros(&mut v);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p95_ms, 95.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(Percentiles::of_micros(&mut []).p99_ms, 0.0);
        assert_eq!(Percentiles::of_micros(&mut [7000]).p50_ms, 7.0);
    }
}
