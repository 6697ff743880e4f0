//! Same-run comparisons on a noisy machine: every candidate is timed once per
//! round, in a shuffled order, and the report is the median over rounds.

/// The median of `samples` (which it sorts).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 { samples[mid] } else { (samples[mid - 1] + samples[mid]) / 2.0 }
}

/// A permutation of `0..n` that changes with `round`, so no candidate always
/// runs first (or right after a noisy neighbour).
pub fn shuffled(n: usize, round: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}
