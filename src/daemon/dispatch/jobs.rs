//! Following provider jobs: a purge a provider accepted as a job (a SiteHost job, a VIMS task,
//! a CloudFront invalidation) is polled until it ends, at most [`MAX_FOLLOWED`] per target, and
//! its end is logged, recorded, told to `on_failure` and to the verifier.

use super::*;

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

pub(in crate::daemon) struct JobDone {
    pub(super) target: String,
    /// The files of the batch the job purges.
    pub(super) batch: Arc<Vec<PendingFile>>,
    /// The batch's number in the [`Verifier`], when it is to be verified or warmed.
    pub(super) awaiting: Option<u64>,
    /// The request the job came from, as the log lines describe it.
    pub(super) request: String,
    pub(super) record: Option<PurgeId>,
    pub(super) job_id: String,
    pub(super) outcome: JobOutcome,
}

/// A provider job to follow: what it came from.
pub(super) struct Job<'a> {
    pub(super) target: &'a str,
    /// The request, as the log lines describe it.
    pub(super) desc: &'a str,
    pub(super) job_id: &'a str,
    pub(super) record: Option<PurgeId>,
    pub(super) batch: &'a Arc<Vec<PendingFile>>,
    pub(super) awaiting: Option<u64>,
}

impl Dispatcher {
    /// Follows a provider job until it ends (see [`Dispatcher::job_ended`]), on a task of its
    /// own.
    pub(super) fn follow_job(&mut self, job: Job, cx: &mut Cx, verifier: &mut Verifier) {
        let (Some(provider), Some(t)) = (self.providers.get(job.target), cx.config.target(job.target)) else {
            return;
        };
        let (provider, pacer, rate) = (provider.clone(), self.pacer.clone(), t.rate_limit);
        let (target, request, batch, job_id, record, awaiting) = (
            job.target.to_string(),
            job.desc.to_string(),
            job.batch.clone(),
            job.job_id.to_string(),
            job.record,
            job.awaiting,
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
                        record,
                        job_id,
                        outcome,
                    }
                }
            }),
            batch,
            awaiting,
            request,
            record,
            job_id,
        };
        self.follow(&target, follow, cx, verifier);
    }

    /// Follows a job, giving up the target's oldest past [`MAX_FOLLOWED`].
    pub(super) fn follow(&mut self, target: &str, job: Followed, cx: &mut Cx, verifier: &mut Verifier) {
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
        // job_ended logs it: "could not learn how the purge job ended: no longer followed …".
        let done = JobDone {
            target: target.to_string(),
            batch: oldest.batch,
            awaiting: oldest.awaiting,
            request: oldest.request,
            record: oldest.record,
            job_id: oldest.job_id,
            outcome: JobOutcome::Unknown(why),
        };
        self.job_ended(done, cx, verifier);
    }

    /// A provider job ended (or is no longer followed): logged, counted, written, told to
    /// `on_failure` when it failed and to the verifier.
    pub(super) fn job_ended(&mut self, job: JobDone, cx: &mut Cx, verifier: &mut Verifier) {
        if let Some(queue) = self.followed.get_mut(&job.target) {
            queue.retain(|f| f.job_id != job.job_id);
        }
        let state = match &job.outcome {
            JobOutcome::Done(_) => "done",
            JobOutcome::Failed(_) => "failed",
            JobOutcome::Unknown(_) => "unknown",
        };
        metrics::get().job(&job.target, state);
        if let Some(id) = job.awaiting {
            let ok = matches!(job.outcome, JobOutcome::Done(_));
            verifier.job_ended(id, ok, &cx.sources(&self.providers));
        }
        match &job.outcome {
            JobOutcome::Done(s) => {
                tracing::info!(target = %job.target, job = %job.job_id, state = %s, "provider finished the purge")
            }
            JobOutcome::Failed(s) => {
                tracing::error!(target = %job.target, job = %job.job_id, state = %s, request = %job.request, "the provider's purge job failed");
                let error = format!("the provider's job {} failed: {s}", job.job_id);
                self.tell_failure(cx.config, &job.target, &job.request, &error, &job.batch);
            }
            JobOutcome::Unknown(s) => {
                tracing::warn!(target = %job.target, job = %job.job_id, request = %job.request, "could not learn how the purge job ended: {s}")
            }
        }
        deliver::record_job(cx.writer.as_deref_mut(), job.record, &job.outcome);
    }
}
