//! The memo of the linearizability search: configurations already explored.
//!
//! A configuration is the set of required operations linearized (a bitset
//! over their indices), the model state, and the set of optional
//! (indeterminate) operations linearized. An optional operation never
//! blocks anything, so a configuration is *dominated* by one with the same
//! required set and state and fewer optional operations linearized: any
//! way to finish from the first also finishes from the second. The memo
//! answers "was this configuration, or one dominating it, seen?", which
//! keeps indeterminate operations from doubling the search each.
//!
//! It is an open-addressing table of (required set, state) keys, each with
//! a list of the optional sets seen with it, in flat arrays (no allocation
//! per entry, which matters in a debug build).

use std::hash::{Hash, Hasher};

/// Configurations seen, with their dominance check.
pub(crate) struct Memo<S> {
    required_words: usize,
    optional_words: usize,
    /// Open-addressing slots: a key index, or `NONE`.
    slots: Vec<u32>,
    /// Per key: its hash, state, required set and first variant.
    hashes: Vec<u64>,
    states: Vec<S>,
    required: Vec<u64>,
    first_variant: Vec<u32>,
    /// Per variant: its optional set and the key's next variant.
    optional: Vec<u64>,
    next_variant: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl<S: Copy + Eq + Hash> Memo<S> {
    /// An empty memo for bitsets of these lengths (in 64-bit words).
    pub(crate) fn new(required_words: usize, optional_words: usize) -> Self {
        Memo {
            required_words,
            optional_words,
            slots: vec![NONE; 1024],
            hashes: Vec::new(),
            states: Vec::new(),
            required: Vec::new(),
            first_variant: Vec::new(),
            optional: Vec::new(),
            next_variant: Vec::new(),
        }
    }

    /// How many configurations are recorded.
    pub(crate) fn len(&self) -> usize {
        self.next_variant.len()
    }

    /// Records the configuration unless it, or one dominating it, is
    /// already recorded; returns whether it was recorded. `required_hash`
    /// is a hash of `required` (kept incrementally by the caller).
    pub(crate) fn insert(
        &mut self,
        required_hash: u64,
        required: &[u64],
        state: S,
        optional: &[u64],
    ) -> bool {
        let hash = mix(required_hash ^ hash_state(&state).rotate_left(29));
        let mask = self.slots.len() - 1;
        let mut slot = (hash as usize) & mask;
        let key = loop {
            let k = self.slots[slot];
            if k == NONE {
                break None;
            }
            let k = k as usize;
            if self.hashes[k] == hash && self.states[k] == state && self.required_of(k) == required
            {
                break Some(k);
            }
            slot = (slot + 1) & mask;
        };
        let (Ok(variant), Ok(new_key)) = (
            u32::try_from(self.next_variant.len()),
            u32::try_from(self.states.len()),
        ) else {
            // Four billion configurations: the caller's budget stops far earlier.
            return false;
        };
        match key {
            Some(k) => {
                let mut v = self.first_variant[k];
                while v != NONE {
                    if is_subset(self.optional_of(v as usize), optional) {
                        return false;
                    }
                    v = self.next_variant[v as usize];
                }
                self.next_variant.push(self.first_variant[k]);
                self.first_variant[k] = variant;
            }
            None => {
                self.slots[slot] = new_key;
                self.hashes.push(hash);
                self.states.push(state);
                self.required.extend_from_slice(required);
                self.first_variant.push(variant);
                self.next_variant.push(NONE);
                if self.states.len() * 2 > self.slots.len() {
                    self.grow();
                }
            }
        }
        self.optional.extend_from_slice(optional);
        true
    }

    fn required_of(&self, k: usize) -> &[u64] {
        &self.required[k * self.required_words..(k + 1) * self.required_words]
    }

    fn optional_of(&self, v: usize) -> &[u64] {
        &self.optional[v * self.optional_words..(v + 1) * self.optional_words]
    }

    /// Doubles the slots and re-places every key.
    fn grow(&mut self) {
        let mut slots = vec![NONE; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (k, hash) in self.hashes.iter().enumerate() {
            let mut slot = (*hash as usize) & mask;
            while slots[slot] != NONE {
                slot = (slot + 1) & mask;
            }
            // The key count fits in u32: `insert` checked it.
            slots[slot] = k as u32;
        }
        self.slots = slots;
    }
}

/// Whether every bit of `a` is set in `b`.
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// A 64-bit finalizer (splitmix64's): spreads the bits of `x`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash_state<S: Hash>(state: &S) -> u64 {
    let mut hasher = MixHasher(0);
    state.hash(&mut hasher);
    hasher.0
}

/// A small hasher for model states (one or a few integers): the std
/// SipHash is slow in a debug build and its DoS resistance buys nothing here.
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_is_dominated_by_one_with_fewer_optional_operations() {
        let mut memo = Memo::<u64>::new(1, 1);
        assert!(memo.insert(7, &[0b11], 5, &[0b01]));
        assert!(!memo.insert(7, &[0b11], 5, &[0b01]), "the same");
        assert!(!memo.insert(7, &[0b11], 5, &[0b11]), "dominated");
        assert!(memo.insert(7, &[0b11], 5, &[0b10]), "not comparable");
        assert!(memo.insert(7, &[0b11], 6, &[0b01]), "another state");
        assert!(memo.insert(9, &[0b111], 5, &[0b01]), "another required set");
        assert_eq!(memo.len(), 4);
    }

    #[test]
    fn the_table_grows_without_losing_entries() {
        let mut memo = Memo::<u64>::new(1, 1);
        for i in 0..10_000u64 {
            assert!(memo.insert(mix(i), &[i], i, &[0]));
        }
        for i in 0..10_000u64 {
            assert!(!memo.insert(mix(i), &[i], i, &[0]));
        }
    }
}
