//! What the daemon counts, for `/metrics` (the official `prometheus-client` crate encodes it), and
//! what `/healthz` answers from.
//!
//! One process-wide [`Metrics`] ([`get`]): the stages that see a thing happen count it where it
//! happens (deliver counts attempts and retries, the daemon counts events, settles and purges),
//! and nothing is counted twice. Label values are target and rule names from the rules file,
//! and fixed words; never a path, a URL or a provider's message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::clock::now_ms;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub target: String,
    pub provider: String,
    /// `accepted`, `retried` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobLabels {
    pub target: String,
    /// `done`, `failed` or `unknown`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RetryLabels {
    pub target: String,
    /// `5xx`, `429`, `408`, `html`, `timeout`, `network`, `status_false`, `too_large`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerifyLabels {
    pub target: String,
    /// `fresh`, `stale` (after every re-purge) or `unreachable`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RescanLabels {
    pub rule: String,
    /// `overflow`, `watch_limit`, `signal`, `swap`.
    pub reason: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;
type LatencyFamily = Family<TargetLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.1 s to ~7 min: a purge goes out after the debounce (seconds) or max_delay (30 s), and a
    // failing provider can stretch it to minutes.
    Histogram::new(exponential_buckets(0.1, 2.0, 13))
}

/// Every metric the daemon exports.
pub(crate) struct Metrics {
    registry: Registry,
    pub purge_requests: Family<RequestLabels, Counter>,
    pub purged_files: Family<TargetLabels, Counter>,
    pub purge_latency: LatencyFamily,
    pub pending_files: Family<TargetLabels, Gauge>,
    pub oldest_pending: Family<TargetLabels, F64Gauge>,
    pub last_success: Family<TargetLabels, F64Gauge>,
    pub provider_jobs: Family<JobLabels, Counter>,
    pub events: Family<RuleLabels, Counter>,
    pub rescans: Family<RescanLabels, Counter>,
    pub manifest_files: Family<RuleLabels, Gauge>,
    pub retries: Family<RetryLabels, Counter>,
    pub verified: Family<VerifyLabels, Counter>,
    /// When each target's oldest pending file was first seen (ms since the epoch), for
    /// `purgewatch_oldest_pending_seconds` at scrape time.
    oldest_seen_ms: Mutex<BTreeMap<String, i64>>,
    pub health: Health,
}

/// What `/healthz` answers from.
#[derive(Default)]
pub(crate) struct Health {
    /// When the daemon's loop last turned (ms since the epoch); 0 before it started.
    pub loop_turned_ms: AtomicI64,
    /// Per rule, why it is not fully watched right now.
    problems: Mutex<BTreeMap<String, String>>,
    /// Limits too low for the rules (see [`crate::limits`]).
    warnings: Mutex<Vec<String>>,
}

/// The loop counts as stalled when it has not turned for this long (it turns at least every
/// second while `/healthz` is served).
pub(crate) const STALLED_AFTER_MS: i64 = 10_000;

impl Health {
    pub(crate) fn turned(&self) {
        self.loop_turned_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records (or, with `None`, clears) why `rule`'s tree is not watched.
    pub(crate) fn set_problem(&self, rule: &str, problem: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(why) => {
                p.insert(rule.to_string(), why);
            }
            None => {
                p.remove(rule);
            }
        }
    }

    /// What works but should be fixed (kernel limits too low): shown by `/healthz`, healthy or not.
    pub(crate) fn set_warnings(&self, warnings: Vec<String>) {
        *self.warnings.lock().unwrap_or_else(|e| e.into_inner()) = warnings;
    }

    pub(crate) fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets every rule's problem but those in `keep` (after a reload).
    pub(crate) fn retain_rules(&self, keep: &[&str]) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|rule, _| keep.contains(&rule.as_str()));
    }

    /// `Ok(summary)` when healthy, else `Err(reasons)`.
    pub(crate) fn check(&self) -> Result<String, Vec<String>> {
        let mut reasons: Vec<String> = self
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(rule, why)| format!("rule \"{rule}\": {why}"))
            .collect();
        let turned = self.loop_turned_ms.load(Ordering::Relaxed);
        let age = now_ms() - turned;
        if turned == 0 {
            reasons.push("the daemon is starting".into());
        } else if age > STALLED_AFTER_MS {
            reasons.push(format!("the event loop has not turned for {} ms", age));
        }
        if reasons.is_empty() {
            Ok(format!(
                "the event loop turned {} ms ago; every tree is watched",
                age.max(0)
            ))
        } else {
            Err(reasons)
        }
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            purge_requests: Family::default(),
            purged_files: Family::default(),
            purge_latency: Family::new_with_constructor(latency_histogram),
            pending_files: Family::default(),
            oldest_pending: Family::default(),
            last_success: Family::default(),
            provider_jobs: Family::default(),
            events: Family::default(),
            rescans: Family::default(),
            manifest_files: Family::default(),
            retries: Family::default(),
            verified: Family::default(),
            oldest_seen_ms: Mutex::new(BTreeMap::new()),
            health: Health::default(),
            registry: Registry::default(),
        };
        m.register_purges(&mut registry);
        m.register_trees(&mut registry);
        Metrics { registry, ..m }
    }

    /// The build, and what is sent: requests, files, latency, queues, provider jobs.
    fn register_purges(&self, registry: &mut Registry) {
        registry.register(
            "purgewatch_build",
            "purgewatch's version",
            Info::new(vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        );
        registry.register(
            "purgewatch_purge_requests",
            "Purge requests sent to providers, by outcome: accepted, retried (an attempt that failed and is tried again), failed (given up)",
            self.purge_requests.clone(),
        );
        registry.register(
            "purgewatch_purged_files",
            "Changed files whose purge a provider accepted",
            self.purged_files.clone(),
        );
        registry.register_with_unit(
            "purgewatch_purge_latency",
            "From the first change of a batch to the provider accepting its purge",
            Unit::Seconds,
            self.purge_latency.clone(),
        );
        registry.register(
            "purgewatch_pending_files",
            "Files queued for a target and not purged yet",
            self.pending_files.clone(),
        );
        registry.register_with_unit(
            "purgewatch_oldest_pending",
            "Age of the oldest file queued for a target (0 when nothing is queued)",
            Unit::Seconds,
            self.oldest_pending.clone(),
        );
        registry.register_with_unit(
            "purgewatch_last_success_timestamp",
            "When a provider last accepted a purge for the target (Unix time)",
            Unit::Seconds,
            self.last_success.clone(),
        );
        registry.register(
            "purgewatch_provider_jobs",
            "Provider jobs/tasks followed to their end, by how they ended: done, failed, unknown",
            self.provider_jobs.clone(),
        );
    }

    /// What is watched and checked: events, rescans, records, retries, verifications.
    fn register_trees(&self, registry: &mut Registry) {
        registry.register(
            "purgewatch_events",
            "Filesystem events for a rule's tree",
            self.events.clone(),
        );
        registry.register(
            "purgewatch_rescans",
            "Whole-tree comparisons, by reason: overflow (the kernel's queue), behind (purgewatch's own queue), watch_limit, signal, swap",
            self.rescans.clone(),
        );
        registry.register(
            "purgewatch_manifest_files",
            "Files in a rule's record of its tree",
            self.manifest_files.clone(),
        );
        registry.register(
            "purgewatch_retries",
            "Failed attempts that were retried, by reason",
            self.retries.clone(),
        );
        registry.register(
            "purgewatch_verified_urls",
            "URLs checked on the edge after a purge, by result: fresh, stale (after every re-purge), unreachable",
            self.verified.clone(),
        );
    }

    /// The Prometheus text format (version 0.0.4).
    pub(crate) fn encode(&self) -> String {
        {
            let now = now_ms();
            let seen = self.oldest_seen_ms.lock().unwrap_or_else(|e| e.into_inner());
            for (target, first) in seen.iter() {
                let age = if *first == i64::MAX {
                    0.0
                } else {
                    (now - first).max(0) as f64 / 1000.0
                };
                self.oldest_pending
                    .get_or_create(&TargetLabels { target: target.clone() })
                    .set(age);
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// A target's queue: how many files, and when the oldest was first seen.
    pub(crate) fn set_pending(&self, target: &str, files: usize, oldest_ms: Option<i64>) {
        let labels = TargetLabels {
            target: target.to_string(),
        };
        self.pending_files.get_or_create(&labels).set(files as i64);
        self.oldest_seen_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target.to_string(), oldest_ms.unwrap_or(i64::MAX));
    }

    /// One request's outcome (`accepted`, `retried`, `failed`).
    pub(crate) fn request(&self, target: &str, provider: &str, outcome: &str) {
        self.purge_requests
            .get_or_create(&RequestLabels {
                target: target.into(),
                provider: provider.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub(crate) fn retry(&self, target: &str, reason: &str) {
        self.retries
            .get_or_create(&RetryLabels {
                target: target.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A batch accepted: its files, and how long since its first change.
    pub(crate) fn purged(&self, target: &str, files: usize, latency_s: f64) {
        let labels = TargetLabels { target: target.into() };
        self.purged_files.get_or_create(&labels).inc_by(files as u64);
        self.purge_latency.get_or_create(&labels).observe(latency_s);
        self.last_success.get_or_create(&labels).set(now_ms() as f64 / 1000.0);
    }

    pub(crate) fn job(&self, target: &str, state: &str) {
        self.provider_jobs
            .get_or_create(&JobLabels {
                target: target.into(),
                state: state.into(),
            })
            .inc();
    }

    pub(crate) fn events(&self, rule: &str, n: u64) {
        self.events.get_or_create(&RuleLabels { rule: rule.into() }).inc_by(n);
    }

    pub(crate) fn rescan(&self, rule: &str, reason: &str) {
        self.rescans
            .get_or_create(&RescanLabels {
                rule: rule.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub(crate) fn verified(&self, target: &str, result: &str, n: usize) {
        if n > 0 {
            self.verified
                .get_or_create(&VerifyLabels {
                    target: target.into(),
                    result: result.into(),
                })
                .inc_by(n as u64);
        }
    }

    pub(crate) fn manifest(&self, rule: &str, files: usize) {
        self.manifest_files
            .get_or_create(&RuleLabels { rule: rule.into() })
            .set(files as i64);
    }
}

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.request("cdn", "vims", "accepted");
        m.purged("cdn", 3, 1.5);
        m.set_pending("cdn", 2, Some(now_ms() - 5000));
        m.retry("cdn", "5xx");
        let text = m.encode();
        for needle in [
            "purgewatch_build_info{version=\"",
            "purgewatch_purge_requests_total{target=\"cdn\",provider=\"vims\",outcome=\"accepted\"} 1",
            "purgewatch_purged_files_total{target=\"cdn\"} 3",
            "purgewatch_purge_latency_seconds_bucket{",
            "purgewatch_purge_latency_seconds_count{target=\"cdn\"} 1",
            "purgewatch_pending_files{target=\"cdn\"} 2",
            "purgewatch_oldest_pending_seconds{target=\"cdn\"} ",
            "purgewatch_last_success_timestamp_seconds{target=\"cdn\"} ",
            "purgewatch_retries_total{target=\"cdn\",reason=\"5xx\"} 1",
        ] {
            assert!(text.contains(needle), "no {needle:?} in\n{text}");
        }
    }

    #[test]
    fn health_needs_a_turning_loop_and_every_tree() {
        let h = Health::default();
        assert!(h.check().is_err(), "starting");
        h.turned();
        assert!(h.check().is_ok());
        h.set_problem("site", Some("public is missing".into()));
        assert_eq!(
            h.check().unwrap_err(),
            vec!["rule \"site\": public is missing".to_string()]
        );
        h.retain_rules(&[]);
        assert!(h.check().is_ok());
        h.loop_turned_ms
            .store(now_ms() - STALLED_AFTER_MS - 1000, Ordering::Relaxed);
        assert!(h.check().unwrap_err()[0].contains("has not turned"));
    }
}
