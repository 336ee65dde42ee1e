//! RFC 3339 UTC timestamps (`2026-11-28T23:41:20Z`) from the system clock; the calendar is
//! `metaids_core::time`. Seconds resolution; no parsing, no time zones.

use std::time::{SystemTime, UNIX_EPOCH};

pub use metaids_core::time::rfc3339;

/// Now, as RFC 3339 UTC (the epoch if the clock is before it).
pub fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2));
    rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_499_661), "2026-12-28T23:14:21Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert!(now().ends_with('Z') && now().len() == 20);
    }
}
