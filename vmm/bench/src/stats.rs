//! Order statistics of a benchmark's samples.

/// Median, 10th and 90th percentiles of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many values.
    pub n: usize,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
}

/// The `q`-quantile (0 to 1) of sorted `values`, interpolated linearly
/// between the two nearest ranks (numpy's default, R's type 7).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// The summary of `values` (NaNs left out), or None if there are none.
pub fn summarize(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    Some(Summary {
        n: v.len(),
        p10: quantile(&v, 0.1)?,
        median: quantile(&v, 0.5)?,
        p90: quantile(&v, 0.9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [10.0, 20.0, 30.0, 40.0, 50.0];
        assert_eq!(quantile(&v, 0.5), Some(30.0));
        assert_eq!(quantile(&v, 0.0), Some(10.0));
        assert_eq!(quantile(&v, 1.0), Some(50.0));
        assert_eq!(quantile(&v, 0.1), Some(14.0));
        assert_eq!(quantile(&v, 0.9), Some(46.0));
        assert_eq!(quantile(&[10.0, 20.0], 0.5), Some(15.0));
        assert_eq!(quantile(&[7.0], 0.9), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&v, 1.5), None);
    }

    #[test]
    fn summaries_sort_and_skip_nan() {
        let s = summarize([50.0, f64::NAN, 10.0, 40.0, 20.0, 30.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                n: 5,
                p10: 14.0,
                median: 30.0,
                p90: 46.0
            }
        );
        assert_eq!(summarize([]), None);
        assert_eq!(summarize([f64::NAN]), None);
    }
}
