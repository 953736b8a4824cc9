//! How long to wait before the next attempt: jittered exponential backoff,
//! and the server's `Retry-After`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

/// The longest `Retry-After` obeyed: a server asking for more gets an hour.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Delays that double from `min` up to `max` with each failure in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The ceiling for the `failures`-th failure in a row (1 for the first).
    pub(crate) fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1);
        self.min
            .checked_mul(2u32.saturating_pow(doublings))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay after the `failures`-th failure in a row: drawn uniformly
    /// from the upper half of the ceiling, so that clients that failed
    /// together (a server restart) come back spread out, yet each one still
    /// backs off.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(fastrand::f64())
    }

    /// The wait before the next attempt: the backoff delay, or the server's
    /// `Retry-After` when that is longer.
    pub(crate) fn wait(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        self.delay(failures).max(retry_after.unwrap_or_default())
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at
/// [`MAX_RETRY_AFTER`]; a date in the past means "now".
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // Too many digits for a u64 is "a very long time".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn backoff(min_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let backoff = backoff(100, 1000);
        let ceilings: Vec<u64> = (1..=6)
            .map(|n| backoff.ceiling(n).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn delays_are_jittered_within_the_upper_half() {
        let backoff = backoff(100, 30_000);
        for failures in 1..=12 {
            let ceiling = backoff.ceiling(failures);
            let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(failures)).collect();
            assert!(delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling));
            let first = delays[0];
            assert!(
                delays.iter().any(|d| *d != first),
                "200 draws should not all be equal"
            );
        }
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let backoff = backoff(100, 200);
        let wait = backoff.wait(1, Some(Duration::from_secs(3)));
        assert_eq!(wait, Duration::from_secs(3));
        let wait = backoff.wait(1, Some(Duration::from_millis(1)));
        assert!(wait >= Duration::from_millis(50));
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(" 0 "), now),
            Some(Duration::from_secs(0))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            retry_after(&headers(&later), now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&headers(&earlier), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&headers("99999999999999999999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&headers("-1"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
