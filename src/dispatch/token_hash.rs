//! A fast hash for bot tokens, the key of every per-webhook lookup.
//!
//! `enqueue` looks its bot up on every call, so the hash is on the hot path:
//! std's SipHash costs several times a channel send for a 36-byte token. The
//! keys are bot tokens issued by the platform itself, not attacker-chosen
//! strings, so flooding resistance is not needed here.

use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-rotate hash over 8-byte words (the scheme of rustc's FxHasher).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TokenHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl TokenHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length first, so zero padding of the last word cannot make two lengths collide.
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Builds [`TokenHasher`]s for maps keyed by bot token.
pub(crate) type BuildTokenHasher = BuildHasherDefault<TokenHasher>;

/// A map keyed by bot token (shared, or borrowed or owned as `K`).
pub(crate) type TokenMap<V, K = std::sync::Arc<str>> = std::collections::HashMap<K, V, BuildTokenHasher>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn equal_tokens_hash_equal_and_different_ones_spread() {
        let build = BuildTokenHasher::default();
        assert_eq!(build.hash_one("bot-token"), build.hash_one(String::from("bot-token")));
        let mut hashes: Vec<u64> = (0..10_000).map(|index| build.hash_one(format!("bot-{index}"))).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), 10_000);
        // Tokens that differ only past the first word, or only in length, still differ.
        assert_ne!(build.hash_one("0123456789a"), build.hash_one("0123456789b"));
        assert_ne!(build.hash_one("abc"), build.hash_one("abc\0"));
    }
}
