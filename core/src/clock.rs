//! Time, injected: the only module that reads the system clock.
//!
//! The runtime, the inbox (the 24-hour window) and the limiter take a
//! [`Clock`], so tests move a [`FakeClock`] and run months in milliseconds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current UTC time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The wall clock moved forward by the seconds written in a file, read
/// again at most every [`OffsetClock::RECHECK`]: how a test (or a demo)
/// drives real `kairo` processes through an hour's wait in a moment
/// (`KAIRO_CLOCK_OFFSET_FILE`, docs/operations.md). A missing or unreadable
/// file is no offset. Never set in production: the offset only grows in
/// tests, and timers due by it fire at once.
#[derive(Debug)]
pub struct OffsetClock {
    file: std::path::PathBuf,
    read: Mutex<(std::time::Instant, chrono::Duration)>,
}

impl OffsetClock {
    pub const RECHECK: Duration = Duration::from_millis(20);

    pub fn new(file: impl Into<std::path::PathBuf>) -> Self {
        let file = file.into();
        let offset = Self::offset_in(&file);
        Self { file, read: Mutex::new((std::time::Instant::now(), offset)) }
    }

    fn offset_in(file: &std::path::Path) -> chrono::Duration {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && seconds.abs() < 1e10)
            .map(|seconds| chrono::Duration::microseconds((seconds * 1e6) as i64))
            .unwrap_or_default()
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if read.0.elapsed() >= Self::RECHECK {
            *read = (std::time::Instant::now(), Self::offset_in(&self.file));
        }
        Utc::now() + read.1
    }
}

/// A clock that only moves when told to; clones share one time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl FakeClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(start)) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("a test advances the clock by a sane amount");
        let mut now = self.now.lock().expect("clock mutex is never poisoned: no code panics holding it");
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().expect("clock mutex is never poisoned: no code panics holding it") = to;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock mutex is never poisoned: no code panics holding it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_follows_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("offset");
        let clock = OffsetClock::new(&file);
        assert!((clock.now() - Utc::now()).num_seconds().abs() <= 1, "no file, no offset");
        std::fs::write(&file, "3600").expect("write");
        std::thread::sleep(OffsetClock::RECHECK * 2);
        let ahead = (clock.now() - Utc::now()).num_seconds();
        assert!((3599..=3601).contains(&ahead), "{ahead}");
    }

    #[test]
    fn fake_clock_moves_only_when_advanced_and_clones_share_time() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("valid").to_utc();
        let clock = FakeClock::new(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(30 * 86_400));
        assert_eq!(other.now(), start + chrono::Duration::days(30));
    }
}
