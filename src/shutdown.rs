//! Whether SIGTERM or SIGINT has asked the process to stop: long walks of a tree (a first
//! baseline, a rescan) look at it and end early, so that a stop is never held up by a big tree;
//! reading files ends once the stop's share of time for it has passed ([`hashing_over`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static REQUESTED_AT: OnceLock<Instant> = OnceLock::new();
/// How long after the stop was asked for files may still be read (milliseconds).
static HASHING_GRACE_MS: AtomicU64 = AtomicU64::new(0);

/// Notes that the process is to stop.
pub fn request() {
    REQUESTED_AT.get_or_init(Instant::now);
    REQUESTED.store(true, Ordering::Relaxed);
}

/// True once a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// When the stop was asked for.
pub fn requested_at() -> Option<Instant> {
    REQUESTED_AT.get().copied()
}

/// Lets comparisons read files for `grace` after a stop is asked for (the daemon gives them half
/// its `shutdown_timeout`: the rest is for sending what they found).
pub fn set_hashing_grace(grace: Duration) {
    HASHING_GRACE_MS.store(grace.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
}

/// True once a stop was asked for and its grace for reading files has passed: a file still
/// being hashed is given up on (see [`crate::hashing::Budget`]).
pub fn hashing_over() -> bool {
    requested()
        && REQUESTED_AT
            .get()
            .is_some_and(|at| at.elapsed() >= Duration::from_millis(HASHING_GRACE_MS.load(Ordering::Relaxed)))
}
