//! Sampled seal reservations (issue 20, lever 3; docs/kms.md, "Key-use limits"): a protect of
//! `n` values reserves whole blocks of `B` seals in the version's counter, `floor(n / B)` of them
//! plus one more with probability `(n mod B) / B`, drawn from the request's CSPRNG (which callers
//! cannot influence). The reserved total is an unbiased estimate of the values sealed, with a
//! standard deviation of at most `sqrt(B × count)`; with `B = clamp(limit >> 19, 1, 4096)` that
//! is below 0.2% of the limit, and `B = 1` (any limit below 2^20, as tests configure) is exact
//! counting: every request reserves exactly its `n`, as before. A request that reserves nothing
//! makes no database write.

use crate::crypto::rng::Csprng;

/// The largest block: 4096 for the default AES-GCM and ChaCha20 limit of 2^31.
pub const MAX_BLOCK: u64 = 4096;

/// The block size for a version whose seal limit is `limit`.
pub fn block_size(limit: u64) -> u64 {
    (limit >> 19).clamp(1, MAX_BLOCK)
}

/// How many seals a request that seals `n` values reserves: a multiple of `block` (exactly `n`
/// when `block` is 1), whose expectation over the draw is `n`.
pub fn reservation(n: u64, block: u64, rng: &mut Csprng) -> u64 {
    if block <= 1 {
        return n;
    }
    let (whole, rest) = (n / block, n % block);
    let extra = rest > 0 && {
        let mut draw = [0u8; 8];
        rng.fill(&mut draw);
        // modulo bias below block / 2^64 < 2^-51
        u64::from_le_bytes(draw) % block < rest
    };
    (whole + u64::from(extra)) * block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes() {
        assert_eq!(block_size(1 << 31), 4096);
        assert_eq!(block_size(1 << 48), 4096);
        assert_eq!(block_size(1 << 30), 2048);
        assert_eq!(block_size(5), 1);
        assert_eq!(block_size((1 << 20) - 1), 1);
        assert_eq!(block_size(1 << 20), 2);
    }

    #[test]
    fn exact_when_the_block_is_one() {
        let mut rng = Csprng::from_seed([5; 32]);
        for n in [0, 1, 4, 5, 1000] {
            assert_eq!(reservation(n, 1, &mut rng), n);
        }
    }

    #[test]
    fn whole_blocks_always_and_never_a_draw_for_them() {
        let mut rng = Csprng::from_seed([5; 32]);
        for _ in 0..1000 {
            assert_eq!(reservation(4096, 4096, &mut rng), 4096);
            assert_eq!(reservation(3 * 4096, 4096, &mut rng), 3 * 4096);
            let r = reservation(2 * 4096 + 1, 4096, &mut rng);
            assert!(r == 2 * 4096 || r == 3 * 4096, "{r}");
            assert_eq!(reservation(0, 4096, &mut rng), 0);
        }
    }

    /// Over many draws the reserved total is the number of values, within a few standard
    /// deviations (B × sqrt(draws × p(1-p))), for several request sizes.
    #[test]
    fn unbiased_over_many_draws() {
        let mut rng = Csprng::from_seed([9; 32]);
        let block = 4096u64;
        for n in [1u64, 100, 2048, 4095, 5000] {
            let draws = 200_000u64;
            let total: u64 = (0..draws).map(|_| reservation(n, block, &mut rng)).sum();
            let expected = n * draws;
            let p = (n % block) as f64 / block as f64;
            let sd = block as f64 * (draws as f64 * p * (1.0 - p)).sqrt();
            let off = (total as f64 - expected as f64).abs();
            assert!(off <= 5.0 * sd, "n={n}: reserved {total}, sealed {expected}, sd {sd}");
            assert_eq!(total % block, 0);
        }
    }
}
