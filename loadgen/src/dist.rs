//! Random numbers and key distributions. A small xorshift generator per session is enough for
//! load generation and costs a few nanoseconds per draw.

use std::sync::Arc;

use crate::workload::Distribution;

/// xorshift64* (Vigna): fast, not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Mix the seed (splitmix64 step) so nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Picks key indexes in [0, key_count) by the workload's distribution. Cheap to clone: the zipf
/// table is shared.
#[derive(Debug, Clone)]
pub enum KeyPicker {
    Uniform(u64),
    /// Cumulative probabilities of ranks 1..=n; key index = rank − 1 (key 0 is the hottest).
    Zipf(Arc<Vec<f64>>),
}

impl KeyPicker {
    pub fn new(distribution: Distribution, key_count: u64) -> KeyPicker {
        match distribution {
            Distribution::Uniform => KeyPicker::Uniform(key_count),
            Distribution::Zipf(exponent) => {
                let mut cdf = Vec::with_capacity(key_count as usize);
                let mut sum = 0.0;
                for rank in 1..=key_count {
                    sum += 1.0 / (rank as f64).powf(exponent);
                    cdf.push(sum);
                }
                for c in &mut cdf {
                    *c /= sum;
                }
                KeyPicker::Zipf(Arc::new(cdf))
            }
        }
    }

    pub fn pick(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyPicker::Uniform(n) => rng.below(*n),
            KeyPicker::Zipf(cdf) => {
                let u = rng.unit();
                (cdf.partition_point(|c| *c <= u) as u64).min(cdf.len() as u64 - 1)
            }
        }
    }
}

/// Path of key `index`: `/loadgen/k0000042`.
pub fn key_path(index: u64) -> String {
    format!("{}/k{index:07}", crate::paths::ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = rng.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let picker = KeyPicker::new(Distribution::Zipf(1.2), 1000);
        let mut rng = Rng::new(7);
        let mut low = 0;
        for _ in 0..10_000 {
            let k = picker.pick(&mut rng);
            assert!(k < 1000);
            if k < 10 {
                low += 1;
            }
        }
        // Ten of a thousand keys draw far more than 1% of the picks.
        assert!(low > 2000, "{low}");
    }
}
