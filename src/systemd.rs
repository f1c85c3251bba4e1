//! systemd notifications (`Type=notify`): READY, RELOADING, STOPPING, STATUS and WATCHDOG.
//! Every call is a no-op when `$NOTIFY_SOCKET` is not set.
//!
//! Nothing here blocks the caller. A datagram to the notify socket blocks while the socket's
//! buffer is full (a supervisor that reads late, PID 1 busy re-executing), so the sends happen on
//! one thread of their own: READY, RELOADING, STOPPING and WATCHDOG wait there in order (at most
//! [`QUEUE`] of them; past that the oldest are dropped); a STATUS= only ever keeps its latest text,
//! and is dropped whenever a newer one comes before it could go.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// State changes waiting for the socket, at most.
const QUEUE: usize = 64;

#[derive(Default)]
struct Pending {
    /// Whole messages (state changes, with their STATUS= if any), oldest first.
    changes: VecDeque<String>,
    /// The latest STATUS= not sent yet.
    status: Option<String>,
    /// A message is being sent now.
    busy: bool,
}

struct Notifier {
    pending: Mutex<Pending>,
    wake: Condvar,
}

fn notifier() -> Option<&'static Notifier> {
    static N: OnceLock<Option<&'static Notifier>> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var_os("NOTIFY_SOCKET")?;
        let n: &'static Notifier = Box::leak(Box::new(Notifier {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || n.run())
            .map_err(|e| tracing::warn!("systemd notifications are off: cannot start their thread: {e}"))
            .ok()?;
        Some(n)
    })
}

impl Notifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        loop {
            let msg = {
                let mut p = self.lock();
                p.busy = false;
                self.wake.notify_all();
                let msg = loop {
                    if let Some(m) = p.changes.pop_front() {
                        break m;
                    }
                    if let Some(s) = p.status.take() {
                        break s;
                    }
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                };
                p.busy = true;
                msg
            };
            if let Err(e) = send_now(&msg) {
                tracing::debug!("sd_notify failed: {e}");
            }
        }
    }

    fn push_change(&self, msg: String) {
        let mut p = self.lock();
        if p.changes.len() >= QUEUE {
            p.changes.pop_front();
        }
        // A change carries its own STATUS=; an older one waiting is stale.
        if msg.contains("STATUS=") {
            p.status = None;
        }
        p.changes.push_back(msg);
        self.wake.notify_all();
    }

    fn set_status(&self, msg: String) {
        self.lock().status = Some(msg);
        self.wake.notify_all();
    }

    /// Waits until everything queued has gone, or `limit` passes.
    fn flush(&self, limit: Duration) {
        let end = Instant::now() + limit;
        let mut p = self.lock();
        while !p.changes.is_empty() || p.status.is_some() || p.busy {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            p = self.wake.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

fn message(states: &[NotifyState]) -> String {
    states.iter().map(|s| format!("{s}\n")).collect()
}

fn send_now(msg: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.connect(path)?;
    sock.send(msg.as_bytes()).map(|_| ())
}

fn change(states: &[NotifyState]) {
    if let Some(n) = notifier() {
        n.push_change(message(states));
    }
}

pub(crate) fn ready(status: &str) {
    change(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => change(&[NotifyState::Reloading, now]),
        Err(_) => change(&[NotifyState::Reloading]),
    }
}

pub(crate) fn stopping() {
    change(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: sending pending purges"),
    ]);
}

/// A STATUS= line; dropped if a newer one comes before it could go.
pub(crate) fn status(status: &str) {
    if let Some(n) = notifier() {
        n.set_status(message(&[NotifyState::Status(status)]));
    }
}

pub(crate) fn watchdog() {
    change(&[NotifyState::Watchdog]);
}

/// Gives what is queued up to `limit` to reach the socket (at exit).
pub(crate) fn flush(limit: Duration) {
    if let Some(n) = notifier() {
        n.flush(limit);
    }
}

/// How much more time each start-up ping asks systemd for.
const EXTEND_BY: Duration = Duration::from_secs(90);
/// How often start-up pings go out.
const EXTEND_EVERY: Duration = Duration::from_secs(20);

/// While the daemon starts — a first baseline of a large tree hashes every file before READY —
/// systemd is told to wait (`EXTEND_TIMEOUT_USEC=`, with a STATUS= saying what is being done),
/// at once and every [`EXTEND_EVERY`] until this is dropped, so that `TimeoutStartSec=` does not
/// kill a start that is making progress. A no-op without `$NOTIFY_SOCKET`.
/// Whether start-up is over, and what it is doing; with the condition that wakes its thread.
type StartingState = std::sync::Arc<(Mutex<(bool, String)>, Condvar)>;

pub(crate) struct Starting {
    shared: Option<StartingState>,
    /// When a status was last sent from [`Starting::status`] (at most one a second goes out).
    last: Mutex<Option<Instant>>,
}

impl Starting {
    pub(crate) fn begin(status: &str) -> Starting {
        if notifier().is_none() {
            return Starting {
                shared: None,
                last: Mutex::new(None),
            };
        }
        let shared = std::sync::Arc::new((Mutex::new((false, status.to_string())), Condvar::new()));
        let inner = shared.clone();
        let spawned = std::thread::Builder::new().name("sd-starting".into()).spawn(move || {
            let (lock, wake) = &*inner;
            let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !g.0 {
                extend(&g.1);
                g = wake.wait_timeout(g, EXTEND_EVERY).unwrap_or_else(|e| e.into_inner()).0;
            }
        });
        Starting {
            shared: spawned.is_ok().then_some(shared),
            last: Mutex::new(Some(Instant::now())),
        }
    }

    /// What is being done now: sent with more time, at once unless a status went out less
    /// than a second ago (a host with 1,000 rules starts them in a few seconds).
    pub(crate) fn status(&self, status: &str) {
        if let Some(shared) = &self.shared {
            shared.0.lock().unwrap_or_else(|e| e.into_inner()).1 = status.to_string();
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                extend(status);
            }
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.0.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
            shared.1.notify_all();
        }
    }
}

fn extend(status: &str) {
    let usec = EXTEND_BY.as_micros().min(u32::MAX as u128) as u32;
    change(&[NotifyState::ExtendTimeoutUsec(usec), NotifyState::Status(status)]);
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when it is set for this process.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
