//! xorshift64*: tiny, seeded, reproducible. Written here rather than taken from `rand` because
//! a simulation needs only uniform numbers and an exact sequence per seed, and the algorithm is
//! five lines (Vigna, "An experimental exploration of Marsaglia's xorshift generators", 2016).

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
