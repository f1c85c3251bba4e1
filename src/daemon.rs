//! `daemon::run(config, options, shutdown)`: the long-running process.
//!
//! One task owns all state and reacts to: filesystem events, a batch falling due, a send or job
//! finishing, SIGHUP or a save of the rules file, the watchdog tick, and `shutdown`. Sends and job
//! polls run as their own tasks and report back. Durability comes from [`crate::state`]: a change
//! is queued for every target of its rule in the same transaction that moves the rule's manifest
//! forward; before that, the change is still visible as a difference between the tree and the
//! manifest, which start-up catch-up finds after any crash.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::batch::Batcher;
use crate::changes::{Changes, Found, judge};
use crate::config::{self, Config, LoadOptions, Rule, Target};
use crate::deliver::{self, Failed, JobOutcome, Pacer};
use crate::manifest::{Change, FileMeta, Manifest, Skip, Trust};
use crate::metrics;
use crate::plan::{self, PendingFile, Request};
use crate::prehash::{self, Prehasher};
use crate::providers::{self, Accepted, Provider};
use crate::route::{self, Filter, relative};
use crate::state::{DaemonLock, PendingRow, StateError, Store, now_ms};
use crate::systemd;
use crate::verify;
use crate::watch::{EventQueue, Taken, WatchError, WatchMsg, Watcher};

/// How long a provider job is followed after a purge was accepted.
const JOB_FOLLOW: Duration = Duration::from_secs(600);
/// A save of the rules file is read this long after the last event (editors write in steps).
const RELOAD_SETTLE: Duration = Duration::from_millis(300);
/// What `/healthz` says of a tree that could not be fully watched.
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
/// the new tree (its mtime moved), and one transaction of 100,000 rows holds the daemon's thread
/// for hundreds of milliseconds.
const DEFERRED_CHUNK: usize = 5_000;
/// The pause between two chunks, for events and due batches to go first.
const DEFERRED_STEP: Duration = Duration::from_millis(20);
/// Deferred entries wait while a batch is open, but no longer than this.
const DEFERRED_MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
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
    #[error("rule \"{rule}\": {}: {error}", path.display())]
    Root {
        rule: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A rule at run time.
struct RuleRt {
    rule: Rule,
    filter: Filter,
    /// The directory actually watched: `rule.watch` with symlinks resolved.
    root: PathBuf,
    root_id: (u64, u64),
    /// Paths with events and hashes taken ahead since the last comparison.
    changes: Changes,
    /// The whole tree must be compared: asked for at this sequence number.
    rescan: Option<u64>,
    /// Not fully watched (inotify limit): rescanned every [`POLL_EVERY`].
    poll: bool,
    /// The sequence number of a whole-tree hash still running on the worker (after a swap).
    tree_pending: Option<u64>,
    /// The watched directory was found missing and that was logged (once, until it is back).
    gone: bool,
    /// The watched directory was removed since it was last watched: its watch is gone.
    lost: bool,
}

struct Sent {
    target: String,
    /// The batch's files.
    batch: Vec<PendingFile>,
    files: usize,
    max_seq: i64,
    first_seen_ms: i64,
    results: Vec<(Request, String, Result<Accepted, Failed>)>,
}

struct JobDone {
    target: String,
    /// The files of the batch the job purges.
    batch: Arc<Vec<PendingFile>>,
    /// The batch's entry in [`Daemon::awaiting`], when it is to be verified or warmed.
    awaiting: Option<u64>,
    /// The request the job came from, as the log lines describe it.
    request: String,
    record: Option<i64>,
    job_id: String,
    outcome: JobOutcome,
}

/// A purged batch waiting for its provider jobs to end before it is verified or warmed.
struct Awaiting {
    target: String,
    batch: Arc<Vec<PendingFile>>,
    jobs_left: usize,
    /// Every job so far ended in success.
    ok: bool,
}

struct Daemon {
    config: Config,
    opts: Options,
    rules_file: PathBuf,
    /// Paths whose name is not UTF-8, warned about once each.
    unnamed: HashSet<PathBuf>,
    store: Option<Store>,
    seed: Option<Store>,
    /// Held for the daemon's life (none in a dry run, which writes nothing).
    _lock: Option<DaemonLock>,
    /// `/metrics` and `/healthz`, when `metrics_listen` is set.
    monitor: Option<crate::monitor::Server>,
    hooks: crate::hook::Hooks,
    rules: Vec<RuleRt>,
    manifests: BTreeMap<String, Manifest>,
    /// target → (rule, path) → row
    pending: BTreeMap<String, BTreeMap<(String, String), PendingRow>>,
    next_seq: i64,
    batcher: Batcher,
    providers: BTreeMap<String, Arc<Provider>>,
    pacer: Arc<Pacer>,
    http: reqwest::Client,
    watcher: Option<Watcher>,
    sends: JoinSet<Sent>,
    jobs: JoinSet<JobDone>,
    /// Batches to verify or warm once every job of theirs has ended.
    awaiting: HashMap<u64, Awaiting>,
    next_awaiting: u64,
    /// Verifications running (aborted at shutdown: they never hold it up).
    verifies: JoinSet<verify::Report>,
    /// The client for the edge (`verify.base_url`).
    edge: reqwest::Client,
    reload_at: Option<Instant>,
    /// Paths seen but not yet in the state directory, and when they must be written.
    unsaved: Vec<(String, String)>,
    flush_at: Option<Instant>,
    /// Event sequence number.
    seq: u64,
    prehasher: Prehasher,
    /// Manifest entries not written yet (identical bytes, new metadata): rule → paths. They are
    /// written as the manifest in memory has them then.
    deferred: BTreeMap<String, Vec<String>>,
    deferred_at: Option<Instant>,
    /// When the oldest deferred entry was put off.
    deferred_since: Option<Instant>,
    /// Paths compared or written since memory was last given back.
    trim_work: usize,
    /// Settled changes not written to the state directory yet.
    uncommitted: Vec<Settled>,
    /// What settled comparisons are done with, freed once their purges are on their way.
    spent: Vec<(BTreeSet<String>, Changes)>,
}

/// What one settle of a rule found, to be written in one transaction.
struct Settled {
    rule: String,
    updates: Vec<(String, Option<FileMeta>)>,
    rows: Vec<PendingRow>,
}

/// Runs the daemon until `shutdown` completes, then sends what is pending and returns.
pub async fn run(config: Config, opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let queue = Arc::new(EventQueue::default());
    let signal = |kind, name: &str| {
        tokio::signal::unix::signal(kind)
            .map_err(|e| DaemonError::Watch(WatchError::Runtime(format!("cannot handle {name}: {e}"))))
    };
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup(), "SIGHUP")?;
    let mut usr1 = signal(tokio::signal::unix::SignalKind::user_defined1(), "SIGUSR1")?;
    let (hash_tx, mut hash_rx) = mpsc::unbounded_channel::<prehash::Done>();
    let mut d = Daemon::start(config, opts, queue.clone(), Prehasher::start(hash_tx))?;
    // Healthy from the moment it says it is ready.
    metrics::get().health.turned();
    if !crate::shutdown::requested() {
        let status = d.summary();
        tracing::info!("ready: {status}");
        systemd::ready(&status);
    }

    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.reset();
    // While /healthz is served, the loop turns at least this often, so that a quiet daemon is not
    // taken for a stalled one.
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    tokio::pin!(shutdown);
    loop {
        metrics::get().health.turned();
        let deadline = d.batcher.next_deadline();
        let reload_at = d.reload_at;
        let flush_at = d.flush_at;
        let deferred_at = d.deferred_at;
        let polling = d.rules.iter().any(|r| r.poll);
        tokio::select! {
            _ = &mut shutdown => break,
            taken = queue.recv() => d.on_watch(taken),
            _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => d.fire_due(),
            Some(res) = d.sends.join_next(), if !d.sends.is_empty() => match res {
                Ok(sent) => d.on_sent(sent),
                Err(e) => tracing::error!("a purge task died: {e}"),
            },
            Some(res) = d.jobs.join_next(), if !d.jobs.is_empty() => {
                if let Ok(job) = res { d.on_job(job) }
            },
            Some(res) = d.verifies.join_next(), if !d.verifies.is_empty() => {
                if let Ok(report) = res { d.on_verified(report) }
            },
            _ = hup.recv() => d.reload("SIGHUP"),
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: rescanning every tree against its manifest");
                d.rescan_all("signal");
            },
            _ = sleep_until(flush_at.unwrap_or_else(far_future)), if flush_at.is_some() => d.flush_seen(),
            _ = sleep_until(deferred_at.unwrap_or_else(far_future)), if deferred_at.is_some() => d.on_deferred_timer(),
            Some(done) = hash_rx.recv() => d.on_hashed(done),
            _ = sleep_until(reload_at.unwrap_or_else(far_future)), if reload_at.is_some() => {
                d.reload_at = None;
                d.reload("the rules file changed");
            },
            _ = tick(&mut watchdog) => systemd::watchdog(),
            _ = poll.tick(), if polling => d.poll(),
            _ = heartbeat.tick(), if d.monitor.is_some() => {},
        }
    }
    d.stop().await;
    systemd::flush(Duration::from_secs(1));
    Ok(())
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

fn root_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

fn summarize_files(files: &[PendingFile]) -> String {
    let mut parts: Vec<String> = files
        .iter()
        .take(10)
        .map(|f| format!("{} {}", f.kind.as_str(), f.path))
        .collect();
    if files.len() > 10 {
        parts.push(format!("and {} more", files.len() - 10));
    }
    parts.join(", ")
}

fn urls_of(files: &[PendingFile], rules: &[Rule]) -> String {
    let mut urls = Vec::new();
    for f in files {
        match rules.iter().find(|r| r.name == f.rule) {
            Some(r) => urls.extend(plan::urls_for(r, &f.path)),
            None => urls.push(format!("(rule {} removed) {}", f.rule, f.path)),
        }
        if urls.len() > 20 {
            urls.truncate(20);
            urls.push("…".into());
            break;
        }
    }
    urls.join(" ")
}

impl Daemon {
    fn start(
        config: Config,
        opts: Options,
        queue: Arc<EventQueue>,
        prehasher: Prehasher,
    ) -> Result<Daemon, DaemonError> {
        let mut lock = None;
        let (store, seed) = if opts.dry_run {
            let seed = Store::open_read_only(&config.state_dir).unwrap_or_else(|e| {
                tracing::warn!("dry run: not reading the state ({e}); every rule starts from a new baseline");
                None
            });
            (None, seed)
        } else {
            // One daemon per state directory: the lock first, then the store.
            lock = Some(DaemonLock::acquire(&config.state_dir)?);
            (Some(Store::open(&config.state_dir)?), None)
        };
        let http = providers::http_client();
        let rules_file = std::path::absolute(&config.source).unwrap_or_else(|_| config.source.clone());
        let mut d = Daemon {
            providers: BTreeMap::new(),
            rules: Vec::new(),
            manifests: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_seq: 1,
            batcher: Batcher::new(),
            pacer: Arc::new(Pacer::default()),
            http,
            watcher: Some(Watcher::new(queue, config.rules.iter().any(|r| r.follow_symlinks))?),
            sends: JoinSet::new(),
            jobs: JoinSet::new(),
            awaiting: HashMap::new(),
            next_awaiting: 0,
            verifies: JoinSet::new(),
            edge: verify::edge_client(),
            reload_at: None,
            unsaved: Vec::new(),
            flush_at: None,
            seq: 0,
            prehasher,
            deferred: BTreeMap::new(),
            deferred_at: None,
            deferred_since: None,
            trim_work: 0,
            uncommitted: Vec::new(),
            spent: Vec::new(),
            rules_file,
            unnamed: HashSet::new(),
            store,
            seed,
            _lock: lock,
            monitor: None,
            hooks: Default::default(),
            opts,
            config: config.clone(),
        };
        d.set_providers();
        if let Some(addr) = config.metrics_listen {
            d.monitor = Some(crate::monitor::start(addr)?);
        }
        if let Some(dir) = d.rules_file.parent()
            && let Some(w) = d.watcher.as_mut()
            && let Err(e) = w.add(dir, false)
        {
            tracing::warn!("the rules file will not be reloaded on save (SIGHUP still works): {e}");
        }
        let seen = match (&d.store, &d.seed) {
            (Some(s), _) | (None, Some(s)) => s.seen()?,
            _ => vec![],
        };
        for rule in config.rules.iter().cloned() {
            let paths: BTreeSet<String> = seen
                .iter()
                .filter(|(r, _, _)| *r == rule.name)
                .map(|(_, p, _)| p.clone())
                .collect();
            d.add_rule(rule, paths)?;
        }
        // Work left over from the last run goes first.
        let rows = match (&d.store, &d.seed) {
            (Some(s), _) | (None, Some(s)) => s.pending()?,
            _ => vec![],
        };
        for row in rows {
            if d.config.target(&row.target).is_none() {
                continue;
            }
            d.next_seq = d.next_seq.max(row.seq + 1);
            d.pending
                .entry(row.target.clone())
                .or_default()
                .insert((row.file.rule.clone(), row.file.path.clone()), row);
        }
        let now = Instant::now();
        for (target, rows) in &d.pending {
            if !rows.is_empty() {
                tracing::info!(target = %target, files = rows.len(), "queued purges left from the last run");
                d.batcher.due_now(target, now);
            }
        }
        d.publish_pending();
        Ok(d)
    }

    /// Notices a state file deleted (or replaced) while the daemon runs, says so, and writes a
    /// new one from what the daemon holds: each rule's record of its tree and the purges still
    /// queued. Without this, every write would go to the deleted file and be lost at the next
    /// start.
    fn check_store(&mut self) {
        let Some(store) = self.store.as_ref() else { return };
        if !store.is_gone() {
            return;
        }
        let path = store.path().to_path_buf();
        tracing::error!(
            "the state file {} was deleted or replaced while purgewatch runs: writing a new one from the daemon's record (rules, manifests, queued purges)",
            path.display()
        );
        self.store = None;
        let mut store = match Store::open(&self.config.state_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    "cannot write a new state file: {e}; changes are purged but not recorded until it can be"
                );
                return;
            }
        };
        let mut result = Ok(());
        for rt in &self.rules {
            let name = &rt.rule.name;
            let empty = Manifest::default();
            let manifest = self.manifests.get(name).unwrap_or(&empty);
            let rows: Vec<PendingRow> = self
                .pending
                .values()
                .flat_map(|p| p.values())
                .filter(|r| &r.file.rule == name)
                .cloned()
                .collect();
            result = result
                .and_then(|()| store.set_baseline(name, &rt.rule.watch.display().to_string(), manifest))
                .and_then(|()| store.commit_changes(name, &[], &rows));
        }
        match result {
            Ok(()) => tracing::info!("wrote a new state file {}", path.display()),
            Err(e) => tracing::error!("writing the new state file {} failed: {e}", path.display()),
        }
        self.store = Some(store);
    }

    /// Each target's queue, for `/metrics`.
    fn publish_pending(&self) {
        for t in &self.config.targets {
            let rows = self.pending.get(&t.name);
            let n = rows.map_or(0, |r| r.len());
            let oldest = rows.and_then(|r| r.values().map(|r| r.first_seen_ms).min());
            metrics::get().set_pending(&t.name, n, oldest);
        }
    }

    /// Whether a batch just sent is to be verified or warmed, and when: at once when no request
    /// left a provider job to follow, else once every job has ended (see [`Daemon::on_job`]).
    /// Returns the batch's entry in `awaiting`, when it has one.
    fn await_batch(
        &mut self,
        target: &str,
        batch: &Arc<Vec<PendingFile>>,
        results: &[(Request, String, Result<Accepted, Failed>)],
    ) -> Option<u64> {
        let wanted = self
            .config
            .rules
            .iter()
            .any(|r| r.verify.is_some() && r.targets.iter().any(|t| t == target));
        if !wanted || results.is_empty() || results.iter().any(|(_, _, r)| r.is_err()) {
            return None;
        }
        let jobs = results
            .iter()
            .filter(|(_, _, r)| r.as_ref().is_ok_and(|a| a.job_id.is_some()))
            .count();
        if jobs == 0 {
            self.verify_batch(target, batch);
            return None;
        }
        self.next_awaiting += 1;
        self.awaiting.insert(
            self.next_awaiting,
            Awaiting {
                target: target.to_string(),
                batch: batch.clone(),
                jobs_left: jobs,
                ok: true,
            },
        );
        Some(self.next_awaiting)
    }

    /// The purge of `batch` for `target` has ended well: for each of its rules with `verify`,
    /// check a sample on the edge (and warm it, with `warm: true`), on tasks of their own.
    fn verify_batch(&mut self, target: &str, batch: &[PendingFile]) {
        let (Some(t), Some(provider)) = (self.config.target(target), self.providers.get(target)) else {
            return;
        };
        for rule in &self.config.rules {
            let Some(v) = &rule.verify else { continue };
            if !rule.targets.iter().any(|x| x == target) {
                continue;
            }
            let empty = Manifest::default();
            let manifest = self.manifests.get(&rule.name).unwrap_or(&empty);
            if rule.warm {
                let urls: Vec<String> = batch
                    .iter()
                    .filter(|f| f.rule == rule.name && f.kind != crate::manifest::ChangeKind::Deleted)
                    .map(|f| verify::check_url(rule, &f.path))
                    .collect();
                let (http, base, limit, after, name) = (
                    self.edge.clone(),
                    v.base_url.clone(),
                    rule.warm_limit,
                    v.after,
                    rule.name.clone(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let ok = verify::warm(&http, &base, &urls, limit).await;
                    tracing::info!(rule = %name, warmed = ok, of = urls.len().min(limit), "warmed the edge");
                });
            }
            let expects = verify::sample(rule, batch, manifest, v.sample);
            if expects.is_empty() {
                continue;
            }
            self.verifies.spawn(verify::run(verify::Job {
                target: t.clone(),
                rule: rule.clone(),
                verify: v.clone(),
                expects,
                provider: provider.clone(),
                pacer: self.pacer.clone(),
                http: self.edge.clone(),
            }));
        }
    }

    /// A verification ended: log it, record it for `status`, count it, and tell `on_failure`
    /// about URLs still stale.
    fn on_verified(&mut self, r: verify::Report) {
        let m = metrics::get();
        m.verified(&r.target, "fresh", r.fresh);
        m.verified(&r.target, "stale", r.stale.len());
        m.verified(&r.target, "unreachable", r.unreachable.len());
        for (url, why) in &r.unreachable {
            tracing::warn!(target = %r.target, rule = %r.rule, "could not verify {url}: {why} (is verify.base_url right and up?)");
        }
        for (url, why) in &r.stale {
            tracing::error!(
                target = %r.target,
                rule = %r.rule,
                "still stale after {} re-purge{}: {url} {why}",
                r.repurges,
                if r.repurges == 1 { "" } else { "s" }
            );
        }
        if r.stale.is_empty() {
            tracing::info!(target = %r.target, rule = %r.rule, checked = r.checked, fresh = r.fresh, repurges = r.repurges, "verified: the edge serves the new bytes");
        }
        let detail = if !r.stale.is_empty() {
            Some(format!(
                "stale: {}",
                r.stale.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(" ")
            ))
        } else if !r.unreachable.is_empty() {
            Some(format!("could not verify: {}", r.unreachable[0].1))
        } else {
            None
        };
        if let Some(s) = self.store.as_mut()
            && let Err(e) = s.record_verification(&crate::state::VerifyRecord {
                target: r.target.clone(),
                at_ms: now_ms(),
                checked: r.checked as i64,
                fresh: r.fresh as i64,
                stale: r.stale.len() as i64,
                unreachable: r.unreachable.len() as i64,
                detail: detail.clone(),
            })
        {
            tracing::warn!("could not record the verification: {e}");
        }
        if !r.stale.is_empty() {
            let error = detail.unwrap_or_default();
            let request = format!("verify {}", r.rule);
            self.tell_failure(&r.target, &request, &error, &[]);
        }
    }

    /// Tells `on_failure` (when the target has one) that a purge failed.
    fn tell_failure(&mut self, target: &str, request: &str, error: &str, files: &[PendingFile]) {
        let Some(argv) = self.config.target(target).and_then(|t| t.on_failure.clone()) else {
            return;
        };
        let mut urls = Vec::new();
        for f in files {
            if let Some(r) = self.config.rule(&f.rule) {
                urls.extend(plan::urls_for(r, &f.path));
            }
            if urls.len() >= crate::hook::MAX_URLS {
                break;
            }
        }
        self.hooks.fire(
            &argv,
            crate::hook::Failure {
                target: target.to_string(),
                request: request.to_string(),
                error: error.to_string(),
                files: files.len(),
                urls,
            },
        );
    }

    fn summary(&self) -> String {
        let files: usize = self.pending.values().map(|p| p.len()).sum();
        format!(
            "{} rule{}, {} target{}, {} file{} pending{}",
            self.rules.len(),
            if self.rules.len() == 1 { "" } else { "s" },
            self.config.targets.len(),
            if self.config.targets.len() == 1 { "" } else { "s" },
            files,
            if files == 1 { "" } else { "s" },
            if self.opts.dry_run {
                " (dry run: nothing is sent)"
            } else {
                ""
            }
        )
    }

    fn set_providers(&mut self) {
        self.providers = self
            .config
            .targets
            .iter()
            .map(|t| (t.name.clone(), Arc::new(Provider::new(t, self.http.clone()))))
            .collect();
    }

    fn target(&self, name: &str) -> Option<&Target> {
        self.config.target(name)
    }

    /// Watches a rule's tree and brings its manifest up to date (baseline or catch-up).
    /// `seen` are paths that produced events in the last run but were not compared yet: they are
    /// hashed whatever their size and mtime say.
    fn add_rule(&mut self, rule: Rule, seen: BTreeSet<String>) -> Result<(), DaemonError> {
        let root = std::fs::canonicalize(&rule.watch).map_err(|error| DaemonError::Root {
            rule: rule.name.clone(),
            path: rule.watch.clone(),
            error,
        })?;
        let id = root_id(&root).map_err(|error| DaemonError::Root {
            rule: rule.name.clone(),
            path: root.clone(),
            error,
        })?;
        let mut rt = RuleRt {
            filter: Filter::new(&rule),
            root,
            root_id: id,
            changes: Changes::default(),
            rescan: None,
            poll: false,
            tree_pending: None,
            gone: false,
            lost: false,
            rule,
        };
        if let Some(w) = self.watcher.as_mut() {
            if let Some(parent) = rt.rule.watch.parent()
                && let Err(e) = w.add(parent, false)
            {
                tracing::warn!(rule = %rt.rule.name, "a replaced or re-pointed directory will not be noticed: {e}");
            }
            match w.add(&rt.root, true) {
                Ok(()) => {}
                Err(e @ WatchError::WatchLimit { .. }) => {
                    tracing::error!(rule = %rt.rule.name, "{e}; until then the tree is rescanned every {}s", POLL_EVERY.as_secs());
                    metrics::get()
                        .health
                        .set_problem(&rt.rule.name, Some(WATCH_LIMIT_PROBLEM.into()));
                    rt.poll = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let name = rt.rule.name.clone();
        let watch = rt.rule.watch.display().to_string();
        let recorded = match (&self.store, &self.seed) {
            (Some(s), _) | (None, Some(s)) => match s.rule_root(&name)? {
                Some(root) if root == watch => Some(s.load_manifest(&name)?),
                _ => None,
            },
            _ => None,
        };
        self.rules.push(rt);
        match recorded {
            Some(manifest) => {
                self.manifests.insert(name.clone(), manifest);
                let i = self.rules.len() - 1;
                self.rules[i].changes.mark_dirty(seen);
                let mut found = self.settle(i);
                self.rules[i].rescan = Some(self.seq);
                found += self.settle(i);
                self.commit_settled();
                if found > 0 {
                    tracing::info!(rule = %name, files = found, "found changes made while purgewatch was stopped");
                }
            }
            None => {
                let rt = self.rules.last().expect("just pushed");
                let Some(manifest) = Manifest::baseline(&rt.root, &rt.filter) else {
                    tracing::info!(rule = %name, "stopping: the first baseline of this rule was not finished and is taken at the next start");
                    return Ok(());
                };
                tracing::info!(
                    rule = %name,
                    files = manifest.len(),
                    "first start for this rule: took the current tree as the baseline, nothing purged (run `purgewatch purge TARGET --all` for a first purge)"
                );
                if let Some(s) = self.store.as_mut() {
                    s.set_baseline(&name, &watch, &manifest)?;
                }
                self.manifests.insert(name, manifest);
            }
        }
        Ok(())
    }

    fn remove_rule(&mut self, i: usize) {
        let rt = self.rules.remove(i);
        if let Some(w) = self.watcher.as_mut() {
            w.remove(&rt.root, true);
            if let Some(parent) = rt.rule.watch.parent() {
                w.remove(parent, false);
            }
        }
        self.manifests.remove(&rt.rule.name);
    }

    fn touch_targets(&mut self, i: usize, now: Instant) {
        for t in self.rules[i].rule.targets.clone() {
            self.touch_target(&t, now);
        }
    }

    /// A change for `target`, timed by its own debounce and max_delay.
    fn touch_target(&mut self, target: &str, now: Instant) {
        if let Some(t) = self.config.target(target) {
            let (d, m) = (t.debounce, t.max_delay);
            self.batcher.touch(target, d, m, now);
        }
    }

    /// A batch of events from the watcher. Repeated events for one path (a file written in
    /// several chunks) are handled once, as the last of them; the files that are complete go to
    /// the hashing worker in one job per rule.
    fn on_watch(&mut self, taken: Taken) {
        let Taken { msgs, newest: now } = taken;
        let mut paths: Vec<(PathBuf, bool, bool)> = Vec::new();
        let mut touched = vec![false; self.rules.len()];
        for msg in msgs {
            match msg {
                WatchMsg::Paths {
                    paths: ps,
                    done,
                    removed,
                } => {
                    for p in ps {
                        match paths.last_mut() {
                            Some((last, d, r)) if *last == p => {
                                *d = done;
                                *r |= removed;
                            }
                            _ => paths.push((p, done, removed)),
                        }
                    }
                }
                WatchMsg::Rescan => {
                    tracing::warn!("the kernel event queue overflowed: rescanning every tree against its manifest");
                    self.rescan_all("overflow");
                }
                WatchMsg::Error(e) => self.on_watch_error(e),
            }
        }
        let mut to_hash: Vec<Vec<(String, u64)>> = vec![Vec::new(); self.rules.len()];
        for (path, done, removed) in paths {
            self.on_path(&path, now, done, removed, &mut touched, &mut to_hash);
        }
        for (i, files) in to_hash.into_iter().enumerate() {
            if !files.is_empty() {
                let rt = &self.rules[i];
                self.prehasher.send(prehash::Job::Files {
                    rule: rt.rule.name.clone(),
                    root: rt.root.clone(),
                    files,
                });
            }
        }
        for (i, t) in touched.into_iter().enumerate() {
            if t && i < self.rules.len() {
                self.touch_targets(i, now);
            }
        }
    }

    fn on_watch_error(&mut self, e: WatchError) {
        match e {
            WatchError::WatchLimit { .. } => {
                tracing::error!(
                    "{e}; the affected trees are rescanned every {}s until then",
                    POLL_EVERY.as_secs()
                );
                for r in &mut self.rules {
                    metrics::get()
                        .health
                        .set_problem(&r.rule.name, Some(WATCH_LIMIT_PROBLEM.into()));
                    r.poll = true;
                }
            }
            e => tracing::error!("{e}"),
        }
    }

    /// Compares every tree with its manifest at the next batch (events may have been lost);
    /// `reason` is counted in `/metrics`.
    fn rescan_all(&mut self, reason: &str) {
        let now = Instant::now();
        for i in 0..self.rules.len() {
            metrics::get().rescan(&self.rules[i].rule.name, reason);
            self.rules[i].rescan = Some(self.seq);
            self.touch_targets(i, now);
        }
    }

    /// Writes the paths seen since the last flush to the state directory.
    fn flush_seen(&mut self) {
        self.flush_at = None;
        let paths = std::mem::take(&mut self.unsaved);
        if let Some(s) = self.store.as_mut()
            && !paths.is_empty()
            && let Err(e) = s.record_seen(&paths, now_ms())
        {
            tracing::warn!("could not record seen changes in the state directory: {e}");
        }
    }

    /// A hash taken ahead came back: keep it if no event came for the path since.
    fn on_hashed(&mut self, done: prehash::Done) {
        let (rule, files, tree) = match done {
            prehash::Done::Files { rule, files } => (rule, files, None),
            prehash::Done::TreePart { rule, root, seq, files } => {
                if !self.rules.iter().any(|r| r.rule.name == rule && r.root == root) {
                    return;
                }
                let files = files.into_iter().map(|(rel, meta)| (rel, seq, Some(meta))).collect();
                (rule, files, Some(seq))
            }
            prehash::Done::TreeDone { rule, root, seq } => return self.tree_done(&rule, &root, seq),
        };
        self.record_hashes(&rule, files, tree);
    }

    /// A whole tree hashed ahead has been recorded.
    fn tree_done(&mut self, rule: &str, root: &Path, seq: u64) {
        let Some(rt) = self.rules.iter_mut().find(|r| r.rule.name == rule) else {
            return;
        };
        if rt.root == root
            && let Some(manifest) = self.manifests.get(rule)
        {
            rt.changes.tree_listed(seq, manifest);
        }
        // The batch held for this tree goes now.
        if rt.tree_pending == Some(seq) {
            rt.tree_pending = None;
            let targets = rt.rule.targets.clone();
            let now = Instant::now();
            for t in &targets {
                self.batcher.release(t, now);
            }
            self.fire_due();
        }
    }

    /// Records hashes taken ahead (`tree`: as part of the tree hashed by job `tree`).
    fn record_hashes(&mut self, rule: &str, files: Vec<(String, u64, Option<FileMeta>)>, tree: Option<u64>) {
        let (Some(rt), Some(manifest)) = (
            self.rules.iter_mut().find(|r| r.rule.name == rule),
            self.manifests.get_mut(rule),
        ) else {
            return;
        };
        // Same bytes with new metadata: the manifest moves forward now (written to the state
        // directory a little later), so that only a flag is kept per file.
        let mut refreshed = Vec::new();
        for (rel, seq, result) in files {
            let wanted = if tree.is_some() {
                rt.changes.wants_tree(seq)
            } else {
                rt.changes.wants(&rel, seq)
            };
            if !wanted {
                continue;
            }
            let (found, meta) = judge(manifest, &rel, result);
            if found == Found::Same
                && let Some(new) = meta
            {
                manifest.set(&rel, new);
                refreshed.push(rel.clone());
            }
            if tree.is_some() {
                rt.changes.found_in_tree(manifest, rel, seq, found, meta);
            } else {
                rt.changes.found(rel, seq, found, meta);
            }
        }
        if self.store.is_some() && !refreshed.is_empty() {
            self.deferred.entry(rule.to_string()).or_default().extend(refreshed);
            self.deferred_at.get_or_insert(Instant::now() + DEFERRED_FLUSH);
        }
    }

    /// Writes deferred manifest entries, a chunk at a time, once no batch is waiting: not while
    /// a swapped-in tree is being hashed (the writes would take CPU from the hash the batch waits
    /// for), nor while a batch is open (a chunk's transaction and fsync would hold the daemon's
    /// thread past the batch's deadline); after [`DEFERRED_MAX_WAIT`], whatever is open.
    fn on_deferred_timer(&mut self) {
        let now = Instant::now();
        let since = *self.deferred_since.get_or_insert(now);
        let busy = self.rules.iter().any(|r| r.tree_pending.is_some()) || self.batcher.next_deadline().is_some();
        if busy && now < since + DEFERRED_MAX_WAIT {
            self.deferred_at = Some(now + DEFERRED_FLUSH);
            return;
        }
        self.flush_deferred(DEFERRED_CHUNK);
        if !self.deferred.is_empty() {
            self.deferred_at = Some(Instant::now() + DEFERRED_STEP);
        }
    }

    /// Writes up to `limit` of the manifest entries that were left out of the batches'
    /// transactions.
    fn flush_deferred(&mut self, limit: usize) {
        self.deferred_at = None;
        let started = std::time::Instant::now();
        let mut left = limit;
        while left > 0
            && let Some(mut entry) = self.deferred.first_entry()
        {
            let paths = entry.get_mut();
            let chunk = paths.split_off(paths.len().saturating_sub(left));
            let rule = if paths.is_empty() {
                entry.remove_entry().0
            } else {
                entry.key().clone()
            };
            left -= chunk.len();
            let Some(manifest) = self.manifests.get(&rule) else {
                continue;
            };
            let updates: Vec<(String, Option<FileMeta>)> = chunk
                .into_iter()
                .map(|p| {
                    let meta = manifest.get(&p).copied();
                    (p, meta)
                })
                .collect();
            self.trim_work += updates.len();
            if let Some(s) = self.store.as_mut()
                && let Err(e) = s.update_manifest(&rule, &updates)
            {
                tracing::warn!(rule = %rule, "could not record file metadata (those files are hashed again at the next start): {e}");
            }
        }
        if self.deferred.is_empty() {
            self.deferred_since = None;
        }
        tracing::debug!(
            rows = limit - left,
            ms = started.elapsed().as_millis() as u64,
            "wrote deferred file metadata"
        );
        self.give_back_memory();
    }

    /// One path with events: marks it dirty for every rule that keeps it, notes which rules were
    /// `touched` and which files are ready `to_hash` (per rule).
    fn on_path(
        &mut self,
        path: &Path,
        now: Instant,
        done: bool,
        removed: bool,
        touched: &mut [bool],
        to_hash: &mut [Vec<(String, u64)>],
    ) {
        if path == self.rules_file {
            self.reload_at = Some(now + RELOAD_SETTLE);
        }
        for i in 0..self.rules.len() {
            if path == self.rules[i].rule.watch {
                self.reattach(i, now, removed);
                continue;
            }
            let r = &self.rules[i];
            let Some(rel) = relative(&r.root, path) else {
                if route::unnamed(&r.root, path) && self.unnamed.insert(path.to_path_buf()) {
                    tracing::warn!(rule = %r.rule.name, "{}: {}", path.display(), route::UNNAMED);
                }
                continue;
            };
            let keep = r.filter.verdict(&rel).is_keep()
                || r.changes.is_dirty(&rel)
                || self
                    .manifests
                    .get(&r.rule.name)
                    .is_some_and(|m| m.get(&rel).is_some() || m.under(&rel).next().is_some())
                || (path.is_dir() && !r.filter.excludes_dir(&rel));
            if keep {
                tracing::debug!(rule = %self.rules[i].rule.name, path = %rel, "change seen");
                metrics::get().events(&self.rules[i].rule.name, 1);
                self.seq += 1;
                let seq = self.seq;
                let first = self.rules[i].changes.event(&rel, seq);
                if first && self.store.is_some() {
                    self.unsaved.push((self.rules[i].rule.name.clone(), rel.clone()));
                    self.flush_at.get_or_insert(now + SEEN_FLUSH);
                }
                if done {
                    to_hash[i].push((rel, seq));
                }
                touched[i] = true;
            }
        }
    }

    /// The watched path was replaced, re-pointed, or removed and made again: watch the new tree
    /// and compare all of it. `removed`: the event was a removal of the watched path.
    fn reattach(&mut self, i: usize, now: Instant, removed: bool) {
        let r = &mut self.rules[i];
        tracing::debug!(rule = %r.rule.name, removed, "an event for {} itself", r.rule.watch.display());
        // A removed directory took its watch with it: whatever stands there next must be watched
        // anew, even if it got the same inode number.
        r.lost |= removed;
        let Ok(new_root) = std::fs::canonicalize(&r.rule.watch) else {
            // Mid-swap: the new tree is not in place yet; its arrival is another event.
            return;
        };
        let Ok(id) = root_id(&new_root) else { return };
        if new_root == r.root && id == r.root_id && !r.lost {
            return;
        }
        r.lost = false;
        let old_root = r.root.clone();
        let started = std::time::Instant::now();
        if let Some(w) = self.watcher.as_mut() {
            let res = if new_root == old_root {
                w.refresh(&new_root)
            } else {
                w.remove(&old_root, true);
                w.add(&new_root, true)
            };
            if let Err(e) = res {
                tracing::error!(rule = %self.rules[i].rule.name, "{e}");
                self.rules[i].poll = true;
            }
        }
        tracing::debug!(rule = %self.rules[i].rule.name, ms = started.elapsed().as_millis() as u64, "watching the new tree");
        tracing::info!(
            rule = %self.rules[i].rule.name,
            "{} now resolves to {}: comparing the new tree with the last purge",
            self.rules[i].rule.watch.display(),
            new_root.display()
        );
        let r = &mut self.rules[i];
        metrics::get().rescan(&r.rule.name, "swap");
        r.root = new_root;
        r.root_id = id;
        r.rescan = Some(self.seq);
        r.changes.root_replaced(self.seq);
        // Hash the new tree while the batch debounces (with a sequence number of its own, so that
        // the result is newer than the last comparison).
        self.seq += 1;
        r.tree_pending = Some(self.seq);
        self.prehasher.send(prehash::Job::Tree {
            rule: r.rule.name.clone(),
            root: r.root.clone(),
            filter: r.filter.clone(),
            seq: self.seq,
        });
        self.touch_targets(i, now);
    }

    fn poll(&mut self) {
        let now = Instant::now();
        for i in 0..self.rules.len() {
            if self.rules[i].poll {
                metrics::get().rescan(&self.rules[i].rule.name, "watch_limit");
                self.rules[i].rescan = Some(self.seq);
                self.touch_targets(i, now);
            }
        }
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        for target in self.batcher.due(now) {
            // A new tree is still being hashed ahead: comparing now would hash it all again.
            let first = self.batcher.first_change(&target).unwrap_or(now);
            let max_delay = self.target(&target).map(|t| t.max_delay).unwrap_or_default();
            let hashing = self
                .rules
                .iter()
                .any(|r| r.tree_pending.is_some() && r.rule.targets.contains(&target));
            if hashing && now < first + max_delay {
                self.batcher.hold(&target, first + max_delay);
                continue;
            }
            self.batcher.close(&target);
            self.settle_for(&target);
            self.start_send(&target);
        }
        self.commit_settled();
        self.publish_pending();
        self.give_back_memory();
    }

    /// Once [`TRIM_AFTER`] paths have been compared or written (a storm, in one batch or
    /// several), returns the memory that work needed to the system.
    fn give_back_memory(&mut self) {
        if self.trim_work >= TRIM_AFTER {
            self.trim_work = 0;
            crate::memory::trim();
        }
    }

    fn settle_for(&mut self, target: &str) {
        for i in 0..self.rules.len() {
            let r = &self.rules[i];
            if r.rule.targets.iter().any(|t| t == target) && (r.rescan.is_some() || r.changes.has_dirty()) {
                self.settle(i);
            }
        }
    }

    /// Compares rule `i`'s dirty paths (or its whole tree) with the manifest and queues what
    /// changed for each of its targets. Returns the number of changed files.
    fn settle(&mut self, i: usize) -> usize {
        // What is about to be compared must not be written as seen after the comparison.
        let name = self.rules[i].rule.name.clone();
        let r = &mut self.rules[i];
        if !r.root.is_dir() {
            if !r.gone {
                r.gone = true;
                tracing::warn!(rule = %r.rule.name, "{} is not there right now; waiting for it to come back", r.root.display());
                metrics::get()
                    .health
                    .set_problem(&name, Some(format!("{} is missing", r.rule.watch.display())));
            }
            return 0;
        }
        if r.gone {
            metrics::get().health.set_problem(&name, None);
        }
        r.gone = false;
        self.unsaved.retain(|(rule, _)| *rule != name);
        let started = std::time::Instant::now();
        let manifest = self.manifests.entry(name.clone()).or_default();
        r.tree_pending = None;
        let (candidates, trust) = if let Some(asked) = r.rescan {
            if r.changes.tree_covers(asked) {
                // The new tree was listed and hashed after the rescan was asked for: its list
                // (and the events since) stand in for walking it again.
                // Files already found to hold the manifest's bytes are not compared again.
                let known = r.changes.known(manifest);
                let mut c = manifest.expand(&r.root, r.changes.paths_to_compare(), &r.filter, &known);
                c.extend(r.changes.tree_lacks().iter().cloned());
                (c, Trust::Metadata)
            } else {
                (manifest.everything(&r.root, &r.filter).0, Trust::Metadata)
            }
        } else {
            (
                // Files already found to hold the manifest's bytes are not compared again.
                manifest.expand(
                    &r.root,
                    r.changes.dirty_to_compare(),
                    &r.filter,
                    &r.changes.known(manifest),
                ),
                Trust::Content,
            )
        };
        let expanded = started.elapsed();
        let list_identical = self.opts.dry_run || tracing::enabled!(tracing::Level::DEBUG);
        let diff = manifest.diff(
            &r.root,
            &candidates,
            &r.filter,
            trust,
            &r.changes.known(manifest),
            list_identical,
        );
        let n_candidates = candidates.len();
        let diffed = started.elapsed();
        // A big comparison (or a big record of changes, about to be dropped): once its purge is
        // on its way, its memory goes back.
        self.trim_work += n_candidates + r.changes.recorded();
        let spent = r.changes.settled(self.seq);
        self.spent.push((candidates, spent));
        r.rescan = None;
        let compared = started.elapsed();
        for (path, skip) in &diff.skipped {
            if let Skip::Unreadable(_) = skip {
                tracing::warn!(rule = %name, path = %path, "skipped: {}", skip.describe());
            } else if self.opts.dry_run {
                tracing::info!(rule = %name, path = %path, "dry-run: skip: {}", skip.describe());
            } else {
                tracing::debug!(rule = %name, path = %path, "skip: {}", skip.describe());
            }
        }
        // Only the entries of files that changed go into the batch's transaction; new metadata
        // for identical bytes is written a little later, off the path to the purge.
        let (now_updates, later) = (diff.updates, diff.refreshed);
        manifest.apply(&later);
        if self.store.is_some() && !later.is_empty() {
            self.deferred
                .entry(name.clone())
                .or_default()
                .extend(later.into_iter().map(|(p, _)| p));
            self.deferred_at.get_or_insert(Instant::now() + DEFERRED_FLUSH);
        }
        if now_updates.is_empty() {
            self.uncommitted.push(Settled {
                rule: name,
                updates: Vec::new(),
                rows: Vec::new(),
            });
            return 0;
        }
        let targets: Vec<String> = r.rule.targets.clone();
        let now = now_ms();
        let mut rows = Vec::with_capacity(targets.len() * diff.changes.len());
        for t in &targets {
            let queued = self.pending.get(t);
            for Change { path, kind } in &diff.changes {
                let key = (name.clone(), path.clone());
                // A file already queued for the target keeps its first-seen time.
                let first = queued.and_then(|p| p.get(&key)).map(|r| r.first_seen_ms);
                rows.push(PendingRow {
                    target: t.clone(),
                    file: PendingFile {
                        rule: key.0,
                        path: key.1,
                        kind: *kind,
                    },
                    first_seen_ms: first.unwrap_or(now),
                    seq: self.next_seq,
                });
                self.next_seq += 1;
            }
        }
        let files = diff.changes.len();
        manifest.apply(&now_updates);
        metrics::get().manifest(&name, manifest.len());
        tracing::debug!(
            rule = %name,
            candidates = n_candidates,
            hashed = diff.hashed,
            changed = files,
            expand_ms = expanded.as_millis() as u64,
            diff_ms = (diffed - expanded).as_millis() as u64,
            forget_ms = (compared - diffed).as_millis() as u64,
            "settled"
        );
        let touched: BTreeSet<String> = rows.iter().map(|r| r.target.clone()).collect();
        for row in &rows {
            self.pending
                .entry(row.target.clone())
                .or_default()
                .insert((row.file.rule.clone(), row.file.path.clone()), row.clone());
        }
        // Written once the purges are on their way: see [`Daemon::commit_settled`].
        self.uncommitted.push(Settled {
            rule: name,
            updates: now_updates,
            rows,
        });
        // A target whose own timer is not running yet (a rescan, a catch-up) gets one now.
        let now = Instant::now();
        for t in touched {
            if self.batcher.first_change(&t).is_none() && !self.batcher.is_busy(&t) {
                self.touch_target(&t, now);
            }
        }
        files
    }

    /// Writes what the last settles found, each rule in one transaction: its queued purges, its
    /// manifest moved forward, its seen paths forgotten. Called once the purges are on their way:
    /// the daemon runs on the runtime's `block_on` thread, so the spawned requests go out on the
    /// worker threads while this writes. A crash before it ends costs a second purge of those
    /// files at the next start (the manifest still holds their old bytes), never a lost one.
    fn commit_settled(&mut self) {
        self.check_store();
        if let Some(store) = self.store.as_mut() {
            for Settled { rule, updates, rows } in self.uncommitted.drain(..) {
                if let Err(e) = store.commit_changes(&rule, &updates, &rows) {
                    tracing::error!(rule = %rule, "could not record changes in the state directory (they are purged, but a crash now would lose them): {e}");
                }
            }
        }
        self.uncommitted.clear();
        self.spent.clear();
    }

    fn start_send(&mut self, target: &str) {
        let Some(rows) = self.pending.get(target).filter(|p| !p.is_empty()) else {
            return;
        };
        let Some(t) = self.config.target(target).cloned() else {
            return;
        };
        let Some(provider) = self.providers.get(target).cloned() else {
            return;
        };
        let files: Vec<PendingFile> = rows.values().map(|r| r.file.clone()).collect();
        let max_seq = rows.values().map(|r| r.seq).max().unwrap_or(0);
        let first_seen_ms = rows.values().map(|r| r.first_seen_ms).min().unwrap_or_else(now_ms);
        let planning = std::time::Instant::now();
        let requests = plan::plan(&t, &files, &self.config.rules, &self.manifests);
        tracing::debug!(target = %target, files = files.len(), requests = requests.len(), plan_ms = planning.elapsed().as_millis() as u64, "planned");
        let why = summarize_files(&files);
        let urls = urls_of(&files, &self.config.rules);
        if self.opts.dry_run {
            for req in &requests {
                tracing::info!(target = %target, files = files.len(), request = %provider.describe(req), urls = %urls, why = %why, "dry-run: would purge");
            }
            self.pending.remove(target);
            return;
        }
        tracing::debug!(target = %target, files = files.len(), why = %why, "sending purge");
        self.batcher.set_busy(target, true);
        let pacer = self.pacer.clone();
        let name = target.to_string();
        let n = files.len();
        self.sends.spawn(async move {
            let mut results = Vec::new();
            for req in requests {
                let desc = provider.describe(&req);
                let res = deliver::send(&provider, &pacer, &t.retry, t.rate_limit, &req).await;
                results.push((req, desc, res));
            }
            Sent {
                target: name,
                batch: files,
                files: n,
                max_seq,
                first_seen_ms,
                results,
            }
        });
    }

    fn on_sent(&mut self, mut sent: Sent) {
        self.batcher.set_busy(&sent.target, false);
        let latency = Duration::from_millis((now_ms() - sent.first_seen_ms).max(0) as u64);
        let provider_type = self.providers.get(&sent.target).map_or("unknown", |p| p.type_name());
        let m = metrics::get();
        for (_, _, res) in &sent.results {
            m.request(
                &sent.target,
                provider_type,
                if res.is_ok() { "accepted" } else { "failed" },
            );
        }
        if !sent.results.is_empty() && sent.results.iter().all(|(_, _, r)| r.is_ok()) {
            m.purged(&sent.target, sent.files, latency.as_secs_f64());
        }
        for (_req, desc, res) in &sent.results {
            if let Err(f) = res {
                self.tell_failure(&sent.target, desc, &f.to_string(), &sent.batch);
            }
        }
        self.check_store();
        let batch = Arc::new(std::mem::take(&mut sent.batch));
        let awaiting = self.await_batch(&sent.target, &batch, &sent.results);
        for (_req, desc, res) in &sent.results {
            match res {
                Ok(acc) => {
                    tracing::info!(
                        target = %sent.target,
                        files = sent.files,
                        request = %desc,
                        job = %acc.job_id.as_deref().unwrap_or("-"),
                        since_first_change = %humantime::format_duration(Duration::from_millis(latency.as_millis() as u64)),
                        "purged"
                    );
                }
                Err(f) => {
                    tracing::error!(target = %sent.target, files = sent.files, request = %desc, "purge failed for good, dropping it: {f}");
                }
            }
            let id = self.store.as_mut().and_then(|s| {
                s.record_purge(&deliver::record(&sent.target, sent.files, desc, res))
                    .map_err(|e| tracing::warn!("could not record the purge: {e}"))
                    .ok()
            });
            if let (Ok(acc), Some(provider), Some(t)) =
                (res, self.providers.get(&sent.target), self.config.target(&sent.target))
                && let Some(job_id) = acc.job_id.clone()
            {
                let (provider, pacer, rate, target, request, batch) = (
                    provider.clone(),
                    self.pacer.clone(),
                    t.rate_limit,
                    sent.target.clone(),
                    desc.clone(),
                    batch.clone(),
                );
                self.jobs.spawn(async move {
                    let outcome = deliver::follow_job(&provider, &pacer, rate, &job_id, JOB_FOLLOW).await;
                    JobDone {
                        target,
                        batch,
                        awaiting,
                        request,
                        record: id,
                        job_id,
                        outcome,
                    }
                });
            }
        }
        if let Some(s) = self.store.as_mut()
            && let Err(e) = s.clear_pending(&sent.target, sent.max_seq)
        {
            tracing::error!(target = %sent.target, "could not clear sent purges from the state directory (they will be sent again after a restart): {e}");
        }
        if let Some(p) = self.pending.get_mut(&sent.target) {
            p.retain(|_, r| r.seq > sent.max_seq);
            if !p.is_empty() && self.batcher.first_change(&sent.target).is_none() {
                self.touch_target(&sent.target, Instant::now());
            }
        }
        self.publish_pending();
        systemd::status(&self.summary());
    }

    fn on_job(&mut self, job: JobDone) {
        let state = match &job.outcome {
            JobOutcome::Done(_) => "done",
            JobOutcome::Failed(_) => "failed",
            JobOutcome::Unknown(_) => "unknown",
        };
        metrics::get().job(&job.target, state);
        if let Some(id) = job.awaiting
            && let Some(a) = self.awaiting.get_mut(&id)
        {
            a.ok &= matches!(job.outcome, JobOutcome::Done(_));
            a.jobs_left = a.jobs_left.saturating_sub(1);
            if a.jobs_left == 0 {
                let a = self.awaiting.remove(&id).expect("just seen");
                if a.ok {
                    self.verify_batch(&a.target, &a.batch);
                }
            }
        }
        match &job.outcome {
            JobOutcome::Done(s) => {
                tracing::info!(target = %job.target, job = %job.job_id, state = %s, "provider finished the purge")
            }
            JobOutcome::Failed(s) => {
                tracing::error!(target = %job.target, job = %job.job_id, state = %s, request = %job.request, "the provider's purge job failed");
                let error = format!("the provider's job {} failed: {s}", job.job_id);
                self.tell_failure(&job.target, &job.request, &error, &job.batch);
            }
            JobOutcome::Unknown(s) => {
                tracing::warn!(target = %job.target, job = %job.job_id, request = %job.request, "could not learn how the purge job ended: {s}")
            }
        }
        if let (Some(s), Some(id)) = (self.store.as_mut(), job.record)
            && let Err(e) = s.update_job(id, job.outcome.short_state(), Some(job.outcome.state()))
        {
            tracing::warn!("could not record the job result: {e}");
        }
    }

    fn reload(&mut self, why: &str) {
        let loaded = match config::load(
            &self.config.source,
            LoadOptions {
                dry_run: self.opts.dry_run,
            },
        ) {
            Ok(l) => l,
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::error!("reload ({why}) failed, the current rules stay in force: {line}");
                }
                systemd::status("reload failed: the current rules stay in force");
                return;
            }
        };
        systemd::reloading();
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let new = loaded.config;
        if new.state_dir != self.config.state_dir {
            tracing::warn!("state_dir changes take effect at the next start");
        }
        if new.metrics_listen != self.config.metrics_listen {
            // The old endpoint goes first: the new address may be the same port on another
            // interface.
            self.monitor = None;
            if let Some(addr) = new.metrics_listen {
                match crate::monitor::start(addr) {
                    Ok(server) => self.monitor = Some(server),
                    Err(e) => tracing::error!("reload: {e}; /metrics and /healthz are off until the next reload"),
                }
            }
        }
        // Rules that are gone, or that now watch another directory, are dropped; a rule that
        // keeps its directory keeps its watch, manifest and dirty paths.
        let mut i = 0;
        while i < self.rules.len() {
            let keep = new
                .rule(&self.rules[i].rule.name)
                .is_some_and(|r| r.watch == self.rules[i].rule.watch);
            if keep {
                i += 1;
            } else {
                self.remove_rule(i);
            }
        }
        self.config = Config {
            state_dir: self.config.state_dir.clone(),
            ..new.clone()
        };
        self.set_providers();
        for t in self.pending.keys().cloned().collect::<Vec<_>>() {
            if self.config.target(&t).is_none() {
                tracing::warn!(target = %t, "target removed: its pending purges are kept in the state directory but not sent");
                self.pending.remove(&t);
                self.batcher.forget(&t);
            }
        }
        for rule in new.rules {
            match self.rules.iter_mut().find(|r| r.rule.name == rule.name) {
                Some(rt) => {
                    rt.filter = Filter::new(&rule);
                    rt.rule = rule;
                }
                None => {
                    let name = rule.name.clone();
                    if let Err(e) = self.add_rule(rule, BTreeSet::new()) {
                        tracing::error!(rule = %name, "could not start watching: {e}");
                    }
                }
            }
        }
        let names: Vec<&str> = self.rules.iter().map(|r| r.rule.name.as_str()).collect();
        metrics::get().health.retain_rules(&names);
        self.publish_pending();
        let status = self.summary();
        tracing::info!("reloaded {}: {status}", self.config.source.display());
        systemd::ready(&status);
    }

    /// Stops watching, sends everything pending (bounded by `shutdown_timeout`), and returns.
    async fn stop(&mut self) {
        systemd::stopping();
        self.watcher = None;
        tracing::info!("stopping: sending pending purges");
        for i in 0..self.rules.len() {
            if self.rules[i].rescan.is_some() || self.rules[i].changes.has_dirty() {
                self.settle(i);
            }
        }
        self.commit_settled();
        let deadline = Instant::now() + self.config.shutdown_timeout;
        loop {
            for t in self.batcher.take_all() {
                self.start_send(&t);
            }
            let idle: Vec<String> = self
                .pending
                .iter()
                .filter(|(t, p)| !p.is_empty() && !self.batcher.is_busy(t))
                .map(|(t, _)| t.clone())
                .collect();
            for t in idle {
                self.start_send(&t);
            }
            if self.sends.is_empty() {
                break;
            }
            tokio::select! {
                Some(res) = self.sends.join_next() => if let Ok(sent) = res { self.on_sent(sent) },
                _ = sleep_until(deadline) => {
                    let left: usize = self.pending.values().map(|p| p.len()).sum();
                    tracing::warn!(
                        files = left,
                        "shutdown timeout ({}) reached: what is still pending is kept in the state directory and sent at the next start",
                        humantime::format_duration(self.config.shutdown_timeout)
                    );
                    self.sends.abort_all();
                    break;
                }
            }
        }
        self.jobs.abort_all();
        self.verifies.abort_all();
        self.flush_deferred(usize::MAX);
        tracing::info!("stopped");
    }
}
