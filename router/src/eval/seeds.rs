//! The evaluation seed stream: a generator training never uses.
//!
//! Training draws episode seeds as `seed · 1_000_003 + episode` and validation uses
//! `8_000_000_000 + i` (`ppo::train::VALIDATION_SEED_BASE`), all far below 2^63 for any training
//! seed under 9·10^12. Evaluation seed `i` is SplitMix64 of [`EVAL_STREAM_KEY`] + `i` with the
//! top bit set, so it is at least 2^63: no training or validation scenario is ever replayed.

/// Key of the evaluation stream (documented in docs/evaluation.md; change it and every reported
/// figure changes).
pub const EVAL_STREAM_KEY: u64 = 0x5EED_E7A1_0016_0001;

/// Evaluation seed number `i`.
pub fn eval_seed(i: u64) -> u64 {
    let mut z = EVAL_STREAM_KEY.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_seeds_are_distinct_and_above_every_training_seed() {
        let seeds: Vec<u64> = (0..1000).map(eval_seed).collect();
        let mut unique = seeds.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seeds.len());
        // The largest training seed of `slim train --seed 9000` after 10^9 episodes.
        let training_max = 9000u64 * 1_000_003 + 1_000_000_000;
        assert!(seeds.iter().all(|&s| s >= 1 << 63 && s > training_max));
        assert_eq!(eval_seed(7), eval_seed(7));
    }
}
