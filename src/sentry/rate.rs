//! A token-bucket rate limit per key (a token, a source address).
//!
//! Each key may spend `per_minute` requests at once and earns them back evenly over a
//! minute, so a device that crashes, relaunches and sends its backlog is not cut off,
//! while a loop is. Keys are hashed with a per-process random key, so the table holds
//! no token or address, and its size is bounded: when full, keys that have earned back
//! their whole allowance (idle ones) are dropped, and if that frees nothing the table
//! starts over (every key full again: generous, never wrongly refusing).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked at once.
const MAX_KEYS: usize = 100_000;

/// A rate limit of `per_minute` requests per key; 0 turns it off.
pub struct RateLimiter {
    per_minute: u32,
    hasher: RandomState,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            hasher: RandomState::new(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `key` at `now`; over the rate, how long until one is free.
    pub fn check(&self, key: &[u8], now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let hash = self.hasher.hash_one(key);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&hash) {
            buckets.retain(|_, b| {
                let earned = now.saturating_duration_since(b.at).as_secs_f64() * per_second;
                b.tokens + earned < capacity
            });
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(hash).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + earned).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_come_back_at_the_rate() {
        let limiter = RateLimiter::new(60);
        let start = Instant::now();
        for _ in 0..60 {
            assert!(limiter.check(b"k", start).is_ok());
        }
        let wait = limiter.check(b"k", start).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another key has its own allowance.
        assert!(limiter.check(b"other", start).is_ok());
        // One second later, one more request.
        let later = start + Duration::from_secs(1);
        assert!(limiter.check(b"k", later).is_ok());
        assert!(limiter.check(b"k", later).is_err());
        assert!(RateLimiter::new(0).check(b"k", start).is_ok());
    }
}
