//! Alert deduplication and rate limiting: at most N alerts per (source address, signature, time
//! window), the rest suppressed and counted. Windows are fixed and aligned (`⌊t / W⌋`) on the flow's
//! own start time, so a replayed capture gives the same alerts as the live traffic did.
//!
//! It never touches verdicts (the verdicts file lists every flow) and holds bounded memory: entries of
//! windows older than the newest one seen are pruned once the table holds `max_keys` entries.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::{DetectError, Result};

/// Rate-limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Window length in seconds (≥ 1).
    pub window_s: u64,
    /// Alerts let through per (source, signature, window); 0 turns deduplication off.
    pub max_per_window: u32,
    /// Most (source, signature) entries kept (older windows are pruned beyond it).
    pub max_keys: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            window_s: 60,
            max_per_window: 1,
            max_keys: 1 << 20,
        }
    }
}

impl RateLimit {
    /// Refuses a zero window or key limit.
    pub fn validate(&self) -> Result<()> {
        if self.window_s == 0 {
            return Err(DetectError::Config {
                field: "dedup window",
                message: "expected at least 1 second, found 0".into(),
            });
        }
        if self.max_keys == 0 {
            return Err(DetectError::Config {
                field: "dedup max_keys",
                message: "expected at least 1".into(),
            });
        }
        Ok(())
    }
}

/// The deduplicator's state.
#[derive(Debug, Clone)]
pub struct Deduplicator {
    limit: RateLimit,
    /// (source, signature id) → (window index, alerts let through in it).
    seen: HashMap<(Option<IpAddr>, u32), (i64, u32)>,
    newest_window: i64,
    suppressed: u64,
    passed: u64,
    pruned: u64,
}

impl Deduplicator {
    /// A deduplicator with `limit` (validated).
    pub fn new(limit: RateLimit) -> Result<Self> {
        limit.validate()?;
        Ok(Deduplicator {
            limit,
            seen: HashMap::new(),
            newest_window: i64::MIN,
            suppressed: 0,
            passed: 0,
            pruned: 0,
        })
    }

    /// Whether an alert of `signature_id` from `src` (`None`: unknown source, one key for all) at
    /// `ts_us` goes out (and counts it).
    pub fn admit(&mut self, src: Option<IpAddr>, signature_id: u32, ts_us: i64) -> bool {
        if self.limit.max_per_window == 0 {
            self.passed += 1;
            return true;
        }
        let window = ts_us.div_euclid(self.limit.window_s as i64 * 1_000_000);
        self.newest_window = self.newest_window.max(window);
        if self.seen.len() >= self.limit.max_keys {
            let newest = self.newest_window;
            let before = self.seen.len();
            self.seen.retain(|_, (w, _)| *w >= newest);
            if self.seen.len() >= self.limit.max_keys {
                self.seen.clear();
            }
            self.pruned += (before - self.seen.len()) as u64;
        }
        let entry = self.seen.entry((src, signature_id)).or_insert((window, 0));
        if window > entry.0 {
            *entry = (window, 0);
        }
        if entry.1 < self.limit.max_per_window {
            entry.1 += 1;
            self.passed += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Alerts suppressed so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Alerts let through so far.
    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// Entries pruned to bound memory.
    pub fn pruned(&self) -> u64 {
        self.pruned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("address"))
    }

    #[test]
    fn at_most_n_per_source_signature_window() {
        let mut d = Deduplicator::new(RateLimit {
            window_s: 10,
            max_per_window: 2,
            max_keys: 100,
        })
        .expect("limit");
        let out: Vec<bool> = (0..5).map(|i| d.admit(ip("10.0.0.1"), 7, i * S)).collect();
        assert_eq!(out, [true, true, false, false, false]);
        // Another source, another signature: their own budgets.
        assert!(d.admit(ip("10.0.0.2"), 7, 0));
        assert!(d.admit(ip("10.0.0.1"), 8, 0));
        // The next window opens again.
        assert!(d.admit(ip("10.0.0.1"), 7, 10 * S));
        assert!(d.admit(ip("10.0.0.1"), 7, 11 * S));
        assert!(!d.admit(ip("10.0.0.1"), 7, 12 * S));
        assert_eq!(d.suppressed(), 4);
        assert_eq!(d.passed(), 6);
    }

    #[test]
    fn zero_turns_it_off_and_memory_stays_bounded() {
        let mut d = Deduplicator::new(RateLimit {
            max_per_window: 0,
            ..RateLimit::default()
        })
        .expect("limit");
        assert!((0..10).all(|_| d.admit(None, 1, 0)));
        let mut d = Deduplicator::new(RateLimit {
            window_s: 1,
            max_per_window: 1,
            max_keys: 4,
        })
        .expect("limit");
        for i in 0..100 {
            assert!(d.admit(ip(&format!("10.0.0.{i}")), 1, i * S));
            assert!(d.seen.len() <= 4);
        }
        assert!(d.pruned() > 0);
        assert!(Deduplicator::new(RateLimit {
            window_s: 0,
            ..RateLimit::default()
        })
        .is_err());
    }
}
