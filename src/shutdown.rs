//! A stop asked for (SIGTERM or SIGINT), as a token handed to whatever may take long: walks of
//! a tree (a first baseline, a rescan) look at it and end early, so that a stop is never held
//! up by a big tree; reading files ends once the stop's share of time for it has passed
//! ([`Stop::hashing_over`]).
//!
//! [`crate::signals`] makes the daemon's token and asks it to stop; the daemon hands it to its
//! comparisons, its hashing worker and its first looks. One-shot commands and tests pass
//! [`Stop::NEVER`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether, and since when, a stop was asked for. Copied freely: every copy is the same token.
/// The default is [`Stop::NEVER`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Stop(Option<&'static Asked>);

#[derive(Debug, Default)]
struct Asked {
    requested: AtomicBool,
    at: OnceLock<Instant>,
    /// How long after the stop was asked for files may still be read (milliseconds).
    hashing_grace_ms: AtomicU64,
}

impl PartialEq for Stop {
    fn eq(&self, other: &Stop) -> bool {
        match (self.0, other.0) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for Stop {}

impl Stop {
    /// A token nothing ever asks to stop.
    pub const NEVER: Stop = Stop(None);

    /// A new token (one per daemon: it lasts as long as the process).
    pub fn new() -> Stop {
        Stop(Some(Box::leak(Box::default())))
    }

    /// Notes that the process is to stop.
    pub fn request(&self) {
        if let Some(a) = self.0 {
            a.at.get_or_init(Instant::now);
            a.requested.store(true, Ordering::Relaxed);
        }
    }

    /// True once a stop was asked for.
    pub fn requested(&self) -> bool {
        self.0.is_some_and(|a| a.requested.load(Ordering::Relaxed))
    }

    /// When the stop was asked for.
    pub fn requested_at(&self) -> Option<Instant> {
        self.0.and_then(|a| a.at.get().copied())
    }

    /// Lets comparisons read files for `grace` after a stop is asked for (the daemon gives them
    /// half its `shutdown_timeout`: the rest is for sending what they found).
    pub fn set_hashing_grace(&self, grace: Duration) {
        if let Some(a) = self.0 {
            let ms = grace.as_millis().min(u64::MAX as u128) as u64;
            a.hashing_grace_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// True once a stop was asked for and its grace for reading files has passed: a file still
    /// being hashed is given up on (see [`crate::hashing::Budget`]).
    pub fn hashing_over(&self) -> bool {
        self.0.is_some_and(|a| {
            a.requested.load(Ordering::Relaxed)
                && a.at
                    .get()
                    .is_some_and(|at| at.elapsed() >= Duration::from_millis(a.hashing_grace_ms.load(Ordering::Relaxed)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_stops_with_its_copies_and_never_stops_nothing_else() {
        let stop = Stop::new();
        let copy = stop;
        let other = Stop::new();
        stop.set_hashing_grace(Duration::from_secs(3600));
        assert!(!copy.requested() && copy.requested_at().is_none());
        stop.request();
        assert!(copy.requested() && copy.requested_at().is_some());
        assert!(!copy.hashing_over(), "within its grace");
        copy.set_hashing_grace(Duration::ZERO);
        assert!(stop.hashing_over());
        assert!(!other.requested(), "another daemon's token");
        Stop::NEVER.request();
        assert!(!Stop::NEVER.requested() && !Stop::NEVER.hashing_over());
        assert_eq!(stop, copy);
        assert_ne!(stop, other);
        assert_eq!(Stop::default(), Stop::NEVER);
    }
}
