//! `daemon::run(config, options, signals)`: the long-running process.
//!
//! One task owns all state and reacts to: filesystem events, a batch falling due, a comparison,
//! a send or job finishing, SIGHUP or a save of the rules file, SIGUSR1, the watchdog tick, and a
//! stop (SIGTERM, SIGINT; see [`crate::signals`]). Comparisons run on blocking threads, sends and
//! job polls as tasks of their own, and each reports back. Durability comes from
//! [`crate::state`]: a change is queued for every target of its rule in the same transaction
//! that moves the rule's manifest forward; before that, the change is still visible as a
//! difference between the tree and the manifest, which start-up catch-up finds after any crash.
//!
//! This file holds the daemon's state and the `select!` loop (each turn timed: see [`Stalls`]);
//! each kind of reaction has a file of its own:
//!
//! * [`lifecycle`]: start-up (lock, state writer, rules, catch-up) and stop.
//! * [`events`]: filesystem events → the router's answer → dirty paths and hash-ahead jobs, and
//!   the hashing worker's results into each rule's record.
//! * [`settle`]: a batch falling due → each rule's record and manifest to [`crate::compare`] on a
//!   blocking thread → what changed queued for every target of the rule; the target sent once
//!   its comparisons are in.
//! * [`dispatch`]: the [`Dispatcher`] owns each target's queue and provider: queued changes →
//!   planned requests, [`crate::deliver`], their outcome, provider jobs, `on_failure`.
//! * [`verifier`]: the [`Verifier`] owns the checks of the edge after a purge (and its warming):
//!   which files every target of their rule has purged, and the verifications running.
//! * [`writeback`]: what is written to the state directory, and when; [`crate::state::Writer`]
//!   writes it on a thread of its own, in order.
//! * [`rules`]: rules added, removed, re-attached after a swap, rescanned, reloaded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::batch::Batcher;
use crate::clock::now_ms;
use crate::compare::diff::{Change, Skip};
use crate::compare::{self, Compared};
use crate::config::{self, Config, LoadOptions, Rule, Target};
use crate::deliver::{self, Delivery, JobOutcome, Pacer};
use crate::hashahead::{self, Record};
use crate::manifest::{FileMeta, Manifest};
use crate::metrics;
use crate::plan;
use crate::providers::{self, Provider};
use crate::request::PendingFile;
use crate::route::{self, Route, route};
use crate::signals::{Asked, Signals};
use crate::state::{DaemonLock, PendingRow, PurgeId, StateError, Store, Writer};
use crate::systemd;
use crate::verify;
use crate::watch::{EventQueue, Taken, WatchError, WatchMsg, Watcher};

mod catchup;
mod dispatch;
mod events;
mod gate;
mod lifecycle;
mod rules;
mod ruleset;
mod settle;
#[cfg(test)]
mod testing;
mod verifier;
mod writeback;

use catchup::{FirstLook, Looked};
use dispatch::{Dispatched, Dispatcher};
use ruleset::{Coverage, RescanReason, RuleId, RuleRt, RuleSet};
use verifier::Verifier;
use writeback::Settled;

/// How long a provider job is followed after a purge was accepted.
const JOB_FOLLOW: Duration = Duration::from_secs(600);
/// A save of the rules file is read this long after the last event (editors write in steps).
const RELOAD_SETTLE: Duration = Duration::from_millis(300);
/// What `/healthz` says of a tree that could not be fully watched.
const NO_INOTIFY_PROBLEM: &str =
    "not watched: no inotify instance to be had (raise fs.inotify.max_user_instances); rescanned every 30s";
const WATCH_LIMIT_PROBLEM: &str =
    "not fully watched: the inotify watch limit is reached (raise fs.inotify.max_user_watches); rescanned every 30s";
/// How often the loop turns at the least while `/healthz` is served.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Rules whose tree could not be fully watched are rescanned this often.
const POLL_EVERY: Duration = Duration::from_secs(30);
/// Paths seen are written to the state directory at most this long after their event.
const SEEN_FLUSH: Duration = Duration::from_millis(100);
/// Memory is given back after this many paths have been compared or written.
const TRIM_AFTER: usize = 10_000;
/// New metadata for files whose bytes did not change is written this long after the batch.
const DEFERRED_FLUSH: Duration = Duration::from_millis(500);
/// Deferred entries written per turn of the daemon's loop: a swap leaves one for every file of
/// the new tree (its mtime moved); reading 100,000 of them from the manifest would hold the
/// loop, and one transaction of 100,000 rows the writer's thread, for hundreds of milliseconds.
const DEFERRED_CHUNK: usize = 5_000;
/// The pause between two chunks, for events and due batches to go first.
const DEFERRED_STEP: Duration = Duration::from_millis(20);
/// Deferred entries wait while a batch is open, but no longer than this.
const DEFERRED_MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options {
    /// Plan and log, send nothing, write no state.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Listen(#[from] crate::monitor::ListenError),
    #[error("rule \"{rule}\": {}", path.display())]
    Root {
        rule: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

struct Daemon {
    config: Config,
    opts: Options,
    rules_file: PathBuf,
    /// What the rules file points to, when it is a symlink.
    rules_target: Option<PathBuf>,
    /// The directories of the `include:` globs, watched.
    include_dirs: BTreeSet<PathBuf>,
    /// Paths whose name is not UTF-8, warned about once each.
    unnamed: HashSet<PathBuf>,
    /// Writes the state file on a thread of its own (none in a dry run, which writes nothing).
    writer: Option<Writer>,
    /// The writer found the state file deleted or replaced and opened a new one (its path).
    replaced: mpsc::UnboundedReceiver<PathBuf>,
    /// In a dry run, the state file read (never written).
    seed: Option<Store>,
    /// Held for the daemon's life (none in a dry run, which writes nothing).
    _lock: Option<DaemonLock>,
    /// The lock of a state directory a reload named (it takes effect at the next start).
    reserved: Option<(PathBuf, DaemonLock)>,
    /// `/metrics` and `/healthz`, when `metrics_listen` is set.
    monitor: Option<crate::monitor::Server>,
    /// The rules at run time and their manifests.
    rules: RuleSet,
    batcher: Batcher,
    /// Each target's queue, its provider, and the sends and jobs under way.
    dispatch: Dispatcher,
    /// The edge checked after a purge.
    verifier: Verifier,
    /// Shared with the hashing worker, which watches swapped-in trees.
    watcher: Option<Arc<std::sync::Mutex<Watcher>>>,
    reload_at: Option<Instant>,
    /// What waits to be written to the state directory, and when.
    writes: writeback::Writes,
    /// Event sequence number.
    seq: u64,
    hasher: hashahead::Worker,
    /// Paths compared or written since memory was last given back.
    trim_work: usize,
    /// Comparisons come back here (see [`Daemon::start_compare`]).
    compared_tx: mpsc::UnboundedSender<(u64, Compared)>,
    next_compare: u64,
    /// Comparisons that may run at once (see `settle::comparing_at_once`).
    compare_slots: Arc<tokio::sync::Semaphore>,
    /// Asked to stop at SIGTERM or SIGINT (see [`crate::shutdown`]): handed to walks and reads.
    stopping: crate::shutdown::Stop,
    /// Targets that fell due, sent once every comparison of theirs is in.
    comparing_for: BTreeSet<String>,
}

/// Runs the daemon until `shutdown` completes, then sends what is pending and returns.
pub(crate) async fn run(config: Config, opts: Options, signals: Signals) -> Result<(), DaemonError> {
    let queue = Arc::new(EventQueue::default());
    let Signals {
        mut stop,
        mut asked,
        token,
    } = signals;
    let (hash_tx, mut hash_rx) = mpsc::unbounded_channel::<hashahead::Done>();
    let (compared_tx, mut compared_rx) = mpsc::unbounded_channel();
    // A stop lets comparisons read files for half its time; the rest is for sending.
    token.set_hashing_grace(config.shutdown_timeout / 2);
    let wiring = lifecycle::Wiring {
        queue: queue.clone(),
        hasher: hashahead::Worker::start(hash_tx, token),
        compared_tx,
        stopping: token,
    };
    let mut d = Daemon::start(config, opts, wiring)?;
    // Healthy from the moment it says it is ready.
    metrics::get().health.turned();
    if !token.requested() {
        let status = d.summary();
        tracing::info!("ready: {status}");
        systemd::ready(&status);
    }
    // Taking the first baselines (or comparing a host's trees at start) built and freed a lot:
    // an idle daemon gives it back now rather than holding it until the next storm.
    tokio::task::spawn_blocking(crate::memory::trim);

    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.reset();
    // While /healthz is served, the loop turns at least this often, so that a quiet daemon is not
    // taken for a stalled one.
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut stalls = Stalls::default();
    loop {
        metrics::get().health.turned();
        let deadline = d.batch_deadline(&queue);
        let reload_at = d.reload_at;
        let flush_at = d.writes.seen_at;
        let deferred_at = d.writes.refreshed_at;
        let polling = d.rules.values().any(|r| r.polled());
        let wake = tokio::select! {
            _ = &mut stop => break,
            taken = queue.recv() => Wake::Watch(taken),
            _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => Wake::Due,
            what = d.dispatch.next() => Wake::Dispatched(what),
            Some(report) = d.verifier.next() => Wake::Verified(report),
            Some(a) = asked.recv() => Wake::Asked(a),
            _ = sleep_until(flush_at.unwrap_or_else(far_future)), if flush_at.is_some() => Wake::FlushSeen,
            _ = sleep_until(deferred_at.unwrap_or_else(far_future)), if deferred_at.is_some() => Wake::Deferred,
            Some(done) = hash_rx.recv() => Wake::Hashed(done),
            _ = std::future::ready(()), if d.has_held() => Wake::Held,
            Some((id, compared)) = compared_rx.recv() => Wake::Compared(id, compared),
            Some(path) = d.replaced.recv() => Wake::StateReplaced(path),
            _ = sleep_until(reload_at.unwrap_or_else(far_future)), if reload_at.is_some() => Wake::RulesSaved,
            _ = tick(&mut watchdog) => Wake::Watchdog,
            _ = poll.tick(), if polling => Wake::Poll,
            _ = heartbeat.tick(), if d.monitor.is_some() => Wake::Heartbeat,
        };
        let began = std::time::Instant::now();
        let cpu = thread_cpu();
        let what = wake.name();
        d.handle(wake);
        stalls.turned(what, began.elapsed(), thread_cpu().saturating_sub(cpu));
    }
    d.stop(&mut compared_rx).await;
    systemd::flush(Duration::from_secs(1));
    Ok(())
}

/// What woke the loop.
enum Wake {
    Watch(Taken),
    Due,
    Dispatched(Dispatched),
    Verified(verify::Report),
    Asked(Asked),
    FlushSeen,
    Deferred,
    Hashed(hashahead::Done),
    Held,
    Compared(u64, Compared),
    StateReplaced(PathBuf),
    RulesSaved,
    Watchdog,
    Poll,
    Heartbeat,
}

impl Daemon {
    /// When the next batch falls due; none while events wait in the queue (a storm's backlog,
    /// when the loop is behind): they may belong to it. They are taken first, within a turn or
    /// two, and the batch falls due after them.
    fn batch_deadline(&self, queue: &EventQueue) -> Option<Instant> {
        self.batcher.next_deadline().filter(|_| queue.is_empty())
    }
}

impl Wake {
    fn name(&self) -> &'static str {
        match self {
            Wake::Watch(_) => "events",
            Wake::Due => "a batch due",
            Wake::Dispatched(what) => what.name(),
            Wake::Verified(_) => "a verification",
            Wake::Asked(Asked::Reload) => "SIGHUP",
            Wake::Asked(Asked::Rescan) => "SIGUSR1",
            Wake::FlushSeen => "writing seen paths",
            Wake::Deferred => "writing deferred metadata",
            Wake::Hashed(_) => "hashes taken ahead",
            Wake::Held => "hashes held during a comparison",
            Wake::Compared(..) => "a comparison",
            Wake::StateReplaced(_) => "a state file written anew",
            Wake::RulesSaved => "the rules file saved",
            Wake::Watchdog => "the watchdog",
            Wake::Poll => "a poll",
            Wake::Heartbeat => "the heartbeat",
        }
    }
}

/// The loop's longest turns: how long timers, signals and the watchdog could have waited.
#[derive(Default)]
struct Stalls {
    longest: Duration,
}

/// Turns at least this long are logged (at debug, under the target `purgewatch::loop`:
/// `RUST_LOG=info,purgewatch::loop=debug` shows them alone).
const STALL_LOGGED: Duration = Duration::from_millis(20);

/// The CPU time the calling thread has used: a turn's own work, apart from the time the thread
/// waited for the disk or for a core (on two cores, a storm's writer and the hashing worker
/// compete with the loop).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if ok {
        Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
    } else {
        Duration::ZERO
    }
}

impl Stalls {
    /// A turn for `what` took `took` on the clock, `cpu` of it working.
    fn turned(&mut self, what: &str, took: Duration, cpu: Duration) {
        let longest = took > self.longest;
        self.longest = self.longest.max(took);
        if longest || took >= STALL_LOGGED {
            tracing::debug!(
                target: "purgewatch::loop",
                ms = took.as_secs_f64() * 1000.0,
                cpu_ms = cpu.as_secs_f64() * 1000.0,
                during = what,
                longest_ms = self.longest.as_secs_f64() * 1000.0,
                "loop stall"
            );
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Reacts to what woke the loop.
    fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Watch(taken) => self.on_watch(taken),
            Wake::Due => self.fire_due(),
            Wake::Dispatched(what) => self.on_dispatched(what),
            Wake::Verified(report) => self.on_verified(report),
            Wake::Asked(Asked::Reload) => self.reload("SIGHUP"),
            Wake::Asked(Asked::Rescan) => {
                tracing::info!("SIGUSR1: rescanning every tree against its manifest");
                let _ = self.rescan_all(RescanReason::Signal);
            }
            Wake::FlushSeen => self.flush_seen(),
            Wake::Deferred => self.on_deferred_timer(),
            Wake::Hashed(done) => self.on_hashed(done),
            Wake::Held => self.take_held(),
            Wake::Compared(id, compared) => self.on_compared(id, compared),
            Wake::StateReplaced(path) => self.rewrite_state(&path),
            Wake::RulesSaved => {
                self.reload_at = None;
                self.reload("the rules file changed");
            }
            Wake::Watchdog => systemd::watchdog(),
            Wake::Poll => self.poll(),
            // `/metrics` counts the files changed since the last batch too.
            Wake::Heartbeat => self.publish_pending(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Harness;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_does_not_fall_due_while_events_wait_in_the_queue() {
        let mut h = Harness::new(&[("a.html", "old")], Options::default());
        // An event (not a write: the real watcher would queue that too) opens a batch.
        h.event("a.html");
        h.debounce().await;
        let due = h.d.batch_deadline(&h.queue).expect("a batch is open");
        assert!(due <= Instant::now(), "the batch is due");
        // A deploy's next files, seen by the real watcher while the loop was busy elsewhere.
        for i in 0..3 {
            h.write(&format!("n{i}.html"), "new");
        }
        let waited = std::time::Instant::now();
        while h.queue.is_empty() {
            assert!(waited.elapsed() < Duration::from_secs(30), "inotify reported nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The watcher's thread queues what one read of inotify gave it: let it finish.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            h.d.batch_deadline(&h.queue),
            None,
            "a batch fell due with events queued"
        );
        // Once they are taken, the batch falls due again, with them in it.
        while !h.queue.is_empty() {
            let taken = h.queue.recv().await;
            h.d.on_watch(taken);
        }
        assert!(h.d.batch_deadline(&h.queue).is_some());
        h.settle_due().await;
        let mut pending = h.pending("cdn");
        pending.sort();
        assert_eq!(pending, ["n0.html", "n1.html", "n2.html"]);
    }

    #[test]
    fn the_longest_turn_of_the_loop_is_kept() {
        let mut s = Stalls::default();
        s.turned("events", Duration::from_millis(3), Duration::from_millis(2));
        s.turned("a comparison", Duration::from_millis(1), Duration::ZERO);
        assert_eq!(s.longest, Duration::from_millis(3));
        s.turned("a batch due", Duration::from_millis(25), Duration::from_millis(4));
        assert_eq!(s.longest, Duration::from_millis(25));
        assert_eq!(Wake::Due.name(), "a batch due");
        assert_eq!(Wake::Asked(Asked::Rescan).name(), "SIGUSR1");
        // The thread's CPU clock moves with work.
        let before = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() < before + Duration::from_millis(2) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
    }
}
