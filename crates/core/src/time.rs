//! Civil time in UTC without a date crate: the one place that turns µs or seconds since the Unix
//! epoch into dates and back (Howard Hinnant's `civil_from_days` / `days_from_civil`), and the
//! text forms metaids writes: the corrected CSVs' `YYYY-MM-DD HH:MM:SS.ffffff`, Suricata's
//! `YYYY-MM-DDTHH:MM:SS.ffffff+0000` and RFC 3339 seconds. Writers append to a `String` without
//! allocating, so the per-flow output paths can use them.

/// The civil date `(year, month 1–12, day 1–31)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is 1..=12 and day 1..=31 by construction.
    (year, month as u32, day as u32)
}

/// Days since 1970-01-01 of a civil date (month 1–12, day 1–31; not checked against the month).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Appends `value` in decimal, zero-padded to `width` digits (more digits are all kept).
fn push_padded(out: &mut String, value: i64, width: usize) {
    if value < 0 {
        out.push('-');
    }
    let mut digits = [b'0'; 20];
    let mut v = value.unsigned_abs();
    let mut n = 0;
    while v > 0 || n == 0 {
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
    }
    for _ in n..width {
        out.push('0');
    }
    for &b in digits[..n].iter().rev() {
        out.push(char::from(b));
    }
}

/// Appends `YYYY-MM-DD{sep}HH:MM:SS` for `secs` since the epoch (UTC).
fn push_date_time(out: &mut String, secs: i64, sep: char) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    push_padded(out, y, 4);
    out.push('-');
    push_padded(out, i64::from(m), 2);
    out.push('-');
    push_padded(out, i64::from(d), 2);
    out.push(sep);
    push_padded(out, sod / 3600, 2);
    out.push(':');
    push_padded(out, sod % 3600 / 60, 2);
    out.push(':');
    push_padded(out, sod % 60, 2);
}

/// Appends µs since the epoch as `YYYY-MM-DD{sep}HH:MM:SS.ffffff` (UTC); `sep` is `' '` for the
/// corrected CSVs and `'T'` for EVE.
pub fn push_timestamp_us(out: &mut String, us: i64, sep: char) {
    push_date_time(out, us.div_euclid(1_000_000), sep);
    out.push('.');
    push_padded(out, us.rem_euclid(1_000_000), 6);
}

/// µs since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), the corrected CSVs' form.
pub fn format_timestamp_us(us: i64) -> String {
    let mut s = String::with_capacity(26);
    push_timestamp_us(&mut s, us, ' ');
    s
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-11-28T23:41:20Z`).
pub fn rfc3339(secs: i64) -> String {
    let mut s = String::with_capacity(20);
    push_date_time(&mut s, secs, 'T');
    s.push('Z');
    s
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC; `T` also accepted between date and time, a
/// trailing `Z` ignored, fractions beyond µs truncated) to µs since the epoch. `None` for
/// anything else.
pub fn parse_timestamp_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if !(-100_000..=100_000).contains(&y) {
        return None;
    }
    let time = time.trim_end_matches('Z');
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut tp = hms.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let sec: i64 = tp.next().unwrap_or("0").parse().ok()?;
    if tp.next().is_some() || !(0..=23).contains(&h) || !(0..=59).contains(&mi) {
        return None;
    }
    if !(0..=60).contains(&sec) {
        return None;
    }
    let mut us = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = &frac[..frac.len().min(6)];
        us = digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32);
    }
    Some((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000 + us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(
            format_timestamp_us(1_499_434_776_267_908),
            "2017-07-07 13:39:36.267908"
        );
        assert_eq!(format_timestamp_us(0), "1970-01-01 00:00:00.000000");
        assert_eq!(
            format_timestamp_us(951_782_400_000_001),
            "2000-02-29 00:00:00.000001"
        );
        assert_eq!(format_timestamp_us(-1), "1969-12-31 23:59:59.999999");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_499_661), "2026-12-28T23:14:21Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        let mut eve = String::new();
        push_timestamp_us(&mut eve, 1_499_434_776_267_908, 'T');
        assert_eq!(eve, "2017-07-07T13:39:36.267908");
    }

    #[test]
    fn parse_refuses_nonsense() {
        for bad in [
            "",
            "2017-07-07",
            "2017-13-01 00:00:00",
            "2017-07-07 24:00:00",
            "2017-07-07 00:00:00.12a",
            "x-07-07 00:00:00",
        ] {
            assert_eq!(parse_timestamp_us(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_timestamp_us("2017-07-07T13:39:36.267908Z"),
            Some(1_499_434_776_267_908)
        );
        assert_eq!(
            parse_timestamp_us("2017-07-07 13:39:36.2"),
            Some(1_499_434_776_200_000)
        );
    }

    proptest! {
        /// Writing then parsing gives the same instant, and the text has the fixed width
        /// (years 0–9999), against the days/civil round trip.
        #[test]
        fn timestamps_round_trip(us in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
            let text = format_timestamp_us(us);
            prop_assert_eq!(text.len(), 26);
            prop_assert_eq!(parse_timestamp_us(&text), Some(us));
            let days = us.div_euclid(86_400_000_000);
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        /// The writer matches the standard formatter it replaced.
        #[test]
        fn padded_matches_format(v in -10_000_000i64..10_000_000, width in 1usize..8) {
            let mut s = String::new();
            push_padded(&mut s, v, width);
            let expected = if v < 0 {
                format!("-{:0width$}", v.unsigned_abs())
            } else {
                format!("{v:0width$}")
            };
            prop_assert_eq!(s, expected);
        }
    }
}
