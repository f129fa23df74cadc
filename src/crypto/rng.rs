//! The per-instance CSPRNG (DESIGN §13): seeded once from the OS, then every nonce and
//! generated key comes from ChaCha20 in user space, with no syscall per value.

use std::fmt;

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroizing;

/// ChaCha20-based CSPRNG. Create one per instance (per request in the component) with
/// [`Csprng::from_os`] and pass it by `&mut` to whatever needs randomness.
pub struct Csprng(ChaCha20Rng);

impl Csprng {
    /// Seeds from the operating system's generator (WASI `random_get` in the component).
    pub fn from_os() -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut seed[..])?;
        Ok(Self(ChaCha20Rng::from_seed(*seed)))
    }

    /// Seeds from 32 bytes the caller drew from the platform's CSPRNG (the component draws them
    /// with `wasi:random/random.get-random-bytes`, skipping the preview-1 adapter's start-up that
    /// [`Csprng::from_os`] pays on its first call in an instance).
    pub fn from_entropy(seed: Zeroizing<[u8; 32]>) -> Self {
        Self(ChaCha20Rng::from_seed(*seed))
    }

    /// A deterministic generator, for tests and golden vectors only: never use a fixed
    /// seed for real nonces or keys.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }

    /// A new, independent generator seeded with 32 bytes from this one (no syscall): for a
    /// component that needs its own generator, such as a KEK held behind a `RefCell`.
    pub fn fork(&mut self) -> Csprng {
        let mut seed = Zeroizing::new([0u8; 32]);
        self.fill(&mut seed[..]);
        Self(ChaCha20Rng::from_seed(*seed))
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}

impl fmt::Debug for Csprng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Csprng(..)")
    }
}

impl RngCore for Csprng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for Csprng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_seeded_generators_differ() {
        let (Ok(mut a), Ok(mut b)) = (Csprng::from_os(), Csprng::from_os()) else {
            panic!("the OS generator failed");
        };
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_ne!(x, y);
    }

    /// `from_entropy` is ChaCha20 keyed by the seed: RFC 8439 §2.3.2's block function with
    /// an all-zero key, counter 0 and nonce 0 starts 76 b8 e0 ad a0 f1 3d 90.
    #[test]
    fn from_entropy_is_chacha20_of_the_seed() {
        let mut r = Csprng::from_entropy(Zeroizing::new([0u8; 32]));
        let mut first = [0u8; 8];
        r.fill(&mut first);
        assert_eq!(first, [0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90]);
        let mut other = Csprng::from_entropy(Zeroizing::new([1u8; 32]));
        let mut x = [0u8; 8];
        other.fill(&mut x);
        assert_ne!(first, x);
    }

    #[test]
    fn fixed_seed_is_deterministic() {
        let mut a = Csprng::from_seed([9; 32]);
        let mut b = Csprng::from_seed([9; 32]);
        assert_eq!(a.next_u64(), b.next_u64());
        let (mut x, mut y) = ([0u8; 40], [0u8; 40]);
        a.fill(&mut x);
        b.fill_bytes(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 40]);
    }

    #[test]
    fn fork_is_independent_and_deterministic() {
        let mut a = Csprng::from_seed([9; 32]);
        let mut b = Csprng::from_seed([9; 32]);
        let (mut fa, mut fb) = (a.fork(), b.fork());
        assert_eq!(fa.next_u64(), fb.next_u64());
        assert_ne!(a.next_u64(), fa.next_u64());
    }
}
