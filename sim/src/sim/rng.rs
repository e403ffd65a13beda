//! The simulator's only source of randomness: SplitMix64 seeded from the run's seed.
//!
//! Integer arithmetic only (no `ln`, no floats in draws), so a seed replays byte for byte on
//! every platform.

/// A seeded pseudo-random generator.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator whose whole sequence is decided by `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`; `0` when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift: unbiased enough for a simulator, and branch-free.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[-bound, bound]`.
    pub fn signed(&mut self, bound: u64) -> i64 {
        let bound = bound.min(i64::MAX as u64 / 2);
        self.between(0, 2 * bound) as i64 - bound as i64
    }

    /// True with probability `ppm / 1_000_000`.
    pub fn chance_ppm(&mut self, ppm: u64) -> bool {
        self.below(1_000_000) < ppm
    }

    /// A child generator with its own stream, so adding draws to one part of the simulation
    /// does not reshuffle another's.
    pub fn fork(&mut self) -> SimRng {
        SimRng(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::SimRng;

    #[test]
    fn draws_stay_in_range_and_replay() {
        let (mut a, mut b) = (SimRng::new(5), SimRng::new(5));
        for _ in 0..1000 {
            let x = a.between(3, 9);
            assert!((3..=9).contains(&x));
            assert_eq!(x, b.between(3, 9));
            assert!(a.signed(4).abs() <= 4);
            b.signed(4);
        }
    }
}
