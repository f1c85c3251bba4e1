//! Wall-clock time as the state directory records it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The start of the calendar month (UTC) that `ms` falls in, in ms since the epoch.
pub(crate) fn month_start_ms(ms: i64) -> i64 {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let day = humantime::format_rfc3339_seconds(t).to_string();
    let start = format!("{}-01T00:00:00Z", &day[..7]);
    humantime::parse_rfc3339(&start)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_month_starts_on_its_first_day_at_midnight_utc() {
        // 2026-12-03T10:00:00Z → 2026-12-01T00:00:00Z
        assert_eq!(super::month_start_ms(1_796_292_000_000), 1_796_083_200_000);
        assert_eq!(super::month_start_ms(1_796_083_200_000), 1_796_083_200_000);
    }
}
