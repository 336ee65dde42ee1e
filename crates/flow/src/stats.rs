//! O(1)-memory running statistics (count, sum, min, max, Welford mean and sample variance),
//! updated exactly as Apache Commons Math's `SummaryStatistics`, which CICFlowMeter uses. It
//! keeps no samples and computes no quantiles.

/// Running summary of a stream of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunningStats {
    n: u64,
    mean: f64,
    m2: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for RunningStats {
    fn default() -> Self {
        RunningStats {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            sum: 0.0,
            min: f64::NAN,
            max: f64::NAN,
        }
    }
}

impl RunningStats {
    /// Adds one value.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dev = x - self.mean;
        let n_dev = dev / n;
        self.mean += n_dev;
        self.m2 += (n - 1.0) * dev * n_dev;
        self.sum += x;
        if self.n == 1 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Sum of the values (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.mean
        }
    }

    /// Sample variance (divisor n − 1; 0 for fewer than two values).
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            self.m2 / (self.n as f64 - 1.0)
        }
    }

    /// Sample standard deviation (0 for fewer than two values).
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// Minimum (0 when empty).
    pub fn min(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.min
        }
    }

    /// Maximum (0 when empty).
    pub fn max(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_two_pass() {
        let xs = [0.0, 0.0, 196.0, 0.0, 0.0];
        let mut s = RunningStats::default();
        xs.iter().for_each(|&x| s.push(x));
        assert_eq!(s.count(), 5);
        assert!((s.mean() - 39.2).abs() < 1e-12);
        assert!((s.std() - 87.653_864_717_991_75).abs() < 1e-9);
        assert_eq!(s.max(), 196.0);
        assert_eq!(s.min(), 0.0);
        assert_eq!(RunningStats::default().std(), 0.0);
    }
}
