//! UTC timestamps for audit events and file names, without a date-time dependency.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Civil date (year, month, day) of a Unix day number (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T06:12:09.005Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = since_epoch(t);
    let secs = d.as_secs() as i64;
    let (y, m, day) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// `YYYY-MM-DD` (UTC), the audit file name's date.
pub fn date(t: SystemTime) -> String {
    let (y, m, d) = civil(since_epoch(t).as_secs() as i64 / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since the epoch of a `YYYY-MM-DD` date (the inverse of [`date`]), for retention.
pub fn days_of(date: &str) -> Option<i64> {
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days-from-civil, the inverse of `civil`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_414_329_005);
        assert_eq!(rfc3339(t), "2026-11-23T06:12:09.005Z");
        assert_eq!(date(t), "2026-11-23");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29"
        );
        for days in [0, 10_957, 20_415, 11_016, -1] {
            let t = UNIX_EPOCH + Duration::from_secs((days.max(0) as u64) * 86_400);
            assert_eq!(days_of(&date(t)), Some(days.max(0)));
        }
        assert_eq!(days_of("2026-13-01"), None);
        assert_eq!(days_of("garbage"), None);
    }
}
