//! Whether SIGTERM or SIGINT has asked the process to stop: long walks of a tree (a first
//! baseline, a rescan) look at it and end early, so that a stop is never held up by a big tree.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Notes that the process is to stop.
pub fn request() {
    REQUESTED.store(true, Ordering::Relaxed);
}

/// True once a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}
