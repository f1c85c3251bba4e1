//! How the daemon's threads share two cores with a deploy.
//!
//! The daemon's loop (the main thread) turns for every event, timer, signal and watchdog ping;
//! the threads that are handed work all through a storm are background work: the watcher's
//! thread (it moves inotify's events to the loop's queue), the hashing worker (a finished file's
//! hash), the runtime's worker and blocking threads (sends, comparisons). Those run as
//! `SCHED_BATCH`: the same share of the CPU, but being woken does not let them preempt a running
//! thread, so the loop is not cut off mid-turn by one of its own helpers being handed work. (A
//! profile of the 100,000-file rewrite storm had the loop preempted 1,923 times in 50 s, 628 of
//! them by the watcher's thread.) The state writer stays as it is (start-up and reload wait for
//! it), and so do the helpers that hash a swapped-in tree (a swap's purge waits for them; the
//! bench did not settle whether it matters, so they are left alone). Comparisons, which a purge
//! also waits for, run on the runtime's blocking threads and are `SCHED_BATCH` with them: the
//! rewrite's purge came 24-32 ms after the debounce with and without. Any thread may choose
//! `SCHED_BATCH` for itself; no privilege is needed. The shipped systemd unit refuses the call
//! (`sched_setscheduler` is in `@resources`) with `EPERM` (`SystemCallErrorNumber=EPERM`): the
//! threads then stay as they were, and nothing is logged; `tests/sandbox.rs` runs the daemon
//! under the unit's filter.

/// Makes the calling thread background work (see the module's note). Linux only; elsewhere,
/// or if the kernel refuses, the thread stays as it was.
pub(crate) fn background() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_BATCH.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        }
    }
}

/// Makes the calling thread background work the first time it is called on that thread (for a
/// thread someone else started, such as the watcher's).
pub(crate) fn background_once() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    DONE.with(|done| {
        if !done.replace(true) {
            background();
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn a_background_thread_is_sched_batch_and_the_caller_is_left_alone() {
        // SAFETY: sched_getscheduler only reads the calling thread's policy.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let before = policy();
        let inside = std::thread::spawn(move || {
            super::background_once();
            super::background_once();
            policy()
        })
        .join()
        .unwrap();
        assert_eq!(inside, libc::SCHED_BATCH);
        assert_eq!(policy(), before, "only the calling thread changes");
    }
}
