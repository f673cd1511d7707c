//! Summaries of repeated measurements: the median and nearest-rank
//! percentiles.

/// The median; 0 for no values.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The `p`th percentile (0 < `p` ≤ 100) by nearest rank: the smallest
/// value that at least `p` % of the values do not exceed. 0 for no values.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Median and 90th percentile of a series of latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
}

impl Latency {
    /// Summarises `samples_ms`.
    pub fn of(samples_ms: &mut [f64]) -> Latency {
        Latency {
            p50_ms: median(samples_ms),
            p90_ms: percentile(samples_ms, 90.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let mut twenty: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut twenty, 90.0), 18.0);
        assert_eq!(percentile(&mut twenty, 50.0), 10.0);
        assert_eq!(percentile(&mut twenty, 100.0), 20.0);
        assert_eq!(percentile(&mut twenty, 1.0), 1.0);
        assert_eq!(percentile(&mut [7.0], 90.0), 7.0);
        assert_eq!(percentile(&mut [], 90.0), 0.0);
    }

    #[test]
    fn latency_of_samples() {
        let mut samples = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 6.0, 7.0, 8.0, 9.0];
        let l = Latency::of(&mut samples);
        assert_eq!(l.p50_ms, 5.5);
        assert_eq!(l.p90_ms, 9.0);
    }
}
