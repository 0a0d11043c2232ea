//! UTC timestamps for audit events and the dates in audit file names (chrono underneath).

use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T06:12:09.005Z`.
pub fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// `YYYY-MM-DD` (UTC), the audit file name's date.
pub fn date(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).format("%Y-%m-%d").to_string()
}

/// Days since the epoch of a `YYYY-MM-DD` date (the inverse of [`date`]), for retention.
pub fn days_of(date: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(d.signed_duration_since(NaiveDate::default()).num_days())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
        for days in [0, 10_957, 20_415, 11_016] {
            let t = UNIX_EPOCH + Duration::from_secs(days * 86_400);
            assert_eq!(days_of(&date(t)), Some(days as i64));
        }
        assert_eq!(days_of("2026-13-01"), None);
        assert_eq!(days_of("garbage"), None);
    }
}
