//! Sending a request until it is accepted, refused for good, or out of retries.
//!
//! Transient failures are retried with capped exponential backoff and "equal jitter" (half the
//! delay fixed, half random), never sooner than a `Retry-After` asked for. Requests to one provider
//! account are paced (SiteHost allows about 10 a second and answers bursts with HTTP 500).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::providers::{Accepted, JobState, Provider, ProviderError};
use crate::request::Request;
use crate::state::PurgeLog;

/// The longest a provider's `Retry-After` is honoured for (or `retry_backoff_max`, when that is
/// longer): a provider asking for `Retry-After: 999999` would otherwise hold every purge of the
/// target for days.
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(120);

/// How long a `Retry-After` is honoured under `policy`.
pub(crate) fn retry_after_cap(policy: &RetryPolicy) -> Duration {
    RETRY_AFTER_CAP.max(policy.backoff_max)
}

/// The delay before retry number `attempt` (1 for the first retry).
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = policy
        .backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let capped = exp.min(policy.backoff_max);
    let half = capped / 2;
    let jittered = half + half.mul_f64(fastrand::f64());
    match retry_after {
        Some(ra) => jittered.max(ra.min(retry_after_cap(policy))),
        None => jittered,
    }
}

/// A request that failed for good.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error} (after {attempts} attempt{})", if *attempts == 1 { "" } else { "s" })]
pub(crate) struct Failed {
    pub error: ProviderError,
    pub attempts: u32,
}

/// Runs `op` until it succeeds, fails permanently, or `policy.attempts` are used.
/// `on_retry(attempt, error, delay)` is told about each retry before its delay.
pub(crate) async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    mut on_retry: impl FnMut(u32, &ProviderError, Duration),
) -> Result<T, Failed>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(error) if !error.is_transient() || attempt >= policy.attempts => {
                return Err(Failed {
                    error,
                    attempts: attempt,
                });
            }
            Err(error) => {
                let delay = backoff(policy, attempt, error.retry_after());
                on_retry(attempt, &error, delay);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// Spaces requests to each account at least `1 / rate` seconds apart.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    next: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    pub(crate) async fn wait(&self, account: &str, rate: f64) {
        let gap = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.get(account).copied().unwrap_or(now).max(now);
            next.insert(account.to_string(), slot + gap);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Sends `req` through `provider` with pacing and retries.
pub(crate) async fn send(
    provider: &Provider,
    pacer: &Pacer,
    policy: &RetryPolicy,
    rate: f64,
    req: &Request,
) -> Result<Accepted, Failed> {
    send_observed(provider, pacer, policy, rate, req, &|_, _| {}).await
}

/// Who is told of each retry: its number (1 for the first) and the error that caused it.
pub(crate) type OnRetry<'a> = dyn Fn(u32, String) + Send + Sync + 'a;

/// [`send`], telling `on_retry` of each retry.
pub(crate) async fn send_observed(
    provider: &Provider,
    pacer: &Pacer,
    policy: &RetryPolicy,
    rate: f64,
    req: &Request,
    on_retry: &OnRetry<'_>,
) -> Result<Accepted, Failed> {
    let account = provider.account();
    retry(
        policy,
        |_| async {
            pacer.wait(&account, rate).await;
            provider.purge(req).await
        },
        |attempt, error, delay| {
            let m = crate::metrics::get();
            m.request(&provider.target, provider.type_name(), "retried");
            if let Some(reason) = error.reason() {
                m.retry(&provider.target, reason.as_str());
            }
            let capped = match error.retry_after() {
                Some(ra) if ra > retry_after_cap(policy) => format!(
                    " (the provider asked for Retry-After {}; honoured up to {})",
                    humantime::format_duration(ra),
                    humantime::format_duration(retry_after_cap(policy))
                ),
                _ => String::new(),
            };
            tracing::warn!(target: "purgewatch", target_name = %provider.target, attempt, retry_in = ?delay, "purge failed, will retry: {error}{capped}");
            on_retry(attempt, error.to_string());
        },
    )
    .await
}

/// How a followed job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobOutcome {
    Done(String),
    Failed(String),
    /// Still running when we stopped asking, or the provider could not say.
    Unknown(String),
}

impl JobOutcome {
    pub(crate) fn state(&self) -> &str {
        match self {
            JobOutcome::Done(s) | JobOutcome::Failed(s) | JobOutcome::Unknown(s) => s,
        }
    }

    /// The provider's word for the end state (`Completed`, `FAILURE`, ...), as `status` shows it.
    pub(crate) fn short_state(&self) -> &str {
        match self {
            JobOutcome::Done(s) | JobOutcome::Failed(s) => s.split(':').next().unwrap_or(s).trim(),
            JobOutcome::Unknown(_) => "unknown",
        }
    }
}

/// One request of a purge, sent, and how it ended.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The request as logs and the purge history name it ([`Provider::describe`]).
    pub desc: String,
    pub result: Result<Accepted, Failed>,
}

/// Sends a purge's requests to one target, in order, each paced and retried under `policy`:
/// the path every purge takes, the daemon's batches and `purgewatch purge` alike.
pub(crate) async fn deliver(
    provider: &Provider,
    pacer: &Pacer,
    policy: &RetryPolicy,
    rate: f64,
    requests: Vec<Request>,
) -> Vec<Delivery> {
    deliver_observed(provider, pacer, policy, rate, requests, &|_, _| {}).await
}

/// [`deliver`], telling `on_retry` of each retry (the daemon records it for `status`).
pub(crate) async fn deliver_observed(
    provider: &Provider,
    pacer: &Pacer,
    policy: &RetryPolicy,
    rate: f64,
    requests: Vec<Request>,
    on_retry: &OnRetry<'_>,
) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(requests.len());
    for request in &requests {
        let desc = provider.describe(request);
        let result = send_observed(provider, pacer, policy, rate, request, on_retry).await;
        out.push(Delivery { desc, result });
    }
    out
}

impl Delivery {
    /// The provider's job to follow, when it accepted the request and named one.
    pub(crate) fn job(&self) -> Option<&str> {
        self.result.as_ref().ok().and_then(|a| a.job_id.as_deref())
    }

    /// What the purge history records of it; `files`: the changed files it covers (0 for a
    /// purge by hand).
    pub(crate) fn record(&self, target: &str, files: usize) -> crate::state::PurgeRecord {
        let (result, job_id, message) = match &self.result {
            Ok(acc) => ("accepted", acc.job_id.clone(), acc.message.clone()),
            Err(f) => ("failed", None, f.to_string()),
        };
        crate::state::PurgeRecord {
            target: target.to_string(),
            at_ms: crate::clock::now_ms(),
            files: files as i64,
            request: self.desc.clone(),
            result: result.into(),
            job_id,
            message: Some(message),
            ..Default::default()
        }
    }

    /// Writes [`Delivery::record`] to the purge history; its id is where the job's end goes
    /// ([`record_job`]). A failure to write is logged: the purge itself went out.
    pub(crate) fn save<L: PurgeLog>(&self, log: Option<&mut L>, target: &str, files: usize) -> Option<L::Id> {
        log?.record_purge(&self.record(target, files))
            .map_err(|e| tracing::warn!(target = %target, "could not record the purge: {e}"))
            .ok()
    }
}

/// Writes how the job of the purge recorded as `id` ended.
pub(crate) fn record_job<L: PurgeLog>(log: Option<&mut L>, id: Option<L::Id>, outcome: &JobOutcome) {
    if let (Some(s), Some(id)) = (log, id)
        && let Err(e) = s.update_job(id, outcome.short_state(), Some(outcome.state()))
    {
        tracing::warn!("could not record the job result: {e}");
    }
}

/// Polls a provider job until it ends or `max_wait` passes (intervals grow from 0.5 s to 10 s).
pub(crate) async fn follow_job(
    provider: &Provider,
    pacer: &Pacer,
    rate: f64,
    id: &str,
    max_wait: Duration,
) -> JobOutcome {
    let deadline = Instant::now() + max_wait;
    let mut interval = Duration::from_millis(500);
    let mut errors = 0;
    let account = provider.account();
    loop {
        pacer.wait(&account, rate).await;
        match provider.job(id).await {
            Ok(JobState::Done(s)) => return JobOutcome::Done(s),
            Ok(JobState::Failed(s)) => return JobOutcome::Failed(s),
            Ok(JobState::Running(_)) => errors = 0,
            Err(e) if !e.is_transient() => return JobOutcome::Unknown(e.to_string()),
            Err(e) => {
                errors += 1;
                if errors >= 5 {
                    return JobOutcome::Unknown(e.to_string());
                }
            }
        }
        if Instant::now() + interval > deadline {
            return JobOutcome::Unknown(format!("still running after {}", humantime::format_duration(max_wait)));
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 3 / 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Reason;

    /// What the daemon and `purgewatch purge` write of a purge and of its job's end: the same
    /// rows, through the same two calls.
    #[test]
    fn a_delivery_and_its_job_are_recorded_in_the_purge_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::state::Store::open(dir.path()).unwrap();
        let accepted = Delivery {
            desc: "stack purge".into(),
            result: Ok(Accepted {
                job_id: Some("j-1".into()),
                message: "queued".into(),
            }),
        };
        assert_eq!(accepted.job(), Some("j-1"));
        let id = accepted.save(Some(&mut store), "sitehost", 12);
        assert!(id.is_some());
        record_job(Some(&mut store), id, &JobOutcome::Done("Completed: all good".into()));
        let last = &store.last_purges().unwrap()["sitehost"];
        assert_eq!(
            (
                last.files,
                last.request.as_str(),
                last.result.as_str(),
                last.job_id.as_deref()
            ),
            (12, "stack purge", "accepted", Some("j-1"))
        );
        assert_eq!(last.job_state.as_deref(), Some("Completed"));

        let refused = Delivery {
            desc: "pattern ^/a$".into(),
            result: Err(Failed {
                error: ProviderError::permanent("HTTP 403: token refused"),
                attempts: 1,
            }),
        };
        assert_eq!(refused.job(), None);
        refused.save(Some(&mut store), "vims", 0);
        let last = &store.last_purges().unwrap()["vims"];
        assert_eq!(last.result, "failed");
        assert!(last.message.as_deref().unwrap().contains("token refused"));
        // Without a state directory nothing is written, and nothing fails.
        assert_eq!(refused.save(None::<&mut crate::state::Store>, "vims", 0), None);
    }

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = policy(10);
        for _ in 0..100 {
            let d1 = backoff(&p, 1, None);
            assert!(
                d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1),
                "{d1:?}"
            );
            let d3 = backoff(&p, 3, None);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4), "{d3:?}");
            let d9 = backoff(&p, 9, None);
            assert!(d9 >= Duration::from_secs(4) && d9 <= Duration::from_secs(8), "{d9:?}");
            assert!(backoff(&p, 1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
            // `Retry-After: 999999` waits no longer than the cap.
            let huge = backoff(&p, 1, Some(Duration::from_secs(999_999)));
            assert_eq!(huge, RETRY_AFTER_CAP, "{huge:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let start = Instant::now();
        let mut retries = vec![];
        let out = retry(
            &policy(8),
            |attempt| async move {
                if attempt <= 3 {
                    Err(ProviderError::transient(Reason::ServerError, "HTTP 500"))
                } else {
                    Ok(attempt)
                }
            },
            |a, _, d| retries.push((a, d)),
        )
        .await;
        assert_eq!(out, Ok(4));
        assert_eq!(retries.len(), 3);
        let waited: Duration = retries.iter().map(|(_, d)| *d).sum();
        let slept = Instant::now() - start;
        assert!(
            slept >= waited && slept <= waited + Duration::from_millis(5),
            "slept the backoff: {slept:?} vs {waited:?}"
        );
        assert!(waited >= Duration::from_millis(3500) && waited <= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let start = Instant::now();
        let out = retry(
            &policy(3),
            |attempt| async move {
                if attempt == 1 {
                    Err(ProviderError::Transient {
                        message: "429".into(),
                        retry_after: Some(Duration::from_secs(2)),
                        reason: Reason::TooMany,
                        cause: None,
                    })
                } else {
                    Ok(())
                }
            },
            |_, _, _| {},
        )
        .await;
        assert!(out.is_ok());
        assert!(Instant::now() - start >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_exhausted_budgets_stop() {
        let mut calls = 0;
        let out: Result<(), _> = retry(
            &policy(5),
            |_| {
                calls += 1;
                async { Err(ProviderError::permanent("HTTP 401")) }
            },
            |_, _, _| {},
        )
        .await;
        assert_eq!(out.unwrap_err().attempts, 1);
        assert_eq!(calls, 1);
        let out: Result<(), _> = retry(
            &policy(3),
            |_| async { Err(ProviderError::transient(Reason::ServerError, "HTTP 503")) },
            |_, _, _| {},
        )
        .await;
        let err = out.unwrap_err();
        assert_eq!(err.attempts, 3);
        assert_eq!(err.to_string(), "HTTP 503 (after 3 attempts)");
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests_per_account() {
        let pacer = Pacer::default();
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait("a", 10.0).await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(400));
        let t = Instant::now();
        pacer.wait("b", 10.0).await;
        assert_eq!(Instant::now(), t, "another account is not held back");
    }
}
