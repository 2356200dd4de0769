//! Numbers for the report: percentiles and the write gap after a leader loss. Pure.

use serde::Serialize;

/// Nearest-rank percentile `p` (0..=1) of `values` (any order); `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// p50, p99 and max of a set of numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// How many numbers.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// The [`Summary`] of `values` (all zero when empty).
pub fn summarize(values: &[f64]) -> Summary {
    Summary {
        count: values.len(),
        p50: percentile(values, 0.50).unwrap_or(0.0),
        p99: percentile(values, 0.99).unwrap_or(0.0),
        max: percentile(values, 1.0).unwrap_or(0.0),
    }
}

/// For each fault time, the time from it to the first acknowledgement of a write *invoked*
/// at or after it (writes in flight at the fault may be acknowledged just after it without
/// the cluster having recovered). `writes` are (invoked, acknowledged) pairs of successful
/// writes, any order; `None` for a fault no later write was acknowledged after.
pub fn write_gaps(faults: &[u64], writes: &[(u64, u64)]) -> Vec<Option<u64>> {
    let mut by_invoke = writes.to_vec();
    by_invoke.sort_unstable();
    // earliest[i]: the earliest acknowledgement among writes i.. (by invocation time).
    let mut earliest = vec![u64::MAX; by_invoke.len() + 1];
    for i in (0..by_invoke.len()).rev() {
        earliest[i] = earliest[i + 1].min(by_invoke[i].1);
    }
    faults
        .iter()
        .map(|&t| {
            let i = by_invoke.partition_point(|(invoked, _)| *invoked < t);
            (earliest[i] != u64::MAX).then(|| earliest[i] - t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(summarize(&[3.0]).p99, 3.0);
    }

    #[test]
    fn the_gap_ends_at_the_first_write_invoked_after_the_fault() {
        // A write invoked before the fault and acknowledged after it does not count.
        let writes = [(90, 101), (95, 140), (100, 130), (120, 125), (200, 210)];
        assert_eq!(write_gaps(&[100], &writes), vec![Some(25)]);
        assert_eq!(write_gaps(&[150], &writes), vec![Some(60)]);
        assert_eq!(write_gaps(&[300], &writes), vec![None]);
    }
}
