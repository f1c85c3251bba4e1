//! Checking the edge after a purge: which purged batches wait for their provider jobs, which
//! files every target of their rule has purged (the [`Gate`]), and the verifications and
//! warm-ups running for them. The [`Verifier`] owns all of it; the daemon tells it what was
//! queued, sent and finished, and hands it the rules, providers and records it reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::gate::Gate;
use crate::clock::now_ms;
use crate::config::{Config, Rule, Target};
use crate::deliver::{Delivery, Pacer};
use crate::manifest::Manifest;
use crate::metrics;
use crate::providers::Provider;
use crate::request::ChangeKind;
use crate::request::PendingFile;
use crate::state::Writer;
use crate::verify;

/// A purged batch waiting for its provider jobs to end before it is verified or warmed.
struct Awaiting {
    target: String,
    batch: Arc<Vec<PendingFile>>,
    jobs_left: usize,
    /// Every job so far ended in success.
    ok: bool,
}

/// What a verification found stale, for `on_failure` of each target of the rule.
pub(super) struct StaleFound {
    pub(super) targets: Vec<String>,
    pub(super) request: String,
    pub(super) error: String,
}

/// What verifying needs of the rest of the daemon.
pub(super) struct Sources<'a> {
    pub(super) config: &'a Config,
    pub(super) providers: &'a BTreeMap<String, Arc<Provider>>,
    pub(super) manifests: &'a BTreeMap<String, Arc<Manifest>>,
}

pub(super) struct Verifier {
    /// Which changes wait for which targets before the edge is checked.
    gate: Gate,
    /// Batches to verify or warm once every job of theirs has ended, by number.
    awaiting: HashMap<u64, Awaiting>,
    next_awaiting: u64,
    /// Verifications running (aborted at shutdown: they never hold it up).
    running: JoinSet<verify::Report>,
    /// The client for the edge (`verify.base_url`).
    edge: reqwest::Client,
    /// The pacing shared with the sends: a verification's re-purge waits its turn like a purge.
    pacer: Arc<Pacer>,
}

impl Verifier {
    pub(super) fn new(pacer: Arc<Pacer>) -> Verifier {
        Verifier {
            gate: Gate::default(),
            awaiting: HashMap::new(),
            next_awaiting: 0,
            running: JoinSet::new(),
            edge: verify::edge_client(),
            pacer,
        }
    }

    /// `files` of `rule` were queued for every target of the rule: each is verified once all
    /// of them have purged it.
    pub(super) fn expect(&mut self, rule: &Rule, files: impl IntoIterator<Item = PendingFile>) {
        self.gate.expect(rule, files);
    }

    /// Rules that are gone, or that no longer verify or warm, wait for nothing.
    pub(super) fn keep_rules(&mut self, rules: &[Rule]) {
        self.gate.keep_rules(rules);
    }

    /// The next verification to end; pending while none runs.
    pub(super) async fn next(&mut self) -> Option<verify::Report> {
        if self.running.is_empty() {
            return std::future::pending().await;
        }
        self.running.join_next().await.and_then(Result::ok)
    }

    /// Verifications are given up (at shutdown: they never hold it up).
    pub(super) fn abort(&mut self) {
        self.running.abort_all();
    }

    /// Whether a batch just sent counts toward verifying or warming its files, and when: at
    /// once when no request left a provider job to follow, else once every job has ended (see
    /// [`Verifier::job_ended`]). Returns the batch's number, for its jobs to report to.
    pub(super) fn sent(
        &mut self,
        target: &str,
        batch: &Arc<Vec<PendingFile>>,
        results: &[Delivery],
        from: &Sources,
    ) -> Option<u64> {
        let wanted = from
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
            self.target_purged(target, batch, from);
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

    /// A provider job of batch `awaiting` ended (`ok`: in success). Once every job of the batch
    /// has, its files count as purged by its target — or, when one failed, are not verified.
    pub(super) fn job_ended(&mut self, awaiting: u64, ok: bool, from: &Sources) {
        let Some(a) = self.awaiting.get_mut(&awaiting) else {
            return;
        };
        a.ok &= ok;
        a.jobs_left = a.jobs_left.saturating_sub(1);
        if a.jobs_left > 0 {
            return;
        }
        let Some(a) = self.awaiting.remove(&awaiting) else {
            return;
        };
        if a.ok {
            self.target_purged(&a.target, &a.batch, from);
        } else {
            tracing::warn!(
                target = %a.target,
                files = a.batch.len(),
                "not verified or warmed: a provider job of the batch did not end in success (see its log line)"
            );
            self.gate.failed(&a.batch);
        }
    }

    /// `target`'s purge of `batch` has ended well: the files every target of their rule has now
    /// purged are verified (and warmed), rule by rule.
    fn target_purged(&mut self, target: &str, batch: &[PendingFile], from: &Sources) {
        for (rule, files) in self.gate.purged(target, batch) {
            self.verify_rule(&rule, &files, from);
        }
    }

    /// Every target of `rule` has purged `files`: check a sample on the edge (and warm it, with
    /// `warm: true`), on tasks of their own.
    fn verify_rule(&mut self, rule: &str, files: &[PendingFile], from: &Sources) {
        let Some(rule) = from.config.rule(rule) else { return };
        let targets: Vec<(Target, Arc<Provider>)> = rule
            .targets
            .iter()
            .filter_map(|t| Some((from.config.target(t)?.clone(), from.providers.get(t)?.clone())))
            .collect();
        let Some(v) = &rule.verify else { return };
        let rate = targets.iter().map(|(t, _)| t.rate_limit).fold(f64::INFINITY, f64::min);
        if rule.warm {
            self.warm(rule, v, files, rate);
        }
        let empty = Manifest::default();
        let manifest = from.manifests.get(&rule.name).map_or(&empty, |m| &**m);
        let expects = verify::sample(rule, files, manifest, v.sample);
        if expects.is_empty() || targets.is_empty() {
            return;
        }
        self.running.spawn(verify::run(verify::Job {
            targets,
            rule: rule.clone(),
            verify: v.clone(),
            expects,
            pacer: self.pacer.clone(),
            http: self.edge.clone(),
        }));
    }

    /// Asks the edge for `files` of `rule` (not the deleted ones) once `verify.after` has passed,
    /// on a task of its own, at the targets' pace.
    fn warm(&self, rule: &Rule, v: &crate::config::Verify, files: &[PendingFile], rate: f64) {
        let urls: Vec<String> = files
            .iter()
            .filter(|f| f.kind != ChangeKind::Deleted)
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

    /// A verification ended: logged, counted and recorded for `status`. Returns what was found
    /// stale, for `on_failure`.
    pub(super) fn verified(&mut self, r: verify::Report, writer: Option<&Writer>) -> Option<StaleFound> {
        let m = metrics::get();
        for t in &r.targets {
            m.verified(t, "fresh", r.fresh);
            m.verified(t, "stale", r.stale.len());
            m.verified(t, "unreachable", r.unreachable.len());
        }
        log_report(&r);
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
        if let Some(w) = writer {
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
        (!r.stale.is_empty()).then(|| StaleFound {
            request: format!("verify {}", r.rule),
            targets: r.targets,
            error: detail.unwrap_or_default(),
        })
    }
}

/// The log lines of a verification: each URL not reached, each still stale, and the verdict.
fn log_report(r: &verify::Report) {
    let targets = r.targets.join(",");
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::Failed;
    use crate::providers::{Accepted, ProviderError};

    /// Rules with two targets in front of one site, verified on an edge nobody listens on.
    fn config(dir: &std::path::Path) -> Config {
        std::fs::create_dir_all(dir.join("public")).unwrap();
        let text = format!(
            "state_dir: {state}
targets:
  origin: {{type: vims, api_url: 'http://127.0.0.1:9', token: t0ken-for-tests, cdn_id: 7, host: all}}
  edge: {{type: vims, api_url: 'http://127.0.0.1:9', token: t0ken-for-tests, cdn_id: 8, host: all}}
rules:
  - name: site
    watch: {site}
    targets: [origin, edge]
    verify: {{base_url: 'http://127.0.0.1:9', after: 0s}}
",
            state = dir.join("state").display(),
            site = dir.join("public").display(),
        );
        let rules = dir.join("rules.yaml");
        crate::config::load_str(&rules, &text, Default::default(), &|_| None)
            .unwrap()
            .config
    }

    fn files(paths: &[&str]) -> Vec<PendingFile> {
        paths
            .iter()
            .map(|p| PendingFile {
                rule: "site".into(),
                path: p.to_string(),
                kind: ChangeKind::Modified,
            })
            .collect()
    }

    fn accepted(job: Option<&str>) -> Delivery {
        Delivery {
            desc: "purge".into(),
            result: Ok(Accepted {
                job_id: job.map(str::to_string),
                message: String::new(),
            }),
        }
    }

    /// Runs `test` on a new verifier of the rules of [`config`], with no provider and no record.
    fn with_verifier(test: impl FnOnce(&mut Verifier, &Sources, &Rule)) {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path());
        let (providers, manifests) = (BTreeMap::new(), BTreeMap::new());
        let from = Sources {
            config: &config,
            providers: &providers,
            manifests: &manifests,
        };
        let rule = config.rule("site").unwrap();
        test(&mut Verifier::new(Arc::new(Pacer::default())), &from, rule);
    }

    #[tokio::test]
    async fn a_file_is_verified_once_every_target_has_purged_it_and_its_jobs_ended() {
        with_verifier(|v, from, rule| {
            v.expect(rule, files(&["a.html", "b.html"]));
            let batch = Arc::new(files(&["a.html", "b.html"]));
            // The origin purged with no job to follow: the edge has not purged yet.
            assert_eq!(v.sent("origin", &batch, &[accepted(None)], from), None);
            assert_eq!(v.gate.len(), 2, "both still wait for the edge");
            // The edge's purge left two jobs: nothing is ready until both have ended.
            let id = v
                .sent("edge", &batch, &[accepted(Some("j1")), accepted(Some("j2"))], from)
                .expect("the batch waits for its jobs");
            v.job_ended(id, true, from);
            assert_eq!(v.gate.len(), 2);
            v.job_ended(id, true, from);
            assert_eq!(v.gate.len(), 0, "purged by every target: handed on to be checked");
            assert!(v.awaiting.is_empty());
        });
    }

    #[tokio::test]
    async fn a_failed_purge_or_job_is_not_verified() {
        with_verifier(|v, from, rule| {
            v.expect(rule, files(&["a.html"]));
            let failed = Delivery {
                desc: "purge".into(),
                result: Err(Failed {
                    error: ProviderError::Permanent {
                        message: "400 Bad Request".into(),
                        cause: None,
                    },
                    attempts: 1,
                }),
            };
            assert_eq!(v.sent("origin", &Arc::new(files(&["a.html"])), &[failed], from), None);
            assert_eq!(v.gate.len(), 0, "a failure is reported on its own, not verified");
            v.expect(rule, files(&["b.html"]));
            let batch = Arc::new(files(&["b.html"]));
            let id = v.sent("origin", &batch, &[accepted(Some("j"))], from).unwrap();
            v.job_ended(id, false, from);
            assert_eq!(v.gate.len(), 0);
            assert!(v.awaiting.is_empty());
            // Nobody verifies a rule without `verify:` or `warm:`: nothing waits.
            let plain = Rule::new("other", "/w");
            v.expect(&plain, files(&["c.html"]));
            assert_eq!(v.gate.len(), 0);
        });
    }
}
