//! Sending what is queued: planning a target's batch, the send and its outcome (logs, state,
//! metrics, `on_failure`), following provider jobs, and verifying or warming the edge after.

use super::*;
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

/// Provider jobs followed at once per target, at most: a provider whose jobs never end would
/// otherwise gain a follower with every batch, each polling on the target's rate limit, until the
/// purges themselves wait for them. Past it, the oldest is given up (its state unknown, logged).
pub(super) const MAX_FOLLOWED: usize = 8;

/// A job being followed, and what its end is reported with.
pub(super) struct Followed {
    handle: tokio::task::AbortHandle,
    batch: Arc<Vec<PendingFile>>,
    awaiting: Option<u64>,
    request: String,
    record: Option<PurgeId>,
    job_id: String,
}

pub(super) struct JobDone {
    pub(super) target: String,
    /// The files of the batch the job purges.
    pub(super) batch: Arc<Vec<PendingFile>>,
    /// The batch's entry in [`Daemon::awaiting`], when it is to be verified or warmed.
    pub(super) awaiting: Option<u64>,
    /// The request the job came from, as the log lines describe it.
    pub(super) request: String,
    pub(super) record: Option<PurgeId>,
    pub(super) job_id: String,
    pub(super) outcome: JobOutcome,
}

/// A purged batch waiting for its provider jobs to end before it is verified or warmed.
pub(super) struct Awaiting {
    pub(super) target: String,
    pub(super) batch: Arc<Vec<PendingFile>>,
    pub(super) jobs_left: usize,
    /// Every job so far ended in success.
    pub(super) ok: bool,
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

/// A send told of a retry (see [`Daemon::on_retried`]).
pub(super) struct Retried {
    target: String,
    attempt: u32,
    error: String,
}

impl Daemon {
    /// Each target's queue, for `/metrics`: the files queued for it, and those changed since in
    /// the trees of its rules, not compared yet (while a purge is retried, those can be most).
    /// A file in both is counted twice: it is purged twice.
    pub(super) fn publish_pending(&self) {
        for t in &self.config.targets {
            let rows = self.pending.get(&t.name);
            let feeding = self.rules.iter().filter(|r| r.rule.targets.contains(&t.name));
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

    /// Whether a batch just sent counts toward verifying or warming its files, and when: at
    /// once when no request left a provider job to follow, else once every job has ended (see
    /// [`Daemon::on_job`]). Returns the batch's entry in `awaiting`, when it has one.
    pub(super) fn await_batch(
        &mut self,
        target: &str,
        batch: &Arc<Vec<PendingFile>>,
        results: &[Delivery],
    ) -> Option<u64> {
        let wanted = self
            .config
            .rules
            .iter()
            .any(|r| (r.verify.is_some() || r.warm) && r.targets.iter().any(|t| t == target));
        if !wanted || results.is_empty() {
            return None;
        }
        if results.iter().any(|d| d.result.is_err()) {
            self.gate.failed(batch);
            return None;
        }
        let jobs = results.iter().filter(|d| d.job().is_some()).count();
        if jobs == 0 {
            self.target_purged(target, batch);
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

    /// `target`'s purge of `batch` has ended well: the files every target of their rule has now
    /// purged are verified (and warmed), rule by rule.
    pub(super) fn target_purged(&mut self, target: &str, batch: &[PendingFile]) {
        for (rule, files) in self.gate.purged(target, batch) {
            self.verify_rule(&rule, &files);
        }
    }

    /// Every target of `rule` has purged `files`: check a sample on the edge (and warm it, with
    /// `warm: true`), on tasks of their own.
    fn verify_rule(&mut self, rule: &str, files: &[PendingFile]) {
        let Some(rule) = self.config.rule(rule) else { return };
        let targets: Vec<(Target, Arc<Provider>)> = rule
            .targets
            .iter()
            .filter_map(|t| Some((self.config.target(t)?.clone(), self.providers.get(t)?.clone())))
            .collect();
        let Some(v) = &rule.verify else { return };
        let rate = targets.iter().map(|(t, _)| t.rate_limit).fold(f64::INFINITY, f64::min);
        if rule.warm {
            let urls: Vec<String> = files
                .iter()
                .filter(|f| f.kind != crate::manifest::ChangeKind::Deleted)
                .map(|f| verify::check_url(rule, &f.path))
                .collect();
            let (http, base, limit, after, name) = (
                self.edge.clone(),
                v.base_url.clone(),
                rule.warm_limit,
                v.after,
                rule.name.clone(),
            );
            let pace = verify::Pace {
                pacer: self.pacer.clone(),
                rate,
            };
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let ok = verify::warm(&http, &base, &urls, limit, Some(pace)).await;
                tracing::info!(rule = %name, warmed = ok, of = urls.len().min(limit), "warmed the edge");
            });
        }
        let empty = Manifest::default();
        let manifest = self.manifests.get(&rule.name).map_or(&empty, |m| &**m);
        let expects = verify::sample(rule, files, manifest, v.sample);
        if expects.is_empty() || targets.is_empty() {
            return;
        }
        self.verifies.spawn(verify::run(verify::Job {
            targets,
            rule: rule.clone(),
            verify: v.clone(),
            expects,
            pacer: self.pacer.clone(),
            http: self.edge.clone(),
        }));
    }

    pub(super) fn on_verified(&mut self, r: verify::Report) {
        let m = metrics::get();
        let targets = r.targets.join(",");
        for t in &r.targets {
            m.verified(t, "fresh", r.fresh);
            m.verified(t, "stale", r.stale.len());
            m.verified(t, "unreachable", r.unreachable.len());
        }
        for (url, why) in &r.unreachable {
            tracing::warn!(rule = %r.rule, targets = %targets, "could not verify {url}: {why} (is verify.base_url right and up?)");
        }
        for (url, why) in &r.stale {
            tracing::error!(
                rule = %r.rule,
                targets = %targets,
                "still stale after {} re-purge{} through every target of the rule: {url} {why}",
                r.repurges,
                if r.repurges == 1 { "" } else { "s" }
            );
        }
        if r.stale.is_empty() && r.fresh == 0 && !r.unreachable.is_empty() {
            tracing::warn!(rule = %r.rule, targets = %targets, checked = r.checked, unreachable = r.unreachable.len(), "not verified: the edge did not answer for any URL checked");
        } else if r.stale.is_empty() && r.unreachable.is_empty() {
            tracing::info!(rule = %r.rule, targets = %targets, checked = r.checked, fresh = r.fresh, repurges = r.repurges, "verified: the edge serves the new bytes");
        } else if r.stale.is_empty() {
            tracing::info!(rule = %r.rule, targets = %targets, checked = r.checked, fresh = r.fresh, unreachable = r.unreachable.len(), repurges = r.repurges, "partly verified: the edge serves the new bytes where it answered");
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
        if let Some(w) = &self.writer {
            for t in &r.targets {
                let v = crate::state::VerifyRecord {
                    target: t.clone(),
                    at_ms: now_ms(),
                    checked: r.checked as i64,
                    fresh: r.fresh as i64,
                    stale: r.stale.len() as i64,
                    unreachable: r.unreachable.len() as i64,
                    detail: detail.clone(),
                };
                w.queue(move |d| {
                    if let Err(e) = d.store.record_verification(&v) {
                        tracing::warn!("could not record the verification: {e}");
                    }
                });
            }
        }
        if !r.stale.is_empty() {
            let error = detail.unwrap_or_default();
            let request = format!("verify {}", r.rule);
            for t in &r.targets {
                self.tell_failure(t, &request, &error, &[]);
            }
        }
    }

    /// Tells `on_failure` (when the target has one) that a purge failed.
    pub(super) fn tell_failure(&mut self, target: &str, request: &str, error: &str, files: &[PendingFile]) {
        let Some(argv) = self.config.target(target).and_then(|t| t.on_failure.clone()) else {
            return;
        };
        let urls = batch_urls(files, &self.config.rules, crate::hook::MAX_URLS);
        let secrets = self.config.secrets();
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

    pub(super) fn start_send(&mut self, target: &str) {
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
        // The patterns are built by the send's own task, on a blocking thread: for 1,000 files
        // they take ~20 ms, which the loop does not wait for.
        let draft = plan::draft(&t, &files, &self.config.rules, &self.manifests);
        let why = summarize_files(&files);
        if self.opts.dry_run {
            let urls = urls_of(&files, &self.config.rules);
            for req in &draft.requests() {
                // What it would cost (a CloudFront target), counting the month from the state.
                match provider.cost(req, self.seed.as_ref()) {
                    Some(cost) => {
                        tracing::info!(target = %target, files = files.len(), request = %provider.describe(req), cost = %cost, urls = %urls, why = %why, "dry-run: would purge")
                    }
                    None => {
                        tracing::info!(target = %target, files = files.len(), request = %provider.describe(req), urls = %urls, why = %why, "dry-run: would purge")
                    }
                }
            }
            self.pending.remove(target);
            return;
        }
        tracing::debug!(target = %target, files = files.len(), why = %why, "sending purge");
        self.batcher.set_busy(target, true);
        let pacer = self.pacer.clone();
        let name = target.to_string();
        let n = files.len();
        if let Some(w) = &self.writer {
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
        let retried = self.retried_tx.clone();
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
    }

    /// A send is being retried: recorded for `status`.
    pub(super) fn on_retried(&mut self, r: Retried) {
        if let Some(w) = &self.writer {
            let error = crate::secret::scrub(&r.error).into_owned();
            w.queue(move |d| {
                if let Err(e) = d.store.retrying(&r.target, r.attempt, &error) {
                    tracing::warn!("could not write the state: {e}");
                }
            });
        }
    }

    pub(super) fn on_sent(&mut self, mut sent: Sent) {
        self.batcher.set_busy(&sent.target, false);
        if let Some(w) = &self.writer {
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
                self.tell_failure(&sent.target, &d.desc, &f.to_string(), &sent.batch);
            }
        }
        let batch = Arc::new(std::mem::take(&mut sent.batch));
        let awaiting = self.await_batch(&sent.target, &batch, &sent.results);
        for d in &sent.results {
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
            let id = d.save(self.writer.as_mut(), &sent.target, sent.files);
            if let Some(job_id) = d.job() {
                self.follow_job(&sent.target, &d.desc, job_id, id, &batch, awaiting);
            }
        }
        if let Some(w) = &self.writer {
            let (target, max_seq) = (sent.target.clone(), sent.max_seq);
            w.queue(move |d| {
                if let Err(e) = d.store.clear_pending(&target, max_seq) {
                    tracing::error!(target = %target, "could not clear sent purges from the state directory (they will be sent again after a restart): {e}");
                }
            });
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

    /// Follows provider job `job_id` of `target`'s request `desc` until it ends (see
    /// [`Daemon::on_job`]), on a task of its own.
    fn follow_job(
        &mut self,
        target: &str,
        desc: &str,
        job_id: &str,
        id: Option<PurgeId>,
        batch: &Arc<Vec<PendingFile>>,
        awaiting: Option<u64>,
    ) {
        let (Some(provider), Some(t)) = (self.providers.get(target), self.config.target(target)) else {
            return;
        };
        let (provider, pacer, rate, target, request, batch, job_id) = (
            provider.clone(),
            self.pacer.clone(),
            t.rate_limit,
            target.to_string(),
            desc.to_string(),
            batch.clone(),
            job_id.to_string(),
        );
        let follow = Followed {
            handle: self.jobs.spawn({
                let (target, batch, request, job_id) = (target.clone(), batch.clone(), request.clone(), job_id.clone());
                async move {
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
                }
            }),
            batch,
            awaiting,
            request,
            record: id,
            job_id,
        };
        self.follow(&target, follow);
    }

    /// Follows a job, giving up the target's oldest past [`MAX_FOLLOWED`].
    fn follow(&mut self, target: &str, job: Followed) {
        let queue = self.followed.entry(target.to_string()).or_default();
        queue.push_back(job);
        if queue.len() <= MAX_FOLLOWED {
            return;
        }
        let Some(oldest) = queue.pop_front() else { return };
        oldest.handle.abort();
        let why = format!(
            "no longer followed: {MAX_FOLLOWED} newer purges of this target are (its jobs do not end; is the provider's queue stuck?)"
        );
        // on_job logs it: "could not learn how the purge job ended: no longer followed …".
        self.on_job(JobDone {
            target: target.to_string(),
            batch: oldest.batch,
            awaiting: oldest.awaiting,
            request: oldest.request,
            record: oldest.record,
            job_id: oldest.job_id,
            outcome: JobOutcome::Unknown(why),
        });
    }

    pub(super) fn on_job(&mut self, job: JobDone) {
        if let Some(queue) = self.followed.get_mut(&job.target) {
            queue.retain(|f| f.job_id != job.job_id);
        }
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
                    self.target_purged(&a.target, &a.batch);
                } else {
                    tracing::warn!(
                        target = %a.target,
                        files = a.batch.len(),
                        "not verified or warmed: a provider job of the batch did not end in success (see its log line)"
                    );
                    self.gate.failed(&a.batch);
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
        deliver::record_job(self.writer.as_mut(), job.record, &job.outcome);
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
        assert!(h.d.sends.is_empty(), "nothing is sent");
        assert!(h.pending("cdn").is_empty());
    }

    #[test]
    fn a_batchs_urls_name_the_files_of_a_removed_rule_by_their_path() {
        let rule = Rule::new("site", "/srv/public");
        let files = [
            PendingFile {
                rule: "site".into(),
                path: "blog/index.html".into(),
                kind: crate::manifest::ChangeKind::Modified,
            },
            PendingFile {
                rule: "old".into(),
                path: "x.html".into(),
                kind: crate::manifest::ChangeKind::Deleted,
            },
        ];
        let urls = batch_urls(&files, std::slice::from_ref(&rule), 10);
        assert!(urls.iter().any(|u| u.ends_with("/blog/")), "{urls:?}");
        assert!(urls.contains(&"(rule old removed) x.html".to_string()), "{urls:?}");
        assert_eq!(batch_urls(&files, &[rule], 1).len(), 1, "at most `limit`");
    }
}
