//! Random identifiers: node ids and lock claims, which must differ between
//! processes, and between one process and itself after a restart.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// 128 random bits. The standard library seeds `RandomState` from the
/// operating system's entropy once per thread; the process id, the time and
/// a counter are mixed in as well, so that neither two processes nor two
/// calls draw the same value.
pub(crate) fn random_u128() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let input = (
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id(),
        nanos,
    );
    let high = RandomState::new().hash_one((0u8, input));
    let low = RandomState::new().hash_one((1u8, input));
    (u128::from(high) << 64) | u128::from(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ() {
        let drawn: std::collections::HashSet<u128> = (0..10_000).map(|_| random_u128()).collect();
        assert_eq!(drawn.len(), 10_000);
    }
}
