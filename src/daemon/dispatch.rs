//! Sending what is queued. The [`Dispatcher`] owns each target's queue, its provider, the sends
//! and provider jobs under way, their pacing and the `on_failure` hooks: it plans a target's
//! batch, sends it, reports its outcome (logs, state, metrics, `on_failure`) and follows its
//! jobs, telling the [`Verifier`] what was purged. The daemon hands it the rules, the records
//! and the state writer, and keeps the batching clock (see [`Daemon::start_send`]).

use std::collections::VecDeque;

use tokio::task::JoinError;

use super::verifier::{Sources, Verifier};
use super::*;
pub(super) use jobs::JobDone;
use jobs::{Followed, Job};

mod jobs;
use crate::hook::Hooks;
use crate::state::Sending;

pub(super) struct Sent {
    pub(super) target: String,
    /// The batch's files.
    pub(super) batch: Vec<PendingFile>,
    pub(super) files: usize,
    pub(super) max_seq: i64,
    pub(super) first_seen_ms: i64,
    pub(super) results: Vec<Delivery>,
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

/// The URLs of `files`, `limit` at most (a file whose rule is gone is named as such).
fn batch_urls(files: &[PendingFile], rules: &[Rule], limit: usize) -> Vec<String> {
    let mut urls = Vec::new();
    for f in files {
        match rules.iter().find(|r| r.name == f.rule) {
            Some(r) => urls.extend(plan::urls_for(r, &f.path)),
            None => urls.push(format!("(rule {} removed) {}", f.rule, f.path)),
        }
        if urls.len() >= limit {
            urls.truncate(limit);
            break;
        }
    }
    urls
}

/// The first 20 URLs of `files`, for a log line.
fn urls_of(files: &[PendingFile], rules: &[Rule]) -> String {
    let mut urls = batch_urls(files, rules, 21);
    if urls.len() > 20 {
        urls.truncate(20);
        urls.push("…".into());
    }
    urls.join(" ")
}

/// A send told of a retry (see [`Dispatcher::retried`]).
pub(super) struct Retried {
    target: String,
    attempt: u32,
    error: String,
}

/// What woke the loop on the dispatcher's side.
pub(super) enum Dispatched {
    Sent(Result<Sent, JoinError>),
    Job(Result<JobDone, JoinError>),
    Retried(Retried),
}

impl Dispatched {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Dispatched::Sent(_) => "a purge sent",
            Dispatched::Job(_) => "a provider job",
            Dispatched::Retried(_) => "a retry",
        }
    }
}

/// What sending needs of the rest of the daemon.
pub(super) struct Cx<'a> {
    pub(super) config: &'a Config,
    pub(super) manifests: &'a BTreeMap<String, Arc<Manifest>>,
    /// None in a dry run, which writes nothing.
    pub(super) writer: Option<&'a mut Writer>,
    /// In a dry run, the state file read (for what a request would cost this month).
    pub(super) seed: Option<&'a Store>,
}

impl Cx<'_> {
    fn sources<'a>(&'a self, providers: &'a BTreeMap<String, Arc<Provider>>) -> Sources<'a> {
        Sources {
            config: self.config,
            providers,
            manifests: self.manifests,
        }
    }
}

pub(super) struct Dispatcher {
    /// target → (rule, path) → row
    pending: BTreeMap<String, BTreeMap<(String, String), PendingRow>>,
    next_seq: i64,
    providers: BTreeMap<String, Arc<Provider>>,
    pacer: Arc<Pacer>,
    http: reqwest::Client,
    hooks: Hooks,
    sends: JoinSet<Sent>,
    jobs: JoinSet<JobDone>,
    /// The provider jobs followed, per target, oldest first (at most [`MAX_FOLLOWED`]).
    followed: HashMap<String, VecDeque<Followed>>,
    /// Sends tell of their retries here, for `status`.
    retried_tx: mpsc::UnboundedSender<Retried>,
    retried_rx: mpsc::UnboundedReceiver<Retried>,
    /// Plan and log, send nothing.
    dry_run: bool,
}

/// How a target's queue was taken up by [`Dispatcher::send`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// Nothing queued (or the target is gone).
    Nothing,
    /// A dry run: logged and forgotten.
    Logged,
    /// A send is under way.
    Sending,
}

impl Dispatcher {
    pub(super) fn new(targets: &[Target], pacer: Arc<Pacer>, dry_run: bool) -> Dispatcher {
        let (retried_tx, retried_rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher {
            pending: BTreeMap::new(),
            next_seq: 1,
            providers: BTreeMap::new(),
            pacer,
            http: providers::http_client(),
            hooks: Hooks::default(),
            sends: JoinSet::new(),
            jobs: JoinSet::new(),
            followed: HashMap::new(),
            retried_tx,
            retried_rx,
            dry_run,
        };
        d.set_providers(targets);
        d
    }

    /// A provider for each of `targets` (after a reload: new ones for all).
    pub(super) fn set_providers(&mut self, targets: &[Target]) {
        self.providers = targets
            .iter()
            .map(|t| (t.name.clone(), Arc::new(Provider::new(t, self.http.clone()))))
            .collect();
    }

    /// The next send, job or retry to report; pending while there is none.
    pub(super) async fn next(&mut self) -> Dispatched {
        tokio::select! {
            Some(res) = self.sends.join_next(), if !self.sends.is_empty() => Dispatched::Sent(res),
            Some(res) = self.jobs.join_next(), if !self.jobs.is_empty() => Dispatched::Job(res),
            Some(r) = self.retried_rx.recv() => Dispatched::Retried(r),
        }
    }

    /// The next send to end (at shutdown, when jobs and retries no longer matter).
    pub(super) async fn next_sent(&mut self) -> Option<Sent> {
        self.sends.join_next().await.and_then(Result::ok)
    }

    /// Whether a send is under way.
    pub(super) fn sending(&self) -> bool {
        !self.sends.is_empty()
    }

    #[cfg(test)]
    pub(super) fn sends_running(&self) -> usize {
        self.sends.len()
    }

    /// Sends under way are given up (their files stay queued in the state directory).
    pub(super) fn abort_sends(&mut self) {
        self.sends.abort_all();
    }

    /// Provider jobs are no longer followed (at shutdown).
    pub(super) fn abort_jobs(&mut self) {
        self.jobs.abort_all();
    }

    /// What is queued for `target`, by (rule, path).
    pub(super) fn queued(&self, target: &str) -> Option<&BTreeMap<(String, String), PendingRow>> {
        self.pending.get(target)
    }

    /// The targets something is queued for.
    pub(super) fn queued_targets(&self) -> impl Iterator<Item = &str> {
        self.pending
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(t, _)| t.as_str())
    }

    /// The rows queued for every target from rule `rule`.
    pub(super) fn rows_of(&self, rule: &str) -> Vec<PendingRow> {
        self.pending
            .values()
            .flat_map(|p| p.values())
            .filter(|r| r.file.rule == rule)
            .cloned()
            .collect()
    }

    /// The files queued, for every target.
    pub(super) fn queued_files(&self) -> usize {
        self.pending.values().map(|p| p.len()).sum()
    }

    /// Queues `changes` of rule `rule` for each of `targets` (a file already queued for a target
    /// keeps its first-seen time; one queued now counts from `now`, ms). Returns the rows, for
    /// the state.
    pub(super) fn queue(&mut self, targets: &[String], rule: &str, changes: &[Change], now: i64) -> Vec<PendingRow> {
        let mut rows = Vec::with_capacity(targets.len() * changes.len());
        for t in targets {
            let queued = self.pending.get(t);
            for Change { path, kind } in changes {
                let key = (rule.to_string(), path.clone());
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
        for row in &rows {
            self.pending
                .entry(row.target.clone())
                .or_default()
                .insert((row.file.rule.clone(), row.file.path.clone()), row.clone());
        }
        rows
    }

    /// Takes up the purges the last run queued and did not send (for targets still in
    /// `config`). Returns the targets that have some, each logged.
    pub(super) fn restore(&mut self, rows: Vec<PendingRow>, config: &Config) -> Vec<String> {
        for row in rows {
            if config.target(&row.target).is_none() {
                continue;
            }
            self.next_seq = self.next_seq.max(row.seq + 1);
            self.pending
                .entry(row.target.clone())
                .or_default()
                .insert((row.file.rule.clone(), row.file.path.clone()), row);
        }
        let targets: Vec<String> = self.queued_targets().map(str::to_string).collect();
        for t in &targets {
            let files = self.pending.get(t).map_or(0, |p| p.len());
            tracing::info!(target = %t, files, "queued purges left from the last run");
        }
        targets
    }

    /// Forgets the queues of targets no longer in `config` (they stay in the state directory).
    /// Returns those targets.
    pub(super) fn keep_targets(&mut self, config: &Config) -> Vec<String> {
        let gone: Vec<String> = self
            .pending
            .keys()
            .filter(|t| config.target(t).is_none())
            .cloned()
            .collect();
        for t in &gone {
            tracing::warn!(target = %t, "target removed: its pending purges are kept in the state directory but not sent");
            self.pending.remove(t);
        }
        gone
    }

    /// Tells `on_failure` (when the target has one) that a purge failed.
    pub(super) fn tell_failure(
        &mut self,
        config: &Config,
        target: &str,
        request: &str,
        error: &str,
        files: &[PendingFile],
    ) {
        let Some(argv) = config.target(target).and_then(|t| t.on_failure.clone()) else {
            return;
        };
        let urls = batch_urls(files, &config.rules, crate::hook::MAX_URLS);
        let secrets = config.secrets();
        self.hooks.fire(
            &argv,
            crate::hook::Failure {
                target: target.to_string(),
                request: request.to_string(),
                error: error.to_string(),
                files: files.len(),
                urls,
            },
            &secrets,
        );
    }

    /// Sends what is queued for `target`, on a task of its own (in a dry run, logs what it would
    /// send and forgets it).
    pub(super) fn send(&mut self, target: &str, cx: &Cx) -> Taken {
        let Some(rows) = self.pending.get(target).filter(|p| !p.is_empty()) else {
            return Taken::Nothing;
        };
        let (Some(t), Some(provider)) = (cx.config.target(target).cloned(), self.providers.get(target).cloned()) else {
            return Taken::Nothing;
        };
        let files: Vec<PendingFile> = rows.values().map(|r| r.file.clone()).collect();
        let max_seq = rows.values().map(|r| r.seq).max().unwrap_or(0);
        let first_seen_ms = rows.values().map(|r| r.first_seen_ms).min().unwrap_or_else(now_ms);
        // The patterns are built by the send's own task, on a blocking thread: for 1,000 files
        // they take ~20 ms, which the loop does not wait for.
        let draft = plan::draft(&t, &files, &cx.config.rules, cx.manifests);
        let why = summarize_files(&files);
        if self.dry_run {
            log_dry_run(target, &provider, draft, &files, cx, &why);
            self.pending.remove(target);
            return Taken::Logged;
        }
        tracing::debug!(target = %target, files = files.len(), why = %why, "sending purge");
        let name = target.to_string();
        let n = files.len();
        if let Some(w) = &cx.writer {
            let (name, sending) = (
                name.clone(),
                Sending {
                    since_ms: now_ms(),
                    files: n as i64,
                    ..Default::default()
                },
            );
            w.queue(move |d| {
                if let Err(e) = d.store.set_sending(&name, &sending) {
                    tracing::warn!("could not write the state: {e}");
                }
            });
        }
        let (pacer, retried) = (self.pacer.clone(), self.retried_tx.clone());
        self.sends.spawn(async move {
            let planning = std::time::Instant::now();
            let requests = match tokio::task::spawn_blocking(move || draft.requests()).await {
                Ok(requests) => requests,
                // Cannot happen short of a bug; then everything is purged, never a stale page.
                Err(e) => {
                    tracing::error!(target = %name, "planning the purge failed ({e}): purging everything instead");
                    vec![plan::everything(&t)]
                }
            };
            tracing::debug!(target = %name, files = n, requests = requests.len(), plan_ms = planning.elapsed().as_millis() as u64, "planned");
            let tell = |attempt, error| {
                let _ = retried.send(Retried {
                    target: name.clone(),
                    attempt,
                    error,
                });
            };
            let results = deliver::deliver_observed(&provider, &pacer, &t.retry, t.rate_limit, requests, &tell).await;
            Sent {
                target: name,
                batch: files,
                files: n,
                max_seq,
                first_seen_ms,
                results,
            }
        });
        Taken::Sending
    }

    /// A send is being retried: recorded for `status`.
    pub(super) fn retried(&self, r: Retried, writer: Option<&Writer>) {
        if let Some(w) = writer {
            let error = crate::secret::scrub(&r.error).into_owned();
            w.queue(move |d| {
                if let Err(e) = d.store.retrying(&r.target, r.attempt, &error) {
                    tracing::warn!("could not write the state: {e}");
                }
            });
        }
    }

    /// A send ended: its outcome logged, counted and written, its failures told, its jobs
    /// followed, its files handed to the verifier and taken off the queue. Returns whether the
    /// target has files queued since.
    pub(super) fn sent(&mut self, mut sent: Sent, cx: &mut Cx, verifier: &mut Verifier) -> bool {
        if let Some(w) = &cx.writer {
            let name = sent.target.clone();
            w.queue(move |d| {
                if let Err(e) = d.store.clear_sending(Some(&name)) {
                    tracing::warn!("could not write the state: {e}");
                }
            });
        }
        let latency = Duration::from_millis((now_ms() - sent.first_seen_ms).max(0) as u64);
        self.count_sent(&sent, latency);
        for d in &sent.results {
            if let Err(f) = &d.result {
                self.tell_failure(cx.config, &sent.target, &d.desc, &f.to_string(), &sent.batch);
            }
        }
        let batch = Arc::new(std::mem::take(&mut sent.batch));
        let awaiting = verifier.sent(&sent.target, &batch, &sent.results, &cx.sources(&self.providers));
        for d in &sent.results {
            log_result(&sent, d, latency);
            let id = d.save(cx.writer.as_deref_mut(), &sent.target, sent.files);
            if let Some(job_id) = d.job() {
                let job = Job {
                    target: &sent.target,
                    desc: &d.desc,
                    job_id,
                    record: id,
                    batch: &batch,
                    awaiting,
                };
                self.follow_job(job, cx, verifier);
            }
        }
        if let Some(w) = &cx.writer {
            let (target, max_seq) = (sent.target.clone(), sent.max_seq);
            w.queue(move |d| {
                if let Err(e) = d.store.clear_pending(&target, max_seq) {
                    tracing::error!(target = %target, "could not clear sent purges from the state directory (they will be sent again after a restart): {e}");
                }
            });
        }
        let Some(p) = self.pending.get_mut(&sent.target) else {
            return false;
        };
        p.retain(|_, r| r.seq > sent.max_seq);
        !p.is_empty()
    }

    /// Counts a send's requests, and its files as purged when every request was accepted.
    fn count_sent(&self, sent: &Sent, latency: Duration) {
        let provider_type = self.providers.get(&sent.target).map_or("unknown", |p| p.type_name());
        let m = metrics::get();
        for d in &sent.results {
            m.request(
                &sent.target,
                provider_type,
                if d.result.is_ok() { "accepted" } else { "failed" },
            );
        }
        if !sent.results.is_empty() && sent.results.iter().all(|d| d.result.is_ok()) {
            m.purged(&sent.target, sent.files, latency.as_secs_f64());
        }
    }
}

/// A dry run's log lines: each request it would send, with what it would cost (a CloudFront
/// target, counting the month from the state).
fn log_dry_run(target: &str, provider: &Provider, draft: plan::Draft, files: &[PendingFile], cx: &Cx, why: &str) {
    let urls = urls_of(files, &cx.config.rules);
    for req in &draft.requests() {
        let request = provider.describe(req);
        match provider.cost(req, cx.seed) {
            Some(cost) => {
                tracing::info!(target = %target, files = files.len(), request = %request, cost = %cost, urls = %urls, why = %why, "dry-run: would purge")
            }
            None => {
                tracing::info!(target = %target, files = files.len(), request = %request, urls = %urls, why = %why, "dry-run: would purge")
            }
        }
    }
}

/// One request's outcome, in the log.
fn log_result(sent: &Sent, d: &Delivery, latency: Duration) {
    match &d.result {
        Ok(acc) => {
            tracing::info!(
                target = %sent.target,
                files = sent.files,
                request = %d.desc,
                job = %acc.job_id.as_deref().unwrap_or("-"),
                since_first_change = %humantime::format_duration(Duration::from_millis(latency.as_millis() as u64)),
                "purged"
            );
        }
        Err(f) => {
            tracing::error!(target = %sent.target, files = sent.files, request = %d.desc, "purge failed for good, dropping it: {f}");
        }
    }
}

impl Daemon {
    /// The dispatcher and the verifier, with what sending reads of the rest of the daemon.
    fn sending_parts(&mut self) -> (Cx<'_>, &mut Dispatcher, &mut Verifier) {
        let cx = Cx {
            config: &self.config,
            manifests: self.rules.manifests(),
            writer: self.writer.as_mut(),
            seed: self.seed.as_ref(),
        };
        (cx, &mut self.dispatch, &mut self.verifier)
    }

    /// Sends what is queued for `target`; its batching clock marks it busy until the send is in.
    pub(super) fn start_send(&mut self, target: &str) {
        let (cx, dispatch, _) = self.sending_parts();
        if dispatch.send(target, &cx) == Taken::Sending {
            self.batcher.set_busy(target, true);
        }
    }

    /// Reports what the dispatcher's tasks sent back.
    pub(super) fn on_dispatched(&mut self, what: Dispatched) {
        match what {
            Dispatched::Sent(Ok(sent)) => self.on_sent(sent),
            Dispatched::Sent(Err(e)) => tracing::error!("a purge task died: {e}"),
            Dispatched::Job(Ok(job)) => {
                let (mut cx, dispatch, verifier) = self.sending_parts();
                dispatch.job_ended(job, &mut cx, verifier);
            }
            // Given up (see `MAX_FOLLOWED`), reported then.
            Dispatched::Job(Err(_)) => {}
            Dispatched::Retried(r) => self.dispatch.retried(r, self.writer.as_ref()),
        }
    }

    /// A send ended: the target's batching clock runs again, for what was queued meanwhile.
    pub(super) fn on_sent(&mut self, sent: Sent) {
        let target = sent.target.clone();
        self.batcher.set_busy(&target, false);
        let (mut cx, dispatch, verifier) = self.sending_parts();
        let more = dispatch.sent(sent, &mut cx, verifier);
        if more && self.batcher.first_change(&target).is_none() {
            self.touch_target(&target, Instant::now());
        }
        self.publish_pending();
        systemd::status(&self.summary());
    }

    /// A verification ended: what it found stale is told to `on_failure` of every target of
    /// the rule.
    pub(super) fn on_verified(&mut self, report: verify::Report) {
        if let Some(stale) = self.verifier.verified(report, self.writer.as_ref()) {
            for t in &stale.targets {
                self.dispatch
                    .tell_failure(&self.config, t, &stale.request, &stale.error, &[]);
            }
        }
    }

    /// Each target's queue, for `/metrics`: the files queued for it, and those changed since in
    /// the trees of its rules, not compared yet (while a purge is retried, those can be most).
    /// A file in both is counted twice: it is purged twice.
    pub(super) fn publish_pending(&self) {
        for t in &self.config.targets {
            let rows = self.dispatch.queued(&t.name);
            let feeding = self.rules.values().filter(|r| r.rule.targets.contains(&t.name));
            let (changed, first) = feeding.fold((0, None::<i64>), |(n, first), r| {
                let f = match (first, r.first_event_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (n + r.record.dirty_count(), f)
            });
            let n = rows.map_or(0, |r| r.len()) + changed;
            let oldest = rows
                .and_then(|r| r.values().map(|r| r.first_seen_ms).min())
                .into_iter()
                .chain(first.filter(|_| changed > 0))
                .min();
            metrics::get().set_pending(&t.name, n, oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_plans_and_forgets_what_it_would_send() {
        let mut h = Harness::new(&[("a.html", "a")], Options { dry_run: true });
        h.write("a.html", "a2");
        h.event("a.html");
        h.settle_due().await;
        assert!(!h.d.dispatch.sending(), "nothing is sent");
        assert!(h.pending("cdn").is_empty());
    }

    #[test]
    fn a_batchs_urls_name_the_files_of_a_removed_rule_by_their_path() {
        let rule = Rule::new("site", "/srv/public");
        let files = [
            PendingFile {
                rule: "site".into(),
                path: "blog/index.html".into(),
                kind: crate::request::ChangeKind::Modified,
            },
            PendingFile {
                rule: "old".into(),
                path: "x.html".into(),
                kind: crate::request::ChangeKind::Deleted,
            },
        ];
        let urls = batch_urls(&files, std::slice::from_ref(&rule), 10);
        assert!(urls.iter().any(|u| u.ends_with("/blog/")), "{urls:?}");
        assert!(urls.contains(&"(rule old removed) x.html".to_string()), "{urls:?}");
        assert_eq!(batch_urls(&files, &[rule], 1).len(), 1, "at most `limit`");
    }

    fn change(path: &str) -> Change {
        Change {
            path: path.into(),
            kind: crate::request::ChangeKind::Modified,
        }
    }

    #[tokio::test]
    async fn a_file_queued_again_keeps_its_first_seen_time_and_a_new_number() {
        let tmp = tempfile::tempdir().unwrap();
        let text = super::super::testing::rules_yaml(tmp.path(), "");
        std::fs::create_dir_all(tmp.path().join("public")).unwrap();
        let config = config::load_str(&tmp.path().join("rules.yaml"), &text, Default::default(), &|_| None)
            .unwrap()
            .config;
        let mut d = Dispatcher::new(&config.targets, Arc::new(Pacer::default()), false);
        let cdn = ["cdn".to_string()];
        let first = d.queue(&cdn, "site", &[change("a.html"), change("b.html")], 1_000);
        assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        let again = d.queue(&cdn, "site", &[change("a.html")], 5_000);
        assert_eq!(
            (again[0].seq, again[0].first_seen_ms),
            (3, 1_000),
            "a.html waits since its first change"
        );
        assert_eq!(d.queued_files(), 2);
        assert_eq!(d.rows_of("site").len(), 2);
        assert_eq!(d.queued_targets().collect::<Vec<_>>(), ["cdn"]);

        // A new dispatcher takes up what the last run left, numbering on after it; rows of
        // targets no longer configured are left alone.
        let mut rows = d.rows_of("site");
        rows.push(PendingRow {
            target: "gone".into(),
            ..rows[0].clone()
        });
        let mut next = Dispatcher::new(&config.targets, Arc::new(Pacer::default()), false);
        assert_eq!(next.restore(rows, &config), ["cdn"]);
        assert_eq!(next.queue(&cdn, "site", &[change("c.html")], 9_000)[0].seq, 4);

        // A reload without the target forgets its queue (the state directory keeps it).
        let mut without = config.clone();
        without.targets.clear();
        assert_eq!(next.keep_targets(&without), ["cdn"]);
        assert_eq!(next.queued_files(), 0);
        assert_eq!(
            next.send(
                "cdn",
                &Cx {
                    config: &config,
                    manifests: &BTreeMap::new(),
                    writer: None,
                    seed: None,
                }
            ),
            Taken::Nothing,
            "nothing queued, nothing sent"
        );
    }
}
