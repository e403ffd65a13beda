//! A tiny seeded PRNG for jitter. Randomness is an input: the driver passes a seed, so the same
//! seed and inputs give the same outputs (the simulator depends on it).

/// SplitMix64: one `u64` of state, good statistical quality for jitter, no allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform fraction in `[0, 1)` expressed in parts per million.
    pub(crate) fn ppm(&mut self) -> u64 {
        self.next_u64() % 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn ppm_is_spread_over_its_range() {
        let mut r = Rng::new(1);
        let (mut low, mut high) = (0, 0);
        for _ in 0..10_000 {
            let p = r.ppm();
            assert!(p < 1_000_000);
            if p < 100_000 {
                low += 1;
            }
            if p >= 900_000 {
                high += 1;
            }
        }
        assert!(low > 800 && high > 800, "low {low} high {high}");
    }
}
