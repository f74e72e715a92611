//! Statistics for experiment results, pure functions: a mean with its 95 % confidence interval,
//! and an always-valid p-value for the difference of two arms' means from the mixture
//! sequential probability ratio test (mSPRT, normal mixture; Johari, Pekelis, Walsh 2017,
//! "Always valid inference"). Unlike a t-test's p-value it stays valid when people look at the
//! results every day and stop when they like what they see.

use serde::{Deserialize, Serialize};

/// Count, sum and sum of squares of outcomes: enough for a mean and a variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl Moments {
    pub fn add(&mut self, other: &Moments) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// Sample variance (n - 1).
    pub fn variance(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        Some(((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0))
    }

    /// The normal-approximation 95 % interval of the mean.
    pub fn ci95(&self) -> Option<(f64, f64)> {
        let (mean, var) = (self.mean()?, self.variance()?);
        let half = 1.96 * (var / self.n as f64).sqrt();
        Some((mean - half, mean + half))
    }
}

/// Always-valid p-value of H0 "mean(b) = mean(a)" after `a` and `b` so far. `tau2` is the
/// variance of the normal mixing distribution over effect sizes; `None` uses the pooled
/// outcome variance (effects of about one standard deviation are expected).
pub fn msprt_p_value(a: &Moments, b: &Moments, tau2: Option<f64>) -> Option<f64> {
    let (ma, mb) = (a.mean()?, b.mean()?);
    let (va, vb) = (a.variance()?, b.variance()?);
    let (na, nb) = (a.n as f64, b.n as f64);
    let pooled = (((na - 1.0) * va + (nb - 1.0) * vb) / (na + nb - 2.0)).max(1e-12);
    let tau2 = tau2.unwrap_or(pooled).max(1e-12);
    // Variance of the difference of the means.
    let v = pooled * (1.0 / na + 1.0 / nb);
    let diff = mb - ma;
    let log_lambda = 0.5 * (v / (v + tau2)).ln() + tau2 * diff * diff / (2.0 * v * (v + tau2));
    Some((-log_lambda).exp().min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic Bernoulli outcomes with rate `p` (a low-discrepancy sequence).
    fn bernoulli(n: u64, p: f64, offset: f64) -> Moments {
        let mut m = Moments::default();
        for i in 0..n {
            let u = ((i as f64) * 0.618_033_988_75 + offset).fract();
            let x = if u < p { 1.0 } else { 0.0 };
            m.add(&Moments { n: 1, sum: x, sum_sq: x * x });
        }
        m
    }

    #[test]
    fn mean_and_interval_of_known_data() {
        let m = Moments { n: 4, sum: 10.0, sum_sq: 30.0 }; // 1, 2, 3, 4
        assert_eq!(m.mean(), Some(2.5));
        assert!((m.variance().unwrap() - 5.0 / 3.0).abs() < 1e-12);
        let (lo, hi) = m.ci95().unwrap();
        assert!((hi - lo - 2.0 * 1.96 * (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_real_difference_is_significant_and_no_difference_is_not() {
        let a = bernoulli(5_000, 0.50, 0.1);
        let same = bernoulli(5_000, 0.50, 0.7);
        let better = bernoulli(5_000, 0.56, 0.3);
        assert!(msprt_p_value(&a, &better, None).unwrap() < 0.01);
        assert!(msprt_p_value(&a, &same, None).unwrap() > 0.5);
        // Too little data says nothing.
        assert!(msprt_p_value(&bernoulli(20, 0.5, 0.1), &bernoulli(20, 0.56, 0.3), None).unwrap() > 0.5);
        assert_eq!(msprt_p_value(&Moments::default(), &better, None), None);
    }
}
